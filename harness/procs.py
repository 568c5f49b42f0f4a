"""Every child process the harness and the benchmarks start, so that none outlives a run.

`harness.daemons` and the benchmarks register each `Popen` here. Normal exits stop
processes in `finally` blocks; this registry is the last line: `install()` (the
benchmark driver calls it) adds an `atexit` hook and a SIGTERM handler that kill
whatever is still registered, so an error or an interrupt never leaves daemons behind.
"""

from __future__ import annotations

import atexit
import signal
import subprocess
import threading
from types import FrameType

_lock = threading.Lock()
_live: set[subprocess.Popen[str]] = set()


def register(proc: subprocess.Popen[str]) -> None:
    """Track a child process until `forget` or exit."""
    with _lock:
        _live.add(proc)


def forget(proc: subprocess.Popen[str]) -> None:
    """Stop tracking a process that has exited."""
    with _lock:
        _live.discard(proc)


def kill_all() -> None:
    """SIGKILL every tracked process that is still running, and reap it."""
    with _lock:
        procs = list(_live)
        _live.clear()
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into SystemExit so that `finally` blocks run, then atexit.
    raise SystemExit(128 + signum)


def install() -> None:
    """Kill tracked children at interpreter exit and on SIGTERM."""
    atexit.register(kill_all)
    signal.signal(signal.SIGTERM, _on_sigterm)
