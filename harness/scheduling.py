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


class TaskSpawns(trio.abc.Instrument):
    """The names of the trio tasks spawned while it is installed:
    `with TaskSpawns() as spawns: ...`, then `spawns.named(...)`."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.names.append(task.name)

    def named(self, suffix: str) -> int:
        """How many of the tasks spawned have a name ending with `suffix`."""
        return sum(1 for name in self.names if name.endswith(suffix))

    def __enter__(self) -> TaskSpawns:
        trio.lowlevel.add_instrument(self)
        return self

    def __exit__(self, *exc: object) -> None:
        trio.lowlevel.remove_instrument(self)
