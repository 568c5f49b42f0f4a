"""File names (core/filenames.py): a safe base name whatever a peer or a user wrote."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipchat.daemon.core.filenames import sanitize_filename

# ------------------------------------------------------------------------ filenames


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("/abs/x.png", "x.png"),
        ("C:\\Users\\alice\\cat.jpg", "cat.jpg"),
        ("..", "image"),
        (".", "image"),
        ("", "image"),
        ("   ", "image"),
        ("dir/", "image"),
        (".hidden", "hidden"),
        ("...png", "png"),
        ("a\x00b.png", "ab.png"),
        ("line\nbreak\r.png", "linebreak.png"),
        ("my..photo.png", "my.photo.png"),
        ("photo.png.", "photo.png"),
        (". 0", "0"),  # dots and spaces trimmed together (found by hypothesis)
        ("name. \t.", "name"),
        ("cat\u202egnp.exe", "catgnp.exe"),  # right-to-left override hides ".exe"
        ("what?.png", "what_.png"),
        ("CON.png", "_CON.png"),
        ("Привет мир.jpg", "Привет мир.jpg"),
        ("cafe\u0301.png", "caf\u00e9.png"),  # NFC
        ("\ud800x.png", "x.png"),  # a lone surrogate cannot be encoded
    ],
)
def test_sanitize_filename(name: str, expected: str) -> None:
    assert sanitize_filename(name) == expected


def test_sanitize_filename_limits_utf8_length_and_keeps_extension() -> None:
    long_ascii = sanitize_filename("a" * 500 + ".jpeg")
    assert len(long_ascii.encode()) == 200
    assert long_ascii.endswith("a.jpeg")
    long_unicode = sanitize_filename("ж" * 300 + ".png")
    assert len(long_unicode.encode()) <= 200
    assert long_unicode.endswith("ж.png")
    no_extension = sanitize_filename("😀" * 100)
    assert no_extension == "😀" * 50


@settings(max_examples=300, deadline=None, database=None)
@given(st.text())
def test_sanitize_filename_is_always_a_safe_base_name(name: str) -> None:
    safe = sanitize_filename(name)
    assert safe
    assert safe not in (".", "..")
    assert "/" not in safe
    assert "\\" not in safe
    assert "\x00" not in safe
    assert not safe.startswith(".")
    assert ".." not in safe
    assert len(safe.encode("utf-8")) <= 200
    assert sanitize_filename(safe) == safe
