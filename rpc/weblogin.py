"""The web UI's login secret and one-time login tickets, shared by daemon and p2pctl.

Rules:
- The daemon keeps a random token in `<home>/web.token` (mode 0600). Whoever can read
  that file is the user: the token works as `Authorization: Bearer <token>` and, once
  logged in, as the UI's HttpOnly, SameSite=Strict session cookie.
- A browser logs in through a one-time ticket, never through the token itself, so the
  token appears in no URL, browser history or command line. `p2pctl` makes the ticket
  from the token it reads: `<expiry>.<nonce>.<mac>`, the mac an HMAC-SHA256 under the
  token. The daemon accepts each nonce once, and only until its expiry.
- Standard library only: p2pctl imports this and must start fast.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

TOKEN_FILE = "web.token"
TICKET_LIFETIME_S = 120
_MAC_CONTEXT = b"gossipchat web login ticket v1\n"


def token_path(home: Path) -> Path:
    """Where a daemon with this home keeps its web token."""
    return home / TOKEN_FILE


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def _mac(token: str, expiry: int, nonce: str) -> str:
    message = _MAC_CONTEXT + f"{expiry}.{nonce}".encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def make_ticket(token: str, now_s: float, lifetime_s: int = TICKET_LIFETIME_S) -> str:
    """A one-time login ticket valid for lifetime_s seconds from now_s."""
    expiry = int(now_s) + lifetime_s
    nonce = secrets.token_hex(16)
    return f"{expiry}.{nonce}.{_mac(token, expiry, nonce)}"


def check_ticket(token: str, ticket: str, now_s: float) -> tuple[str, int] | None:
    """(nonce, expiry) of a genuine, unexpired ticket; None for anything else.

    The caller remembers the nonce until its expiry to refuse a second use.
    """
    parts = ticket.split(".")
    if len(parts) != 3 or len(ticket) > 200:
        return None
    expiry_text, nonce, mac = parts
    if not expiry_text.isdigit() or not nonce:
        return None
    expiry = int(expiry_text)
    if not hmac.compare_digest(_mac(token, expiry, nonce), mac):
        return None
    if now_s > expiry or expiry > now_s + 2 * TICKET_LIFETIME_S:
        return None
    return nonce, expiry


def login_url(base_url: str, ticket: str) -> str:
    """The one-time URL that logs a browser in and lands on the UI."""
    return f"{base_url.rstrip('/')}/login?ticket={ticket}"
