"""What every fuzz suite shares: the profile, the seed corpus, mutation, memory checks."""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import settings
from hypothesis import strategies as st

CORPUS = Path(__file__).resolve().parent / "corpus"
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")

T = TypeVar("T")


def fuzz_settings(scale: float = 1.0) -> settings:
    """The selected profile (tests/fuzz/conftest.py), its example count times `scale`.

    Costly properties (Pillow decodes, trio runs) take a fraction of the examples.
    """
    base = settings.get_profile(PROFILE)
    return settings(base, max_examples=max(10, int(base.max_examples * scale)))


@cache
def corpus(surface: str) -> tuple[bytes, ...]:
    """The seeds of one surface, in name order."""
    files = sorted((CORPUS / surface).glob("*.bin"))
    assert files, f"no seeds in {CORPUS / surface}: run python -m tests.fuzz.corpus.build"
    return tuple(f.read_bytes() for f in files)


# Values that sit on the edges of length fields, varints and counters.
INTERESTING = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF,
               0xFFFFFFFF, 2**32, 2**63 - 1, 2**64 - 1)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[bytes], max_ops: int = 4) -> bytes:
    """A seed with a few AFL-style mutations: flips, edge values, cuts, splices."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(("flip", "byte", "int", "varint", "insert", "delete",
                                   "truncate", "duplicate", "splice")))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            pos = min(pos, len(data) - 1)
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and data:
            pos = min(pos, len(data) - 1)
            data[pos] = draw(st.sampled_from((0x00, 0x01, 0x7F, 0x80, 0xFF)) | st.integers(0, 255))
        elif op == "int":
            value = draw(st.sampled_from(INTERESTING))
            width = draw(st.sampled_from((1, 2, 4, 8)))
            order = draw(st.sampled_from(("big", "little")))
            data[pos : pos + width] = (value % 256**width).to_bytes(width, order)
        elif op == "varint":
            data[pos:pos] = _varint(draw(st.sampled_from(INTERESTING)))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[pos:]
        elif op == "duplicate":
            end = draw(st.integers(pos, min(len(data), pos + 256)))
            data[pos:pos] = data[pos:end]
        elif op == "splice":
            other = draw(st.sampled_from(seeds))
            cut = draw(st.integers(0, len(other)))
            data = data[:pos] + other[cut:]
    return bytes(data)


def hostile(seeds: Sequence[bytes], max_size: int = 512) -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, real seeds as they are, and mutated seeds."""
    return st.one_of(st.binary(max_size=max_size), st.sampled_from(seeds), mutated(seeds))


def peak_bytes(call: Callable[[], T]) -> tuple[T | BaseException, int]:
    """Run `call` under tracemalloc: (its result or the exception it raised, peak bytes).

    tracemalloc sees every allocation through Python's allocators, which is where a
    list, bytes or bytearray sized from a claimed length would come from.

    A failed assert inside `call` is the test's failure, not a result: it is raised.
    (Returned, it was lost wherever a caller looked only at the peak: a stale list
    of refusal reasons went unseen that way.)
    """
    tracemalloc.start()
    try:
        try:
            result: Any = call()
        except AssertionError:
            raise
        except Exception as exc:
            result = exc
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak
