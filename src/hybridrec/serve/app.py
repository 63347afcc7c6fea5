"""The FastAPI app: :func:`create_app` assembles the service and its lifespan.

Model work never runs on the event loop: the endpoints are ``async`` and hand anything but a
cache lookup to the :class:`ModelGate` (one worker thread, a bounded queue, 503 beyond it).
Request bodies are read as bytes and parsed by :func:`parse_body`: small ones on the loop
(a cached batch is then answered there), large ones in the worker, because parsing and
validating the largest allowed body (100,000 score pairs) takes ~0.3 s of CPU that would
otherwise stall every other request.

The parts live in modules of their own: :mod:`~hybridrec.serve.bodies` (body parsing, 422
and HTTP error answers), :mod:`~hybridrec.serve.routes` (the public routes and their
worker-side functions), :mod:`~hybridrec.serve.admin` (the admin routes),
:mod:`~hybridrec.serve.middleware` (the ASGI middlewares) and :mod:`~hybridrec.serve.calls`
(what model calls in the worker share). Names other code imported from here still import.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from hybridrec.events.log import EventLog
from hybridrec.recommend import Recommender
from hybridrec.serve.admin import ADMIN_TOKEN_ENV, _add_admin_routes
from hybridrec.serve.bodies import (
    _client_gone,
    _http_error,
    _invalid_request,
    body_doc,
    parse_body,
)
from hybridrec.serve.calls import _known_ids, _model_call
from hybridrec.serve.events import add_event_routes
from hybridrec.serve.fold_process import FoldInProcess, FoldInQueue
from hybridrec.serve.gate import MAX_PENDING, ModelGate
from hybridrec.serve.holder import ModelHolder
from hybridrec.serve.middleware import (
    BodyLimit,
    CachedRecommendations,
    HeadAsGet,
    _fast_query,
)
from hybridrec.serve.recent import RecentEvents
from hybridrec.serve.routes import (
    _add_recommend_routes,
    _add_score_routes,
    _add_service_routes,
    _recommend_known_batch,
    _recommend_one,
)

#: What this module offers: the app factory, and names that code and tests import from here.
__all__ = [
    "ADMIN_TOKEN_ENV",
    "BodyLimit",
    "CachedRecommendations",
    "_fast_query",
    "_known_ids",
    "_model_call",
    "_recommend_known_batch",
    "_recommend_one",
    "body_doc",
    "create_app",
    "parse_body",
]


def create_app(
    recommender: Recommender | None = None,
    model_dir: str | Path | None = None,
    *,
    cache_top: int | None = None,
    admin_token: str | None = None,
    models_root: str | Path | None = None,
    max_pending: int = MAX_PENDING,
    events: str | Path | EventLog | None = None,
    fold_in_process: bool = False,
) -> FastAPI:
    """Build the service around a recommender, or one loaded from ``model_dir`` at startup.

    Args:
        recommender: serve this object (tests, embedding in another app).
        model_dir: load this artifact once when the app starts (its lifespan), so a broken
            artifact stops the server at startup rather than failing requests.
        cache_top: items per user precomputed for ``GET /recommend/{user_id}`` at every
            load (:class:`TopCache`); None: :func:`cache_depth`'s choice; 0 scores every
            request with the model.
        admin_token: the secret ``POST /admin/reload`` requires as a bearer token; None
            reads ``HYBRIDREC_ADMIN_TOKEN``; without one the admin endpoints answer 403.
        models_root: reloads read only directories under it (default: the parent of
            ``model_dir``; an injected recommender without one is not confined).
        max_pending: requests needing the model, running or waiting, before 503
            (:class:`ModelGate`).
        events: an event log (path, opened or created; or an open :class:`EventLog`, which
            the caller closes) for ``POST /events``; its events after the model's
            watermark change ``/recommend`` at once (:mod:`hybridrec.serve.recent`).
        fold_in_process: compute new users' fold-ins in a child process holding a copy of
            each served model (:mod:`hybridrec.serve.fold_process`), started with the app;
            ``hybridrec serve`` turns it on, tests and embedding apps leave it off.

    Raises:
        ValueError: neither or both of ``recommender`` and ``model_dir`` were given.
        ConfigError: ``events`` is not a usable event log.
    """
    if (recommender is None) == (model_dir is None):
        raise ValueError("create_app needs exactly one of recommender or model_dir")
    holder = ModelHolder(recommender, cache_top)
    gate = ModelGate(max_pending)
    log = events if isinstance(events, EventLog) or events is None else EventLog(events)
    recent = RecentEvents(log) if log is not None else None
    if recent is not None:
        holder.listeners.append(recent.sync)  # a new model: its watermark applies
        if holder.current is not None:
            recent.sync(holder.current)
    owned = log if log is not events else None  # opened here: closed with the app
    folder = FoldInProcess() if fold_in_process else None
    queue = FoldInQueue(folder) if folder is not None else None  # the event loop's line to it
    app = FastAPI(
        title="hybridrec",
        summary="Recommendations, pair scores and similar items from a trained hybridrec model.",
        lifespan=_lifespan(holder, model_dir, gate, owned, folder, queue),
    )
    app.state.holder, app.state.gate, app.state.events = holder, gate, recent
    app.state.fold_process, app.state.fold_queue = folder, queue
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_middleware(CachedRecommendations, holder=holder, events=recent)
    app.add_middleware(BodyLimit)  # runs before any body is parsed
    app.add_middleware(HeadAsGet)  # added last: runs first, HEAD becomes a bodiless GET
    _add_service_routes(app, holder)
    _add_recommend_routes(app, holder, gate, recent, folder, queue)
    add_event_routes(app, log, holder)
    _add_score_routes(app, holder, gate, recent)
    if admin_token is None:
        admin_token = os.environ.get(ADMIN_TOKEN_ENV) or None
    if models_root is None and model_dir is not None:
        models_root = Path(model_dir).resolve().parent
    _add_admin_routes(app, holder, admin_token, Path(models_root) if models_root else None)
    return app


def _lifespan(
    holder: ModelHolder,
    model_dir: str | Path | None,
    gate: ModelGate,
    log: EventLog | None,
    folder: FoldInProcess | None = None,
    queue: FoldInQueue | None = None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Load ``model_dir`` (if given) when the app starts: a broken artifact stops startup;
    start the fold-in process with the first model, which then follows every swap; stop the
    model worker and the process (and close the event log it opened) when it ends."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if folder is not None:
            holder.listeners.append(lambda served: folder.follow(served.recommender))
        if model_dir is not None:
            holder.reload(model_dir)
        elif folder is not None and holder.current is not None:
            folder.follow(holder.current.recommender)
        try:
            yield
        finally:
            gate.close()
            if queue is not None:
                queue.close()  # before the process: its batch in flight holds the lock
            if folder is not None:
                folder.close()
            if log is not None:
                log.close()  # what is queued is written first

    return lifespan
