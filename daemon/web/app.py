"""The web UI's ASGI app: static page, one-time login, images, and JSON-RPC over /rpc.

Rules:
- One middleware per security concern wraps every route, outermost first: response
  headers (CSP, nosniff, no CORS ever), the Host check, the Origin check, the method
  check, the token check. Each is a few lines around one function of security.py, and
  the routes behind them never repeat a check.
- `/rpc` is a WebSocket carrying the unix socket's method table through the same
  RpcSession: one JSON-RPC value per text frame each way, the same dispatcher,
  errors, limits and notifications. No other API exists here.
- Images come from the local block store only, after their magic bytes are checked.
- Every asset is in the package: the page works with no network beyond loopback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from gossipchat.daemon.errors import InvalidArgument, LimitReached, NotFound
from gossipchat.daemon.node import Node
from gossipchat.rpc.dispatch import Dispatcher
from gossipchat.rpc.limits import RpcLimits
from gossipchat.rpc.session import RpcSession
from gossipchat.rpc.weblogin import check_ticket

from . import security

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# File name, Content-Type: the whole static site, read once from the package.
STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
LOGIN_REQUIRED_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gossipchat: log in</title></head>
<body><h1>gossipchat</h1>
<p>This is the local web UI of a gossipchat daemon. Open it with <code>p2pctl ui</code>
(or <code>p2pctl ui --url</code> for a one-time login address).</p></body></html>
"""
LOGGED_IN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url=/">
<title>gossipchat</title></head><body><p><a href="/">Continue to gossipchat</a></p>
</body></html>
"""
PUBLIC_PATHS = frozenset({"/login"})


def _headers(scope: Scope) -> dict[str, str]:
    """Request headers, lower-case names; a repeated header keeps its first value."""
    out: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        out.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return out


async def _refuse(scope: Scope, send: Send, status: int, text: str) -> None:
    """Answer an HTTP request with a plain-text error, or refuse a WebSocket handshake."""
    if scope["type"] == "websocket":
        # Closing before accepting makes the server answer the handshake with 403.
        await send({"type": "websocket.close", "code": 1008, "reason": text[:120]})
        return
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": text.encode() + b"\n"})


class SecurityHeaders:
    """Adds CSP and the other fixed headers to every response; strips any CORS header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                headers = [(k, v) for k, v in message.get("headers", [])
                           if not k.lower().startswith(b"access-control-")]
                names = {k.lower() for k, _ in headers}
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", security.PAGE_CSP.encode()))
                headers.extend((k.encode(), v.encode()) for k, v in security.SECURITY_HEADERS
                               if k.encode() not in names)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HostCheck:
    """Refuses a Host header that is not localhost or a loopback IP (DNS rebinding)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] in ("http", "websocket") and \
                not security.host_allowed(_headers(scope).get("host")):
            await _refuse(scope, send, 403, "Host not allowed: use localhost or 127.0.0.1")
            return
        await self.app(scope, receive, send)


class OriginCheck:
    """Refuses a request whose Origin is not the UI's own (cross-site WebSocket, CSRF)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] in ("http", "websocket"):
            headers = _headers(scope)
            if not security.origin_allowed(headers.get("origin"), headers.get("host", "")):
                await _refuse(scope, send, 403, "Origin not allowed")
                return
        await self.app(scope, receive, send)


class MethodCheck:
    """Only GET and HEAD: the UI changes state through /rpc alone, never by a form post."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] == "http" and scope.get("method") not in ("GET", "HEAD"):
            await _refuse(scope, send, 405, "Method not allowed")
            return
        await self.app(scope, receive, send)


class TokenCheck:
    """Requires the session cookie or a Bearer token on everything but the login page."""

    def __init__(self, app: ASGIApp, token: str, cookie: str) -> None:
        self.app = app
        self.token = token
        self.cookie = cookie

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] in ("http", "websocket") and scope.get("path") not in PUBLIC_PATHS:
            headers = _headers(scope)
            given = security.bearer_token(headers.get("authorization")) or \
                security.cookie_token(headers.get("cookie"), self.cookie)
            if not security.token_ok(given, self.token):
                if scope["type"] == "websocket":
                    await _refuse(scope, send, 401, "log in first")
                    return
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"text/html; charset=utf-8"),
                                        (b"cache-control", b"no-store")]})
                await send({"type": "http.response.body",
                            "body": LOGIN_REQUIRED_PAGE.encode()})
                return
        await self.app(scope, receive, send)


@dataclass
class WebState:
    """What the routes share: the node, the token, limits and counters."""

    node: Node
    token: str
    cookie: str
    limits: RpcLimits
    connections: int = 0
    used_nonces: dict[str, int] = field(default_factory=dict)
    static: dict[str, bytes] = field(default_factory=dict)


def _load_static() -> dict[str, bytes]:
    folder = resources.files("gossipchat.daemon.web") / "static"
    return {name: (folder / name).read_bytes() for name in STATIC_FILES}


def build_app(node: Node, token: str, port: int, limits: RpcLimits) -> ASGIApp:
    """The whole web UI: routes wrapped in the security middleware."""
    state = WebState(node, token, security.cookie_name(port), limits, static=_load_static())

    def static(name: str) -> Callable[[Request], Awaitable[Response]]:
        async def serve(request: Request) -> Response:
            return Response(state.static[name], media_type=STATIC_FILES[name],
                            headers={"cache-control": "no-cache"})
        return serve

    async def login(request: Request) -> Response:
        ticket = request.query_params.get("ticket", "")
        now = time.time()
        for nonce, expiry in list(state.used_nonces.items()):
            if expiry < now:
                del state.used_nonces[nonce]
        checked = check_ticket(state.token, ticket, now)
        if checked is None or checked[0] in state.used_nonces:
            return PlainTextResponse(
                "This login link is invalid, expired or used; run 'p2pctl ui' again.\n",
                status_code=403, headers={"cache-control": "no-store"})
        state.used_nonces[checked[0]] = checked[1]
        response = HTMLResponse(LOGGED_IN_PAGE, headers={"cache-control": "no-store"})
        # The redirect is a page of ours, not a 303: a SameSite=Strict cookie set in a
        # navigation that started elsewhere (the login file) is not sent on its
        # redirects, but it is on a navigation that our own page starts.
        response.set_cookie(state.cookie, state.token, httponly=True, samesite="strict",
                            path="/")
        return response

    async def image(request: Request) -> Response:
        cid = request.path_params["cid"]
        try:
            data = await node.images.read_local(cid)
        except (NotFound, InvalidArgument) as exc:
            return PlainTextResponse(exc.message + "\n", status_code=404)
        mime = security.image_mime(data)
        if mime is None:
            return PlainTextResponse("not a PNG, JPEG, GIF or WebP image\n", status_code=415)
        return Response(data, media_type=mime, headers={
            "content-security-policy": security.IMAGE_CSP,
            "cache-control": "private, max-age=31536000, immutable",
        })

    async def rpc(websocket: WebSocket) -> None:
        await _serve_rpc(state, websocket)

    routes = [
        Route("/", static("index.html")),
        Route("/app.js", static("app.js")),
        Route("/style.css", static("style.css")),
        Route("/login", login),
        Route("/image/{cid}", image),
        WebSocketRoute("/rpc", rpc),
    ]
    app: ASGIApp = Starlette(routes=routes)
    app = TokenCheck(app, token, state.cookie)
    app = MethodCheck(app)
    app = OriginCheck(app)
    app = HostCheck(app)
    return SecurityHeaders(app)


async def _serve_rpc(state: WebState, websocket: WebSocket) -> None:
    """One WebSocket client of the method table: frames around an RpcSession."""
    limits = state.limits
    await websocket.accept()
    if state.connections >= limits.max_connections:
        state.node.count_limit("rpc_connections")
        await websocket.send_text(Dispatcher.encode({
            "jsonrpc": "2.0", "id": None, "error": {
                "code": LimitReached.code, "message": "Too many connections",
                "data": f"the daemon serves at most {limits.max_connections} WebSocket "
                        "RPC connections at once (rpc_max_connections)"}}).decode()[:-1])
        await websocket.close(code=1013)
        return
    state.connections += 1

    async def write(data: bytes) -> None:
        try:
            await websocket.send_text(data.decode()[:-1])
        except (RuntimeError, OSError, WebSocketDisconnect) as exc:
            raise trio.BrokenResourceError("the WebSocket client went away") from exc

    try:
        async with trio.open_nursery() as nursery:
            session = RpcSession(state.node, write, nursery, limits)
            try:
                await _read_frames(state, websocket, session)
            finally:
                session.close()
                nursery.cancel_scope.cancel()
    except Exception:
        # A bug in one connection's handling ends that connection, never the server.
        log.exception("WebSocket RPC connection failed")
        state.node.count_fault("rpc_connection")
    finally:
        state.connections -= 1


async def _read_frames(state: WebState, websocket: WebSocket, session: RpcSession) -> None:
    max_line = state.limits.max_line_bytes
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data: bytes = message.get("bytes") or (message.get("text") or "").encode()
        if len(data) > max_line:
            state.node.count_limit("rpc_line_bytes")
            await session.write(Dispatcher.encode(
                {"jsonrpc": "2.0", "id": None, "error": {
                    "code": -32600, "message": "Invalid request",
                    "data": f"request frame over {max_line} bytes "
                            "(rpc_max_line_bytes); the connection is closed"}}))
            await websocket.close(code=1009)
            return
        if data.strip():
            await session.answer(data)
        if session.stop_after_reply:
            return
