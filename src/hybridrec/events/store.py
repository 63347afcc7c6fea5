"""The event log's file: its tables, format marks and connections (SQLite, WAL mode).

The writer (:mod:`hybridrec.events.log`) and the readers (:mod:`hybridrec.events.read`)
open it only through here, so a file that is not an event log, or one of another format
version, is refused the same way on both sides, naming the path.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hybridrec.errors import ConfigError

#: ``PRAGMA application_id`` of an event log ("hrev"): tells it from any other SQLite file.
APPLICATION_ID = 0x68726576
#: ``PRAGMA user_version``: the layout of the tables below.
FORMAT_VERSION = 1
#: The ``PRAGMA synchronous`` levels a log may be opened with (docs: ``hybridrec.events.log``).
SYNCHRONOUS = ("FULL", "NORMAL")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user NOT NULL,   -- no declared type: ints stay INTEGER, text stays TEXT
    item NOT NULL,
    target REAL NOT NULL,
    timestamp REAL,  -- Unix seconds; NULL when the event had none
    received REAL NOT NULL  -- Unix seconds when the writer committed it
)
"""


def open_writer(path: Path, synchronous: str, busy_timeout: float) -> sqlite3.Connection:
    """The writer's connection: the file created or checked, WAL mode, ``synchronous``."""
    if path.is_dir():
        raise ConfigError(f"event log {path}: is a folder; give a file path")
    if not path.parent.is_dir():
        raise ConfigError(f"event log {path}: folder {path.parent} does not exist")
    try:
        conn = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise ConfigError(f"event log {path}: cannot be opened ({exc})") from None
    try:
        _check_or_create(conn, path)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise ConfigError(f"event log {path}: WAL mode is not available here (got {mode})")
        conn.execute(f"PRAGMA synchronous={synchronous}")
    except sqlite3.Error as exc:
        conn.close()
        raise ConfigError(f"event log {path}: cannot be used ({exc})") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _check_or_create(conn: sqlite3.Connection, path: Path) -> None:
    """An empty database becomes an event log; anything else must already be one."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    tables = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
    if app_id == 0 and tables == 0:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(_SCHEMA)
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={FORMAT_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return
    _check_format(conn, path)


def _check_format(conn: sqlite3.Connection, path: Path) -> None:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    if app_id != APPLICATION_ID:
        raise ConfigError(f"event log {path}: is an SQLite database but not a hybridrec event log")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version != FORMAT_VERSION:
        raise ConfigError(
            f"event log {path}: format version {version}, this hybridrec reads {FORMAT_VERSION}"
        )


def open_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection to an existing event log (ConfigError naming the path)."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ConfigError(f"event log {path}: {what}")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
        _check_format(conn, path)
    except sqlite3.Error as exc:
        raise ConfigError(f"event log {path}: not readable as an event log ({exc})") from None
    return conn


def last_id(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    return int(row[0]) if row else 0
