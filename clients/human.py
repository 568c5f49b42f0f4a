"""p2pctl's output for people: one formatter per method of the table (rpc/table.py).

A formatter takes a method's result and returns the lines to print. Everything that
came from the network or a peer goes through `visible`, so no control character
reaches the terminal. A unit test checks that every method of the table has an entry
here: a new method chooses its output on purpose (`as_json` when nothing better fits).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

from gossipchat.clients.render import format_message, visible

Formatter = Callable[[Any], list[str]]


def _ago(ms: int) -> str:
    delta = max(0.0, time.time() - ms / 1000)
    if delta < 60:
        return f"{delta:.0f}s ago"
    if delta < 3600:
        return f"{delta / 60:.0f}m ago"
    return f"{delta / 3600:.1f}h ago"


def terminal_width() -> int | None:
    """The width to wrap messages at: only a terminal wraps lines by itself."""
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size().columns


def as_json(result: Any) -> list[str]:
    """The result as indented JSON; ensure_ascii (the default) escapes every control and
    non-ASCII character."""
    return [json.dumps(result, indent=2, sort_keys=True)]


def _id(result: Any) -> list[str]:
    return [f"peer_id  {result['peer_id']}",
            f"nick     {visible(result['nick'] or '-')}",
            *(f"addr     {visible(addr)}" for addr in result["addrs"])]


def _status(result: Any) -> list[str]:
    lines = [f"{key:<10}{result[key]}"
             for key in ("version", "peer_id", "uptime_s", "peers", "rooms", "messages",
                         "blocks")
             if key in result]
    if result.get("rejected"):
        lines.append(f"{'rejected':<10}{json.dumps(result['rejected'], sort_keys=True)}")
    conns = result.get("connections") or {}
    if conns:
        lines.append(f"{'conns':<10}{conns.get('connected')} connected, "
                     f"{conns.get('dialing')} dialing (per room {conns.get('room_peers_min')}-"
                     f"{conns.get('room_peers_max')}, at most {conns.get('max_connections')})")
    lan = (result.get("discovery") or {}).get("mdns")
    if lan is not None:
        if lan.get("enabled"):
            lines.append(f"{'mdns':<10}on, {lan.get('peers')} peers found on the LAN, "
                         f"{lan.get('dials')} dialed")
        else:
            error = lan.get("error")
            lines.append(f"{'mdns':<10}off" + (f" ({visible(str(error))})" if error else ""))
    for room, here in sorted(((result.get("presence") or {}).get("rooms") or {}).items()):
        lines.append(f"{'room':<10}{visible(room)}: {here.get('online')} of "
                     f"{here.get('members')} members online, {here.get('connected')} connected")
    store = result.get("store") or {}
    if store.get("degraded"):
        lines.append(f"{'store':<10}DEGRADED: {store.get('reason')} "
                     f"({store.get('write_errors')} write errors, {store.get('pending')} "
                     "messages waiting to be written)")
    return lines


def _peers(result: Any) -> list[str]:
    if not result:
        return ["no peers connected"]
    return [f"{visible(peer['peer_id'])}  {visible(' '.join(peer['addrs'])) or '-'}  "
            f"rooms: {visible(', '.join(peer['rooms'])) or '-'}" for peer in result]


def _rooms(result: Any) -> list[str]:
    if not result:
        return ["not in any room; join one with 'p2pctl join ROOM'"]
    return [f"{room['room']:<24} {room['members']:>4} members {room['messages']:>7} messages"
            for room in result]


def _members(result: Any) -> list[str]:
    lines = []
    for m in result:
        seen = "online" if m.get("online") else f"seen {_ago(m['last_seen'])}"
        lines.append(f"{visible(m['peer_id'])}  {visible(m['nick'] or '-'):<20} {seen}")
    return lines


def _posted(result: Any) -> list[str]:
    """A message just sent: its id, and an image's CID."""
    lines = [visible(result["id"])]
    if result.get("image"):
        lines.append(visible(result["image"]["cid"]))
    return lines


def _history(result: Any) -> list[str]:
    width = terminal_width()
    return [format_message(msg, width=width) for msg in result]


def _fetched(result: Any) -> list[str]:
    where = visible(result["path"] or "the block store")
    return [f"saved {where} ({result['size']} bytes)"]


def _ok(method: str, key: str) -> Formatter:
    return lambda result: [f"{method} {result[key]}: ok"]


FORMATTERS: dict[str, Formatter] = {
    "id": _id,
    "status": _status,
    "peers": _peers,
    "connect": lambda result: [f"connected to {visible(result['peer_id'])}"],
    "nick": lambda result: [f"nick is now {visible(result['nick'])}"],
    "join": _ok("join", "room"),
    "leave": _ok("leave", "room"),
    "rooms": _rooms,
    "members": _members,
    "send": _posted,
    "send_image": _posted,
    "history": _history,
    "fetch": _fetched,
    # p2pctl watch prints the feed's messages, not this result.
    "subscribe": as_json,
    "unsubscribe": as_json,
    "block": _ok("block", "peer"),
    "unblock": _ok("unblock", "peer"),
    "blocked": lambda result: [str(peer) for peer in result],
    "shutdown": lambda result: ["daemon stopping"],
}
