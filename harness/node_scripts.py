"""A node.js interop script of tests/interop, driven one command at a time.

The scripts (kad_peer.mjs, relay_peer.mjs, ...) print one JSON object per line: first
a hello with `multiaddr` and `peer`, then one answer per command read from stdin.
`prefix_argv` runs the script under another command, e.g. inside a test network's
namespace (`Network.exec_prefix(host)`).
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class NodeScript:
    """One running script; `command` sends a line and returns its JSON answer."""

    def __init__(self, script: Path, *args: str, prefix_argv: Sequence[str] = ()) -> None:
        self.name = script.name
        self.proc = subprocess.Popen([*prefix_argv, "node", str(script), *args],
                                     cwd=script.parent,
                                     text=True, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        hello = self._next(60)
        self.addr, self.peer_id = hello["multiaddr"], hello["peer"]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)

    def _next(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.name} did not answer") from None
        result: dict[str, Any] = json.loads(line)
        assert "error" not in result, result
        return result

    def command(self, *words: str, timeout: float = 40) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(" ".join(words) + "\n")
        self.proc.stdin.flush()
        return self._next(timeout)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(10)  # it ends at the exited process's EOF
        if self.proc.stdout is not None:
            self.proc.stdout.close()
