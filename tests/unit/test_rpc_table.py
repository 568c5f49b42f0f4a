"""The method table, the dispatcher's validation and p2pctl's coverage of it."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonrpcserver.main import default_validator

from gossipchat.clients import p2pctl
from gossipchat.daemon.errors import NotInRoom
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
    reached = {method for method, _ in p2pctl.COMMANDS.values()}
    # send --image calls send_image; watch ends its subscription by disconnecting.
    assert reached | {"send_image", "unsubscribe"} == set(METHODS)


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


def test_dispatcher_refuses_a_mismatched_handler_table() -> None:
    with pytest.raises(ValueError, match="missing"):
        Dispatcher({})
