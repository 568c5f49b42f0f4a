"""The deadline of a stop: from the signal (or `shutdown`, or a crash) to the process's end.

Rules:
- A stop cancels the root nursery; every clean-up that shields itself from that
  cancellation bounds itself (`move_on_after`), so a stop normally ends within about
  a second, whatever clients and peers hold open. tests/integration/test_stop_deadline.py
  checks it against hostile ones.
- `STOP_DEADLINE_S` is the promise on top of that, kept below systemd's
  `TimeoutStopSec` (deploy/gossipchatd.service): if a clean-up still runs when it
  passes (a bug: a library waiting without a bound), a watchdog thread logs where each
  trio task still waits, dumps the threads' stacks to stderr and ends the process with
  exit code 1, rather than let systemd kill it without a word. A thread, because a
  trio task cannot act while another holds the loop or a nursery waits on a shielded one.
- What the daemon owes the disk is committed before each call returns (the store
  commits every write), so ending here loses nothing that was acknowledged.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator

import trio

log = logging.getLogger("gossipchat")

STOP_DEADLINE_S = 10.0
EXIT_OVERRAN = 1


class StopWatch:
    """Ends the process if a stop takes longer than its deadline."""

    def __init__(self, deadline_s: float = STOP_DEADLINE_S) -> None:
        self.deadline_s = deadline_s
        self.started: float | None = None
        self._timer: threading.Timer | None = None
        self._root: trio.lowlevel.Task | None = None

    def start(self) -> None:
        """The stop begins now (idempotent: the first reason counts)."""
        if self._timer is not None:
            return
        self.started = time.monotonic()
        try:
            self._root = trio.lowlevel.current_root_task()
        except RuntimeError:
            self._root = None  # not in trio: nothing to report but the threads
        self._timer = threading.Timer(self.deadline_s, self._overran)
        self._timer.daemon = True
        self._timer.name = "stop-deadline"
        self._timer.start()

    def done(self) -> None:
        """The stop finished in time: disarm the watchdog."""
        if self._timer is not None:
            self._timer.cancel()

    def elapsed(self) -> float:
        """Seconds since the stop began (0 before)."""
        return 0.0 if self.started is None else time.monotonic() - self.started

    def _overran(self) -> None:
        log.error("the stop overran its %.0f s deadline; exiting now without finishing "
                  "(the store's committed writes are safe)", self.deadline_s)
        if self._root is not None:
            try:
                for line in _waiting_tasks(self._root):
                    log.error("still waiting: %s", line)
            except Exception:  # the loop may change the tree under us; the exit matters
                log.exception("could not list the waiting tasks")
        for handler in logging.getLogger().handlers:
            handler.flush()
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stdout.flush()
        os._exit(EXIT_OVERRAN)


def _waiting_tasks(task: trio.lowlevel.Task) -> Iterator[str]:
    """Each task without children, with the innermost place its coroutine waits at."""
    nurseries = list(task.child_nurseries)
    if not nurseries:
        # trio's own frames say only "waiting": the last few of ours say for what.
        frames = [f"{frame.f_code.co_filename}:{lineno} {frame.f_code.co_name}"
                  for frame, lineno in task.iter_await_frames()
                  if "/trio/" not in frame.f_code.co_filename]
        yield f"{task.name} at {' <- '.join(reversed(frames[-4:]))}"
    for nursery in nurseries:
        for child in list(nursery.child_tasks):
            yield from _waiting_tasks(child)
