"""Starting, stopping, locking and the p2pctl exit codes, on real processes."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys

from harness.daemons import BIN, Cluster, run_p2pctl
from harness.waiting import wait_for


def test_ready_line_and_modes(cluster: Cluster) -> None:
    a = cluster.start("a")
    assert a.ready_line.startswith(f"gossipchatd ready peer={a.peer_id} rpc={a.rpc_path} ")
    assert a.addr.startswith("/ip4/127.0.0.1/tcp/")
    assert a.addr.endswith(f"/p2p/{a.peer_id}")
    assert stat.S_IMODE(os.stat(a.home).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(a.rpc_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(a.home / "identity.key").st_mode) == 0o600
    print(f"time to ready: {a.ready_seconds:.2f} s")


def test_sigterm_and_shutdown_stop_cleanly(cluster: Cluster) -> None:
    a = cluster.start("a")
    assert a.terminate() == 0
    assert not a.rpc_path.exists()
    b = cluster.start("b")
    out = b.cli("shutdown")
    assert out.returncode == 0
    assert b.wait_exit() == 0
    assert not b.rpc_path.exists()


def test_second_daemon_on_same_home_is_refused(cluster: Cluster) -> None:
    a = cluster.start("a")
    second = subprocess.run(
        [str(BIN / "gossipchatd"), "--home", str(a.home), "--listen", "/ip4/127.0.0.1/tcp/0",
         "--no-mdns"],
        capture_output=True, text=True, timeout=30,
    )
    assert second.returncode == 1
    assert "already running" in second.stderr
    assert str(a.home) in second.stderr
    # The first one is unharmed.
    assert a.call("id")["peer_id"] == a.peer_id


def test_stale_socket_is_replaced(cluster: Cluster) -> None:
    home = cluster.home("a")
    home.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(home / "rpc.sock"))
    stale.close()  # the file stays, nothing listens: what a kill -9 leaves
    a = cluster.start("a")
    assert a.call("id")["peer_id"] == a.peer_id


def test_socket_held_by_another_process_is_not_stolen(cluster: Cluster) -> None:
    other = cluster.root / "busy.sock"
    holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    holder.bind(str(other))
    holder.listen(1)
    try:
        done = subprocess.run(
            [str(BIN / "gossipchatd"), "--home", str(cluster.home("x")),
             "--listen", "/ip4/127.0.0.1/tcp/0", "--rpc", str(other), "--no-mdns"],
            capture_output=True, text=True, timeout=30,
        )
        assert done.returncode == 1
        assert "another daemon answers" in done.stderr
    finally:
        holder.close()


def test_p2pctl_without_daemon_exits_3_with_hint(tmp_path: object) -> None:
    out = run_p2pctl("--rpc", "/tmp/gc-nonexistent/rpc.sock", "status")
    assert out.returncode == 3
    assert "gossipchatd" in out.stderr
    assert "start one" in out.stderr


def test_p2pctl_usage_error_exits_2() -> None:
    assert run_p2pctl("no-such-command").returncode == 2
    assert run_p2pctl("send").returncode == 2
    for bad in ("0", "-1", "nan", "inf", "soon"):
        # `--timeout -1` ended in socket.settimeout's traceback (exit 1).
        out = run_p2pctl("--rpc", "/tmp/gc-nonexistent/rpc.sock", "--timeout", bad, "status")
        assert out.returncode == 2, out.stderr
        assert "--timeout" in out.stderr
        assert "Traceback" not in out.stderr


def test_p2pctl_finds_socket_from_environment(cluster: Cluster) -> None:
    a = cluster.start("a")
    by_rpc = run_p2pctl("id", "--json", env={"GOSSIPCHAT_RPC": str(a.rpc_path)})
    assert a.peer_id in by_rpc.stdout
    by_home = run_p2pctl("id", env={"GOSSIPCHAT_HOME": str(a.home), "GOSSIPCHAT_RPC": ""})
    assert a.peer_id in by_home.stdout


def test_p2pctl_stays_thin() -> None:
    """p2pctl must not pull in trio, libp2p or the daemon (its start time, measured in
    bench/rpc_calls.py, depends on it); checked on the modules it loads, not on a clock.
    Nor `dataclasses`: it brings in `inspect`, `ast` and `dis`, about 5 ms of every
    command's start (rpc/table.py)."""
    probe = (
        "import sys; sys.argv = ['p2pctl', '--help']\n"
        "from gossipchat.clients import p2pctl\n"
        "try:\n    p2pctl.run()\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('trio', 'libp2p', 'rich', 'PIL', 'cbor2', 'prompt_toolkit', "
        "'dataclasses', 'inspect') "
        "or m.startswith(('gossipchat.daemon', 'gossipchat.clients.chat')))\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    assert "p2pctl" in done.stdout  # the help really ran
    assert done.stdout.splitlines()[-1] == "HEAVY="


def test_config_file_and_bad_config(cluster: Cluster) -> None:
    home = cluster.home("cfg")
    home.mkdir(mode=0o700)
    (home / "config.toml").write_text('nick = "from-config"\nlog_level = "warning"\n')
    a = cluster.start("cfg")
    assert a.call("id")["nick"] == "from-config"
    bad = cluster.root / "bad.toml"
    bad.write_text("no_such_key = 1\n")
    done = subprocess.run(
        [str(BIN / "gossipchatd"), "--home", str(cluster.home("bad")), "--config", str(bad)],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 2
    assert "unknown key 'no_such_key'" in done.stderr


def test_daemon_dies_mid_watch_is_reported(cluster: Cluster) -> None:
    a = cluster.start("a")
    a.call("join", room="w")
    with subprocess.Popen([str(BIN / "p2pctl"), "--home", str(a.home), "watch"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as watch:
        wait_for(lambda: a.call("status")["subscriptions"] == 1, message="watch subscribed")
        a.kill()
        assert watch.wait(20) == 3
        assert watch.stderr is not None
        assert "lost the daemon" in watch.stderr.read()
