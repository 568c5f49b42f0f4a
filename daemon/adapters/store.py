"""The SQLite store: messages, joined rooms, settings, known peers and the block list.

Rules:
- WAL mode. Every write method commits before it returns, so a caller that acknowledges
  after it has the message on disk (kill -9 safe with synchronous=NORMAL, power-loss
  safe with FULL, see `durability` in config.toml).
- Message ids are unique; inserting a message twice is a no-op that returns False.
- History order is (lamport, author, id), the same on every node.
- Only envelopes their authors signed are written; reads decode them without
  re-verifying. Each row says whether the envelope's own signature was checked
  (`signature_checked`): a gossip message's signature by the same author may have
  vouched for it instead (core/envelope.py), and sync checks it before serving it.
- Schema 2 adds that column to schema 1; a schema-1 store is migrated on open (its
  rows were all checked), and this build refuses any other schema.
- One owner: the node's trio thread calls it directly. Each call is a few hundred
  microseconds, cheaper than a hop to a worker thread.
- This is the edge where sqlite3 errors become the project's: a full disk raises
  StorageFull, a damaged page StoreDamaged, other I/O failures StoreUnavailable, each
  after `on_error` has heard of it. A failed write is rolled back whole. Errors that
  mean a bug (bad SQL, a closed connection) stay sqlite3 errors.
- A commit never checkpoints the WAL on the calling thread. SQLite's automatic
  checkpoint runs inside the commit that crosses 1,000 pages and fsyncs the WAL and the
  database there: 3,000 one-message commits here stalled 19 times for 5-16 ms, 285 ms
  in all, every stall a frozen event loop (gossip, RPC, everything). So the owner calls
  `checkpoint` from a worker thread instead (history.py): a PASSIVE checkpoint on a
  connection of its own, which writers do not wait for. The automatic one is left at
  AUTO_CHECKPOINT_PAGES, only a bound on the WAL should the worker fall behind.
- Opening runs `PRAGMA quick_check`: a damaged file is refused at start with
  StoreCheckFailed rather than failing later, page by page.
- Some answers are kept in memory as well and updated after the commit that changes
  them: the chat message counts and each synced room's newest items for set
  reconciliation (core/reconcile.py, ItemLog; at most 1.25x sync_depth items, about
  2 MB at 10,000), by `add_messages`; the refused images per author, by
  `record_image_verdict`.
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..core import envelope as env_codec
from ..core.envelope import CHAT_KINDS, Envelope
from ..core.reconcile import ItemLog, ItemSet
from ..errors import StorageFull, StoreDamaged, StoreUnavailable

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
# The WAL's size at which a commit checkpoints by itself (see the rules): 64 MiB of 4 KiB
# pages, far past what the owner's worker-thread checkpoints let it reach.
AUTO_CHECKPOINT_PAGES = 16384

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id BLOB PRIMARY KEY,
    room TEXT NOT NULL,
    author TEXT NOT NULL,
    lamport INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    kind TEXT NOT NULL,
    nick TEXT NOT NULL,
    cid TEXT,
    wire BLOB NOT NULL,
    received_ms INTEGER NOT NULL,
    signature_checked INTEGER NOT NULL DEFAULT 1
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_order ON messages (room, lamport, author, id);
CREATE INDEX IF NOT EXISTS messages_sync ON messages (room, ts, id);
-- messages_author (author, ts), in stores made before 2026-12-07, served no query
-- (members' `authors` reads a room through messages_sync) and cost every insert a
-- fourth b-tree and a sixth of the file (20,000 text messages: 12.8 MB against 10.6).
-- Dropping it changes no data: an older build makes it again.
DROP INDEX IF EXISTS messages_author;
CREATE INDEX IF NOT EXISTS messages_cid ON messages (cid) WHERE cid IS NOT NULL;
CREATE TABLE IF NOT EXISTS rooms (
    name TEXT PRIMARY KEY,
    joined_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS peers (
    peer_id TEXT PRIMARY KEY,
    addrs TEXT NOT NULL,
    last_seen_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS blocked (
    peer_id TEXT PRIMARY KEY,
    blocked_ms INTEGER NOT NULL
);
-- What checking an image message's bytes found: NULL unavailable means they were
-- what the message says. Added after schema 1 shipped; IF NOT EXISTS creates it in
-- older stores too, so no migration step is needed.
CREATE TABLE IF NOT EXISTS image_verdicts (
    message_id BLOB PRIMARY KEY,
    author TEXT NOT NULL,
    unavailable TEXT,
    checked_ms INTEGER NOT NULL
) WITHOUT ROWID;
-- Each room's directory: the latest verified presence record of every member and when
-- it was last heard (core/presence.py). Not history: never synced as messages.
CREATE TABLE IF NOT EXISTS presence (
    room TEXT NOT NULL,
    peer_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    wire BLOB NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (room, peer_id)
) WITHOUT ROWID;
"""

_CHAT_KINDS_SQL = "(" + ",".join(f"'{k}'" for k in sorted(CHAT_KINDS)) + ")"


class StoreError(Exception):
    """The store file cannot be opened or is of an unknown schema."""


class StoreCheckFailed(StoreError):
    """The start-up integrity check found damage: the file must be set aside."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"store {path} is damaged: {detail}")
        self.path = path
        self.detail = detail
        # What a person will want to set up again, if those tables still read.
        self.rooms = _column_if_readable(path, "SELECT name FROM rooms ORDER BY name")
        self.blocked = _column_if_readable(path, "SELECT peer_id FROM blocked")


# Primary result codes (https://sqlite.org/rescode.html) that mean the storage failed,
# not the code: the disk, the file or the memory under it.
_SQLITE_FULL = 13
_SQLITE_DAMAGED = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_SQLITE_UNAVAILABLE = {3, 5, 6, 7, 8, 10, 14, 15, 22}  # PERM BUSY LOCKED NOMEM READONLY
#                                                       IOERR CANTOPEN PROTOCOL NOLFS

ErrorListener = Callable[[StoreUnavailable, bool], None]


def storage_error(path: Path, exc: sqlite3.Error) -> StoreUnavailable | None:
    """The project error for a sqlite3 error about storage; None for one that is a bug."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return None
    primary = code & 0xFF
    data = {"path": str(path), "sqlite": str(exc)}
    if primary == _SQLITE_FULL:
        return StorageFull(
            f"the disk holding the store {path} is full; free some space and gossipchatd"
            " carries on by itself", data)
    if primary in _SQLITE_DAMAGED:
        return StoreDamaged(
            f"the store {path} is damaged ({exc}); restart gossipchatd: its start-up"
            " check says how to keep your identity and rebuild history from peers", data)
    if primary in _SQLITE_UNAVAILABLE:
        return StoreUnavailable(f"the store {path} failed: {exc}", data)
    return None


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _mapped(method: _Method) -> _Method:
    @functools.wraps(method)
    def call(self: Store, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            error = self._storage_failed(exc, write=False)
            if error is None:
                raise
            raise error from exc

    return call  # type: ignore[return-value]


_S = TypeVar("_S", bound=type)


def _map_storage_errors(cls: _S) -> _S:
    """Wrap every public method, so that new ones cannot forget the mapping."""
    for name, value in list(vars(cls).items()):
        if callable(value) and not name.startswith("_"):
            setattr(cls, name, _mapped(value))
    return cls


@dataclass(frozen=True)
class Position:
    """Where a message sits in history order."""

    lamport: int
    author: str
    id: bytes


@dataclass(frozen=True)
class StoredPosition:
    """A stored message's room and its position in that room's history."""

    room: str
    position: Position


@_map_storage_errors
class Store:
    """A gossipchat home's SQLite database."""

    def __init__(self, path: Path, *, durability: str = "normal") -> None:
        self.path = path
        self.on_error: ErrorListener | None = None
        self._counts: Counter[str] | None = None
        # Sync's item windows per room, loaded on a session's first look at the room
        # and kept up to date by add_messages (core/reconcile.py, ItemLog).
        self._item_logs: dict[str, ItemLog] = {}
        self._unavailable_by_author: dict[str, int] | None = None
        self._durability = durability
        self._checkpointer: sqlite3.Connection | None = None  # used by `checkpoint` only
        self.commits = 0  # write transactions committed, for the owner's checkpoints
        if durability not in ("normal", "full"):
            raise StoreError(f"durability must be 'normal' or 'full', not {durability!r}")
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={durability.upper()}")
            self._db.execute(f"PRAGMA wal_autocheckpoint={AUTO_CHECKPOINT_PAGES}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._check_integrity()
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == 1:
                self._migrate_from_1()
                version = SCHEMA_VERSION
            self._db.executescript(_SCHEMA)
            if version == 0:
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise StoreError(
                    f"store {path} has schema {version}; this build reads {SCHEMA_VERSION}"
                )
        except sqlite3.Error as exc:
            if isinstance(storage_error(path, exc), StoreDamaged):
                self._db.close()  # connect() itself never reads a page, so _db is set
                raise StoreCheckFailed(path, str(exc)) from exc
            raise StoreError(f"cannot open store {path}: {exc}") from exc

    def _migrate_from_1(self) -> None:
        # Schema 1 stored only envelopes whose own signature was checked: the new
        # column's default says so for every row. One transaction: a crash leaves 1.
        # (sqlite3 errors go to __init__'s handler, as every error of opening does.)
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("ALTER TABLE messages ADD COLUMN"
                       " signature_checked INTEGER NOT NULL DEFAULT 1")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        log.info("store %s migrated from schema 1 to %d", self.path, SCHEMA_VERSION)

    def _check_integrity(self) -> None:
        # quick_check reads every page but skips the index-content cross-checks of
        # integrity_check: about O(N) instead of O(N log N).
        rows = self._db.execute("PRAGMA quick_check(8)").fetchall()
        problems = [line.strip() for r in rows for line in str(r[0]).splitlines()
                    if line.strip() and not line.startswith("*** in database")]
        if problems != ["ok"]:
            self._db.close()
            more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
            raise StoreCheckFailed(self.path, "; ".join(problems[:3]) + more)

    def checkpoint(self) -> tuple[int, int]:
        """Checkpoint the WAL as far as readers allow, without blocking writers
        (PASSIVE), on a connection of its own: for a worker thread, one call at a time,
        so that the copying and the fsyncs stay off the thread that writes (see the
        rules). Returns (frames in the WAL, frames checkpointed). Raises the project's
        StoreUnavailable for a storage failure, without `on_error`: that belongs to
        the writing thread, which meets the same failure on its next write."""
        try:
            if self._checkpointer is None:
                self._checkpointer = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False)
                self._checkpointer.execute(f"PRAGMA synchronous={self._durability.upper()}")
            _busy, frames, done = self._checkpointer.execute(
                "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            error = storage_error(self.path, exc)
            if error is None:
                raise
            raise error from exc
        return frames, done

    def close(self) -> None:
        """Checkpoint the WAL and close; a failed checkpoint leaves the WAL to the next
        start, which replays it."""
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.warning("checkpoint of %s at close failed: %s; the next start replays the"
                        " WAL", self.path, exc)
        finally:
            self._db.close()

    def _storage_failed(self, exc: sqlite3.Error, *, write: bool) -> StoreUnavailable | None:
        """Map a sqlite3 error and tell `on_error`; None if it is not about storage."""
        error = storage_error(self.path, exc)
        if error is not None and self.on_error is not None:
            self.on_error(error, write)
        return error

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
                self.commits += 1
            except BaseException:
                # After SQLITE_FULL or an I/O error SQLite has often rolled back by
                # itself, and a second ROLLBACK would raise "no transaction is active"
                # over the real error; a transaction left open would make every later
                # BEGIN fail. So roll back only what is still open.
                if self._db.in_transaction:
                    try:
                        self._db.execute("ROLLBACK")
                    except sqlite3.Error as exc:
                        log.warning("rollback on %s failed: %s", self.path, exc)
                raise
        except sqlite3.Error as exc:
            error = self._storage_failed(exc, write=True)
            if error is None:
                raise
            raise error from exc

    def probe_write(self, now_ms: int) -> None:
        """Commit one small write: succeeds once the store takes writes again."""
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                       ("write_probe_ms", str(now_ms)))

    # messages

    def add_messages(self, envelopes: Iterable[Envelope], received_ms: int) -> list[Envelope]:
        """Insert verified envelopes in one transaction; return those that were new."""
        added: list[Envelope] = []
        with self._transaction() as db:
            for env in envelopes:
                cur = db.execute(
                    "INSERT OR IGNORE INTO messages"
                    " (id, room, author, lamport, ts, kind, nick, cid, wire, received_ms,"
                    " signature_checked) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        env.id,
                        env.room,
                        env.author_text,
                        env.lamport,
                        env.ts_ms,
                        env.kind,
                        env.nick,
                        env.body.get("cid") if env.kind == "image" else None,
                        env.wire,
                        received_ms,
                        env.signature_checked,
                    ),
                )
                if cur.rowcount:
                    added.append(env)
        if self._counts is not None:
            for env in added:
                if env.kind in CHAT_KINDS:
                    self._counts[env.room] += 1
        for env in added:
            log = self._item_logs.get(env.room)
            if log is not None:
                log.add((env.ts_ms, env.id))
        return added

    def position(self, message_id: bytes) -> StoredPosition | None:
        """The room and history position of a stored message."""
        row = self._db.execute(
            "SELECT room, lamport, author, id FROM messages WHERE id = ?", (message_id,)
        ).fetchone()
        return StoredPosition(row[0], Position(row[1], row[2], row[3])) if row else None

    def history(self, room: str, limit: int, before: Position | None = None) -> list[Envelope]:
        """The newest `limit` chat messages of a room (before a position), oldest first."""
        if before is None:
            rows = self._db.execute(
                f"SELECT wire FROM messages WHERE room = ? AND kind IN {_CHAT_KINDS_SQL}"
                " ORDER BY lamport DESC, author DESC, id DESC LIMIT ?",
                (room, limit),
            ).fetchall()
        else:
            rows = self._db.execute(
                f"SELECT wire FROM messages WHERE room = ? AND kind IN {_CHAT_KINDS_SQL}"
                " AND (lamport, author, id) < (?, ?, ?)"
                " ORDER BY lamport DESC, author DESC, id DESC LIMIT ?",
                (room, before.lamport, before.author, before.id, limit),
            ).fetchall()
        return [env_codec.from_trusted_wire(row[0]) for row in reversed(rows)]

    def max_lamport(self, room: str) -> int:
        """The highest Lamport counter stored for a room, 0 if none."""
        row = self._db.execute("SELECT MAX(lamport) FROM messages WHERE room = ?", (room,))
        value = row.fetchone()[0]
        return int(value) if value is not None else 0

    def count_messages(self, room: str | None = None) -> int:
        """Chat messages stored, in one room or in all."""
        # COUNT(*) walks the index; status and rooms ask often, so count once and
        # keep the counts up to date in add_messages.
        if self._counts is None:
            rows = self._db.execute(
                f"SELECT room, COUNT(*) FROM messages WHERE kind IN {_CHAT_KINDS_SQL}"
                " GROUP BY room").fetchall()
            self._counts = Counter({r[0]: int(r[1]) for r in rows})
        if room is None:
            return sum(self._counts.values())
        return self._counts[room]

    def authors(self, room: str) -> list[tuple[str, str, int]]:
        """(author, latest nick, last ts) of everyone who wrote in a room."""
        rows = self._db.execute(
            "SELECT author, nick, MAX(ts) FROM messages WHERE room = ? GROUP BY author",
            (room,),
        ).fetchall()
        return [(r[0], r[1], int(r[2])) for r in rows]

    def window_start(self, room: str, depth: int) -> int:
        """The ts of the oldest of a room's newest `depth` messages; 0 if it has fewer."""
        log = self._item_logs.get(room)
        if log is None:
            # Load a quarter more than the window, so that new messages do not push
            # the window's start out of what is held at once.
            limit = depth + depth // 4 + 1
            rows = self._db.execute(
                "SELECT ts, id FROM messages WHERE room = ? ORDER BY ts DESC, id DESC"
                " LIMIT ?", (room, limit)).fetchall()
            log = ItemLog(((int(r[0]), bytes(r[1])) for r in rows),
                          complete=len(rows) < limit, depth=depth)
            self._item_logs[room] = log
        start = log.window_start()
        if start is not None:
            return start
        row = self._db.execute(
            "SELECT ts FROM messages WHERE room = ? ORDER BY ts DESC, id DESC"
            " LIMIT 1 OFFSET ?",
            (room, depth - 1),
        ).fetchone()
        return int(row[0]) if row else 0

    def sync_set(self, room: str, since: int, until: int = 0) -> ItemSet:
        """The room's messages with since <= ts (< until, unless until is 0), for set
        reconciliation: from the room's item log when it covers `since` (window_start
        loads it), else from the table."""
        log = self._item_logs.get(room)
        window = None if log is None else log.window(since, until)
        if window is not None:
            return window
        rows = self._db.execute(
            "SELECT ts, id FROM messages WHERE room = ? AND ts >= ? AND ts < ? "
            "ORDER BY ts, id",
            (room, since, until or 2**63 - 1),
        ).fetchall()
        return ItemSet.from_items((int(r[0]), bytes(r[1])) for r in rows)

    def wires(self, ids: Iterable[bytes]) -> list[tuple[bytes, bool]]:
        """The wire bytes of stored messages, each with whether its own signature was
        checked (see the rules), skipping unknown ids."""
        wanted = list(ids)
        out: list[tuple[bytes, bool]] = []
        # One query per chunk, not per id: a sync Want carries up to 2,048 ids.
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT wire, signature_checked FROM messages WHERE id IN ({marks})",
                chunk).fetchall()
            out.extend((bytes(r[0]), bool(r[1])) for r in rows)
        return out

    def mark_signatures_checked(self, ids: Iterable[bytes]) -> None:
        """Record that these messages' own signatures were found good."""
        with self._transaction() as db:
            db.executemany("UPDATE messages SET signature_checked = 1 WHERE id = ?",
                           ((i,) for i in ids))

    # images

    def image_by_cid(self, cid: str) -> tuple[str, str] | None:
        """(room, filename) of the latest image message with this CID, if any."""
        row = self._db.execute(
            "SELECT wire FROM messages WHERE cid = ? ORDER BY ts DESC LIMIT 1", (cid,)
        ).fetchone()
        if row is None:
            return None
        env = env_codec.from_trusted_wire(row[0])
        return env.room, str(env.body.get("filename", ""))

    def rooms_with_image(self, cid: str) -> set[str]:
        """Rooms in which an image with this CID was posted."""
        rows = self._db.execute("SELECT DISTINCT room FROM messages WHERE cid = ?", (cid,))
        return {r[0] for r in rows.fetchall()}

    def image_cids(self, room: str) -> list[str]:
        """CIDs of the images posted in a room."""
        rows = self._db.execute(
            "SELECT DISTINCT cid FROM messages WHERE room = ? AND cid IS NOT NULL", (room,))
        return [r[0] for r in rows.fetchall()]

    def image_messages(self, cid: str) -> list[Envelope]:
        """Every stored image message that names this CID, oldest first."""
        rows = self._db.execute(
            "SELECT wire FROM messages WHERE cid = ? ORDER BY ts, id", (cid,)).fetchall()
        return [env_codec.from_trusted_wire(row[0]) for row in rows]

    def record_image_verdict(self, message_id: bytes, author: str, unavailable: str | None,
                             now_ms: int) -> None:
        """Keep what checking an image message's bytes found (None: they matched)."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO image_verdicts"
                " (message_id, author, unavailable, checked_ms) VALUES (?, ?, ?, ?)",
                (message_id, author, unavailable, now_ms),
            )
        self._unavailable_by_author = None

    def image_verdicts(self, message_ids: Iterable[bytes]) -> dict[bytes, str | None]:
        """Verdicts of the given messages that were checked: id -> reason or None."""
        wanted = list(message_ids)
        out: dict[bytes, str | None] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                "SELECT message_id, unavailable FROM image_verdicts"
                f" WHERE message_id IN ({marks})", chunk).fetchall()
            out.update((bytes(r[0]), r[1]) for r in rows)
        return out

    def unavailable_images_by_author(self) -> dict[str, int]:
        """How many image messages of each author turned out not to match their bytes."""
        # `status` asks on every call and verdicts are rare: count again only after one.
        if self._unavailable_by_author is None:
            rows = self._db.execute(
                "SELECT author, COUNT(*) FROM image_verdicts WHERE unavailable IS NOT NULL"
                " GROUP BY author").fetchall()
            self._unavailable_by_author = {r[0]: int(r[1]) for r in rows}
        return dict(self._unavailable_by_author)

    # rooms

    def joined_rooms(self) -> list[str]:
        """Rooms this node is in, in the order joined."""
        rows = self._db.execute("SELECT name FROM rooms ORDER BY joined_ms, name")
        return [r[0] for r in rows.fetchall()]

    def join_room(self, room: str, now_ms: int) -> None:
        """Record membership (idempotent)."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO rooms (name, joined_ms) VALUES (?, ?)", (room, now_ms)
            )

    def leave_room(self, room: str) -> None:
        """Forget membership; the room's history stays."""
        with self._transaction() as db:
            db.execute("DELETE FROM rooms WHERE name = ?", (room,))
        self._item_logs.pop(room, None)

    # settings

    def get_setting(self, key: str) -> str | None:
        """A stored setting, or None."""
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_setting(self, key: str, value: str) -> None:
        """Store a setting."""
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value))

    # peers

    def remember_peer(self, peer_id: str, addrs: list[str], now_ms: int) -> None:
        """Keep a peer's addresses so a restart can redial it."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO peers (peer_id, addrs, last_seen_ms) VALUES (?, ?, ?)",
                (peer_id, json.dumps(addrs), now_ms),
            )

    def peer_addrs(self, peer_id: str) -> list[str]:
        """The remembered addresses of one peer (empty if unknown)."""
        row = self._db.execute("SELECT addrs FROM peers WHERE peer_id = ?",
                               (peer_id,)).fetchone()
        return list(json.loads(row[0])) if row else []

    def known_peers(self, limit: int = 64) -> list[tuple[str, list[str]]]:
        """The most recently seen peers and their addresses."""
        rows = self._db.execute(
            "SELECT peer_id, addrs FROM peers ORDER BY last_seen_ms DESC LIMIT ?", (limit,)
        ).fetchall()
        return [(r[0], list(json.loads(r[1]))) for r in rows]

    # presence

    def save_presence(self, rows: Iterable[tuple[str, str, int, bytes, int]]) -> None:
        """Keep directory entries (room, peer_id, seq, wire, last_seen_ms) in one commit."""
        with self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO presence (room, peer_id, seq, wire, last_seen_ms)"
                " VALUES (?, ?, ?, ?, ?)", list(rows))

    def presence(self, room: str) -> list[tuple[bytes, int]]:
        """(wire, last_seen_ms) of a room's stored directory entries."""
        rows = self._db.execute(
            "SELECT wire, last_seen_ms FROM presence WHERE room = ?", (room,)).fetchall()
        return [(bytes(r[0]), int(r[1])) for r in rows]

    def forget_presence(self, room: str) -> None:
        """Drop a room's directory (on leave)."""
        with self._transaction() as db:
            db.execute("DELETE FROM presence WHERE room = ?", (room,))

    # block list

    def block(self, peer_id: str, now_ms: int) -> None:
        """Add a peer to the block list (idempotent)."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO blocked (peer_id, blocked_ms) VALUES (?, ?)",
                (peer_id, now_ms),
            )

    def unblock(self, peer_id: str) -> None:
        """Remove a peer from the block list."""
        with self._transaction() as db:
            db.execute("DELETE FROM blocked WHERE peer_id = ?", (peer_id,))

    def blocked(self) -> list[str]:
        """The blocked peers, oldest first."""
        rows = self._db.execute("SELECT peer_id FROM blocked ORDER BY blocked_ms, peer_id")
        return [r[0] for r in rows.fetchall()]


def _column_if_readable(path: Path, query: str) -> list[str]:
    """One column from a damaged store, if its table still reads; else nothing."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return [str(r[0]) for r in db.execute(query)]
        finally:
            db.close()
    except sqlite3.Error:
        return []
