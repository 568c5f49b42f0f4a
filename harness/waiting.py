"""Waiting on a condition with a deadline: the one way tests and benchmarks wait."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not hold before its deadline.

    An AssertionError, so that pytest reports it as a failed expectation; the
    benchmarks catch it and report the figure as missed.
    """


def wait_for(
    condition: Callable[[], T], *, timeout: float = 20.0, interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll condition until it returns a truthy value; WaitTimeout after timeout seconds.

    An exception from the condition counts as "not yet" (a daemon may refuse calls
    while it settles); the last one is named in the timeout's message.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # the condition may fail while a daemon settles
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise WaitTimeout(f"timed out after {timeout} s waiting for {message}{detail}")
        time.sleep(interval)
