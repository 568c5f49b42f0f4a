"""Both ends read JSON lines through orjson where that gives json's value (rpc/jsonline.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossipchat.rpc import jsonline


@pytest.fixture(autouse=True)
def every_line_through_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    """The equivalence is the point here: lines of any length go through orjson."""
    monkeypatch.setattr(jsonline, "ORJSON_FROM_BYTES", 0)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)


@given(JSON)
def test_every_value_reads_as_json_reads_it(value: object) -> None:
    line = json.dumps(value).encode()
    got = jsonline.decode_line(line)
    assert got == json.loads(line)
    assert repr(got) == repr(json.loads(line))  # an int stays an int, to the last digit


@pytest.mark.parametrize("line", [
    b'{"id": 123456789012345678901234567890}',  # orjson alone: a float
    b"[-9223372036854775809, 18446744073709551616]",
    b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark
    b'"\\ud800"',  # a lone surrogate escape
    b"[NaN, Infinity]",
])
def test_what_orjson_reads_otherwise_is_read_by_json(line: bytes) -> None:
    assert repr(jsonline.decode_line(line)) == repr(json.loads(line))


def test_bad_lines_raise_json_s_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for use_orjson in (True, False):
        if not use_orjson:
            monkeypatch.setattr(jsonline, "_orjson", False)
        with pytest.raises(json.JSONDecodeError):
            jsonline.decode_line(b'{"a": ')
        assert jsonline.decode_line(b'{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}


def test_short_lines_do_not_import_orjson_and_long_ones_do() -> None:
    # A one-shot p2pctl call reads one short answer: importing orjson would cost more
    # than it saves. A fresh interpreter, so that nothing imported it before.
    script = (
        "import sys; from gossipchat.rpc import jsonline\n"
        "assert jsonline.decode_line(b'{\"a\": 1}') == {'a': 1}\n"
        "assert 'orjson' not in sys.modules\n"
        "line = b'[' + b','.join([b'1234'] * 400) + b']'\n"
        "assert len(line) >= jsonline.ORJSON_FROM_BYTES\n"
        "assert jsonline.decode_line(line) == [1234] * 400\n"
        "assert 'orjson' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def test_short_lines_go_through_orjson_once_it_is_imported() -> None:
    # The daemon imports orjson to write its answers; its requests are short lines.
    # A fresh interpreter, with orjson.loads counting what it reads.
    script = (
        "import orjson\n"
        "read = []\n"
        "loads = orjson.loads\n"
        "orjson.loads = lambda line: read.append(line) or loads(line)\n"
        "from gossipchat.rpc import jsonline\n"
        "line = b'{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \"id\"}'\n"
        "assert len(line) < jsonline.ORJSON_FROM_BYTES\n"
        "assert jsonline.decode_line(line) == {'jsonrpc': '2.0', 'id': 1, 'method': 'id'}\n"
        "assert read == [line], read\n"
        "assert jsonline.decode_line(b'[12345678901234567890]') == [12345678901234567890]\n"
        "assert read == [line], read  # a long integer still goes to json\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
