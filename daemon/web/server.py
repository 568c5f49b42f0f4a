"""The web UI's listener: hypercorn's trio worker serving the app in the daemon's nursery.

Rules:
- Loopback only: `web_listen` is HOST:PORT with HOST a loopback address or
  `localhost`, or `off`. The default 127.0.0.1:4180 falls back to a free port when
  taken; an address the user chose is used exactly or the daemon does not start.
- The socket is bound in `bind()`, before trio runs, so a bad address fails the start
  with a clear message like the RPC socket does.
- The token lives in `<home>/web.token`, mode 0600, created once and kept across
  restarts so that an open page keeps working after the daemon restarts.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from pathlib import Path
from typing import Any, cast

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.events import Closed, RawData
from hypercorn.trio.run import worker_serve
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.typing import Framework
from hypercorn.utils import wrap_app

from gossipchat.daemon.node import Node
from gossipchat.rpc.limits import RpcLimits
from gossipchat.rpc.weblogin import new_token, token_path

from .app import build_app
from .listen import WebListenError, parse_web_listen

log = logging.getLogger(__name__)

# Slack over rpc_max_line_bytes, so that the app (not hypercorn) sees a frame just
# over the bound and answers it with the same error as the unix socket.
FRAME_SLACK = 64 * 1024
class _Sends:
    """The shielded writes to web clients under way (the third patch below), which the
    stop cuts short, and whether it has. Module state, as the patches are: one web
    server per daemon."""

    def __init__(self) -> None:
        self.scopes: set[trio.CancelScope] = set()
        self.cut = False


_SENDS = _Sends()


def cut_sends_short() -> None:
    """End every write to a web client under way or to come, closing those
    connections: the stop does this, so that a client that reads nothing cannot hold it."""
    _SENDS.cut = True
    for scope in _SENDS.scopes:
        scope.cancel()


def _install_hypercorn_patches() -> None:
    """Three hypercorn 0.18 defects of its trio TCPServer, contained here.

    tests/upstream/test_hypercorn_tcp_server.py shows the first two on the stock
    library, tests/upstream/test_hypercorn_shielded_send.py the third:
    - `TCPServer._close` sends EOF outside the connection's send lock, so when a
      WebSocket closes from both ends at once, a locked `send_all` meets it and raises
      `trio.BusyResourceError`, which `protocol_send` does not catch;
    - any exception of one connection leaves `TCPServer.run` and, through hypercorn's
      handler nursery, stops the listener: every later connection is refused;
    - `protocol_send` shields `send_all` from cancellation without a bound, so a client
      that stops reading holds its task for ever, and the daemon's stop with it.
    The first is a connection that is closing anyway: its data is dropped. The second
    becomes a fault boundary per connection, logged once, as for the RPC socket. The
    third keeps the shield (a cancel must not leave half a frame on the wire) but
    registers it, so that the stop can end it (`cut_sends_short`) and close the
    connection; while the daemon runs, a client that reads slowly is waited for as
    before (its subscription overflows and ends, as over the unix socket).
    Idempotent; `undo_hypercorn_patches` restores the library.
    """
    if getattr(TCPServer, "_gossipchat_patched", False):
        return
    original_send, original_run = TCPServer.protocol_send, TCPServer.run

    async def protocol_send(self: TCPServer, event: Any) -> None:
        if not isinstance(event, RawData):
            await original_send(self, event)
            return
        async with self.send_lock:
            try:
                with trio.CancelScope(shield=True) as scope:
                    if _SENDS.cut:
                        scope.cancel()
                    _SENDS.scopes.add(scope)
                    try:
                        await self.stream.send_all(event.data)
                    finally:
                        _SENDS.scopes.discard(scope)
            except trio.BusyResourceError:
                log.debug("web: dropped data for a connection that is closing")
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self.protocol.handle(Closed())
                return
        if scope.cancelled_caught:
            log.info("web: stopping; closed a connection whose client reads nothing")
            await self.stream.aclose()
            await self.protocol.handle(Closed())

    async def run(self: TCPServer) -> None:
        try:
            await original_run(self)
        except Exception:
            log.exception("web: one connection failed; the server carries on")

    TCPServer._gossipchat_originals = (original_send, original_run)  # type: ignore[attr-defined]
    TCPServer.protocol_send = protocol_send  # type: ignore[method-assign]
    TCPServer.run = run  # type: ignore[method-assign]
    TCPServer._gossipchat_patched = True  # type: ignore[attr-defined]


def undo_hypercorn_patches() -> None:
    """Put hypercorn's own TCPServer methods back (tests of the stock library)."""
    originals = getattr(TCPServer, "_gossipchat_originals", None)
    if originals is None:
        return
    TCPServer.protocol_send, TCPServer.run = originals  # type: ignore[method-assign]
    del TCPServer._gossipchat_originals  # type: ignore[attr-defined]
    TCPServer._gossipchat_patched = False  # type: ignore[attr-defined]


def load_or_create_token(home: Path) -> str:
    """The web token of this home, created (mode 0600) on first use."""
    path = token_path(home)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        if path.is_symlink():
            raise OSError(errno.ELOOP, f"{path} is a symlink; refusing to use it") from None
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)  # a copied or restored home may have lost its mode
        token = path.read_text().strip()
        if len(token) >= 32:
            return token
        log.warning("%s is unusable; writing a new token", path)
        path.unlink()
        return load_or_create_token(home)
    token = new_token()
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class WebServer:
    """Serves the web UI on one loopback address until cancelled."""

    def __init__(self, node: Node, home: Path, listen: str, limits: RpcLimits, *,
                 fallback: bool) -> None:
        self.node = node
        self.home = home
        self.limits = limits
        address = parse_web_listen(listen)
        if address is None:
            raise WebListenError("web_listen is off")
        self.host, self.port = address
        self.fallback = fallback
        self._sock: socket.socket | None = None
        self.token = ""

    def bind(self) -> None:
        """Bind the socket and load the token now, so errors surface before the node starts."""
        try:
            self._sock = _bind(self.host, self.port)
        except OSError as exc:
            if not (self.fallback and exc.errno == errno.EADDRINUSE):
                raise
            log.info("web UI port %d is taken; using a free port", self.port)
            self._sock = _bind(self.host, 0)
        self.port = self._sock.getsockname()[1]
        self.token = load_or_create_token(self.home)

    @property
    def url(self) -> str:
        """The UI's base URL (it carries no token)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled."""
        if self._sock is None:
            self.bind()
        assert self._sock is not None
        _install_hypercorn_patches()
        config = HypercornConfig()
        config.errorlog = logging.getLogger("gossipchat.web.hypercorn")
        config.accesslog = None
        config.include_server_header = False
        config.websocket_max_message_size = self.limits.max_line_bytes + FRAME_SLACK
        config.graceful_timeout = 1.0
        app = build_app(self.node, self.token, self.port, self.limits)
        sockets = Sockets(secure_sockets=[], insecure_sockets=[self._sock], quic_sockets=[])
        # Our ASGI callables are typed with plain mappings; hypercorn's with TypedDicts.
        framework = cast(Framework, app)
        _SENDS.cut = False
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._cut_sends_short_on_stop)
            await worker_serve(wrap_app(framework, config.wsgi_max_body_size, "asgi"),
                               config, sockets=sockets, task_status=task_status)

    @staticmethod
    async def _cut_sends_short_on_stop() -> None:
        # Cancelled with the rest when the daemon stops: hypercorn's connections then
        # wait on their shielded writes, which only this can end.
        try:
            await trio.sleep_forever()
        finally:
            cut_sends_short()
