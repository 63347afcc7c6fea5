"""The one way into the model: a dedicated worker thread with a bounded queue.

Everything a request does with the model (and with a large request body: parsing,
validating, serialising) runs here, never on the event loop, which keeps answering cached
requests meanwhile. Work runs one call at a time in a single thread: on a small CPU,
requests scoring in parallel threads only fight over the cores (16 concurrent clients got
286 requests/s that way, measured), and PyTorch runs one intra-op thread per call (set at
startup). At most ``max_pending`` calls may be running or waiting; the next request gets a
503 with ``Retry-After`` at once instead of joining a queue that grows without limit.

Requests of one kind can also wait together (:meth:`ModelGate.run_batched`): those that
arrive while the worker is busy are handed to one call of a batch function, so a burst of
uncached requests costs one trip through the queue and one vectorised call instead of one
each.

A request reads the served model (:class:`hybridrec.serve.holder.Served`) on the event
loop and hands that object to the call, so a reload that swaps the holder's reference
meanwhile never mixes two models within one request.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import torch
from fastapi import HTTPException

T = TypeVar("T")
A = TypeVar("A")

#: Model calls running or waiting at once (beyond: 503). Enough for every client of a
#: 16-client load plus a few heavy ones, few enough that the wait stays bounded.
MAX_PENDING = 32


class ModelGate:
    """Runs callables in one worker thread, at most ``max_pending`` at a time (then 503)."""

    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self.max_pending = max_pending
        self._pending = 0
        self._lock = threading.Lock()  # the count is released from the worker thread
        self._executor: ThreadPoolExecutor | None = None
        # per batch function, the requests waiting for its next call (under _lock)
        self._waiting: dict[Callable[..., Any], list[tuple[Any, Future[Any]]]] = {}

    @property
    def pending(self) -> int:
        """Calls running or waiting now."""
        return self._pending

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the worker thread under ``torch.inference_mode()``.

        The slot is held until the call has finished, even when the client has gone away
        meanwhile (the thread cannot be interrupted), so the bound counts real work.

        Raises:
            HTTPException: 503 when ``max_pending`` calls are already running or waiting.
        """
        self._acquire()
        try:
            future = self._worker().submit(_inference, fn, args)
        except BaseException:
            self._release(None)
            raise
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    async def run_batched(self, fn: Callable[[list[A]], list[T | BaseException]], request: A) -> T:
        """``fn``'s answer to ``request``, computed in one call of ``fn`` on every request
        waiting for it when the worker gets to it, in arrival order.

        ``fn`` runs in the worker thread under ``torch.inference_mode()`` and returns one
        answer per request, or the exception to raise for it, so one bad request fails
        alone. Each request holds its own slot of ``max_pending`` until its batch is done.

        Raises:
            HTTPException: 503 when ``max_pending`` calls are already running or waiting.
        """
        self._acquire()
        future: Future[T] = Future()
        with self._lock:
            waiting = self._waiting.get(fn)
            first = waiting is None
            if waiting is None:
                waiting = self._waiting[fn] = []
            waiting.append((request, future))
        if first:
            try:
                self._worker().submit(self._run_batch, fn)
            except BaseException:  # the worker is shut down: fail everyone waiting
                self._run_batch(fn, failed=True)
                raise
        return await asyncio.wrap_future(future)

    def _run_batch(self, fn: Callable[[list[Any]], list[Any]], failed: bool = False) -> None:
        """Answer every request waiting for ``fn`` (in the worker thread; ``failed``: with
        an error, the worker being gone). Their slots are freed once the work is done,
        before the answers are handed over, as :meth:`run` frees them. A request whose
        client has gone meanwhile (its future cancelled) is left out."""
        with self._lock:
            waiting = self._waiting.pop(fn, [])
        answers: list[Any] = []
        try:
            live = [(r, f) for r, f in waiting if f.set_running_or_notify_cancel()]
            if failed:
                answers = [RuntimeError("the model worker has stopped")] * len(live)
            elif live:
                try:
                    answers = _inference(fn, ([r for r, _ in live],))
                    if len(answers) != len(live):
                        raise RuntimeError(f"{fn!r} gave {len(answers)} answers to {len(live)}")
                except BaseException as exc:  # fn itself failed: every request gets it
                    answers = [exc] * len(live)
        finally:
            for _ in waiting:
                self._release(None)
        for (_, future), answer in zip(live, answers, strict=True):
            if isinstance(answer, BaseException):
                future.set_exception(answer)
            else:
                future.set_result(answer)

    def close(self) -> None:
        """Stop the worker thread once its queue is done (app shutdown)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    def _worker(self) -> ThreadPoolExecutor:
        if self._executor is None:  # created on first use: an app that is never served
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="hybridrec-model")
        return self._executor

    def _acquire(self) -> None:
        """Take a slot, or answer 503 when ``max_pending`` are taken."""
        with self._lock:
            if self._pending >= self.max_pending:
                raise HTTPException(
                    status_code=503,
                    detail=f"the service is busy ({self._pending} model requests in "
                    "progress); retry shortly",
                    headers={"Retry-After": "1"},
                )
            self._pending += 1

    def _release(self, future: Future[Any] | None) -> None:
        with self._lock:
            self._pending -= 1


def _inference(fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    with torch.inference_mode():
        return fn(*args)
