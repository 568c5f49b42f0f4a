"""The daemon's one timer task (daemon/adapters/timers.py), on trio's mock clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import trio
import trio.testing

from gossipchat.daemon.adapters import timers


def run(main: Callable[[], Awaitable[None]],
        instruments: Sequence[trio.abc.Instrument] = ()) -> None:
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0),
             instruments=instruments)


def run_with_timers(body: Callable[[trio.Nursery], Awaitable[None]], *,
                    timer_name: str = "timer",
                    instruments: Sequence[trio.abc.Instrument] = ()) -> None:
    """Run `body` on the mock clock beside a running timer task, then stop both."""
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(timers.run_timers, name=timer_name)
            await body(nursery)
            nursery.cancel_scope.cancel()

    run(main, instruments)


class StepCounter(trio.abc.Instrument):
    """Task steps, by task name."""

    def __init__(self) -> None:
        self.steps: dict[str, int] = {}

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task.name] = self.steps.get(task.name, 0) + 1


def test_sleepers_wake_at_their_deadlines_in_order() -> None:
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, deadline: float) -> None:
        await timers.sleep_until(deadline)
        woke.append((name, trio.current_time()))

    async def body(nursery: trio.Nursery) -> None:
        start = trio.current_time()
        for name, after in (("c", 3.0), ("a", 1.0), ("b", 2.0), ("a2", 1.0)):
            nursery.start_soon(sleeper, name, start + after)
        await trio.sleep(5)
        assert [n for n, _ in woke] == ["a", "a2", "b", "c"] or \
            [n for n, _ in woke] == ["a2", "a", "b", "c"]
        for name, at in woke:
            assert at - start == {"a": 1.0, "a2": 1.0, "b": 2.0, "c": 3.0}[name]

    run_with_timers(body)


def test_an_earlier_deadline_rearms_the_timer() -> None:
    async def body(nursery: trio.Nursery) -> None:
        start = trio.current_time()
        late_done = trio.Event()

        async def late() -> None:
            await timers.sleep_until(start + 100)
            late_done.set()

        nursery.start_soon(late)
        await trio.sleep(0.1)  # the timer now sleeps until start + 100
        await timers.sleep_until(start + 1)
        assert trio.current_time() - start == 1.0
        assert not late_done.is_set()
        await late_done.wait()
        assert trio.current_time() - start == 100.0

    run_with_timers(body)


def test_wait_returns_on_the_event_or_at_the_deadline() -> None:
    async def body(nursery: trio.Nursery) -> None:
        start = trio.current_time()
        event = trio.Event()
        await timers.wait(event, start + 2)
        assert trio.current_time() - start == 2.0  # nobody set it: the deadline

        event = trio.Event()
        nursery.start_soon(_set_after, event, 0.5)
        await timers.wait(event, trio.current_time() + 10)
        assert trio.current_time() - start == 2.5
        # The abandoned deadline fires into nothing: a later wait is not cut short.
        event = trio.Event()
        await timers.wait(event, trio.current_time() + 20)
        assert trio.current_time() - start == 22.5

    run_with_timers(body)


async def _set_after(event: trio.Event, delay: float) -> None:
    await trio.sleep(delay)
    event.set()


def test_a_cancelled_sleeper_leaves_and_is_never_woken_again() -> None:
    async def body(nursery: trio.Nursery) -> None:
        start = trio.current_time()
        with trio.move_on_after(0.5) as scope:
            await timers.sleep_until(start + 5)
        assert scope.cancelled_caught
        assert trio.current_time() - start == 0.5
        # Its deadline passes while this task sleeps elsewhere: rescheduling it
        # then would be an error trio raises (a task woken twice).
        await trio.sleep(10)
        await timers.sleep_until(trio.current_time() + 1)
        assert trio.current_time() - start == 11.5

    run_with_timers(body)


def test_past_deadlines_and_no_timer_task_fall_back_to_trio() -> None:
    async def main() -> None:
        start = trio.current_time()
        await timers.sleep_until(start - 1)  # a checkpoint, no wait
        assert trio.current_time() == start
        await timers.sleep_until(start + 3)  # no timer task: trio's own sleep
        assert trio.current_time() - start == 3.0
        event = trio.Event()
        await timers.wait(event, start + 4)
        assert trio.current_time() - start == 4.0
        assert not event.is_set()  # trio's timeout does not touch the event

    run(main)


def test_parked_tasks_wake_when_the_timer_task_ends_and_sleep_on() -> None:
    async def main() -> None:
        async with trio.open_nursery() as outer:
            start = trio.current_time()
            woke: list[float] = []

            async def loop() -> None:
                for _ in range(3):
                    await timers.sleep_until(trio.current_time() + 10)
                    woke.append(trio.current_time() - start)

            async with trio.open_nursery() as timer_nursery:
                await timer_nursery.start(timers.run_timers)
                outer.start_soon(loop)
                await trio.sleep(1)
                timer_nursery.cancel_scope.cancel()
            # The loop was parked on the timer: woken early at 1 s, it sleeps on
            # trio's own timeouts from then on.
            await trio.sleep(30)
            assert woke == [1.0, 11.0, 21.0]

    run(main)


def test_a_second_timer_task_in_the_run_leaves_the_work_to_the_first() -> None:
    instrument = StepCounter()

    async def body(nursery: trio.Nursery) -> None:
        await nursery.start(timers.run_timers, name="second")
        start = trio.current_time()
        for _ in range(5):
            await timers.sleep_until(trio.current_time() + 1)
        assert trio.current_time() - start == 5.0

    run_with_timers(body, timer_name="first", instruments=[instrument])
    assert instrument.steps.get("first", 0) >= 5
    assert instrument.steps.get("second", 0) <= 2  # started, then slept for good


def test_many_sleepers_cost_the_timer_one_wake_up_per_instant() -> None:
    instrument = StepCounter()

    async def body(nursery: trio.Nursery) -> None:
        start = trio.current_time()

        async def tick() -> None:
            for k in range(1, 11):
                await timers.sleep_until(start + k)

        async with trio.open_nursery() as ticking:
            for _ in range(8):
                ticking.start_soon(tick)
        assert trio.current_time() - start == 10.0

    run_with_timers(body, instruments=[instrument])
    # One wake-up of the timer per second for eight loops (plus start and end).
    assert 10 <= instrument.steps["timer"] <= 13
