"""The method table, the dispatcher's validation, the bindings, and p2pctl's coverage of it."""

from __future__ import annotations

import inspect
import json
import os
import shlex
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonrpcserver.main import default_validator

from gossipchat.clients import p2pctl
from gossipchat.clients.human import FORMATTERS
from gossipchat.daemon.errors import NotInRoom
from gossipchat.rpc.bindings import BINDINGS
from gossipchat.rpc.dispatch import Dispatcher, is_valid_request
from gossipchat.rpc.table import METHODS

# Changing this list changes the contract of INTERFACE.md: do it on purpose.
PINNED = [
    "id", "status", "peers", "connect", "nick", "join", "leave", "rooms", "members",
    "send", "send_image", "history", "fetch", "subscribe", "unsubscribe", "block", "unblock",
    "blocked",
    "shutdown",
]


def test_method_names_are_pinned() -> None:
    assert list(METHODS) == PINNED


def test_p2pctl_reaches_every_method() -> None:
    reached = {method for command in p2pctl.COMMANDS.values()
               for method in (command.method, *command.variants)}
    # watch ends its subscription by disconnecting.
    assert reached | {"unsubscribe"} == set(METHODS)


def test_every_method_has_one_binding() -> None:
    assert list(BINDINGS) == list(METHODS)


@pytest.mark.parametrize("name", list(METHODS))
def test_every_table_parameter_is_a_keyword_of_its_binding(name: str) -> None:
    """The binding takes the call, then exactly the table's parameters by keyword: the
    required ones without a default, the optional ones defaulting to None (the value
    the dispatcher drops, so a binding never sees an explicit null)."""
    signature = inspect.signature(BINDINGS[name])
    call, *params = signature.parameters.values()
    assert call.name == "call"
    assert call.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params), params
    assert [p.name for p in params] == [p.name for p in METHODS[name].params]
    for param in METHODS[name].params:
        default = signature.parameters[param.name].default
        if param.required:
            assert default is inspect.Parameter.empty, param.name
        else:
            assert default is None, param.name


def test_every_method_has_a_formatter_for_people() -> None:
    assert set(FORMATTERS) == set(METHODS)


def test_every_cli_hint_is_on_some_command_and_required_parameters_are_offered() -> None:
    offered = {(method, p.name) for command in p2pctl.COMMANDS.values()
               for method in (command.method, *command.variants)
               for p in command.offered() if METHODS[method].param(p.name) is p}
    hinted = {(m.name, p.name) for m in METHODS.values() for p in m.params if p.cli}
    assert hinted - offered == set()
    for name, command in p2pctl.COMMANDS.items():
        if command.call is None and command.extra is None:
            missing = [p.name for p in METHODS[command.method].params
                       if p.required and p.cli is None]
            assert missing == [], f"p2pctl {name} cannot give {missing}"


@pytest.mark.parametrize(("line", "method", "params"), [
    ("id", "id", {}),
    ("connect /ip4/1.2.3.4/tcp/1/p2p/x", "connect", {"addr": "/ip4/1.2.3.4/tcp/1/p2p/x"}),
    ("nick Ada  of Lovelace", "nick", {"name": "Ada of Lovelace"}),
    ("join lobby", "join", {"room": "lobby"}),
    ("members lobby", "members", {"room": "lobby"}),
    ("send lobby hello   world", "send", {"room": "lobby", "text": "hello world"}),
    ("send --image pic.png lobby", "send_image", {"room": "lobby", "path": "@pic.png"}),
    ("send --image pic.png --keep-metadata lobby look here", "send_image",
     {"room": "lobby", "path": "@pic.png", "caption": "look here", "keep_metadata": True}),
    ("history lobby", "history", {"room": "lobby"}),
    ("history lobby --limit 5 --before m1", "history",
     {"room": "lobby", "limit": 5, "before": "m1"}),
    ("fetch bafy", "fetch", {"cid": "bafy", "dir": "@"}),
    ("fetch bafy -o out.png --timeout 2.5 --force", "fetch",
     {"cid": "bafy", "path": "@out.png", "timeout": 2.5, "force": True}),
    ("watch", "subscribe", {}),
    ("watch a b", "subscribe", {"rooms": ["a", "b"]}),
    ("block 12D3KooWx", "block", {"peer": "12D3KooWx"}),
    ("shutdown", "shutdown", {}),
])
def test_command_lines_become_calls(line: str, method: str, params: dict[str, Any]) -> None:
    """What each command sends, "@" standing for the working directory: a switch left
    off and an option not given are not sent at all."""
    args = p2pctl.build_parser().parse_args(shlex.split(line))
    expected = {k: os.path.abspath(v[1:] or ".") if isinstance(v, str) and v.startswith("@")
                else v for k, v in params.items()}
    assert p2pctl.COMMANDS[args.command].call_of(args) == (method, expected)


def test_send_without_text_or_image_is_a_usage_error() -> None:
    args = p2pctl.build_parser().parse_args(["send", "lobby"])
    with pytest.raises(p2pctl.UsageError, match="send needs TEXT"):
        p2pctl.COMMANDS["send"].call_of(args)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)
request_like = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.sampled_from(["2.0", "1.0", 2.0]) | json_values,
        "method": st.sampled_from(["id", "send"]) | json_values,
        "id": json_values,
        "params": json_values,
        "extra": json_values,
    },
)


def _schema_says(value: Any) -> bool:
    try:
        default_validator(value)
    except Exception:
        return False
    return True


@settings(max_examples=300)
@given(request_like | json_values)
def test_fast_validation_agrees_with_jsonrpcserver_schema(value: Any) -> None:
    if isinstance(value, list):
        return  # batches are split before validation
    assert is_valid_request(value) == _schema_says(value)


def _dispatcher(calls: list[tuple[str, dict[str, Any]]]) -> Dispatcher:
    def handler(name: str) -> Any:
        async def run(params: dict[str, Any], ctx: Any) -> Any:
            calls.append((name, params))
            if name == "send" and params["room"] == "nope":
                raise NotInRoom("not in room 'nope'")
            if name == "status":
                raise RuntimeError("boom")
            return {"ok": name}
        return run
    return Dispatcher({name: handler(name) for name in METHODS})


def test_dispatcher_binds_and_maps_errors() -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    d = _dispatcher(calls)

    async def main() -> None:
        ok = await d.dispatch_line(b'{"jsonrpc":"2.0","method":"send",'
                                   b'"params":{"room":"r","text":"t"},"id":1}')
        assert ok == {"jsonrpc": "2.0", "result": {"ok": "send"}, "id": 1}
        err = await d.dispatch_line(b'{"jsonrpc":"2.0","method":"send",'
                                    b'"params":["nope","t"],"id":2}')
        assert err["error"]["code"] == NotInRoom.code
        internal = await d.dispatch_line(b'{"jsonrpc":"2.0","method":"status","id":3}')
        assert internal["error"]["code"] == -32603
        optional = await d.dispatch_line(
            b'{"jsonrpc":"2.0","method":"history","params":{"room":"r","limit":null},"id":4}')
        assert "result" in optional
        too_many = await d.dispatch_line(b'{"jsonrpc":"2.0","method":"id","params":[1],"id":5}')
        assert too_many["error"]["code"] == -32602
        assert await d.dispatch_line(b'{"jsonrpc":"2.0","method":"id"}') is None

    trio.run(main)
    assert calls[0] == ("send", {"room": "r", "text": "t"})
    assert calls[1] == ("send", {"room": "nope", "text": "t"})
    assert ("history", {"room": "r"}) in calls


@pytest.mark.parametrize(("levels", "refused"), [(31, False), (32, False), (33, True)])
def test_nesting_is_refused_past_the_limit_exactly(levels: int, refused: bool) -> None:
    """The request object is one level, the params object another: `levels` in all.
    Brackets inside strings count for nothing, however many a line holds."""
    text = json.dumps("[{" * 40)
    inner = "[" * (levels - 2) + text + "]" * (levels - 2)
    line = ('{"jsonrpc":"2.0","method":"send","id":1,"params":{"room":"r","text":'
            + inner + "}}").encode()

    async def main() -> Any:
        return await _dispatcher([]).dispatch_line(line)

    answer = trio.run(main)
    if refused:
        assert "nested more than 32 levels" in answer["error"]["data"]
    else:  # past the nesting check: refused for the text's type, not its depth
        assert answer["error"]["code"] == -32602


def test_dispatcher_refuses_a_mismatched_handler_table() -> None:
    with pytest.raises(ValueError, match="missing"):
        Dispatcher({})


def test_answers_beyond_orjson_are_written_by_json() -> None:
    """orjson refuses integers beyond 64 bits and non-string keys; such an answer is
    still written whole (by json), not turned into an internal error. Either way the
    line is compact UTF-8 JSON."""
    big = 2**70

    async def answer(params: Any, ctx: Any) -> dict[Any, Any]:
        return {"count": big, 3: "int key", "text": "caf\u00e9"}

    async def plain(params: Any, ctx: Any) -> dict[str, Any]:
        return {"text": "caf\u00e9"}

    d = Dispatcher({name: plain if name == "status" else answer for name in METHODS})

    async def main() -> None:
        line = await d.answer_line(b'{"jsonrpc":"2.0","method":"id","id":%d}' % big)
        assert line is not None
        assert line.endswith(b"\n")
        assert json.loads(line) == {"jsonrpc": "2.0", "id": big, "result": {
            "count": big, "3": "int key", "text": "caf\u00e9"}}
        assert "caf\u00e9".encode() in line
        fast = await d.answer_line(b'{"jsonrpc":"2.0","method":"status","id":1}')
        assert fast == '{"jsonrpc":"2.0","result":{"text":"caf\u00e9"},"id":1}\n'.encode()

    trio.run(main)


def test_requests_are_read_as_json_reads_them() -> None:
    """The dispatcher reads requests through orjson where it gives json's value
    (rpc/jsonline.py): what orjson refuses is still answered as json would answer it,
    and a line that is not JSON gets json's own message."""
    calls: list[tuple[str, dict[str, Any]]] = []
    d = _dispatcher(calls)

    async def main() -> None:
        nan = await d.dispatch_line(b'{"jsonrpc":"2.0","method":"send",'
                                    b'"params":{"room":"r","text":NaN},"id":6}')
        # json reads NaN (orjson alone: a parse error), and a text may not be one.
        assert nan["error"]["code"] == -32602
        surrogate = await d.dispatch_line(b'{"jsonrpc":"2.0","method":"send",'
                                          b'"params":{"room":"r","text":"\\ud800"},"id":7}')
        assert surrogate == {"jsonrpc": "2.0", "result": {"ok": "send"}, "id": 7}
        broken = await d.dispatch_line(b'{"jsonrpc":"2.0","method":')
        assert broken["error"]["code"] == -32700
        with pytest.raises(json.JSONDecodeError) as expected:
            json.loads(b'{"jsonrpc":"2.0","method":')
        assert broken["error"]["data"] == str(expected.value)

    trio.run(main)
    assert calls == [("send", {"room": "r", "text": "\ud800"})]
