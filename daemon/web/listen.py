"""The `web_listen` setting: where the web UI listens (loopback only), or off.

Light on purpose: the config module validates with it, and importing it must not
import the web server.
"""

from __future__ import annotations

import ipaddress

DEFAULT_WEB_LISTEN = "127.0.0.1:4180"


class WebListenError(Exception):
    """A web_listen value that cannot be used; the message says why."""


def parse_web_listen(value: str) -> tuple[str, int] | None:
    """(loopback IP, port) of a web_listen value, or None for `off`."""
    text = value.strip()
    if text.lower() == "off":
        return None
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise WebListenError(f"web_listen {value!r}: expected HOST:PORT or off")
    host = host.strip("[]")
    if host.lower() == "localhost":
        host = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise WebListenError(f"web_listen {value!r}: HOST must be a loopback IP "
                             "or localhost") from None
    if not ip.is_loopback:
        raise WebListenError(f"web_listen {value!r}: the web UI listens on loopback only "
                             "(127.0.0.1, ::1 or localhost)")
    return str(ip), int(port_text)
