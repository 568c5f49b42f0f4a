"""Record seeds from live traffic: `python -m tests.fuzz.corpus.capture`.

build.py writes seeds with the project's own encoders, byte for byte what the wire
carries. This script adds what two real daemons actually exchanged: it starts them
on 127.0.0.1 (harness.daemons), joins both to a room, chats from each (a nick, an
emoji, a long text), posts an image with a caption from one, and lets the other fetch
it. Then it writes what the receiving daemon took off the wire and verified:
- `envelope/live-*.bin`: every envelope it stored, as gossip and sync delivered them
  (its SQLite store keeps each message's wire bytes);
- `dagpb/live-*.bin`: the dag-pb nodes of the image's DAG, as bitswap delivered them
  (its block store).

Timestamps and keys are fresh each run, so the files change each time it runs; run
it when the wire changes, and keep what it wrote in git like build.py's seeds.
"""

from __future__ import annotations

import io
import sqlite3
import sys
from pathlib import Path

from PIL import Image

from gossipchat.daemon.core import unixfs
from harness.daemons import Cluster, connect, texts, wait_mesh
from harness.waiting import wait_for

ROOT = Path(__file__).resolve().parent
ROOM = "corpus"


def _image(path: Path) -> None:
    """A noisy PNG of about 2 MB: several blocks under a dag-pb root."""
    img = Image.merge("RGB", [Image.effect_noise((800, 800), 80) for _ in range(3)])
    buf = io.BytesIO()
    img.save(buf, "PNG")
    path.write_bytes(buf.getvalue())


def capture() -> dict[str, dict[str, bytes]]:
    """{surface: {file name: bytes}} from one live session."""
    with Cluster(prefix="gc-corpus-") as cluster:
        a, b = cluster.start("a"), cluster.start("b")
        connect(a, b)
        for d in (a, b):
            d.call("join", room=ROOM)
        wait_mesh(b, ROOM, 1)
        a.call("nick", name="ada")
        lines = [(a, "hello from a"), (b, "hi a \N{WAVING HAND SIGN}"),
                 (a, "a longer line " * 40)]
        for sender, text in lines:
            sender.call("send", room=ROOM, text=text)
        wait_for(lambda: all(t in texts(b, ROOM) for _, t in lines), timeout=30,
                 message="b to hear every line")
        _image(cluster.root / "picture.png")
        sent = a.call("send_image", room=ROOM, path=str(cluster.root / "picture.png"),
                      caption="a picture")
        cid = sent["image"]["cid"]
        b.call("fetch", cid=cid, path=str(cluster.root / "fetched.png"))
        wait_for(lambda: len(b.call("history", room=ROOM)) >= len(lines) + 1, timeout=30,
                 message="b to store the image message")
        with sqlite3.connect(b.home / "store.sqlite") as db:
            wires = [bytes(row[0]) for row in db.execute(
                "SELECT wire FROM messages WHERE room = ? ORDER BY lamport, id", (ROOM,))]
        nodes: list[bytes] = []
        for path in sorted((b.home / "blocks").rglob("*")):
            if not path.is_file():
                continue
            try:
                key = unixfs.cid_from_str(path.name)
            except Exception:  # the store's own bookkeeping files
                continue
            if unixfs.parse_cid(key).codec == unixfs.CODEC_DAG_PB:
                nodes.append(path.read_bytes())
    return {
        "envelope": {f"live-{i:02d}.bin": wire for i, wire in enumerate(wires)},
        "dagpb": {f"live-{i:02d}.bin": node for i, node in enumerate(nodes)},
    }


def main() -> None:
    seeds = capture()
    for surface, files in seeds.items():
        if not files:
            sys.exit(f"no {surface} seeds captured")
        folder = ROOT / surface
        for old in folder.glob("live-*.bin"):
            old.unlink()
        for name, data in files.items():
            (folder / name).write_bytes(data)
        print(f"{surface}: {len(files)} live seeds")


if __name__ == "__main__":
    main()
