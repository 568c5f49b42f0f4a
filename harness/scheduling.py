"""How often a trio task goes through the scheduler while it awaits something."""

from __future__ import annotations

from collections.abc import Awaitable

import trio


class _StepCounter(trio.abc.Instrument):
    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


async def steps_of(awaitable: Awaitable[object]) -> int:
    """Await `awaitable` in this task; how many times the task was scheduled again
    meanwhile (0: it never yielded)."""
    counter = _StepCounter(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(counter)
    try:
        await awaitable
    finally:
        trio.lowlevel.remove_instrument(counter)
    return counter.steps
