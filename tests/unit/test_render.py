"""The terminal renderer of peer text (clients/render.py): pure, so tested directly."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gossipchat.clients import render

AUTHOR = "12D3KooWQnXqUQ5mH3cFJTvThbxVcXnuFCbGkYzLJNFrSXb9MWg"
MALLORY = "12D3KooWMa11oryMa11oryMa11oryMa11oryMa11oryMALLORYx"
SPOOF = ("ok\n2026-12-02 21:00:00 #lobby [rSXb9MWg] alice: my new wallet is 1MALLORY"
         "\x1b[8m\x9b31m\u202eevil")


def _msg(text: str, nick: str = "", **extra: Any) -> dict[str, Any]:
    return {"id": "ab" * 32, "room": "lobby", "author": MALLORY, "nick": nick,
            "ts": 1_700_000_000_000, "lamport": 3, "kind": "text", "text": text, **extra}


def _unsafe(line: str) -> list[str]:
    return [c for c in line if render.is_unsafe(c)]


def test_is_unsafe_covers_c0_c1_del_bidi_and_separators() -> None:
    for code in [*range(0x20), *range(0x7F, 0xA0)]:
        assert render.is_unsafe(chr(code)), hex(code)
    for char in "\u202e\u2066\u200f\u061c\u2028\u2029":
        assert render.is_unsafe(char)
    for char in "a ~é漢🙂\u200d":
        assert not render.is_unsafe(char)


def test_the_spoof_of_issue_15_stays_inside_mallorys_message() -> None:
    lines = render.message_lines(_msg(SPOOF, nick="mallory"))
    assert lines[0].endswith(f"#lobby [{MALLORY[-8:]}] mallory: ok")
    assert len(lines) == 2
    assert lines[1].startswith(render.INDENT + "2026-12-02")
    assert "\u241b[8m" in lines[1]  # ESC shown as its control picture
    assert "<U+009B>31m" in lines[1]
    assert "<U+202E>evil" in lines[1]
    assert not any(_unsafe(line) for line in lines)


def test_suffix_comes_before_the_nick_a_peer_chooses() -> None:
    # A nick that imitates a whole header still follows the real suffix.
    line = render.message_lines(_msg("hi", nick="alice: [rSXb9MWg] alice"))[0]
    assert line.split("#lobby ", 1)[1].startswith(f"[{MALLORY[-8:]}] ")


def test_image_line_has_name_size_and_dimensions() -> None:
    image = {"cid": "bafyx", "filename": "cat\x1b.png", "mime": "image/png",
             "size": 14_540, "width": 640, "height": 480, "thumbnail": ""}
    lines = render.message_lines(_msg("", kind="image", image=image))
    assert lines[-1] == render.INDENT + "[image cat\u241b.png 14.2 KiB 640x480 cid=bafyx]"


def test_wrap_keeps_continuations_indented_and_inside_the_width() -> None:
    text = "x" * 50 + " 2026-12-02 21:00:00 #lobby [rSXb9MWg] alice: spoof"
    lines = render.message_lines(_msg(text), width=40)
    assert len(lines) > 2
    assert all(line.startswith(render.INDENT) for line in lines[1:])
    assert all(sum(map(render.cell_width, line)) <= 40 for line in lines)


def test_wrap_prefers_a_space() -> None:
    assert render.wrap("alpha beta gamma delta", 12) == ["alpha beta", "    gamma", "    delta"]


def test_wide_characters_count_two_cells() -> None:
    lines = render.wrap("漢" * 30, 20)
    assert all(sum(map(render.cell_width, line)) <= 20 for line in lines)
    assert "".join(line.removeprefix(render.INDENT) for line in lines) == "漢" * 30


_any_text = st.text(st.characters(codec="utf-8"), max_size=300)


@given(text=_any_text, nick=st.text(max_size=70),
       width=st.one_of(st.none(), st.integers(min_value=1, max_value=200)))
def test_rendering_never_passes_a_control_and_new_lines_start_indented(
        text: str, nick: str, width: int | None) -> None:
    rendered = render.format_message(_msg(text, nick=nick), width=width)
    lines = rendered.split("\n")
    assert lines[0][:4] == render.clock(1_700_000_000_000)[:4]  # the header comes first
    for line in lines:
        bad = _unsafe(line)
        assert not bad, (line, bad)
    for line in lines[1:]:
        assert line.startswith(render.INDENT), line
    if width is not None and width > len(render.INDENT) + 2:
        assert all(sum(map(render.cell_width, line)) <= width for line in lines)


@given(value=st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), _any_text),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(_any_text, inner, max_size=4)),
    max_leaves=10))
def test_json_line_is_exact_and_free_of_controls(value: Any) -> None:
    line = render.json_line(value)
    assert json.loads(line) == value
    assert not _unsafe(line)
    assert "\n" not in line


def test_json_line_keeps_readable_unicode() -> None:
    assert render.json_line({"t": "héllo 漢"}) == '{"t": "héllo 漢"}'
    assert render.json_line({"t": "\u202e\x9b"}) == '{"t": "\\u202e\\u009b"}'


def test_visible_control_pictures_are_printable() -> None:
    shown = render.visible("".join(map(chr, range(0x20))) + "\x7f")
    assert all(unicodedata.category(c) == "So" for c in shown)
