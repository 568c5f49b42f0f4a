"""The web UI's security checks as small pure functions, one per concern.

Rules (the models are Syncthing's GUI and Jupyter):
- Host: only `localhost` or a loopback IP, with or without a port. A DNS-rebinding
  page reaches the UI under its own host name, which this refuses.
- Origin: a request that names an Origin must come from the UI's own origin
  (`http://<the Host it asked for>`). Browsers always send Origin on a WebSocket
  handshake; scripts send none and authenticate with the token instead.
- Token: the session cookie, or `Authorization: Bearer <token>`. Nowhere else: not in
  a query string, nor in any other header or cookie.
- Images are served only when their magic bytes say PNG, JPEG, GIF or WebP, with the
  Content-Type those bytes give, never one a peer chose.
The middleware in app.py applies each check once, at the edge; nothing behind it
repeats them.
"""

from __future__ import annotations

import hmac
import ipaddress
from http.cookies import CookieError, SimpleCookie

# Every response: nothing but our own origin, and never inside a frame. Thumbnails are
# inline data: images (the message objects carry them), so img-src adds data:.
PAGE_CSP = ("default-src 'self'; img-src 'self' data:; object-src 'none'; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# Image bodies from peers: a sandbox, so even a browser that renders one as a document
# runs nothing and has no origin.
IMAGE_CSP = "default-src 'self'; frame-ancestors 'none'; sandbox"

SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-resource-policy", "same-origin"),
    ("cross-origin-opener-policy", "same-origin"),
)

_IMAGE_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
)


def split_host(host: str) -> tuple[str, str | None]:
    """(host name, port or None) of a Host header value; IPv6 keeps no brackets."""
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return host, None
        rest = host[end + 1:]
        return host[1:end], rest[1:] if rest.startswith(":") else None
    name, sep, port = host.rpartition(":")
    if not sep or ":" in name:
        return host, None
    return name, port


def host_allowed(host: str | None) -> bool:
    """True for `localhost` or a loopback IP (any port); False for anything else."""
    if not host:
        return False
    name, port = split_host(host.strip())
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        return False
    name = name.lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def origin_allowed(origin: str | None, host: str) -> bool:
    """True when no Origin is named, or it is exactly the UI's own origin for `host`."""
    if origin is None:
        return True
    return origin.lower() == f"http://{host.lower()}"


def cookie_name(port: int) -> str:
    """The session cookie's name; cookies ignore ports, so the port is in the name."""
    return f"gossipchat-{port}"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def cookie_token(cookie_header: str | None, name: str) -> str | None:
    """The value of the named cookie in a Cookie header, or None."""
    if not cookie_header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookie_header)
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def token_ok(given: str | None, token: str) -> bool:
    """A constant-time comparison of a presented token with the real one."""
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def image_mime(data: bytes) -> str | None:
    """The Content-Type that an image's magic bytes give, or None: never SVG or HTML."""
    for magic, offset, mime in _IMAGE_MAGIC:
        if data[offset:offset + len(magic)] == magic:
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None
