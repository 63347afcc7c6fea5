"""New users' fold-ins in a process of their own, away from the event loop's interpreter.

A fold-in (``POST /recommend`` with ``item_ids``) is a few hundred small tensor operations,
and PyTorch releases the GIL around each one. In the server's model thread each release
means winning the GIL back from an event loop that answers thousands of cached requests a
second: a batch of 8 fold-ins that takes 2.6 ms alone took 13-15 ms of wall time under the
mixed load (docs/benchmarks.md, "Serving under mixed load"). In a child process the
operations run back to back, and the model thread waits on one pipe read instead.

The child holds a copy of the served recommender, sent (pickled) in a background thread at
every model swap. Until it holds the model a request was read with, while it is loading,
or if it has died or answers with something that cannot be read, the fold-ins are computed
in the model thread exactly as without a child: the child only makes them faster, never
different or failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import pickle
import threading
import weakref
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from hybridrec.recommend import Recommender

logger = logging.getLogger(__name__)

#: Seconds a batch of fold-ins may take in the child before it is considered stuck (it is
#: then stopped and the batch computed in the server).
ANSWER_TIMEOUT = 60.0
#: Seconds the child may take to start and take a model (importing torch, unpickling,
#: linearising a large model).
LOAD_TIMEOUT = 600.0
#: Batches of fold-ins in the pipe to the child at once (:class:`FoldInQueue`).
FOLD_DEPTH = 2


class FoldInProcess:
    """A child process that answers :meth:`Recommender.recommend_for_items_many`.

    Thread-safe: loads (model swaps, any thread) and fold-ins (the model thread) share one
    pipe under a lock; a fold-in never waits for a load, it runs in the server instead.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: Any = None  # multiprocessing's SpawnProcess
        self._conn: Connection | None = None
        self._holds: weakref.ref[Recommender] | None = None  # the model the child has
        self._latest: weakref.ref[Recommender] | None = None  # the model it should have
        self._loading = threading.Lock()  # one background load at a time
        self.answered = 0  # fold-ins the child has answered (for tests and logs)

    def follow(self, recommender: Recommender) -> threading.Thread:
        """Send ``recommender`` to the child in a background thread (a model swap must not
        wait for it); of several swaps in quick succession only the latest model is sent."""
        self._latest = weakref.ref(recommender)
        thread = threading.Thread(target=self._load_latest, name="hybridrec-fold-in-load")
        thread.daemon = True
        thread.start()
        return thread

    def _load_latest(self) -> None:
        with self._loading:
            latest = self._latest() if self._latest is not None else None
            if latest is not None and not self.holds(latest):
                self.load(latest)

    def load(self, recommender: Recommender) -> bool:
        """Send ``recommender`` to the child (started first if needed); True once the child
        holds it. A failure is logged and leaves fold-ins to the server."""
        try:
            payload = pickle.dumps(recommender, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            logger.warning("fold-ins stay in the server: the model cannot be sent", exc_info=True)
            return False
        with self._lock:
            self._holds = None
            try:
                conn = self._started()
                conn.send_bytes(payload)
                if not conn.poll(LOAD_TIMEOUT):
                    raise TimeoutError(f"no answer in {LOAD_TIMEOUT:.0f} s")
                status, detail = pickle.loads(conn.recv_bytes())
                if status != "ok":
                    raise RuntimeError(detail)
            except Exception as exc:
                logger.warning(f"fold-ins stay in the server: the fold-in process failed ({exc})")
                self._stop()
                return False
            self._holds = weakref.ref(recommender)
            pid = self._process.pid if self._process is not None else None
        logger.info(f"new users' fold-ins now run in process {pid}")
        return True

    def holds(self, recommender: Recommender) -> bool:
        """Whether the child answers for ``recommender`` now."""
        holds = self._holds
        return holds is not None and holds() is recommender

    def recommend_for_items_many(
        self, recommender: Recommender, requests: Sequence[tuple[Any, int, bool]]
    ) -> list[Any] | None:
        """The child's answer to ``recommender.recommend_for_items_many(requests)``, or None
        when the server must compute it (the child is loading, holds another model, failed).
        """
        if not self._lock.acquire(blocking=False):  # a load in progress
            return None
        try:
            if not self.holds(recommender) or self._conn is None:
                return None
            try:
                self._conn.send_bytes(pickle.dumps(list(requests)))
                if not self._conn.poll(ANSWER_TIMEOUT):
                    raise TimeoutError(f"no answer in {ANSWER_TIMEOUT:.0f} s")
                payload = self._conn.recv_bytes()
            except Exception as exc:  # died or stuck
                logger.warning(f"the fold-in process failed ({exc}); fold-ins stay in the server")
                self._stop()
                return None
            try:
                status, answer = pickle.loads(payload)
            except Exception:  # e.g. an error type that does not unpickle: the server computes
                logger.warning("unreadable answer from the fold-in process", exc_info=True)
                return None
            if status != "ok" or len(answer) != len(requests):
                # the server computes the batch, so its own error (if any) surfaces there
                logger.warning(f"the fold-in process could not answer: {answer!r:.500}")
                return None
            self.answered += len(answer)
            return answer
        finally:
            self._lock.release()

    def close(self) -> None:
        """Stop the child (the app's shutdown)."""
        with self._lock:
            self._stop()

    def _started(self) -> Connection:
        """The pipe to a running child, started now if there is none (under the lock)."""
        if self._process is not None and self._process.is_alive() and self._conn is not None:
            return self._conn
        self._stop()
        # spawn, not fork: the server has threads (the event loop's, the model's), and a
        # forked child could inherit a lock one of them held
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_child, args=(theirs,), name="hybridrec-fold-in", daemon=True
        )
        process.start()
        theirs.close()
        self._process, self._conn = process, ours
        return ours

    def _stop(self) -> None:
        """End the child, if any (under the lock)."""
        self._holds = None
        conn, process = self._conn, self._process
        self._conn = self._process = None
        if conn is not None:
            conn.close()  # the child's next read ends it
        if process is not None:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)


def _child(conn: Connection) -> None:
    """The child's loop: a pickled recommender replaces the model; a list of
    ``(item_ids, k, exclude_seen)`` is answered with ``("ok", results)``; anything that
    goes wrong with ``("error", text)``. Ends when the server closes the pipe."""
    import torch

    torch.set_num_threads(1)  # as the server's model thread
    recommender: Recommender | None = None
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            obj = pickle.loads(message)
            if isinstance(obj, Recommender):
                recommender = obj
                recommender.prepare_fold_in()
                answer: tuple[str, Any] = ("ok", None)
            elif recommender is None:
                answer = ("error", "no model loaded")
            else:
                with torch.inference_mode():
                    answer = ("ok", recommender.recommend_for_items_many(obj))
            payload = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # e.g. an error that cannot be pickled: the server computes
            payload = pickle.dumps(("error", repr(exc)))
        try:
            conn.send_bytes(payload)
        except (EOFError, OSError):
            return


class FoldInQueue:
    """The event loop's own line to a :class:`FoldInProcess`: fold-ins that arrive while the
    child is busy wait and go together as the next batch, and answers are read when the
    pipe is readable (``loop.add_reader``), so neither the model worker nor any other thread
    takes part. A fold-in then never waits behind model work (a large request in the model
    worker held fold-ins for ~280 ms, docs/benchmarks.md), and no third thread competes
    with the event loop for the GIL.

    Up to ``depth`` batches are in the pipe at once: with 2 the child finds the next batch
    waiting when it finishes one, instead of idling until the busy event loop has read the
    answer and sent more. Only small requests come here (the route sends bodies of at most
    16 KB), so pickling them and writing to the pipe takes microseconds. Whenever the child
    cannot answer (loading, another model, dead, too slow) :meth:`ask` returns None and the
    caller computes the fold-in as without a child.
    """

    def __init__(
        self, folder: FoldInProcess, timeout: float = ANSWER_TIMEOUT, depth: int = FOLD_DEPTH
    ) -> None:
        self.folder = folder
        self.timeout = timeout
        self.depth = depth
        self._waiting: list[tuple[Recommender, tuple[Any, int, bool], Any]] = []
        self._in_flight: deque[list[Any]] = deque()  # futures of the batches in the pipe
        self._timer: Any = None
        self._conn: Connection | None = None  # the pipe the batches in flight went to

    async def ask(self, recommender: Recommender, request: tuple[Any, int, bool]) -> Any:
        """The child's result for one ``(item_ids, k, exclude_seen)`` (a result, or the
        exception the model raised for it), or None: compute it elsewhere."""
        if not self.folder.holds(recommender):
            return None
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.append((recommender, request, future))
        if len(self._in_flight) < self.depth:
            self._send(loop)
        return await future

    def _send(self, loop: asyncio.AbstractEventLoop) -> None:
        """Send every waiting fold-in of the model the child holds as one batch."""
        folder = self.folder
        batch = [w for w in self._waiting if folder.holds(w[0])]
        for recommender, _, future in self._waiting:
            if not folder.holds(recommender) and not future.done():
                future.set_result(None)  # a swap since it arrived: computed elsewhere
        self._waiting = []
        if not batch:
            return
        first = not self._in_flight
        if first and not folder._lock.acquire(blocking=False):  # a model is being sent
            for _, _, future in batch:
                future.set_result(None)
            return
        futures = [future for _, _, future in batch]
        try:
            conn = folder._conn if first else self._conn
            if conn is None or not folder.holds(batch[0][0]):
                raise RuntimeError("the child does not hold the model")
            conn.send_bytes(pickle.dumps([request for _, request, _ in batch]))
            if first:
                self._conn = conn
                loop.add_reader(conn.fileno(), self._receive, loop, conn)
                self._timer = loop.call_later(self.timeout, self._too_slow, loop, conn)
        except Exception as exc:
            self._in_flight.append(futures)
            self._fail_all(loop, f"the fold-in process failed ({exc}); fold-ins stay in the server")
            return
        self._in_flight.append(futures)

    def _receive(self, loop: asyncio.AbstractEventLoop, conn: Connection) -> None:
        """An answer is readable: hand it out, then send what waited meanwhile."""
        try:
            status, answer = pickle.loads(conn.recv_bytes())
        except Exception as exc:  # died, or an answer that does not unpickle
            self._fail_all(loop, f"the fold-in process failed ({exc}); fold-ins stay in the "
                           "server")  # fmt: skip
            return
        futures = self._in_flight.popleft()
        self._timer.cancel()
        if self._in_flight:  # the next batch's clock starts now
            self._timer = loop.call_later(self.timeout, self._too_slow, loop, conn)
        else:
            loop.remove_reader(conn.fileno())
            self._conn = None
            self.folder._lock.release()
        ok = status == "ok" and len(answer) == len(futures)
        if not ok:
            logger.warning(f"the fold-in process could not answer: {answer!r:.500}")
        for future, result in zip(futures, answer if ok else [None] * len(futures),
                                  strict=True):  # fmt: skip
            if not future.done():  # the client may have gone
                future.set_result(result)
        self.folder.answered += len(futures) if ok else 0
        if self._waiting and len(self._in_flight) < self.depth:
            self._send(loop)

    def _too_slow(self, loop: asyncio.AbstractEventLoop, conn: Connection) -> None:
        self._fail_all(loop, f"no answer from the fold-in process in {self.timeout:.0f} s")

    def _fail_all(self, loop: asyncio.AbstractEventLoop, message: str) -> None:
        """Stop the child in the background (its lock is held: stopping may wait seconds for
        a stuck child), and let every fold-in in flight be computed elsewhere."""
        logger.warning(message)
        if self._timer is not None:
            self._timer.cancel()
        if self._conn is not None:
            with contextlib.suppress(OSError, ValueError):
                loop.remove_reader(self._conn.fileno())
        futures = [f for batch in self._in_flight for f in batch]
        self._in_flight.clear()
        self._conn = None
        folder = self.folder

        def stop() -> None:
            try:
                folder._stop()
            finally:
                folder._lock.release()

        threading.Thread(target=stop, name="hybridrec-fold-in-stop", daemon=True).start()
        for future in futures:
            if not future.done():
                future.set_result(None)

    def close(self) -> None:
        """Give up the batches in flight, if any (the app's shutdown, on the event loop,
        before :meth:`FoldInProcess.close`, which takes the lock they hold)."""
        futures = [f for batch in self._in_flight for f in batch]
        waiting, self._waiting = self._waiting, []
        if self._in_flight:
            self._in_flight.clear()
            self._timer.cancel()
            if self._conn is not None:
                with contextlib.suppress(RuntimeError, OSError, ValueError):
                    asyncio.get_running_loop().remove_reader(self._conn.fileno())
            self._conn = None
            self.folder._lock.release()
        for future in futures + [f for _, _, f in waiting]:
            if not future.done():
                future.set_result(None)
