"""Peer text made safe for a terminal: what p2pctl and the chat print for people.

Rules:
- Everything a peer wrote (text, nick, file name, CID) goes through `visible`: C0 and
  C1 controls, DEL, bidi controls and line separators never reach the terminal; they
  show as a visible stand-in instead.
- A message is a header line (time, room, the author's peer id suffix, nick) and its
  text; every further line of the text starts with INDENT, so no line of a message can
  pass for a new message. The peer id suffix comes before anything the peer chose.
- With a width, lines are wrapped to it by this module (continuations indented too),
  because a terminal's own wrap would start a line at column 0 with peer text.
- `json_line` keeps `--json` output exact (the same values after parsing) while it
  escapes the characters a terminal would act on.
- Pure standard library, no I/O: p2pctl imports it on every run.
"""

from __future__ import annotations

import json
import time
import unicodedata
from typing import Any

INDENT = "    "
SUFFIX_CHARS = 8

# Bidirectional formatting controls (the "Trojan Source" set, CVE-2021-42574).
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Line and paragraph separators end a line in some terminals and in str.splitlines.
_SEPARATORS = frozenset("\u2028\u2029")


def is_unsafe(char: str) -> bool:
    """Whether a terminal could act on char: a C0/C1 control, DEL, bidi or separator."""
    code = ord(char)
    return (code < 0x20 or 0x7F <= code <= 0x9F or char in BIDI_CONTROLS
            or char in _SEPARATORS)


def _stand_in(char: str) -> str:
    code = ord(char)
    if code < 0x20:
        # Unicode's control pictures: ESC shows as U+241B, and so on.
        return chr(0x2400 + code)
    if code == 0x7F:
        return "\u2421"
    return f"<U+{code:04X}>"


def visible(text: str) -> str:
    """text on one line, every unsafe character replaced by a visible stand-in."""
    return "".join(_stand_in(c) if is_unsafe(c) else c for c in text)


def cell_width(char: str) -> int:
    """Terminal cells one (safe) character takes: 0, 1 or 2."""
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def wrap(line: str, width: int | None) -> list[str]:
    """line cut to width cells, at a space where one is near; pieces after the first
    start with INDENT."""
    if width is None or width <= len(INDENT) + 2:
        return [line]
    pieces: list[str] = []
    current, used = "", 0
    for char in line:
        cells = cell_width(char)
        floor = len(INDENT) if pieces else 0
        # Break only once the piece holds more than its indent, so each piece advances.
        if used + cells > width and used > floor:
            cut = current.rfind(" ")
            if cut > max(floor, len(INDENT) + 1, len(current) // 2):
                # The words after the last space move down whole; that space goes.
                pieces.append(current[:cut])
                current = INDENT + current[cut + 1:]
            else:
                pieces.append(current)
                current = INDENT
            used = sum(map(cell_width, current))
        current += char
        used += cells
    pieces.append(current)
    return pieces


def short_id(peer_id: str) -> str:
    """The last characters of a peer id: what tells two people with one nick apart."""
    return visible(peer_id[-SUFFIX_CHARS:])


LONG_CLOCK = "%Y-%m-%d %H:%M:%S"


def clock(ms: int, time_format: str = LONG_CLOCK) -> str:
    """Local date and time of a timestamp in ms."""
    return time.strftime(time_format, time.localtime(ms / 1000))


def human_size(size: int) -> str:
    """Bytes as a person reads them: 812 B, 14.2 KiB, 3.1 MiB."""
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024 or unit == "MiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def image_summary(image: dict[str, Any], *, number: int | None = None,
                  with_cid: bool = True) -> str:
    """One line for an image: name, size, dimensions (and its number, its CID)."""
    label = f"image {number}:" if number is not None else "image"
    if image.get("unavailable"):
        # The bytes behind the CID were not what the message said: show none of the
        # details the author made up, only that the image cannot be had.
        return f"[{label} unavailable: {visible(str(image['unavailable']))}]"
    cid = f" cid={visible(str(image.get('cid', '?')))}" if with_cid else ""
    return (f"[{label} {visible(str(image.get('filename', '?')))} "
            f"{human_size(int(image.get('size', 0)))} "
            f"{image.get('width', '?')}x{image.get('height', '?')}{cid}]")


def author(msg: dict[str, Any]) -> str:
    """`[suffix] nick`: the suffix first, where no nick can imitate it."""
    nick = visible(str(msg.get("nick") or ""))
    suffix = f"[{short_id(str(msg.get('author', '')))}]"
    return f"{suffix} {nick}" if nick else suffix


def message_lines(msg: dict[str, Any], *, width: int | None = None, show_room: bool = True,
                  time_format: str = LONG_CLOCK, image_number: int | None = None
                  ) -> list[str]:
    """A message as lines for a terminal: the header, then indented text lines.

    The chat leaves the room out, shows a shorter time and numbers images for /fetch.
    """
    text = str(msg.get("text") or "")
    # splitlines knows every line break a terminal or a reader might honour
    # (\r, \v, \f, \x1c-\x1e, \x85, U+2028/9); each becomes an indented line.
    lines = text.splitlines() or [""]
    room = f"#{visible(str(msg.get('room', '')))} " if show_room else ""
    stamp = clock(int(msg.get("ts", 0)), time_format)
    header = f"{stamp} {room}{author(msg)}: {visible(lines[0])}"
    out = [header.rstrip()]
    out += [INDENT + visible(line).rstrip() for line in lines[1:]]
    image = msg.get("image")
    if isinstance(image, dict):
        out.append(INDENT + image_summary(image, number=image_number,
                                          with_cid=image_number is None))
    return [piece for line in out for piece in wrap(line, width)]


def format_message(msg: dict[str, Any], *, width: int | None = None) -> str:
    """A message for a terminal, as one string of lines (see `message_lines`)."""
    return "\n".join(message_lines(msg, width=width))


def json_line(value: Any) -> str:
    """JSON of value that parses back to the same value, with no raw C1/bidi bytes.

    json escapes C0 controls itself; with ensure_ascii=False it would pass C1 controls
    (U+009B is a CSI in some terminals), bidi controls and U+2028/9 through raw. JSON
    syntax outside strings is ASCII, so each of those can only sit inside a string,
    where its \\uXXXX escape means the same character.
    """
    encoded = json.dumps(value, ensure_ascii=False)
    return "".join(f"\\u{ord(c):04x}" if is_unsafe(c) else c for c in encoded)
