"""File names: the one place that decides what a received file may be called on disk.

`sanitize_filename` turns whatever a peer or a user wrote into a safe base name: never
a path, never empty, portable across file systems, and computed in linear time on
hostile input.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

__all__ = ["sanitize_filename"]


_MAX_NAME_BYTES: Final = 200
_MAX_INPUT_CHARS: Final = 1024  # file systems allow 255 bytes
_FALLBACK_NAME: Final = "image"
# Control, format (bidi overrides, zero-width), surrogate and line/paragraph
# separator characters: invisible or unencodable, and used to disguise extensions.
_DROPPED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_NON_PORTABLE: Final = re.compile(r'[<>:"|?*]')
_WINDOWS_DEVICES: Final = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"COM{i}" for i in range(1, 10)}
    | {f"LPT{i}" for i in range(1, 10)}
)


def _truncate_utf8(text: str, limit: int) -> str:
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def _trim(name: str) -> str:
    r"""`name` without leading and trailing white space and dots.

    A loop, not the regex ``^[\s.]+|[\s.]+$``: that one retries its second branch at
    every position of a ". . . ." run, quadratic in the length (100 KB: 80 s).
    ``str.isspace`` is the ``\s`` of str patterns.
    """
    start, end = 0, len(name)
    while start < end and (name[start].isspace() or name[start] == "."):
        start += 1
    while end > start and (name[end - 1].isspace() or name[end - 1] == "."):
        end -= 1
    return name[start:end]


def sanitize_filename(name: str) -> str:
    """A safe base name for saving a received file: never a path, never empty.

    Directories, control and invisible characters, leading dots and ".." runs are
    removed; the result is at most 200 bytes of UTF-8 (keeping a short extension)
    and falls back to "image".
    """
    if len(name) > _MAX_INPUT_CHARS:
        # No real file name is this long. Cut it before normalizing: NFC reorders a run
        # of combining marks by insertion sort, quadratic (100,000 of them: 11.6 s).
        name = name.replace("\\", "/").rsplit("/", 1)[-1][:_MAX_INPUT_CHARS]
    # Invisible characters go first: dropped after normalizing, they could leave two
    # combining marks side by side out of canonical order ("\u0301\u200b\u0316").
    name = "".join(c for c in name if unicodedata.category(c) not in _DROPPED_CATEGORIES)
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _NON_PORTABLE.sub("_", name)
    name = re.sub(r"\.{2,}", ".", name)
    # Leading dots hide files; trailing dots and spaces are dropped by Windows. Both
    # ends are trimmed of dots and white space together, so that a second pass
    # finds nothing left to trim (". 0" is "0", not " 0").
    name = _trim(name)
    if len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        if dot and stem and len(ext.encode("utf-8")) <= 16:
            budget = _MAX_NAME_BYTES - len(ext.encode("utf-8")) - 1
            name = _trim(_truncate_utf8(stem, budget)) + "." + ext
        else:
            name = _trim(_truncate_utf8(name, _MAX_NAME_BYTES))
    if name.split(".", 1)[0].upper() in _WINDOWS_DEVICES:
        name = "_" + name
    return name or _FALLBACK_NAME
