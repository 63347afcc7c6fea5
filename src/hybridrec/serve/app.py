"""The FastAPI app: routes, and an ASGI middleware that answers cached requests before them.

Model work never runs on the event loop: the endpoints are ``async`` and hand anything but a
cache lookup to the :class:`ModelGate` (one worker thread, a bounded queue, 503 beyond it).
Request bodies are read as bytes and parsed by :func:`parse_body`: small ones on the loop
(a cached batch is then answered there), large ones in the worker, because parsing and
validating the largest allowed body (100,000 score pairs) takes ~0.3 s of CPU that would
otherwise stall every other request.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import pandas as pd
from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from hybridrec.errors import HybridRecError
from hybridrec.events.log import EventLog
from hybridrec.recommend import Recommender
from hybridrec.recommend.two_stage import AUTO
from hybridrec.serve.cache import CACHE_TOP
from hybridrec.serve.events import RecentEvents, add_event_routes
from hybridrec.serve.gate import MAX_PENDING, ModelGate
from hybridrec.serve.holder import ModelHolder, Served
from hybridrec.serve.schemas import (
    MAX_K,
    BatchOut,
    HealthOut,
    K,
    ModelOut,
    NewItemsOut,
    NewItemsRequest,
    RecommendationOut,
    RecommendRequest,
    ReloadOut,
    ReloadRequest,
    ScoreOut,
    ScoreRequest,
    json_safe,
    plain,
    to_out,
)

logger = logging.getLogger(__name__)

#: Most users of a cached batch answered on the event loop (about 1 µs each); larger
#: batches are looked up in a worker thread.
_LOOP_BATCH = 1000
#: Largest request body parsed on the event loop (tens of microseconds); larger bodies are
#: parsed in the model worker.
_LOOP_BODY_BYTES = 16 * 1024

M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M], raw: bytes) -> M:
    """``raw`` JSON validated as ``model``; a 422 (through :func:`_invalid_request`) if not.

    pydantic's own JSON parser is used: it bounds nesting depth, reads NaN/Infinity
    literals as numbers that strict fields then refuse, and validates while parsing.
    """
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in errors]
        ) from None


def body_doc(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    """OpenAPI ``requestBody`` for an endpoint that reads its body itself (``openapi_extra``),
    with the model's schema inlined (its ``$defs`` would not resolve there)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                return inline(defs[ref.rsplit("/", 1)[-1]])
            return {key: inline(value) for key, value in node.items()}
        return [inline(value) for value in node] if isinstance(node, list) else node

    content = {"application/json": {"schema": inline(schema)}}
    return {"requestBody": {"required": required, "content": content}}


#: Validation errors listed in a 422 at most, and bytes its whole answer may take (about;
#: with the HTTP headers, an error answer stays under 1 KB).
MAX_ERRORS, MAX_ERROR_BYTES = 10, 700
#: Characters kept of a location part (a JSON key can be any length) and of a message.
_LOC_TEXT, _MSG_TEXT = 40, 160


def _short(value: Any, limit: int) -> Any:
    """Text cut to ``limit`` characters (marked with an ellipsis); anything else as is."""
    if isinstance(value, str) and len(value) > limit:
        return value[: limit - 1] + "…"
    return value


def _short_error(error: dict[str, Any]) -> dict[str, Any]:
    """One validation error with its location, message and type, shortened; never the input."""
    return {
        "loc": [_short(part, _LOC_TEXT) for part in list(error.get("loc", ()))[:6]],
        "msg": _short(str(error.get("msg", "")), _MSG_TEXT),
        "type": _short(str(error.get("type", "")), _LOC_TEXT),
    }


def _rendered_size(body: dict[str, Any]) -> int:
    return len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())


async def _invalid_request(request: Any, exc: Exception) -> Response:
    """A short 422 that names what was wrong without echoing the input.

    FastAPI's default answer repeats every offending value, so a 54 MB body got a 53 MB
    answer, and a NaN or Infinity literal in the body made the answer itself unrenderable
    (a 500). Here each error keeps its location, message and type, shortened, and errors are
    listed (at most :data:`MAX_ERRORS`) while the answer stays within
    :data:`MAX_ERROR_BYTES`; ``more_errors`` counts the rest.
    """
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    body: dict[str, Any] = {"detail": []}
    for error in errors[:MAX_ERRORS]:
        body["detail"].append(_short_error(error))
        if len(body["detail"]) > 1 and _rendered_size(body) > MAX_ERROR_BYTES:
            body["detail"].pop()
            break
    if len(errors) > len(body["detail"]):
        body["more_errors"] = len(errors) - len(body["detail"])
    return JSONResponse(body, status_code=422)


async def _http_error(request: Any, exc: Exception) -> Response:
    """FastAPI's answer to an HTTPException, with a text detail shortened: a message may
    quote a requested id (an unknown item in a URL can be 60 KB long)."""
    if not isinstance(exc, StarletteHTTPException):  # pragma: no cover - registered for it
        raise exc
    detail = _short(exc.detail, _MSG_TEXT)
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


def create_app(
    recommender: Recommender | None = None,
    model_dir: str | Path | None = None,
    *,
    cache_top: int = CACHE_TOP,
    admin_token: str | None = None,
    models_root: str | Path | None = None,
    max_pending: int = MAX_PENDING,
    events: str | Path | EventLog | None = None,
) -> FastAPI:
    """Build the service around a recommender, or one loaded from ``model_dir`` at startup.

    Args:
        recommender: serve this object (tests, embedding in another app).
        model_dir: load this artifact once when the app starts (its lifespan), so a broken
            artifact stops the server at startup rather than failing requests.
        cache_top: items per user precomputed for ``GET /recommend/{user_id}`` at every
            load (:class:`TopCache`); 0 scores every request with the model.
        admin_token: the secret ``POST /admin/reload`` requires as a bearer token; None
            reads ``HYBRIDREC_ADMIN_TOKEN``; without one the admin endpoints answer 403.
        models_root: reloads read only directories under it (default: the parent of
            ``model_dir``; an injected recommender without one is not confined).
        max_pending: requests needing the model, running or waiting, before 503
            (:class:`ModelGate`).
        events: an event log (path, opened or created; or an open :class:`EventLog`, which
            the caller closes) for ``POST /events``; its events after the model's
            watermark change ``/recommend`` at once (:mod:`hybridrec.serve.events`).

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
    app = FastAPI(
        title="hybridrec",
        summary="Recommendations, pair scores and similar items from a trained hybridrec model.",
        lifespan=_lifespan(holder, model_dir, gate, owned),
    )
    app.state.holder, app.state.gate, app.state.events = holder, gate, recent
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(CachedRecommendations, holder=holder, events=recent)
    app.add_middleware(BodyLimit)  # added last: runs first, before any body is parsed
    _add_service_routes(app, holder)
    _add_recommend_routes(app, holder, gate, recent)
    add_event_routes(app, log)
    _add_score_routes(app, holder, gate)
    if admin_token is None:
        admin_token = os.environ.get(ADMIN_TOKEN_ENV) or None
    if models_root is None and model_dir is not None:
        models_root = Path(model_dir).resolve().parent
    _add_admin_routes(app, holder, admin_token, Path(models_root) if models_root else None)
    return app


def _lifespan(
    holder: ModelHolder, model_dir: str | Path | None, gate: ModelGate, log: EventLog | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Load ``model_dir`` (if given) when the app starts: a broken artifact stops startup;
    stop the model worker (and close the event log it opened) when it ends."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if model_dir is not None:
            holder.reload(model_dir)
        try:
            yield
        finally:
            gate.close()
            if log is not None:
                log.close()  # what is queued is written first

    return lifespan


def _add_service_routes(app: FastAPI, holder: ModelHolder) -> None:
    """``GET /health`` and ``GET /model``."""

    @app.get("/health", tags=["service"])
    async def health() -> HealthOut:
        """Liveness plus the served model's name."""
        return HealthOut(status="ok", model=holder.get().recommender.model_name)

    @app.get("/model", tags=["service"])
    async def model_info() -> ModelOut:
        """Metadata of the served artifact: versions, sizes, hyper-parameters, final metrics."""
        served = holder.get()
        rec = served.recommender
        return ModelOut(
            model=rec.model_name,
            model_dir=served.model_dir,
            format_version=rec.config.get("format_version"),
            hybridrec_version=rec.config.get("hybridrec_version"),
            num_users=len(rec.users),
            num_items=len(rec.items),
            hyperparameters=json_safe(rec.config.get("model_config", {})),
            metrics=served.metrics,
        )


def _add_recommend_routes(
    app: FastAPI, holder: ModelHolder, gate: ModelGate, events: RecentEvents | None = None
) -> None:
    """``GET /recommend/{user_id}`` and ``POST /recommend``: the cache first, else the model
    worker; users with events since the model's watermark through ``events``."""

    @app.get("/recommend/{user_id}", tags=["recommend"], response_model=RecommendationOut)
    async def recommend_user(
        user_id: Annotated[str, PathParam(description="raw user id; unknown users get popular")],
        k: K = 10,
        exclude_seen: Annotated[bool, Query(description="skip items seen in training")] = True,
    ) -> Response:
        """Top-k items for one user (an unknown user gets the most popular items)."""
        served = holder.get()
        if events is not None and events.concerns(served, user_id, exclude_seen):
            return await events.recommend_one(served, user_id, k, exclude_seen, gate)
        # The cached answer is a lookup, cheap enough for the event loop
        if served.cache is not None:
            body = served.cache.body(user_id, k, exclude_seen)
            if body is not None:
                return Response(body, media_type="application/json")
        request = (served.recommender, user_id, k, exclude_seen)
        return await gate.run_batched(_recommend_known_batch, request)

    @app.post(
        "/recommend",
        tags=["recommend"],
        response_model=BatchOut | RecommendationOut,
        openapi_extra=body_doc(RecommendRequest),
    )
    async def recommend_batch(request: Request) -> Response:
        """Top-k items for several users (``user_ids``: ``{"results": [...]}``), or for a new
        user described by the items they interacted with (``item_ids``) and/or attributes
        (``user_features``): one result."""
        served = holder.get()
        raw = await request.body()
        if len(raw) > _LOOP_BODY_BYTES:
            return await gate.run(_parse_and_recommend, served, raw, events)
        body = parse_body(RecommendRequest, raw)
        if _with_events(events, served, body):
            return await gate.run(events.batch_response, served, body)  # type: ignore[union-attr]
        cached = _cached_batch(served, body)
        if cached is not None:
            return cached
        if body.user_ids is None and body.user_features is None:  # a new user by items
            return await gate.run_batched(_one_by_one, (_recommend_batch_sync, served, body))
        return await gate.run(_recommend_batch_sync, served, body)


def _cached_batch(served: Served, body: RecommendRequest) -> Response | None:
    """A small batch of users answered from the cache on the event loop, else None: in a
    worker thread it would wait for the GIL behind other requests (p95 60 ms at 16 clients,
    measured)."""
    users = body.user_ids
    if users is None or len(users) > _LOOP_BATCH or body.items is not None:
        return None
    if served.cache is None:
        return None
    cached = served.cache.batch(users, body.k, body.exclude_seen)
    return None if cached is None else Response(cached, media_type="application/json")


def _add_score_routes(app: FastAPI, holder: ModelHolder, gate: ModelGate) -> None:
    """``POST /score`` (pairs) and ``GET /similar/{item_id}``, in the model worker."""

    @app.post(
        "/score", tags=["recommend"], response_model=ScoreOut, openapi_extra=body_doc(ScoreRequest)
    )
    async def score(request: Request) -> Response:
        """Probability of a positive interaction for each ``(user_id, item_id)`` pair."""
        served = holder.get()
        return await gate.run(_score_sync, served.recommender, await request.body())

    @app.get("/similar/{item_id}", tags=["recommend"], response_model=RecommendationOut)
    async def similar(
        item_id: Annotated[str, PathParam(description="raw item id; must be known")], k: K = 10
    ) -> Response:
        """Items most like ``item_id``; 404 when the model does not know it."""
        return await gate.run(_similar_sync, holder.get().recommender, item_id, k)


def _score_sync(rec: Recommender, raw: bytes) -> Response:
    """``POST /score`` in the model worker: parse, score, serialise."""
    body = parse_body(ScoreRequest, raw)
    if not body.pairs:
        return _json_response(ScoreOut(scores=[]))
    users = [p.user_id for p in body.pairs]
    items = [p.item_id for p in body.pairs]
    with _model_call():
        scores = rec.score(users, items)
    return _json_response(ScoreOut(scores=scores.tolist()))


def _similar_sync(rec: Recommender, item_id: str, k: int) -> Response:
    """``GET /similar/{item_id}`` in the model worker."""
    with _model_call():
        result = rec.similar_items(item_id, k=k)
    return _json_response(to_out(result))


#: Environment variable holding the admin secret when ``--admin-token`` is not given.
ADMIN_TOKEN_ENV = "HYBRIDREC_ADMIN_TOKEN"


def _admin_check(token: str | None) -> Callable[[Request], None]:
    """The guard of ``/admin``: off (403) without a configured secret, else a bearer token
    compared in constant time (401 when wrong or missing)."""

    def check(request: Request) -> None:
        if not token:
            raise HTTPException(
                status_code=403,
                detail=f"admin endpoints are off: start the service with --admin-token or "
                f"{ADMIN_TOKEN_ENV} to enable them",
            )
        given = request.headers.get("authorization", "")
        scheme, _, secret = given.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            secret.strip().encode(), token.encode()
        )
        if not ok:
            raise HTTPException(
                status_code=401,
                detail="admin endpoints need 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check


def _confine(target: str, root: Path | None) -> None:
    """Refuse a reload path outside ``root`` (symlinks resolved), so even a token holder
    cannot make the service read arbitrary directories."""
    if root is not None and not Path(target).resolve().is_relative_to(root.resolve()):
        raise HTTPException(
            status_code=403,
            detail="model_dir must lie under the service's models root (--models-root)",
        )


def _add_admin_routes(
    app: FastAPI, holder: ModelHolder, admin_token: str | None, models_root: Path | None
) -> None:
    """``POST /admin/reload``: swap in a model, for holders of the admin secret only, from
    under ``models_root``."""
    check = _admin_check(admin_token)

    @app.post(
        "/admin/reload",
        tags=["admin"],
        responses={
            401: {"description": "missing or wrong admin token"},
            403: {"description": "admin endpoints are off (no token configured)"},
            409: {"description": "loading failed; the previous model keeps serving"},
        },
        openapi_extra=body_doc(ReloadRequest, required=False),
    )
    async def reload(request: Request) -> ReloadOut:
        """Load a model (default: the current directory again) and swap it in once loaded."""
        check(request)  # before the body is even read
        raw = await request.body()
        body = parse_body(ReloadRequest, raw) if raw.strip() else None
        target = body.model_dir if body is not None else None
        if target is not None:
            _confine(target, models_root)
        try:  # a load takes seconds: in a thread of its own, not the model worker's queue
            served = await run_in_threadpool(holder.reload, target)
        except Exception as exc:  # any load failure: report it, keep the old model
            logger.warning(f"reload of {target or 'the current model'} failed: {exc}")
            reason = "no model_dir given" if isinstance(exc, ValueError) else "not a loadable model"
            raise HTTPException(  # the log has the details; the answer names no server paths
                status_code=409,
                detail=f"reload failed: {reason}; the previous model keeps serving",
            ) from exc
        return ReloadOut(
            status="reloaded", model=served.recommender.model_name, model_dir=str(served.model_dir)
        )

    @app.post(
        "/admin/items",
        tags=["admin"],
        responses={
            401: {"description": "missing or wrong admin token"},
            403: {"description": "admin endpoints are off (no token configured)"},
            422: {"description": "the model has no item features, or a bad or known item"},
        },
        openapi_extra=body_doc(NewItemsRequest),
    )
    async def add_items(request: Request) -> NewItemsOut:
        """Add items the model has never seen, ranked from their features at once."""
        check(request)
        body = parse_body(NewItemsRequest, await request.body())
        frame = _items_frame(holder.get().recommender, body)
        before = holder.get().recommender.items.num_embeddings
        try:
            served = await run_in_threadpool(holder.add_items, frame)
        except (HybridRecError, ValueError) as exc:
            raise HTTPException(status_code=422, detail=_message(exc)) from exc
        total = served.recommender.items.num_embeddings
        return NewItemsOut(status="added", added=total - before, num_items=total - 1, saved=False)


def _items_frame(rec: Recommender, body: NewItemsRequest) -> pd.DataFrame:
    """The request's items as a feature frame (id column, then one column per field)."""
    column = rec.config.get("settings", {}).get("data", {}).get("item_col", "itemId")
    names = sorted({name for item in body.items for name in item.features})
    if column in names:
        raise HTTPException(status_code=422, detail=f"{column!r} is the id, not a feature")
    rows = {column: [item.item_id for item in body.items]}
    rows.update({n: [item.features.get(n) for item in body.items] for n in names})
    if not names:
        raise HTTPException(status_code=422, detail="give each item's features")
    return pd.DataFrame(rows)


def _recommend_one(rec: Recommender, user_id: str, k: int, exclude_seen: bool) -> Response:
    """``GET /recommend/{user_id}`` by the model (in a worker thread)."""
    with _model_call():
        result = rec.recommend(user_id, k=k, exclude_seen=exclude_seen, num_candidates=AUTO)
    return _json_response(to_out(result, _known_ids(rec, [user_id])[0]))


def _recommend_known_batch(
    requests: list[tuple[Recommender, str, int, bool]],
) -> list[Response | BaseException]:
    """Uncached ``GET /recommend/{user_id}`` requests that waited together
    (:meth:`ModelGate.run_batched`): one ``recommend_many`` per model and ``exclude_seen``,
    with each request's own ``k``, so each answer is :func:`_recommend_one`'s, byte for
    byte. A batch that fails is answered one request at a time: a bad one fails alone."""
    groups: dict[tuple[int, bool], list[int]] = {}
    for j, (rec, _, _, exclude_seen) in enumerate(requests):
        groups.setdefault((id(rec), exclude_seen), []).append(j)
    out: dict[int, Response | BaseException] = {}
    for positions in groups.values():
        rec, _, _, exclude_seen = requests[positions[0]]
        users = [requests[j][1] for j in positions]
        ks = [requests[j][2] for j in positions]
        try:
            results = rec.recommend_many(
                users, k=ks, exclude_seen=exclude_seen, num_candidates=AUTO
            )
        except Exception:
            for j in positions:
                out[j] = _one_by_one([(_recommend_one, *requests[j])])[0]
            continue
        for j, result, user in zip(positions, results, _known_ids(rec, users), strict=True):
            out[j] = _json_response(to_out(result, user))
    return [out[j] for j in range(len(requests))]


def _one_by_one(requests: list[tuple[Any, ...]]) -> list[Response | BaseException]:
    """Requests that waited together (:meth:`ModelGate.run_batched`), each ``fn(*args)`` in
    turn: one trip through the model's queue for all, each failing alone."""
    out: list[Response | BaseException] = []
    for fn, *args in requests:
        try:
            out.append(fn(*args))
        except Exception as exc:
            out.append(exc)
    return out


def _parse_and_recommend(
    served: Served, raw: bytes, events: RecentEvents | None = None
) -> Response:
    """``POST /recommend`` with a large body, parsed here in the model worker."""
    body = parse_body(RecommendRequest, raw)
    if _with_events(events, served, body):
        return events.batch_response(served, body)  # type: ignore[union-attr]
    return _recommend_batch_sync(served, body)


def _with_events(events: RecentEvents | None, served: Served, body: RecommendRequest) -> bool:
    """Whether a batch of users has a user whose events change their answer."""
    if events is None or body.user_ids is None:
        return False
    return events.concerns_any(served, body.user_ids, body.exclude_seen)


def _recommend_batch_sync(served: Served, body: RecommendRequest) -> Response:
    """``POST /recommend`` in a worker thread: a large cached batch, a new user, or the
    model."""
    rec = served.recommender
    if body.user_ids is not None and body.items is None and served.cache is not None:
        cached = served.cache.batch(body.user_ids, body.k, body.exclude_seen)
        if cached is not None:
            return Response(cached, media_type="application/json")
    if body.user_features is not None:
        with _model_call():
            result = rec.recommend_for_features(
                body.user_features, body.item_ids or (), k=body.k, exclude_seen=body.exclude_seen
            )
        return _json_response(to_out(result))
    if body.item_ids is not None:
        with _model_call():
            result = rec.recommend_for_items(
                body.item_ids, k=body.k, exclude_seen=body.exclude_seen
            )
        return _json_response(to_out(result))
    users = body.user_ids or []
    with _model_call():
        results = rec.recommend_many(
            users, k=body.k, exclude_seen=body.exclude_seen, items=body.items, num_candidates=AUTO
        )
    known = _known_ids(rec, users)
    out = BatchOut(results=[to_out(r, u) for r, u in zip(results, known, strict=True)])
    return _json_response(out)


def _known_ids(recommender: Recommender, user_ids: Sequence[Any]) -> list[Any]:
    """The model's own raw id for each known user ("42" in a URL -> 42), else the id as given.

    One vectorised lookup per request: the per-user alternative dominates a batch's overhead.
    """
    index = recommender.users.transform(list(user_ids)) if len(user_ids) else []
    known = recommender.users.ids
    return [plain(known[i - 1]) if i > 0 else raw for raw, i in zip(user_ids, index, strict=True)]


def _json_response(out: BaseModel) -> Response:
    """A response model as JSON, serialised here (in the worker thread) rather than by
    FastAPI on the event loop."""
    return Response(out.model_dump_json(), media_type="application/json")


#: Largest request body accepted: the biggest valid request (100,000 score pairs of long
#: text ids) fits well within it; anything larger is answered 413 before it is read whole.
MAX_BODY_BYTES = 16 * 2**20


class BodyLimit:
    """ASGI middleware: a body over :data:`MAX_BODY_BYTES` gets a 413, whether it declares its
    length (refused before reading) or streams in chunks (read here up to the limit, then
    refused, or handed on whole), so no request makes the service buffer or parse more."""

    def __init__(self, app: Any, limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):  # the cached hot path
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.limit:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)  # the server enforces the declared length
            return
        # no declared length (chunked): read it here, up to the limit, then hand it on whole
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        body = b'{"detail":"request body over %d bytes; send smaller batches"}' % self.limit
        await _send_json(send, 413, body)


async def _send_json(send: Any, status: int, body: bytes) -> None:
    """Answer with ready JSON bytes straight through ASGI (no framework on the way)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-length", b"%d" % len(body)),
                (b"content-type", b"application/json"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class CachedRecommendations:
    """ASGI middleware: answers ``GET /recommend/{user_id}`` from the :class:`TopCache`.

    The hot path of the service skips FastAPI's routing, parameter validation and response
    machinery (most of a cached request's cost), but only for requests whose meaning is
    beyond doubt: a path ``/recommend/<id>`` and a query of at most ``k=<1..MAX_K>`` and
    ``exclude_seen=true|false``, each once, in canonical spelling. Everything else (other
    spellings, extra parameters, bad values, a ``k`` deeper than the cache, no model yet)
    goes on to the app, which answers as it always has. Both give the same JSON.
    """

    def __init__(self, app: Any, holder: ModelHolder, events: RecentEvents | None = None) -> None:
        self.app = app
        self.holder = holder
        self.events = events  # users with events since the watermark: filtered or to the app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            body = self._answer(scope)
            if body is not None:
                await _send_json(send, 200, body)
                return
        await self.app(scope, receive, send)

    def _answer(self, scope: Any) -> bytes | None:
        path = scope["path"]
        if not path.startswith("/recommend/") or scope.get("root_path"):
            return None
        user_id = path[11:]  # len("/recommend/")
        served = self.holder.current
        if not user_id or "/" in user_id or served is None or served.cache is None:
            return None
        params = _fast_query(scope["query_string"])
        if params is None:
            return None
        events = self.events
        if events is not None and events.concerns(served, user_id, params[1]):
            return events.cached_body(served, user_id, *params)
        return served.cache.body(user_id, *params)


def _fast_query(query: bytes) -> tuple[int, bool] | None:
    """``(k, exclude_seen)`` from a query in canonical form (``k=10&exclude_seen=false``, in
    any order, each at most once), else None: the app parses anything else."""
    k, exclude_seen = None, None
    if query:
        for part in query.split(b"&"):
            name, _, value = part.partition(b"=")
            if name == b"k" and k is None and value.isdigit() and value[:1] != b"0":
                k = int(value) if len(value) <= 4 else MAX_K + 1
                if k > MAX_K:
                    return None
            elif name == b"exclude_seen" and exclude_seen is None and value in _BOOLS:
                exclude_seen = _BOOLS[value]
            else:  # an unknown, repeated or unusually written parameter
                return None
    return (10 if k is None else k), (True if exclude_seen is None else exclude_seen)


_BOOLS = {b"true": True, b"false": False}


@contextmanager
def _model_call() -> Iterator[None]:
    """Turn the user's errors in recommender code into 404/422 (the code runs in the
    :class:`ModelGate`'s worker, one call at a time, without autograd)."""
    try:
        yield
    except KeyError as exc:  # UnknownIdError is a KeyError
        raise HTTPException(status_code=404, detail=_message(exc)) from exc
    except (HybridRecError, ValueError) as exc:
        raise HTTPException(status_code=422, detail=_message(exc)) from exc


def _message(exc: BaseException) -> str:
    # str(KeyError("x")) is "'x'"; the message itself reads better
    return str(exc.args[0]) if len(exc.args) == 1 else str(exc)
