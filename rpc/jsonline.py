"""Reading one line of JSON as `json.loads` reads it, faster where orjson gives the same.

Both ends of the socket read this way: the client its answers, the daemon its requests.
orjson is optional here (the client library may run without it) and a dependency of
the daemon. It is imported at the first line of ORJSON_FROM_BYTES or more: importing
it takes about 10 ms (it brings in dataclasses, uuid and inspect), a sixth of a
one-shot `p2pctl send`, whose answer json reads in microseconds. Once something has
imported it (the daemon writes its answers with it), it reads short lines too: a
request line of 60 bytes takes json 2.3 us and orjson 0.3.
"""

from __future__ import annotations

import json
import sys
from types import ModuleType
from typing import Any

# Shorter lines go to json: orjson saves under 10 us on them (a `status` answer, about
# 2 KB, takes ~8 us against ~40).
ORJSON_FROM_BYTES = 1024
# orjson reads an integer beyond 64 bits as a float, where json keeps it exact: a line
# with 19 digits in a row goes to json. (Checked on a copy with every digit as 0.)
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19

_orjson: ModuleType | bool | None = None  # None: not tried yet; False: not installed


def _fast() -> ModuleType | None:
    global _orjson
    if _orjson is None:
        try:
            import orjson
        except ImportError:  # the standard library alone does the same, slower
            _orjson = False
        else:
            _orjson = orjson
    return _orjson if isinstance(_orjson, ModuleType) else None


def decode_line(line: bytes) -> Any:
    """One JSON line as json.loads reads it, through orjson where that gives the same
    value and the line is long enough to gain from it, or orjson is imported already.

    What orjson refuses (NaN, a lone surrogate, a byte order mark, nesting past 1024
    levels, a malformed line) goes to json, so its value, its error message or its
    RecursionError is what the caller gets."""
    if (len(line) >= ORJSON_FROM_BYTES or "orjson" in sys.modules) \
            and (fast := _fast()) is not None \
            and line.translate(_DIGITS_TO_ZERO).find(_LONG_NUMBER) < 0:
        try:
            return fast.loads(line)
        except fast.JSONDecodeError:
            pass  # json's own verdict follows
    return json.loads(line)
