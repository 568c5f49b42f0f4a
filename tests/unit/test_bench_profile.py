"""bench/profile.py's reading of py-spy's collapsed stacks and of perf's report by
shared object (pure code, no py-spy, no perf)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.profile import CpuSplit, Profile, layer_of, library_of


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
        # a cached worker thread waiting for a job, and one running a job
        "_bootstrap (threading.py:1002);WorkerThread._work (trio/_core/_thread_cache.py:211)"
        " 700\n"
        "_bootstrap (threading.py:1002);WorkerThread._work (trio/_core/_thread_cache.py:213);"
        "WorkerThread._handle_job (trio/_core/_thread_cache.py:185);"
        "_write_file (daemon/adapters/blockstore.py:561) 5\n"
        "not a sample line\n")
    prof = Profile.read("t", raw, wall_s=1.0)
    assert prof.busy == 45
    assert prof.layers == {"Ed25519 signatures": 30, "gossipsub router": 10,
                           "store (SQLite, block files)": 5}
    assert prof.incl_counts["run (daemon/main.py)"] == 40
    text = prof.markdown()
    assert "| Ed25519 signatures | 66.7% |" in text
    assert "- 66.7% `crypto_sign_open (nacl/bindings/crypto_sign.py)`" in text


@pytest.mark.parametrize(("dso", "library"), [
    ("libpython3.11.so.1.0", "Python interpreter (our code, pure-Python libraries)"),
    ("_sodium.abi3.so", "libsodium (Ed25519)"),
    ("[kernel.kallsyms]", "kernel (syscalls, loopback TCP, scheduling, page faults)"),
    ("libc.so.6", "libc (memcpy, malloc)"),
    ("libsqlite3.so.0.8.6", "SQLite"),
    ("_rust.abi3.so", "cryptography (Noise's ChaCha20-Poly1305)"),
    ("libcrypto.so.3", "OpenSSL (hashlib's sha-256)"),
    ("_cbor2.cpython-311-x86_64-linux-gnu.so", "cbor2"),
    ("_imaging.cpython-311-x86_64-linux-gnu.so", "Pillow, zlib (posting images)"),
    ("libz.so.1.2.13", "Pillow, zlib (posting images)"),
    ("_struct.cpython-311-x86_64-linux-gnu.so", "other"),
])
def test_shared_objects_fall_in_their_library(dso: str, library: str) -> None:
    assert library_of(dso) == library


def test_perfs_report_is_summed_by_library() -> None:
    report = (
        "    58.57%          9003  libpython3.11.so.1.0                         \n"
        "    20.03%          3079  _sodium.abi3.so                              \n"
        "     8.72%          1340  [kernel.kallsyms]                            \n"
        "     0.05%             8  [vdso]                                       \n"
        "     0.12%            19  _struct.cpython-311-x86_64-linux-gnu.so      \n"
        "# a comment line\n")
    split = CpuSplit.parse("burst", report, wall_s=4.0)
    assert split.samples == 9003 + 3079 + 1340 + 8 + 19
    kernel = "kernel (syscalls, loopback TCP, scheduling, page faults)"
    assert split.libraries[kernel] == 1348
    assert split.libraries["other"] == 19
    text = split.markdown()
    assert "13449 samples at 1000 Hz: 13.4 s of CPU in 4 s" in text
    assert "| libsodium (Ed25519) | 22.9% |" in text
    assert "Other: `_struct.cpython-311-x86_64-linux-gnu.so` 0.1%" in text
