"""The block store's pinned roots on disk: a snapshot and an append-only journal.

Rules of this module:

- `pins.json` is the snapshot, `{"version": 1, "roots": [CID, ...]}`, written to a
  temporary file, fsynced and renamed into place, as the block store always wrote it.
- `pins.log` is the journal of changes since the snapshot, one line each: `+CID` for a
  pin, `-CID` for an unpin. A change is one append and one fsync, whatever the number
  of pins. Rewriting the whole snapshot for each change cost 50 ms per pinned image
  with 10,000 images pinned, on the daemon's event loop, and leaving a room of 100
  images then took 36 s (bench/pins.py).
- Loading replays the journal over the snapshot, then folds it into a new snapshot.
  Once the journal holds as many lines as there are roots (and at least
  COMPACT_MIN_LINES), the next change folds it too, so a change costs O(1) amortized
  and the journal stays shorter than the snapshot.
- Folding writes the new snapshot before it removes the journal. A crash in between
  leaves both, and replaying the old journal over the new snapshot gives the same
  roots: each line sets the state of one root, and the last line about a root wins.
- A journal whose last line has no newline was cut by a crash during an append that
  never returned, so that change was never reported done: the cut line is dropped.
  Any other malformed line is damage and raises `PinFileError`.
- A failed append (a full disk) is cut back off the journal, and the change raises
  `PinFileError`: the caller keeps its old state. The next change folds the journal
  into a new snapshot instead of appending, so nothing follows what may be left of
  a failed append if cutting it failed too.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from ..core import unixfs

__all__ = ["COMPACT_MIN_LINES", "PinFile", "PinFileError"]

SNAPSHOT = "pins.json"
JOURNAL = "pins.log"
# A journal is folded into the snapshot once it has this many lines and at least as
# many as there are roots.
COMPACT_MIN_LINES = 1024


class PinFileError(Exception):
    """The pins could not be read or written; the message says which file and why."""


class PinFile:
    """The pinned roots (normalized CIDs) kept under `directory`; temp files in `tmp`."""

    def __init__(self, directory: Path, tmp: Path) -> None:
        self._dir = directory
        self._tmp = tmp
        self._snapshot = directory / SNAPSHOT
        self._journal = directory / JOURNAL
        self._lines = 0  # lines in the journal
        self._journal_named = False  # its directory entry was fsynced since it was made
        self._must_fold = False  # an append failed and may have left a torn line

    def load(self) -> set[bytes]:
        """The pinned roots: the snapshot with the journal replayed over it. The journal
        is then folded into the snapshot if it can be (if not, it is kept and grows)."""
        roots = self._read_snapshot()
        replayed = self._replay(roots)
        if replayed:
            try:
                self.compact(roots)
            except PinFileError:
                self._lines = replayed  # a read-only or full disk: the journal stays
        return roots

    def record(self, roots: set[bytes], *, added: Iterable[bytes] = (),
               removed: Iterable[bytes] = ()) -> None:
        """Make a change durable. `roots` is the set after the change; the journal is
        folded into a snapshot of it when it has grown long enough."""
        text = "".join([f"+{unixfs.cid_to_str(key)}\n" for key in added]
                       + [f"-{unixfs.cid_to_str(key)}\n" for key in removed])
        if not text:
            return
        lines = text.count("\n")
        if self._must_fold or self._lines + lines >= max(COMPACT_MIN_LINES, len(roots)):
            self.compact(roots)
            return
        self._append(text.encode("ascii"))
        self._lines += lines

    def compact(self, roots: set[bytes]) -> None:
        """Write `roots` as the snapshot and start an empty journal."""
        doc = {"version": 1, "roots": sorted(unixfs.cid_to_str(root) for root in roots)}
        tmp = self._tmp / f"pins-{secrets.token_hex(8)}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as file:
                json.dump(doc, file, indent=1)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, self._snapshot)
            _fsync_dir(self._dir)
            self._journal.unlink(missing_ok=True)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise PinFileError(f"cannot save pins to {self._snapshot}: {exc}") from exc
        self._lines = 0
        self._journal_named = False
        self._must_fold = False

    # internals

    def _read_snapshot(self) -> set[bytes]:
        try:
            doc = json.loads(self._snapshot.read_text("utf-8"))
        except FileNotFoundError:
            return set()
        except (OSError, ValueError) as exc:
            raise PinFileError(f"cannot read pins from {self._snapshot}: {exc}") from exc
        texts = doc.get("roots") if isinstance(doc, dict) else None
        if not isinstance(texts, list):
            raise PinFileError(f"{self._snapshot} has no list of roots")
        roots = set()
        for text in texts:
            try:
                roots.add(unixfs.normalize_cid(unixfs.cid_from_str(text)))
            except (unixfs.CidError, TypeError) as exc:
                raise PinFileError(
                    f"{self._snapshot} holds a bad CID {text!r}: {exc}") from exc
        return roots

    def _replay(self, roots: set[bytes]) -> int:
        """Apply the journal's lines to `roots`; how many there were."""
        try:
            data = self._journal.read_bytes()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise PinFileError(f"cannot read pins from {self._journal}: {exc}") from exc
        whole = data.rfind(b"\n") + 1
        if whole < len(data):
            self._cut(whole)
        lines = data[:whole].splitlines()
        for number, line in enumerate(lines, 1):
            op, text = line[:1], line[1:].decode("ascii", "replace")
            try:
                key = unixfs.normalize_cid(unixfs.cid_from_str(text))
            except unixfs.CidError as exc:
                raise PinFileError(
                    f"{self._journal} line {number} holds a bad CID {text!r}: {exc}") from exc
            if op == b"+":
                roots.add(key)
            elif op == b"-":
                roots.discard(key)
            else:
                raise PinFileError(f"{self._journal} line {number} is neither a pin (+) "
                                   f"nor an unpin (-): {line[:80]!r}")
        return len(lines)

    def _cut(self, size: int) -> None:
        """Drop a torn last line (a crash during an append)."""
        try:
            with open(self._journal, "r+b") as file:
                file.truncate(size)
                os.fsync(file.fileno())
        except OSError as exc:
            raise PinFileError(f"cannot repair {self._journal}: {exc}") from exc

    def _append(self, data: bytes) -> None:
        # Opened for each change (an open and a close beside the fsync), so that no
        # descriptor outlives the store.
        try:
            fd = os.open(self._journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise PinFileError(f"cannot save pins to {self._journal}: {exc}") from exc
        size = None
        try:
            if not self._journal_named:
                _fsync_dir(self._dir)  # the new file's name survives a crash too
                self._journal_named = True
            size = os.fstat(fd).st_size
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as exc:
            if size is not None:
                with contextlib.suppress(OSError):  # no half of a change on disk
                    os.ftruncate(fd, size)
            self._must_fold = True  # and, if that failed too, nothing appended after it
            raise PinFileError(f"cannot save pins to {self._journal}: {exc}") from exc
        finally:
            os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
