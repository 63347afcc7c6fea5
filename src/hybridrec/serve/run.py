"""Running the service: one uvicorn worker, with SIGHUP reloading the model.

Threads: PyTorch's intra-op thread count is process-wide and is not set here. Callers set it
once at startup, before :func:`serve` (``hybridrec.runtime.set_num_threads(1)``): with many
concurrent requests, one thread per request beats several OpenMP threads fighting
over the same cores.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hybridrec.events.log import EventLog
from hybridrec.serve.app import create_app
from hybridrec.serve.connections import (
    BODY_TIMEOUT,
    HEADER_TIMEOUT,
    MAX_CONNECTIONS,
    guarded_protocol,
)
from hybridrec.serve.gate import MAX_PENDING
from hybridrec.serve.holder import ModelHolder

logger = logging.getLogger(__name__)


def install_reload_signal(holder: ModelHolder) -> Callable[[], None] | None:
    """Make SIGHUP reload the model from its directory (the usual daemon convention).

    The reload runs in a background thread: the handler runs on the event loop's thread,
    which a model load must not block.

    Returns:
        A function that puts the previous handler back, or None where none was installed
        (no SIGHUP on Windows; handlers can only be set from the main thread).
    """
    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        return None

    def on_sighup(signum: int, frame: Any) -> None:
        logger.info("SIGHUP: reloading the model")
        holder.reload_in_background()

    previous = signal.signal(signal.SIGHUP, on_sighup)
    return lambda: signal.signal(signal.SIGHUP, previous)


def serve(
    model_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    *,
    cache_top: int | None = None,
    access_log: bool = False,
    admin_token: str | None = None,
    models_root: str | Path | None = None,
    header_timeout: float = HEADER_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
    max_pending: int = MAX_PENDING,
    events: str | Path | None = None,
    events_sync: str = "FULL",
    fold_in_process: bool = True,
) -> None:
    """Serve ``model_dir`` over HTTP with uvicorn until interrupted; SIGHUP reloads it.

    One worker process: reloads (endpoint or SIGHUP) swap the model of the only process
    there is. uvicorn picks its fastest HTTP parser and event loop that are installed
    (httptools and uvloop, dependencies of this package: the parser alone halved the CPU
    time of a cached request). Set PyTorch's thread count before calling (see the module
    docstring).

    Args:
        cache_top: items per user precomputed for ``GET /recommend`` (None: automatic,
            see :func:`cache_depth`; 0: none).
        access_log: log a line per request (off: it nearly doubles a cached request's CPU time).
        admin_token: secret for ``POST /admin/reload`` (None: ``HYBRIDREC_ADMIN_TOKEN``;
            neither: the admin endpoints are off).
        models_root: reloads read only directories under it (default: the parent of
            ``model_dir``).
        header_timeout: seconds a connection may take to send a request's headers (from
            opening, or from the previous response); then it is closed.
        max_connections: open connections served at once; a request beyond gets 503.
        max_pending: requests that need the model, running or waiting; beyond: 503.
        events: event log for ``POST /events`` (opened or created; see
            :mod:`hybridrec.serve.recent`); None: no events.
        events_sync: the log's ``PRAGMA synchronous``: ``FULL`` (an acknowledged event
            survives a power loss) or ``NORMAL`` (a crash of the process only).
        fold_in_process: new users' fold-ins in a child process (see
            :mod:`hybridrec.serve.fold_process`).
    """
    log = EventLog(events, synchronous=events_sync) if events is not None else None
    app = create_app(
        model_dir=model_dir,
        cache_top=cache_top,
        admin_token=admin_token,
        models_root=models_root,
        max_pending=max_pending,
        events=log,
        fold_in_process=fold_in_process,
    )
    config = server_config(app, host, port, log_level, access_log, header_timeout, max_connections)
    import uvicorn

    server = uvicorn.Server(config)
    app.state.holder.listeners.append(freeze_heap)
    restore_signal = install_reload_signal(app.state.holder)
    try:
        server.run()
    finally:
        if restore_signal is not None:
            restore_signal()
        if log is not None:
            log.close()  # what is queued is written first


def freeze_heap(served: Any = None) -> None:
    """After each model load: collect, then exempt everything alive from the cyclic garbage
    collector (``gc.freeze``).

    A full collection walks every tracked object: the model, torch, FastAPI and pydantic
    make that about 100 ms, during which no request is answered. POST bodies allocate
    enough to trigger one every few seconds (``POST /events`` at 250 batches/s: p99 58 ms,
    stalls of ~100 ms every ~5 s; frozen: p99 5 ms, measured). Frozen objects are still
    freed by reference counting; the previous freeze is undone first, so a replaced model
    is collected.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def server_config(
    app: Any,
    host: str,
    port: int,
    log_level: str,
    access_log: bool,
    header_timeout: float,
    max_connections: int,
    body_timeout: float | None = None,
) -> Any:
    """The ``uvicorn.Config`` of the service: the guarded HTTP protocol
    (:mod:`hybridrec.serve.connections`), idle keep-alive connections closed after
    ``header_timeout``, and no WebSocket support (the service has no WebSocket routes, so
    an upgrade request is just an HTTP request)."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        http=guarded_protocol(
            header_timeout,
            max_connections,
            body_timeout=BODY_TIMEOUT if body_timeout is None else body_timeout,
        ),  # fmt: skip
        ws="none",
        timeout_keep_alive=header_timeout,  # type: ignore[arg-type]  # call_later takes floats
    )
