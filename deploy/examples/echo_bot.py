#!/usr/bin/env python3
"""An example gossipchat bot: it echoes what people say and posts an image on request.

    python deploy/examples/echo_bot.py --room lobby [--home DIR] [--image FILE]

In the room, `!image` makes it post its image (FILE, or a small generated one), and
any other text is answered with `echo: <text>`. It never answers itself, nor another
bot's echo, so two bots in one room do not talk for ever. It uses AsyncClient, the
async client library, and runs on asyncio or, with --backend trio, on trio.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import anyio

from gossipchat.clients import AsyncClient, RpcError

ECHO_PREFIX = "echo: "


def generated_image() -> bytes:
    """A small PNG made on the spot, for a bot started without --image."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (160, 120), (30, 90, 200))
    ImageDraw.Draw(image).text((20, 50), "echo bot", fill=(255, 255, 255))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def reply_to(text: str) -> str | None:
    """What the bot answers to a text: an echo, "!image", or None for nothing."""
    stripped = text.strip()
    if not stripped or stripped.startswith(ECHO_PREFIX):
        return None
    if stripped == "!image":
        return "!image"
    return ECHO_PREFIX + stripped


async def run(args: argparse.Namespace) -> None:
    """Join the room, then answer every message of others until interrupted."""
    async with AsyncClient(rpc=args.rpc, home=args.home) as chat:
        me = (await chat.id())["peer_id"]
        await chat.join(args.room)
        if args.nick:
            await chat.nick(args.nick)
        print(f"echo bot {me} in #{args.room}", flush=True)
        async for message in chat.watch([args.room]):
            if message["author"] == me or message["kind"] != "text":
                continue
            answer = reply_to(message["text"])
            try:
                if answer == "!image":
                    if args.image:
                        await chat.send_image(args.room, args.image, caption="as requested")
                    else:
                        await chat.send_image(args.room, data=generated_image(),
                                              filename="echo-bot.png", caption="as requested")
                elif answer is not None:
                    await chat.send(args.room, answer)
            except RpcError as exc:
                print(f"echo bot: {exc}", file=sys.stderr, flush=True)


def main() -> None:
    """Parse the flags and run the bot."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--room", required=True)
    parser.add_argument("--home", help="the daemon's home (default: the usual one)")
    parser.add_argument("--rpc", help="the daemon's socket")
    parser.add_argument("--image", type=Path, help="the image to post on !image")
    parser.add_argument("--nick", default="echo-bot")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    args = parser.parse_args()
    try:
        anyio.run(run, args, backend=args.backend)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
