"""Wires the daemon's services together under one root nursery.

The root nursery owns the node (and through it the network) and the RPC server.
A stop, from a signal, the `shutdown` method or a service that failed, cancels them
and closes the store last, after the final commit, all under the stop deadline
(`STOP_DEADLINE_S`, daemon/stopwatch.py): past it, the process ends anyway.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from gossipchat.rpc.limits import RpcLimits
from gossipchat.rpc.server import RpcServer, SocketInUse

from .adapters import identity as identity_store
from .adapters import timers
from .adapters.blockstore import BlockStore, BlockStoreError
from .adapters.p2p import NetworkLimits, P2PNetwork, resolve_listen_addrs
from .adapters.store import Store, StoreCheckFailed, StoreError
from .config import Config
from .core.inbound import InboundLimits
from .dht import DhtService
from .errors import GossipchatError
from .mdns import MdnsService
from .node import Node
from .stopwatch import StopWatch
from .web.listen import parse_web_listen

if TYPE_CHECKING:
    from .web.server import WebServer

log = logging.getLogger("gossipchat")

# A peer that dialed us only moments ago may be passing through: another member's DHT
# walk asks us one question and hangs up within a second or two. Presence fetches and
# sync sessions wait this long on such a connection (the dialing side starts its own
# at once, and both carry what we would have asked). Before, when 20 members joined a
# room together, each answered ~9 walk connections with a presence fetch and a sync
# session, and 6-15 fetches per member failed as the walker hung up.
NEW_INBOUND_S = 3.0


class StartupError(Exception):
    """The daemon cannot start; the message says why and what to do."""

    exit_code = 1


class StoreRefused(StartupError):
    """The store failed its integrity check: restarting cannot help, a person must act.

    The exit code is EX_DATAERR from sysexits.h; deploy/gossipchatd.service lists it in
    RestartPreventExitStatus so that systemd does not restart into the same refusal.
    """

    exit_code = 65


def damaged_store_help(damage: StoreCheckFailed, home: Path) -> str:
    """The refusal for a damaged store: what is wrong and the way out, step by step."""
    path = damage.path
    rooms = f" ({', '.join(damage.rooms)})" if damage.rooms else ""
    lines = [
        f"the store {path} is damaged and will not be opened: {damage.detail}",
        "Your identity key and your images are not in it. To rebuild it from your peers:",
        f"1. move it aside: mv {path} {path}.damaged"
        f" (and {path}-wal and {path}-shm if they are there);",
        f"2. keep {home / identity_store.KEY_FILE}: it is your peer id;",
        "3. start gossipchatd again: it creates an empty store;",
        "4. connect to a peer (p2pctl connect MULTIADDR) unless you start with --bootstrap,",
        f"   and join each room you were in{rooms} with p2pctl join ROOM:",
        "   history sync brings every room's history back from the peers in it.",
    ]
    if damage.blocked:
        lines.append(f"5. block again: p2pctl block PEER for {', '.join(damage.blocked)}.")
    return "\n".join(lines)


def _notify_systemd(state: str) -> None:
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    try:
        import sdnotify

        sdnotify.SystemdNotifier().notify(state)
    except Exception as exc:  # a notify failure must never stop the daemon
        log.warning("sd_notify %s failed: %s", state, exc)


def rpc_limits(config: Config) -> RpcLimits:
    """The RPC bounds of a config."""
    return RpcLimits(
        max_line_bytes=config.rpc_max_line_bytes, max_batch=config.rpc_max_batch,
        max_response_bytes=config.rpc_max_response_bytes,
        max_connections=config.rpc_max_connections,
        max_subscriptions=config.rpc_max_subscriptions)


def network_limits(config: Config) -> NetworkLimits:
    """What peers may make the host hold, from a config."""
    return NetworkLimits(
        inbound=InboundLimits(max_total=config.max_inbound_connections,
                              max_per_ip=config.max_inbound_per_ip),
        gossip_rate=config.gossip_max_msgs_per_peer_s,
        gossip_burst=float(config.gossip_burst_per_peer),
        streams_per_connection=config.max_streams_per_connection,
        streams_per_protocol=config.max_streams_per_protocol,
        stream_window=config.stream_receive_window)


class Daemon:
    """One gossipchatd process: identity, store, network, node and RPC server."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.clean_exit = False
        self.stopwatch = StopWatch()
        try:
            self.identity = identity_store.load_or_create(config.home)
        except (OSError, identity_store.IdentityError) as exc:
            raise StartupError(f"cannot load the identity key: {exc}") from exc
        try:
            listen = resolve_listen_addrs(config.listen, fallback=config.listen_is_default)
        except GossipchatError as exc:
            raise StartupError(f"--listen: {exc.message}") from exc
        try:
            self.store = Store(config.home / "store.sqlite", durability=config.durability)
        except StoreCheckFailed as exc:
            raise StoreRefused(damaged_store_help(exc, config.home)) from exc
        except StoreError as exc:
            raise StartupError(str(exc)) from exc
        try:
            blocks = BlockStore(config.home / "blocks", quota_bytes=config.block_quota)
        except BlockStoreError as exc:
            self.store.close()
            raise StartupError(str(exc)) from exc
        self.network = P2PNetwork(self.identity.seed, listen, network_limits(config))
        self.node = Node(config, self.identity, self.store, self.network, blocks)
        self.mdns = MdnsService(self.network, enabled=config.mdns,
                                max_connections=config.max_connections)
        self.mdns.defer = self.node.presence.recently_trimmed
        self.mdns.count_fault = self.node.count_fault
        self.node.discovery["mdns"] = self.mdns.view
        self.dht = DhtService(self.node.room_history, self.network, mode=config.dht,
                              room_peers_min=config.room_peers_min)
        self.dht.count_fault = self.node.count_fault
        self.dht.keep_connection = self.node.presence.wants
        self.node.presence.passing = self.node.sync.passing = self._passing
        self.node.discovery["dht"] = self.dht.view
        self.rpc = RpcServer(self.node, config.rpc_path, rpc_limits(config))
        try:
            self.rpc.bind()
        except SocketInUse as exc:
            self.store.close()
            raise StartupError(f"{exc}; is another gossipchatd using it?") from exc
        except OSError as exc:
            self.store.close()
            raise StartupError(f"cannot create the RPC socket {config.rpc_path}: {exc}") from exc
        self.web: WebServer | None = None
        if parse_web_listen(config.web_listen) is not None:
            try:
                self.web = self._bind_web()
            except OSError as exc:
                self.rpc.remove_socket()
                self.store.close()
                raise StartupError(
                    f"cannot listen for the web UI on {config.web_listen}: {exc}; "
                    "choose another --web-listen, or 'off'") from exc

    def _passing(self, peer: str) -> bool:
        """Whether presence and sync leave the connection to peer alone for now."""
        return self.dht.is_passing(peer) or self.network.only_new_inbound(peer, NEW_INBOUND_S)

    def _bind_web(self) -> WebServer:
        # Imported only when the UI is on: a daemon with --web-listen off never loads
        # the HTTP stack.
        from .web.server import WebServer

        web = WebServer(self.node, self.config.home, self.config.web_listen,
                        rpc_limits(self.config), fallback=self.config.web_listen_is_default)
        web.bind()
        self.node.web_url = web.url
        return web

    async def serve(self) -> None:
        """Run until a signal or `shutdown`, then stop cleanly."""
        try:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async with trio.open_nursery() as nursery:
                    try:
                        await nursery.start(timers.run_timers)
                        await nursery.start(self.node.run)
                        await nursery.start(self.mdns.run)
                        await nursery.start(self.dht.run)
                        await nursery.start(self.rpc.run)
                        if self.web is not None:
                            await nursery.start(self.web.run)
                        self._announce_ready()
                        nursery.start_soon(self._stop_on_request, nursery)
                        async for signum in signals:
                            log.info("received %s; stopping", signal.Signals(signum).name)
                            break
                    finally:
                        # Whatever ends the body (a signal, `shutdown`, a failed
                        # service) starts the clock of the stop.
                        self.stopwatch.start()
                        nursery.cancel_scope.cancel()
        finally:
            self.stopwatch.start()
            self.rpc.remove_socket()
            self.store.close()
            _notify_systemd("STOPPING=1")
        self.stopwatch.done()
        self.clean_exit = True
        log.info("stopped in %.2f s", self.stopwatch.elapsed())

    async def _stop_on_request(self, nursery: trio.Nursery) -> None:
        await self.node.stop_requested.wait()
        log.info("shutdown requested over RPC; stopping")
        nursery.cancel_scope.cancel()


    def _announce_ready(self) -> None:
        addrs = ",".join(self.network.listen_addrs())
        line = (f"gossipchatd ready peer={self.identity.peer_id_text} "
                f"rpc={self.config.rpc_path} listen={addrs}")
        if self.web is not None:
            line += f" web={self.web.url}"
        print(line, flush=True)
        sys.stdout.flush()
        _notify_systemd("READY=1")
        log.info("ready: peer %s", self.identity.peer_id_text)
