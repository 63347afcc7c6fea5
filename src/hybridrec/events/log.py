"""A durable event log: interactions recorded by the service, read back by ``update``.

One SQLite file (the standard library's ``sqlite3``) in WAL mode. Each event is ``user,
item, target, timestamp`` plus an integer id assigned at commit (strictly increasing, never
reused: ``AUTOINCREMENT``) and the time it was received. The id is what a model's watermark
records, so ``update`` can take exactly the events after it.

Durability. ``PRAGMA synchronous=FULL`` (the default here): in WAL mode every commit
fsyncs the write-ahead log before it returns, so an acknowledged event survives a power
loss or an OS crash, not only a crash of the process. ``NORMAL`` fsyncs only at
checkpoints: a commit then survives the process being killed (the WAL is in the OS's page
cache) but the last transactions may roll back on power loss. FULL costs one fsync per
transaction, which group commit amortises; docs/benchmarks.md has both measured.

Throughput. Batches are written by one dedicated writer thread (never the event loop nor
the model's worker): it takes every batch that is waiting, writes them in one transaction
and commits once (group commit), so concurrent clients share the cost of the fsync. Each
batch is all or nothing: if the group's transaction fails, its batches are retried one by
one, each in its own transaction, and a batch that still fails is reported to its caller
alone (:class:`EventLogUnavailable`) with nothing of it written.

Checkpoints (copying the WAL into the database file, with its own fsync) run in a thread
of their own, passively (they never block the writer), rather than inside the commit that
happens to cross SQLite's automatic threshold, which would stall every batch behind it.
Under a steady stream such a checkpoint never catches up with the writer, and the WAL
would grow without end (170 MB in 8 s, measured), so after each one the writer finishes
it between two transactions (only the frames added meanwhile), and the next transaction
starts the WAL afresh.

Ids keep their type: the id columns have no declared type (SQLite's "BLOB" affinity, which
converts nothing), so an integer id is stored as an INTEGER and text as TEXT.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, NamedTuple

from hybridrec.errors import ConfigError
from hybridrec.events.store import SYNCHRONOUS, last_id, open_reader, open_writer

logger = logging.getLogger(__name__)

#: Events waiting for the writer beyond which :meth:`EventLog.append` refuses a batch
#: (EventLogBusy): a bound on memory when the disk is slower than the clients.
MAX_QUEUED_EVENTS = 200_000
#: Most events one group commit writes; the rest wait for the next transaction.
MAX_GROUP_EVENTS = 20_000
#: Events committed between two checkpoints (about 4 MB of write-ahead log; SQLite's own
#: automatic checkpoint would run at about the same size, but inside a commit).
CHECKPOINT_EVENTS = 50_000


class Event(NamedTuple):
    """One interaction as stored: ids as given (int or str), target, Unix seconds or None."""

    user: int | str
    item: int | str
    target: float = 1.0
    timestamp: float | None = None


class EventLogUnavailable(Exception):
    """The log cannot take a batch now (locked, read-only, disk full, I/O error, closed);
    nothing of the batch was written. The service answers 503."""


class EventLogBusy(EventLogUnavailable):
    """Too many events are already waiting for the writer."""


#: Called by the writer thread after each commit, before the batch is acknowledged, with
#: the batch's first id and its events (ids ``first .. first + len - 1``).
CommitListener = Callable[[int, Sequence[Event]], None]


class _Batch:
    __slots__ = ("events", "future")

    def __init__(self, events: Sequence[Event]) -> None:
        self.events = events
        self.future: Future[tuple[int, int]] = Future()


class EventLog:
    """An open event log with its writer thread; :meth:`append` batches, :meth:`close` at end.

    Args:
        path: the SQLite file; created (with its tables) when it does not exist.
        synchronous: ``"FULL"`` (power-loss safe, the default) or ``"NORMAL"`` (safe
            against a crash of the process only); see the module docstring.
        busy_timeout: seconds a write waits for another connection's lock before the batch
            fails with :class:`EventLogUnavailable`.

    Raises:
        ConfigError: the path is a folder, its folder is missing, or the file is not an
            event log (another SQLite database, or not SQLite at all).
    """

    def __init__(
        self, path: str | Path, *, synchronous: str = "FULL", busy_timeout: float = 5.0
    ) -> None:
        synchronous = str(synchronous).upper()
        if synchronous not in SYNCHRONOUS:
            raise ConfigError(f"synchronous must be one of {SYNCHRONOUS}, got {synchronous!r}")
        self.path = Path(path)
        self.synchronous = synchronous
        self._conn = open_writer(self.path, synchronous, busy_timeout)
        self._identity = _identity(self.path)  # the file the connection holds open
        self._conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer does it
        self._checkpointer = sqlite3.connect(
            self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        self._conn.execute(f"PRAGMA journal_size_limit={64 * 2**20}")  # WAL file kept <= 64 MB
        self._checkpoint_due = threading.Event()
        self._since_checkpoint = 0
        self._catch_up = False  # a passive checkpoint ran: the writer finishes it
        self._listeners: list[CommitListener] = []
        self._queue: list[_Batch] = []
        self._queued_events = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="hybridrec-events", daemon=True)
        self._thread.start()
        self._checkpoint_thread = threading.Thread(
            target=self._checkpoints, name="hybridrec-events-checkpoint", daemon=True
        )
        self._checkpoint_thread.start()

    # ------------------------------------------------------------------ writing

    def add_listener(self, listener: CommitListener) -> None:
        """Call ``listener(first_id, events)`` in the writer thread after every commit."""
        self._listeners.append(listener)

    def append(self, events: Sequence[Event]) -> Future[tuple[int, int]]:
        """Queue one batch for the writer; the future gives ``(first_id, last_id)`` once the
        whole batch is committed, or raises :class:`EventLogUnavailable` (nothing written).

        Raises:
            EventLogBusy: more than :data:`MAX_QUEUED_EVENTS` are already waiting.
            EventLogUnavailable: the log is closed.
            ValueError: an empty batch, or an event that is not an :class:`Event` of int64 or
                text ids, a finite target and a finite timestamp or None.
        """
        if not events:
            raise ValueError("a batch needs at least one event")
        batch = _Batch([_checked(i, event) for i, event in enumerate(events)])
        with self._cond:
            if self._closing:
                raise EventLogUnavailable("the event log is closed")
            if self._queued_events + len(events) > MAX_QUEUED_EVENTS and self._queue:
                raise EventLogBusy(f"{self._queued_events:,} events are waiting to be written")
            self._queue.append(batch)
            self._queued_events += len(events)
            self._cond.notify()
        return batch.future

    def write(self, events: Sequence[Event]) -> tuple[int, int]:
        """:meth:`append` and wait for the commit: ``(first_id, last_id)``."""
        return self.append(events).result()

    def close(self) -> None:
        """Write what is queued, stop the writer thread, close the file."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify()
        self._thread.join()
        self._checkpoint_due.set()
        self._checkpoint_thread.join()
        self._checkpointer.close()
        self._conn.close()  # the last connection: SQLite checkpoints and removes the WAL

    def last_id(self) -> int:
        """The id of the last committed event (0 for an empty log)."""
        return last_id(open_reader(self.path))

    def _run(self) -> None:
        while True:
            if self._catch_up:
                self._catch_up = False
                try:
                    self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:  # the WAL keeps the data; retried next time
                    logger.warning(f"event log {self.path}: checkpoint failed: {exc}")
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return  # closing, and everything queued is written
                group, size = [], 0
                while self._queue and (
                    not group or size + len(self._queue[0].events) <= MAX_GROUP_EVENTS
                ):
                    batch = self._queue.pop(0)
                    group.append(batch)
                    size += len(batch.events)
                self._queued_events -= size
            self._commit_group(group)

    def _commit_group(self, group: list[_Batch]) -> None:
        # Any exception fails the batches it concerns (a future left unresolved would
        # hang its request), and the writer thread carries on with the next group.
        try:
            firsts = self._transaction(group)
        except Exception as exc:
            if len(group) == 1:
                self._fail(group[0], exc)
                return
            for batch in group:  # each alone: one batch's failure is not the others'
                try:
                    firsts = self._transaction([batch])
                except Exception as single:
                    self._fail(batch, single)
                else:
                    self._done([batch], firsts)
            return
        self._done(group, firsts)

    def _transaction(self, group: list[_Batch]) -> list[int]:
        """Write ``group`` in one transaction; the first id of each batch."""
        conn = self._conn
        if _identity(self.path) != self._identity:  # removed or replaced under the open
            # connection: a commit would go to a file nobody reads, its ids later reused
            raise sqlite3.OperationalError("event log file removed or replaced")
        conn.execute("BEGIN IMMEDIATE")
        try:
            next_id = last_id(conn) + 1
            received = time.time()
            rows, firsts = [], []
            for batch in group:
                firsts.append(next_id + len(rows))
                rows.extend(batch.events)  # NamedTuples: JSON arrays
            rows_json = json.dumps(rows, allow_nan=False)
            # named parameters: Python 3.12 deprecates numbered ones (?1) bound by position
            conn.execute(_INSERT, {"first": next_id, "received": received, "rows": rows_json})
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:  # pragma: no cover - the connection is already broken
                    logger.exception("rollback of the event log failed")
            raise
        return firsts

    def _checkpoints(self) -> None:
        """Checkpoint passively whenever enough events were committed, until closed."""
        while True:
            self._checkpoint_due.wait()
            self._checkpoint_due.clear()
            if self._closing and not self._thread.is_alive():
                return
            try:
                self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:  # the WAL keeps the data; retried next time
                logger.warning(f"event log {self.path}: checkpoint failed: {exc}")
            else:
                self._catch_up = True

    def _done(self, group: list[_Batch], firsts: list[int]) -> None:
        self._since_checkpoint += sum(len(batch.events) for batch in group)
        if self._since_checkpoint >= CHECKPOINT_EVENTS:
            self._since_checkpoint = 0
            self._checkpoint_due.set()
        for batch, first in zip(group, firsts, strict=True):
            for listener in self._listeners:
                try:
                    listener(first, batch.events)
                except Exception:  # a listener bug must not lose the acknowledgement
                    logger.exception("event log listener failed")
            batch.future.set_result((first, first + len(batch.events) - 1))

    def _fail(self, batch: _Batch, exc: Exception) -> None:
        logger.warning(f"event log {self.path}: a batch of {len(batch.events)} not written: {exc}")
        batch.future.set_exception(EventLogUnavailable(_reason(exc)))


def _checked(index: int, event: Any) -> Event:
    """``event`` as an :class:`Event` that the log stores exactly (the service validates
    first; this guards the Python API, e.g. against an id SQLite would turn into a float)."""
    user, item, target, timestamp = event
    for name, value in (("user", user), ("item", item)):
        if isinstance(value, bool) or not (
            isinstance(value, str) or (isinstance(value, int) and -(2**63) <= value < 2**63)
        ):
            raise ValueError(f"event {index}: {name} {value!r} is not an int64 or text id")
        if isinstance(value, str) and "\x00" in value:  # SQLite's text would end there
            raise ValueError(f"event {index}: {name} {value[:40]!r} contains a NUL character")
    for name, value in (("target", target), ("timestamp", timestamp)):
        if value is None and name == "timestamp":
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"event {index}: {name} {value!r} is not a finite number")
    return Event(user, item, float(target), None if timestamp is None else float(timestamp))


#: The whole group in one statement, from one JSON array of ``[user, item, target,
#: timestamp]`` rows: one call into SQLite, so the writer gives up and takes back the GIL
#: a few times per transaction rather than once per row (``executemany`` steps each row
#: with the GIL released, and under a busy event loop every retake could wait out
#: Python's 5 ms switch interval). JSON integers become INTEGER, text TEXT, null NULL.
_INSERT = (
    "INSERT INTO events (id, user, item, target, timestamp, received) "
    "SELECT :first + key, json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
    "json_extract(value, '$[2]'), json_extract(value, '$[3]'), :received FROM json_each(:rows)"
)


def _identity(path: Path) -> tuple[int, int] | None:
    """The file at ``path`` (device, inode), or None when there is none."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _reason(exc: Exception) -> str:
    """A short reason for a failed write, naming no paths."""
    text = str(exc).lower()
    for key, reason in (
        (
            "removed or replaced",
            "the event log file was removed or replaced while the service ran; restart it",
        ),
        ("locked", "the event log is locked by another process"),
        ("busy", "the event log is locked by another process"),
        ("readonly", "the event log is read-only"),
        ("read-only", "the event log is read-only"),
        ("full", "the disk holding the event log is full"),
        ("disk i/o", "the event log could not be written (I/O error)"),
    ):
        if key in text:
            return reason
    return "the event log could not be written"
