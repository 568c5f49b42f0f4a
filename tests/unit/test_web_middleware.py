"""Each security middleware of the web UI on its own, with plain ASGI calls (no server)."""

from __future__ import annotations

from typing import Any

from gossipchat.daemon.web.app import (
    HostCheck,
    MethodCheck,
    OriginCheck,
    SecurityHeaders,
    TokenCheck,
)

TOKEN = "t" * 43


async def _inner(scope: Any, receive: Any, send: Any) -> None:
    """The protected app: answers 200, and tries to allow CORS (which must not pass)."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.accept", "headers": []})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"access-control-allow-origin", b"*"),
                            (b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"inner"})


def _scope(kind: str = "http", path: str = "/", method: str = "GET",
           **headers: str) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": kind, "path": path,
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }
    if kind == "http":
        scope["method"] = method
    return scope


async def _call(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def _status(sent: list[dict[str, Any]]) -> int | str:
    first = sent[0]
    return first["status"] if first["type"] == "http.response.start" else first["type"]


async def test_security_headers_on_every_response_and_no_cors() -> None:
    sent = await _call(SecurityHeaders(_inner), _scope(host="127.0.0.1:1"))
    headers = dict(sent[0]["headers"])
    assert b"default-src 'self'" in headers[b"content-security-policy"]
    assert b"frame-ancestors 'none'" in headers[b"content-security-policy"]
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert b"access-control-allow-origin" not in headers
    accepted = await _call(SecurityHeaders(_inner), _scope("websocket", "/rpc"))
    assert b"content-security-policy" in dict(accepted[0]["headers"])


async def test_host_check() -> None:
    app = HostCheck(_inner)
    assert _status(await _call(app, _scope(host="localhost:4180"))) == 200
    assert _status(await _call(app, _scope(host="evil.example"))) == 403
    assert _status(await _call(app, _scope())) == 403
    assert _status(await _call(app, _scope("websocket", host="evil.example"))) == \
        "websocket.close"


async def test_origin_check() -> None:
    app = OriginCheck(_inner)
    host = "127.0.0.1:4180"
    assert _status(await _call(app, _scope(host=host))) == 200
    assert _status(await _call(app, _scope(host=host, origin=f"http://{host}"))) == 200
    assert _status(await _call(app, _scope(host=host, origin="http://evil.example"))) == 403
    refused = await _call(app, _scope("websocket", host=host, origin="null"))
    assert _status(refused) == "websocket.close"


async def test_method_check() -> None:
    app = MethodCheck(_inner)
    assert _status(await _call(app, _scope(method="GET"))) == 200
    assert _status(await _call(app, _scope(method="HEAD"))) == 200
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
        assert _status(await _call(app, _scope(method=method))) == 405


async def test_token_check() -> None:
    app = TokenCheck(_inner, TOKEN, "gossipchat-4180")
    assert _status(await _call(app, _scope())) == 401
    assert _status(await _call(app, _scope(authorization=f"Bearer {TOKEN}"))) == 200
    assert _status(await _call(app, _scope(cookie=f"gossipchat-4180={TOKEN}"))) == 200
    assert _status(await _call(app, _scope(cookie=f"gossipchat-4181={TOKEN}"))) == 401
    assert _status(await _call(app, _scope(path=f"/?token={TOKEN}"))) == 401
    assert _status(await _call(app, _scope(path="/login"))) == 200  # the ticket page
    assert _status(await _call(app, _scope("websocket", "/rpc"))) == "websocket.close"
    assert _status(await _call(app, _scope("websocket", "/rpc",
                                           authorization=f"Bearer {TOKEN}"))) == \
        "websocket.accept"
