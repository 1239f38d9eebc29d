"""SQLite set-up: WAL journal, busy timeout, writers waiting for each other instead of failing."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from sqlalchemy import text

from promptsweep.storage import SQLITE_BUSY_TIMEOUT_S, Storage


def test_sqlite_file_uses_wal_and_a_busy_timeout(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    with Storage(f"sqlite:///{db}") as storage:
        with storage._engine.connect() as conn:  # the connection settings promptsweep uses
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == int(SQLITE_BUSY_TIMEOUT_S * 1000)
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        storage.create_job("j", {})
    with sqlite3.connect(db) as plain:  # WAL is a property of the file: every client reads it
        assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_writer_waits_for_another_writer_and_readers_are_not_blocked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    with Storage(url) as storage:
        first = storage.create_job("first", {})
        holding, release = threading.Event(), threading.Event()

        def hold_write_lock() -> None:
            conn = sqlite3.connect(tmp_path / "p.db", isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE promptsweep_jobs SET name = 'renamed' WHERE id = ?", (first.id,))
            holding.set()
            release.wait(30)
            conn.execute("COMMIT")
            conn.close()

        holder = threading.Thread(target=hold_write_lock)
        holder.start()
        assert holding.wait(30)
        t0 = time.monotonic()
        assert storage.get_job(first.id).name == "first"  # a reader is not blocked (WAL snapshot)
        read_s = time.monotonic() - t0
        threading.Timer(0.5, release.set).start()
        t0 = time.monotonic()
        second = storage.create_job("second", {})  # waits for the lock instead of "database is locked"
        waited_s = time.monotonic() - t0
        holder.join(30)
        assert read_s < 0.4 <= waited_s
        assert storage.get_job(first.id).name == "renamed" and storage.get_job(second.id).name == "second"
