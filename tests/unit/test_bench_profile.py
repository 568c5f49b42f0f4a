"""bench/profile.py's reading of py-spy's collapsed stacks (pure code, no py-spy)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.profile import Profile, layer_of


@pytest.mark.parametrize(("frame", "layer"), [
    ("crypto_sign_open (nacl/bindings/crypto_sign.py)", "Ed25519 signatures"),
    ("check (daemon/core/gossipsub/signing.py)", "Ed25519 signatures"),
    ("CryptographyCipher.decrypt (noise/backends/default/ciphers.py)",
     "Noise (ChaCha20-Poly1305)"),
    ("_SocketType._nonblocking_helper (trio/_socket.py)", "socket syscalls"),
    ("WorkerThread._work (trio/_core/_thread_cache.py)", "worker threads (disk, thumbnails)"),
    ("unrolled_run (trio/_core/_run.py)", "trio scheduling"),
    ("__init__ (<attrs generated methods outcome._impl.Value>)", "trio scheduling"),
    ("Yamux._dispatch (daemon/adapters/yamux.py)", "yamux and streams"),
    ("Router._message (daemon/core/gossipsub/router.py)", "gossipsub router"),
    ("decode (daemon/core/envelope.py)", "envelopes, CBOR, varints"),
    ("Store.add_messages (daemon/adapters/store.py)", "store (SQLite, block files)"),
    ("ItemLog.add (daemon/core/reconcile.py)", "history sync"),
    ("decode (daemon/core/presence.py)", "presence, DHT, discovery"),
    ("JSONEncoder.iterencode (json/encoder.py)", "RPC and JSON"),
    ("UserDict.__contains__ (collections/__init__.py)", "other"),
])
def test_frames_fall_in_their_layer(frame: str, layer: str) -> None:
    assert layer_of(frame) == layer


def test_collapsed_stacks_are_summed_and_idle_waits_left_out(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "<module> (gossipchatd:6);run (daemon/main.py:120);"
        "check (daemon/core/gossipsub/signing.py:40);"
        "crypto_sign_open (nacl/bindings/crypto_sign.py:103) 30\n"
        "<module> (gossipchatd:6);run (daemon/main.py:120);"
        "Router._message (daemon/core/gossipsub/router.py:300) 10\n"
        "<module> (gossipchatd:6);run (daemon/main.py:120);"
        "EpollIOManager.get_events (trio/_core/_io_epoll.py:240);epoll (<native>) 500\n"
        "not a sample line\n")
    prof = Profile.read("t", raw, wall_s=1.0)
    assert prof.busy == 40
    assert prof.layers == {"Ed25519 signatures": 30, "gossipsub router": 10}
    assert prof.incl_counts["run (daemon/main.py)"] == 40
    text = prof.markdown()
    assert "| Ed25519 signatures | 75.0% |" in text
    assert "- 75.0% `crypto_sign_open (nacl/bindings/crypto_sign.py)`" in text
