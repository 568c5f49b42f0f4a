"""`p2pctl ui`: open the daemon's web UI in a browser, logged in.

Rules (Jupyter's model):
- The token never appears on a command line or in a URL: p2pctl reads it from
  `<home>/web.token` and makes a one-time login ticket that expires in two minutes.
- The browser is started on a redirect file (mode 0600, in the daemon's home) that
  holds the login URL, so other local users see neither the ticket nor the token in
  the process list.
- `--url` prints the one-time login URL instead, for a browser on another display.
Standard library only, like the rest of p2pctl.
"""

from __future__ import annotations

import html
import os
import tempfile
import time
import webbrowser
from pathlib import Path
from typing import Any

from gossipchat.rpc.paths import default_home
from gossipchat.rpc.weblogin import login_url, make_ticket, token_path

REDIRECT_FILE = "web-login.html"


class UiError(Exception):
    """The UI cannot be opened; the message says what to do."""


def find_home(socket: Path, home: str | None) -> Path:
    """The daemon's home: --home, else the socket's folder if it holds the token."""
    if home:
        return Path(home)
    if token_path(socket.parent).exists():
        return socket.parent
    return default_home()


def login_link(status: dict[str, Any], home: Path) -> str:
    """A one-time login URL for the daemon whose `status` and home are given."""
    base = status.get("web")
    if not base:
        raise UiError("the daemon's web UI is off; start gossipchatd with "
                      "--web-listen 127.0.0.1:4180 (or set web_listen in config.toml)")
    try:
        token = token_path(home).read_text().strip()
    except OSError as exc:
        raise UiError(f"cannot read the web token {token_path(home)}: {exc.strerror}; "
                      "pass --home DIR of the daemon") from None
    return login_url(str(base), make_ticket(token, time.time()))


def write_redirect(home: Path, link: str) -> Path:
    """A 0600 HTML file in home that sends the browser on to link."""
    quoted = html.escape(link, quote=True)
    page = (f'<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" '
            f'content="0;url={quoted}"><title>gossipchat</title>'
            f'<p><a href="{quoted}">Open gossipchat</a></p>\n')
    fd, tmp = tempfile.mkstemp(prefix=".web-login-", suffix=".html", dir=home)  # 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(page)
        target = home / REDIRECT_FILE
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def open_ui(status: dict[str, Any], home: Path, *, print_url: bool) -> str:
    """Print the login URL, or open the browser on a redirect file; returns what to show."""
    link = login_link(status, home)
    if print_url:
        return link
    redirect = write_redirect(home, link)
    if not webbrowser.open(redirect.as_uri()):
        raise UiError(f"no browser could be started; open {redirect.as_uri()} yourself, "
                      "or run 'p2pctl ui --url'")
    return f"opened the web UI ({status['web']}) in your browser"
