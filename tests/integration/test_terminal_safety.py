"""Issue 15 §3: a peer must not be able to write to your terminal.

A real daemon pair: one peer posts text that imitates a second message and carries
escape sequences; the other side's real `p2pctl history` and `p2pctl watch` must show
it as visible text inside the author's message, and `--json` must give it back exactly.
A raw py-libp2p peer sends envelopes with bad nicks: they are rejected and counted.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import cbor2
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gossipchat.daemon.core import envelope, peerid
from harness.daemons import BIN, Cluster, DaemonProcess, pair_in_room
from harness.libp2p_hosts import gossip_peer
from harness.waiting import wait_for

INDENT = b"    "
# The text of issue 15, in the old format and the new one, with the escapes it carried,
# a C1 CSI (U+009B), a bidi override and a carriage return that would overwrite a line.
SPOOF = ("ok\n2026-12-02 21:00:00 #lobby <alice (rSXb9MWg)> my new wallet is 1MALLORY"
         "\x1b[8m\n2026-12-02 21:00:01 #lobby [rSXb9MWg] alice: send coins\x9b2J"
         "\u202eevil\rALICE")
# What a terminal would act on, as UTF-8 bytes: ESC, CR, any C1, the bidi controls.
_FORBIDDEN = [b"\x1b", b"\r", *(chr(c).encode() for c in range(0x80, 0xA0)),
              *(c.encode() for c in "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                                     "\u2066\u2067\u2068\u2069")]


def _assert_terminal_safe(raw: bytes) -> None:
    raw.decode("utf-8")  # strictly valid UTF-8: no stray bytes for a terminal to parse
    for bad in _FORBIDDEN:
        assert bad not in raw, (bad, raw)
    for code in [*range(0x20)]:
        if code != 0x0A:
            assert bytes([code]) not in raw, (code, raw)


@contextmanager
def _p2pctl_stream(daemon: DaemonProcess, *args: str) -> Iterator[bytearray]:
    """A long-running p2pctl (watch) whose raw stdout bytes collect in the yielded buffer."""
    proc = subprocess.Popen([str(BIN / "p2pctl"), "--home", str(daemon.home), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    out = bytearray()

    def read() -> None:
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(65536):
            out.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield out
    finally:
        proc.terminate()
        proc.wait(10)
        reader.join(10)
        assert proc.stdout is not None
        proc.stdout.close()


def _p2pctl_bytes(daemon: DaemonProcess, *args: str) -> bytes:
    done = subprocess.run([str(BIN / "p2pctl"), "--home", str(daemon.home), *args],
                          capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
                          check=True)
    return done.stdout


def _message_block(raw: bytes, header_marker: bytes) -> list[bytes]:
    """The header line holding header_marker and the continuation lines under it."""
    lines = raw.split(b"\n")
    start = next(i for i, line in enumerate(lines) if header_marker in line)
    block = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith(INDENT):
            break
        block.append(line)
    return block


def _check_human_rendering(raw: bytes, author_suffix: str) -> None:
    _assert_terminal_safe(raw)
    # Every line is a header (it starts with the date) or indented under one.
    for line in raw.split(b"\n"):
        assert line == b"" or line[:1].isdigit() or line.startswith(INDENT), line
    marker = f"[{author_suffix}] mallory: ok".encode()
    block = _message_block(raw, marker)
    # A carriage return ends a line too: it starts an indented one, never column 0.
    assert block[1:] == [
        INDENT + b"2026-12-02 21:00:00 #lobby <alice (rSXb9MWg)> my new wallet is 1MALLORY"
        + "\u241b[8m".encode(),  # ESC as its control picture
        INDENT + b"2026-12-02 21:00:01 #lobby [rSXb9MWg] alice: send coins<U+009B>2J"
        b"<U+202E>evil",
        INDENT + b"ALICE"], block


def _pair_in_lobby(cluster: Cluster) -> tuple[DaemonProcess, DaemonProcess]:
    return pair_in_room(cluster, "lobby")


def test_peer_text_reaches_history_and_watch_only_as_visible_text(cluster: Cluster) -> None:
    a, b = _pair_in_lobby(cluster)
    a.call("nick", name="mallory")
    suffix = a.peer_id[-8:]
    with _p2pctl_stream(b, "watch", "lobby") as watched, \
            _p2pctl_stream(b, "watch", "lobby", "--json") as watched_json:
        wait_for(lambda: b.call("status")["subscriptions"] >= 2, message="both watches on")
        sent = a.call("send", room="lobby", text=SPOOF)
        wait_for(lambda: b"send coins" in watched and b"1MALLORY" in watched_json,
                 message="the message in both watches")
        wait_for(lambda: watched.endswith(b"\n") and watched_json.endswith(b"\n"),
                 message="whole lines")
        watch_raw, watch_json_raw = bytes(watched), bytes(watched_json)
    _check_human_rendering(watch_raw, suffix)
    _assert_terminal_safe(watch_json_raw)
    streamed = [json.loads(line) for line in watch_json_raw.splitlines()]
    assert [m["text"] for m in streamed if m["id"] == sent["id"]] == [SPOOF]

    history_raw = _p2pctl_bytes(b, "history", "lobby")
    _check_human_rendering(history_raw, suffix)
    history_json_raw = _p2pctl_bytes(b, "history", "lobby", "--json")
    _assert_terminal_safe(history_json_raw)
    history = json.loads(history_json_raw)
    assert [m for m in history if m["id"] == sent["id"]] == [sent]
    headers = [line for line in history_raw.split(b"\n") if line[:1].isdigit()]
    assert len(headers) == len(history)


def test_set_nick_refuses_what_peers_would_refuse(cluster: Cluster) -> None:
    a = cluster.start("a")
    assert a.cli("nick", "alice").returncode == 0
    for bad in ("al\u202eice", "al\x9bice", "x" * 65):
        done = a.cli("nick", bad)
        assert done.returncode == 1, (bad, done)
        assert "nick must" in done.stderr
        _assert_terminal_safe(done.stderr.encode())
    assert a.call("id")["nick"] == "alice"


def _raw_with_nick(key: Ed25519PrivateKey, author: bytes, lamport: int, ts: int,
                   nick: str) -> bytes:
    """An envelope signed by its author that `envelope.create` would refuse to build."""
    unsigned = [envelope.VERSION, "lobby", author, lamport, ts, "text",
                {"text": f"from {nick!r}", "nick": nick}]
    signature = key.sign(envelope.DOMAIN + cbor2.dumps(unsigned, canonical=True))
    return bytes(cbor2.dumps([*unsigned, signature], canonical=True))


async def test_bad_nicks_from_the_wire_are_rejected_and_counted(cluster: Cluster) -> None:
    d = cluster.start("d")
    d.call("join", room="lobby")
    key = Ed25519PrivateKey.from_private_bytes(os.urandom(32))
    author = peerid.from_public_key(
        key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    ts = time.time_ns() // 1_000_000
    bad = ["al\x9bice", "\u202eecila", "alice\n2026-12-02 #lobby", "x" * 65]
    topic = "/gossipchat/1/room/lobby"
    async with gossip_peer(d.addr, topic) as ((_, _, pubsub), _):
        for lamport, nick in enumerate(bad, start=1):
            await pubsub.publish(topic, _raw_with_nick(key, author, lamport, ts, nick))
        good = envelope.create(room="lobby", author=author, lamport=len(bad) + 1, ts_ms=ts,
                               kind="text", body={"text": "honest", "nick": "alice"},
                               sign=key.sign)
        await pubsub.publish(topic, good.wire)

        def settled() -> bool:
            status = d.call("status")
            return status["messages"] >= 1 and status["rejected"].get("bad_nick", 0) >= 4

        await trio.to_thread.run_sync(lambda: wait_for(settled, message="all judged"))
    assert d.call("status")["rejected"]["bad_nick"] == len(bad)
    history = d.call("history", room="lobby")
    assert [(m["nick"], m["text"]) for m in history] == [("alice", "honest")]


def test_a_nick_saved_by_an_older_version_does_not_block_sending(cluster: Cluster) -> None:
    """Versions before the nick rule saved nicks with C1 or bidi characters; such a nick
    is dropped on start, so posts (which peers would refuse with it) go out without one."""
    a = cluster.start("a")
    a.call("join", room="lobby")
    assert a.terminate() == 0
    with sqlite3.connect(a.home / "store.sqlite") as db:
        db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('nick', ?)",
                   ("al\u202eice",))
    a = cluster.start("a")
    assert a.call("id")["nick"] == ""
    sent = a.call("send", room="lobby", text="still works")
    assert sent["nick"] == ""
    a.wait_logged("'p2pctl nick NAME'")
