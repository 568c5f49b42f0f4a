"""Random JSON-RPC lines against a real daemon: every line gets a well-formed answer (or
none, for a notification), the connection stays usable, and memory stays bounded.

The 10,000-line run is seeded, so a failure names its line; hypothesis adds a property
over generated request shapes, with the example count of the active profile
(tests/fuzz/conftest.py: 150 in `make test`, 4,500 in `make fuzz`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossipchat.rpc.client import Connection
from gossipchat.rpc.table import METHODS
from harness.daemons import Cluster, DaemonProcess
from tests.fuzz.helpers import PROFILE, fuzz_settings

SEED = 20261202
# The figure in `make test`; `make fuzz` sends ten times as many.
LINES = 100_000 if PROFILE == "fuzz" else 10_000
# Methods a random line may call. Left out: shutdown (it ends the run), connect (a
# random multiaddr could name a host outside this machine), fetch (a random CID
# waits out its timeout).
FUZZ_METHODS = sorted(set(METHODS) - {"shutdown", "connect", "fetch"})
ROOMS = ["r", "lobby", "x" * 64, "R", "", "../etc", "a b"]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _json_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 5 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**63, -(2**70), rng.randrange(-1000, 100_000)])
    if kind == 3:
        return rng.choice([0.5, -1e308, 1e-300, float(rng.randrange(100))])
    if kind == 4:
        return rng.choice(ROOMS)
    if kind == 5:
        alphabet = "abc\n\t\x00\x1b\u009b\u202e\U0001f600\"\\/"
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
    if kind == 6:
        return [_json_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    if kind == 7:
        return {rng.choice(["room", "text", "limit", "before", "rooms", "peer", "name",
                            "subscription", "data", "caption", "x"]): _json_value(rng, depth + 1)
                for _ in range(rng.randrange(0, 5))}
    return rng.choice(["", "00" * 32, "zz", "12D3KooWxyz"])


def _request(rng: random.Random) -> dict[str, Any]:
    method = rng.choice([*FUZZ_METHODS, "nope", ""])
    request: dict[str, Any] = {"jsonrpc": rng.choice(["2.0", "2.0", "2.0", "1.0", 2])}
    if rng.random() < 0.95:
        request["method"] = method
    if rng.random() < 0.8:
        request["id"] = rng.choice([rng.randrange(10**6), "s", None, 1.5, [], {}])
    spec = METHODS.get(method)
    if spec is not None and rng.random() < 0.9:
        params = {p.name: _json_value(rng) for p in spec.params if rng.random() < 0.8}
        if method == "send_image":
            params.pop("path", None)  # never make the daemon read a random path
        if method in ("join", "send", "history", "members", "leave") and rng.random() < 0.5:
            params["room"] = "r"
        request["params"] = params if rng.random() < 0.9 else list(params.values())
    elif rng.random() < 0.3:
        request["params"] = _json_value(rng)
    if rng.random() < 0.05:
        request[rng.choice(["extra", "Method"])] = 1
    return request


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        op = rng.randrange(3)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 1:
            buf[pos:pos] = bytes([rng.randrange(256)])
        elif buf:
            del buf[min(pos, len(buf) - 1)]
    return bytes(buf)


def random_lines(seed: int, count: int) -> Iterator[bytes]:
    """Seeded lines: random bytes, requests, mutations, deep nests, batches, big ones."""
    rng = random.Random(seed)
    for _ in range(count):
        kind = rng.randrange(10)
        if kind == 0:
            line = rng.randbytes(rng.randrange(1, 400))
        elif kind in (1, 2, 3):
            line = json.dumps(_request(rng)).encode()
        elif kind in (4, 5):
            line = _mutate(rng, json.dumps(_request(rng)).encode())
        elif kind == 6:
            depth = rng.choice([31, 33, 200, 5000, 100_000])
            opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
            line = opener * depth + b"0" + closer * depth
        elif kind == 7:
            line = json.dumps([_request(rng) for _ in range(rng.randrange(1, 60))]).encode()
        elif kind == 8:
            line = json.dumps({"jsonrpc": "2.0", "method": "send", "id": 1, "params": {
                "room": "r", "text": "w" * rng.randrange(1, 70_000)}}).encode()
        else:
            line = rng.choice([b"[]", b"{}", b"null", b"[1]", b"\"x\"", b"1e999", b"[[]]",
                               b"{\"jsonrpc\":\"2.0\",\"method\":\"id\"}", b"\xff\xfe"])
        yield line.replace(b"\n", b" ")


def _check_answer(value: Any) -> None:
    """A response, a notification, or a batch of responses: nothing else."""
    items = value if isinstance(value, list) else [value]
    assert items, "an empty batch answer"
    for item in items:
        assert isinstance(item, dict), item
        assert item.get("jsonrpc") == "2.0", item
        if "method" in item:
            assert "id" not in item, item
            assert isinstance(item.get("params"), dict), item
            continue
        assert "id" in item, item
        assert ("result" in item) != ("error" in item), item
        if "error" in item:
            error = item["error"]
            assert isinstance(error["code"], int), item
            assert isinstance(error["message"], str), item
            assert error["code"] != -32603, f"internal error: {item}"


def _answer(conn: Connection, line: bytes, sentinel: int) -> None:
    """Send line and a sentinel `id` call; check whatever arrives before its answer."""
    conn.send_raw(line)
    conn.send_raw(json.dumps({"jsonrpc": "2.0", "method": "id",
                              "id": f"sentinel-{sentinel}"}).encode())
    while True:
        value = conn.read_value()
        if isinstance(value, dict) and value.get("id") == f"sentinel-{sentinel}":
            assert "result" in value, value
            return
        _check_answer(value)


@pytest.fixture
def daemon(cluster: Cluster) -> DaemonProcess:
    d = cluster.start("fuzz")
    with d.client() as c:
        c.join("r")
    return d


def test_ten_thousand_random_lines(daemon: DaemonProcess) -> None:
    assert daemon.proc is not None
    lines = random_lines(SEED, LINES)
    with Connection(daemon.rpc_path, timeout=60) as conn:
        # Warm up first. py-libp2p's pubsub keeps its last 1,000 published messages in
        # a validation cache: fill it with the largest texts, so that the growth
        # measured is ours, not that bounded cache filling up.
        for n in range(1000):
            conn.call("send", {"room": "r", "text": f"{n} " + "w" * 65_000})
        for n, line in zip(range(1000), lines, strict=False):
            _answer(conn, line, n)
        start_kib = _rss_kib(daemon.proc.pid)
        for n, line in enumerate(lines, start=1000):
            try:
                _answer(conn, line, n)
            except Exception as exc:
                raise AssertionError(f"line {n} of seed {SEED}: {line[:300]!r}") from exc
        end_kib = _rss_kib(daemon.proc.pid)
        status = conn.call("status")
    assert daemon.running
    with daemon.client() as c:
        assert c.id()["peer_id"] == daemon.peer_id
    assert status["faults"] == {}
    print(f"RSS after warm-up {start_kib} KiB, after {LINES} lines {end_kib} KiB")
    assert end_kib <= start_kib * 1.2, (start_kib, end_kib)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=30) | st.sampled_from(ROOMS),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["room", "text", "limit", "before", "rooms", "x"]),
                      children, max_size=4),
    max_leaves=20,
)
_requests = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0"), "method": st.sampled_from(FUZZ_METHODS),
     "id": st.integers(0, 10**6)},
    optional={"params": st.dictionaries(
        st.sampled_from(["room", "text", "limit", "before", "rooms", "name", "peer",
                         "subscription", "caption", "data"]), _json, max_size=4)},
)


def test_generated_requests_get_well_formed_answers(daemon: DaemonProcess) -> None:
    counter = iter(range(10**9))
    with Connection(daemon.rpc_path, timeout=60) as conn:

        @fuzz_settings()
        @given(st.one_of(_requests, st.lists(_requests, min_size=1, max_size=8),
                         st.binary(max_size=200)))
        def answered(value: Any) -> None:
            line = value if isinstance(value, bytes) else json.dumps(value).encode()
            _answer(conn, line.replace(b"\n", b" "), next(counter))

        answered()
        assert conn.call("status")["faults"] == {}
