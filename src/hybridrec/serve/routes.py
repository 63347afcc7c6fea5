"""The public routes: ``/health``, ``/model``, ``/recommend``, ``/score`` and ``/similar``,
and the functions that answer them in the model worker.

Apart from :mod:`hybridrec.serve.app`, which only assembles the service: each route group
is added by its own function, and what runs in the :class:`ModelGate`'s worker sits next
to the route that hands it over.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, Response
from fastapi import Path as PathParam

from hybridrec.recommend import Recommender
from hybridrec.recommend.two_stage import AUTO
from hybridrec.serve.bodies import body_doc, parse_body
from hybridrec.serve.calls import _json_response, _known_ids, _model_call
from hybridrec.serve.fold_process import FoldInProcess, FoldInQueue
from hybridrec.serve.gate import ModelGate
from hybridrec.serve.holder import ModelHolder, Served
from hybridrec.serve.recent import RecentEvents
from hybridrec.serve.schemas import (
    BatchOut,
    HealthOut,
    K,
    ModelOut,
    RecommendationOut,
    RecommendRequest,
    ScoreOut,
    ScoreRequest,
    batch_json,
    json_safe,
    recommendation_json,
)

#: Most users of a cached batch answered on the event loop (about 1 µs each); larger
#: batches are looked up in a worker thread.
_LOOP_BATCH = 1000
#: Largest request body parsed on the event loop (tens of microseconds); larger bodies are
#: parsed in the model worker.
_LOOP_BODY_BYTES = 16 * 1024


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
            # its name only: a public route names no server paths
            model_dir=None if served.model_dir is None else Path(served.model_dir).name,
            format_version=rec.config.get("format_version"),
            hybridrec_version=rec.config.get("hybridrec_version"),
            num_users=len(rec.users),
            num_items=len(rec.items),
            hyperparameters=json_safe(rec.config.get("model_config", {})),
            metrics=served.metrics,
        )


def _add_recommend_routes(
    app: FastAPI,
    holder: ModelHolder,
    gate: ModelGate,
    events: RecentEvents | None = None,
    fold_process: FoldInProcess | None = None,
    fold_queue: FoldInQueue | None = None,
) -> None:
    """``GET /recommend/{user_id}`` and ``POST /recommend``: the cache first, else the model
    worker; users with events since the model's watermark through ``events``; new users'
    fold-ins straight to the child through ``fold_queue`` when it holds the model, else
    through the model worker (and ``fold_process`` from there)."""
    fold_in_batch = partial(_fold_in_batch, fold_process=fold_process)  # one per app

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
            if fold_queue is not None:
                asked = (body.item_ids or [], body.k, body.exclude_seen)
                result = await fold_queue.ask(served.recommender, asked)
                if result is not None:
                    answer = _answer(result)
                    if isinstance(answer, BaseException):
                        raise answer
                    return answer
            return await gate.run_batched(fold_in_batch, (served, body))
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


def _add_score_routes(
    app: FastAPI, holder: ModelHolder, gate: ModelGate, events: RecentEvents | None = None
) -> None:
    """``POST /score`` (pairs) and ``GET /similar/{item_id}``, in the model worker."""

    @app.post(
        "/score", tags=["recommend"], response_model=ScoreOut, openapi_extra=body_doc(ScoreRequest)
    )
    async def score(request: Request) -> Response:
        """Probability of a positive interaction for each ``(user_id, item_id)`` pair."""
        served = holder.get()
        return await gate.run(_score_sync, served, await request.body(), events)

    @app.get("/similar/{item_id}", tags=["recommend"], response_model=RecommendationOut)
    async def similar(
        item_id: Annotated[str, PathParam(description="raw item id; must be known")], k: K = 10
    ) -> Response:
        """Items most like ``item_id``; 404 when the model does not know it."""
        return await gate.run(_similar_sync, holder.get().recommender, item_id, k)


def _score_sync(served: Served, raw: bytes, events: RecentEvents | None) -> Response:
    """``POST /score`` in the model worker: parse, score (users known only from events as
    their fold-in), serialise."""
    body = parse_body(ScoreRequest, raw)
    if not body.pairs:
        return _json_response(ScoreOut(scores=[]))
    users = [p["user_id"] for p in body.pairs]
    items = [p["item_id"] for p in body.pairs]
    with _model_call():
        if events is not None and events.users:
            scores = events.score(served, users, items)
        else:
            scores = served.recommender.score(users, items)
    return _json_response(ScoreOut(scores=scores.tolist()))


def _similar_sync(rec: Recommender, item_id: str, k: int) -> Response:
    """``GET /similar/{item_id}`` in the model worker."""
    with _model_call():
        result = rec.similar_items(item_id, k=k)
    return _recommendation_response(result)


def _recommend_one(rec: Recommender, user_id: str, k: int, exclude_seen: bool) -> Response:
    """``GET /recommend/{user_id}`` by the model (in a worker thread)."""
    with _model_call():
        result = rec.recommend(user_id, k=k, exclude_seen=exclude_seen, num_candidates=AUTO)
    return _recommendation_response(result, _known_ids(rec, [user_id])[0])


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
            out[j] = _recommendation_response(result, user)
    return [out[j] for j in range(len(requests))]


def _fold_in_batch(
    requests: list[tuple[Served, RecommendRequest]],
    fold_process: FoldInProcess | None = None,
) -> list[Response | BaseException]:
    """New users by ``item_ids`` that waited together (:meth:`ModelGate.run_batched`): one
    ``recommend_for_items_many`` per model, whose one scoring call serves them all (one
    call each made the worker retake the GIL from the busy event loop ~200 times per
    fold-in: p50 26 ms under the mixed load, docs/benchmarks.md), computed in
    ``fold_process`` when it holds that model. A bad request fails alone; a batch that
    fails is answered one by one."""
    groups: dict[int, list[int]] = {}
    for j, (served, _) in enumerate(requests):
        groups.setdefault(id(served.recommender), []).append(j)
    out: dict[int, Response | BaseException] = {}
    for positions in groups.values():
        rec = requests[positions[0]][0].recommender
        bodies = [requests[j][1] for j in positions]
        asked = [(b.item_ids or [], b.k, b.exclude_seen) for b in bodies]
        try:
            results = None
            if fold_process is not None:
                results = fold_process.recommend_for_items_many(rec, asked)
            if results is None:
                results = rec.recommend_for_items_many(asked)
        except Exception:
            for j in positions:
                out[j] = _one_by_one([(_recommend_batch_sync, *requests[j])])[0]
            continue
        for j, result in zip(positions, results, strict=True):
            out[j] = _answer(result)
    return [out[j] for j in range(len(requests))]


def _answer(result: Any) -> Response | BaseException:
    """One fold-in's response, or the HTTP error its exception maps to."""
    try:
        with _model_call():
            if isinstance(result, Exception):
                raise result
        return _recommendation_response(result)
    except Exception as exc:
        return exc


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
        return _recommendation_response(result)
    if body.item_ids is not None:
        with _model_call():
            result = rec.recommend_for_items(
                body.item_ids, k=body.k, exclude_seen=body.exclude_seen
            )
        return _recommendation_response(result)
    users = body.user_ids or []
    with _model_call():
        results = rec.recommend_many(
            users, k=body.k, exclude_seen=body.exclude_seen, items=body.items, num_candidates=AUTO
        )
    known = _known_ids(rec, users)
    # the candidates the model does not know are the same for every user: listed once
    unknown = results[0].unknown_items if results and body.items is not None else []
    parts = [
        recommendation_json(r, u, with_unknown=body.items is None)
        for r, u in zip(results, known, strict=True)
    ]
    return Response(batch_json(parts, unknown), media_type="application/json")


def _recommendation_response(result: Any, user_id: Any = None) -> Response:
    """One recommendation as a JSON response (:func:`recommendation_json`)."""
    return Response(recommendation_json(result, user_id), media_type="application/json")
