"""How sqlite3 errors map to the project's errors at the store's edge."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gossipchat.daemon.adapters.store import storage_error
from gossipchat.daemon.errors import StorageFull, StoreDamaged, StoreUnavailable

PATH = Path("/home/u/.local/share/gossipchat/store.sqlite")


def _error(cls: type[sqlite3.Error], text: str, code: int) -> sqlite3.Error:
    exc = cls(text)
    exc.sqlite_errorcode = code  # what the sqlite3 module sets from the C result code
    return exc


@pytest.mark.parametrize(("code", "expected"), [
    (13, StorageFull),          # SQLITE_FULL
    (11, StoreDamaged),         # SQLITE_CORRUPT
    (779, StoreDamaged),        # SQLITE_CORRUPT_INDEX: extended codes keep the primary
    (26, StoreDamaged),         # SQLITE_NOTADB
    (10, StoreUnavailable),     # SQLITE_IOERR
    (778, StoreUnavailable),    # SQLITE_IOERR_WRITE
    (8, StoreUnavailable),      # SQLITE_READONLY
    (5, StoreUnavailable),      # SQLITE_BUSY
])
def test_storage_failures_map_to_one_project_error_each(
        code: int, expected: type[StoreUnavailable]) -> None:
    error = storage_error(PATH, _error(sqlite3.OperationalError, "sqlite says", code))
    assert type(error) is expected
    assert error is not None
    assert str(PATH) in error.message
    assert error.data == {"path": str(PATH), "sqlite": "sqlite says"}


def test_the_full_disk_message_says_what_to_do() -> None:
    error = storage_error(PATH, _error(sqlite3.OperationalError, "database or disk is full", 13))
    assert error is not None
    assert error.message == (f"the disk holding the store {PATH} is full; free some space"
                             " and gossipchatd carries on by itself")


@pytest.mark.parametrize("code", [1, 19, 20])  # SQLITE_ERROR, CONSTRAINT, MISMATCH
def test_errors_that_mean_a_bug_are_not_mapped(code: int) -> None:
    assert storage_error(PATH, _error(sqlite3.OperationalError, "bad SQL", code)) is None


def test_errors_without_a_result_code_are_not_mapped() -> None:
    assert storage_error(PATH, sqlite3.ProgrammingError("closed database")) is None
