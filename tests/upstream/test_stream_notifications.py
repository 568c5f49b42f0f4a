"""py-libp2p 0.8.1's swarm: a task per notifee for every stream event, heard or not.

The swarm announces each stream it opens or accepts, and each it closes, to every
notifee it has, each call in a task of its own in a nursery of its own
(`Swarm._notify`), even when the notifee's handler for the event is empty, as those of
py-libp2p's own tag store and identify are, and those of all our services. A daemon's
host has five notifees, so a stream opened and closed cost twenty tasks across its two
ends, none of which did anything.
`adapters.libp2p_patches.skip_unheard_stream_events` skips an event no notifee
listens to; when an upgrade makes this test fail, the patch can probably go.
"""

from __future__ import annotations

from harness.libp2p_hosts import SilentNotifee, one_stream, running_pair, stock_host
from harness.scheduling import TaskSpawns

NOTIFY_TASK = "Swarm._notify.<locals>._call"


async def test_every_stream_event_spawns_a_task_per_notifee_that_ignores_it() -> None:
    async with running_pair(stock_host(), stock_host()) as (a, b):
        for host in (a, b):
            for _ in range(3):
                host.get_network().register_notifee(SilentNotifee())
        notifees = len(a.get_network().notifees)
        assert notifees == len(b.get_network().notifees) == 5  # tag store, identify, 3
        with TaskSpawns() as spawns:
            await one_stream(a, b)
        # Opened and closed, on both ends, once per notifee.
        assert spawns.named(NOTIFY_TASK) == 2 * 2 * notifees
