"""HTTP service: recommendations, scores and similar items from a saved model (FastAPI).

One process serves one model at a time. The model lives in a :class:`ModelHolder` whose single
reference is replaced in one assignment on reload, so a request that has read it keeps a
consistent model to the end, and a failed reload never disturbs the model being served.

Endpoints are plain ``def`` functions: FastAPI runs them in its threadpool, so PyTorch work
never blocks the event loop. Each model call runs under ``torch.inference_mode()``.

Threads: PyTorch's intra-op thread count is process-wide and is not set here. Callers set it
once at startup, before :func:`serve` (``hybridrec.runtime.set_num_threads(1)``): with many
concurrent requests, one thread per request beats several OpenMP threads fighting
over the same cores.

Security: ``POST /admin/reload`` loads any model directory the server process can read (the
loader only reads data, never runs code). Bind to 127.0.0.1 (the default) or put the service
behind a proxy that keeps ``/admin`` private.

Example:
    >>> from hybridrec.serve import serve
    >>> serve("model", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import torch
from fastapi import FastAPI, HTTPException, Query
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

from hybridrec.errors import HybridRecError
from hybridrec.recommend import Recommender

if TYPE_CHECKING:
    from hybridrec.recommend import Recommendation

logger = logging.getLogger(__name__)

#: Largest ``k`` a request may ask for: bounds the work and the response size per user.
MAX_K = 1000
#: Most users per batch request and pairs per score request: one request cannot hog a worker.
MAX_BATCH = 10_000
MAX_PAIRS = 100_000

#: A raw id as it appears in JSON: integers stay integers, text stays text (never coerced, so
#: ``1.5`` or ``true`` is a 422 rather than a silent wrong id).
RawId = StrictInt | StrictStr
K = Annotated[int, Query(ge=1, le=MAX_K, description="number of items to return")]
KField = Annotated[StrictInt, Field(ge=1, le=MAX_K, description="number of items to return")]


# --------------------------------------------------------------------------- request/response


class ItemScore(BaseModel):
    """One recommended item and the model's score for it."""

    item_id: RawId
    score: float = Field(
        description="model/items: probability of a positive; popularity: the item's share of "
        "training positives; similar: cosine similarity of the item embeddings"
    )


class RecommendationOut(BaseModel):
    """Top items for one user (or one item list), best first."""

    user_id: RawId | None = Field(
        description="the user, as known to the model when it is; null for item-based results"
    )
    items: list[ItemScore]
    source: Literal["model", "popularity", "items", "similar"] = Field(
        description="model: the user's own scores; popularity: fallback for an unknown user; "
        "items: a new user described by items; similar: items like a given item"
    )
    unknown_items: list[RawId] = Field(
        default_factory=list, description="requested ids the model does not know (skipped)"
    )


class BatchOut(BaseModel):
    """One result per requested user, in request order."""

    results: list[RecommendationOut]


class RecommendRequest(BaseModel):
    """Either known users (``user_ids``) or a new user described by ``item_ids``."""

    model_config = ConfigDict(extra="forbid")

    user_ids: list[RawId] | None = Field(default=None, max_length=MAX_BATCH)
    item_ids: list[RawId] | None = Field(
        default=None,
        max_length=MAX_BATCH,
        description="items a new user interacted with; recommendations come from those",
    )
    k: KField = 10
    exclude_seen: bool = True
    items: list[RawId] | None = Field(
        default=None,
        max_length=MAX_PAIRS,
        description="restrict candidates to these items (with user_ids only)",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> RecommendRequest:
        # Two shapes share one endpoint; reject ambiguous bodies instead of guessing.
        if (self.user_ids is None) == (self.item_ids is None):
            raise ValueError("give exactly one of user_ids (known users) or item_ids (a new user)")
        if self.item_ids is not None and self.items is not None:
            raise ValueError("items (candidate restriction) can only be used with user_ids")
        return self


class Pair(BaseModel):
    user_id: RawId
    item_id: RawId


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pairs: list[Pair] = Field(max_length=MAX_PAIRS)


class ScoreOut(BaseModel):
    scores: list[float] = Field(description="probability of a positive interaction, per pair")


class HealthOut(BaseModel):
    status: Literal["ok"]
    model: str


class ModelOut(BaseModel):
    """Metadata of the served artifact."""

    model_config = ConfigDict(protected_namespaces=(), populate_by_name=True)

    model: str
    model_dir: str | None
    format_version: int | None
    hybridrec_version: str | None
    num_users: int
    num_items: int
    # ``model_config`` is reserved by pydantic, hence the alias.
    hyperparameters: dict[str, Any] = Field(alias="model_config")
    metrics: dict[str, Any] = Field(description="final validation metrics saved with the model")


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_dir: str | None = Field(
        default=None, description="artifact to load; default: reload the current directory"
    )


class ReloadOut(BaseModel):
    status: Literal["reloaded"]
    model: str
    model_dir: str


# --------------------------------------------------------------------------- the served model


@dataclass(frozen=True)
class Served:
    """Everything a request needs about the current model, swapped as one object."""

    recommender: Recommender
    model_dir: str | None
    metrics: dict[str, Any]  # final metrics, read once at load so they match the weights


class ModelHolder:
    """The current model; reads are lock-free, reloads are serialised.

    ``current`` is replaced by a single attribute assignment (atomic in CPython), so readers
    see either the old or the new model, never a mix. The lock only keeps two reloads from
    racing each other; the load happens before the swap, so a failure leaves the old model.
    """

    def __init__(self, recommender: Recommender | None = None) -> None:
        self.current: Served | None = _served(recommender) if recommender is not None else None
        self._reload_lock = threading.Lock()

    def get(self) -> Served:
        """The served model, or 503 before startup has loaded one."""
        served = self.current
        if served is None:
            raise HTTPException(status_code=503, detail="no model loaded yet")
        return served

    def reload(self, model_dir: str | Path | None = None) -> Served:
        """Load ``model_dir`` (default: the current directory) and swap it in.

        Raises:
            ValueError: there is no directory to reload from.
            Exception: whatever loading raised; the old model stays in place.
        """
        with self._reload_lock:
            if model_dir is None:
                model_dir = self.current.model_dir if self.current is not None else None
            if model_dir is None:
                raise ValueError("no model_dir given and the served model has no directory")
            served = _served(Recommender.load(model_dir))
            self.current = served
        logger.info(f"serving {served.recommender!r} from {served.model_dir}")
        return served

    def reload_in_background(self) -> threading.Thread:
        """Reload from the current directory in a thread (for signal handlers: a load must not
        block the event loop); errors are logged and the old model keeps serving."""

        def run() -> None:
            try:
                self.reload()
            except Exception:
                logger.exception("reload failed; still serving the previous model")

        thread = threading.Thread(target=run, name="hybridrec-reload", daemon=True)
        thread.start()
        return thread


def _served(recommender: Recommender) -> Served:
    try:
        final = recommender.metrics.get("final", {})
    except (OSError, ValueError):  # an unreadable metrics.json must not stop serving
        logger.warning("could not read the model's metrics.json", exc_info=True)
        final = {}
    directory = recommender.config.get("directory")
    return Served(recommender, str(directory) if directory else None, _json_safe(final))


# --------------------------------------------------------------------------- helpers


def _plain(value: Any) -> Any:
    """numpy scalar -> Python scalar, so ids keep their JSON type (int stays int)."""
    return value.item() if hasattr(value, "item") else value


def _json_safe(value: Any) -> Any:
    """Non-finite floats -> None: JSON has no NaN, and a NaN metric must not break /model."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    value = _plain(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _known_ids(recommender: Recommender, user_ids: Sequence[Any]) -> list[Any]:
    """The model's own raw id for each known user ("42" in a URL -> 42), else the id as given.

    One vectorised lookup per request: the per-user alternative dominates a batch's overhead.
    """
    index = recommender.users.transform(list(user_ids)) if len(user_ids) else []
    known = recommender.users.ids
    return [_plain(known[i - 1]) if i > 0 else raw for raw, i in zip(user_ids, index, strict=True)]


def to_out(rec: Recommendation, user_id: Any = None) -> RecommendationOut:
    """A :class:`Recommendation` as its JSON response model, for ``user_id`` (None: items)."""
    # tolist() turns numpy scalars into Python ints/strs/floats: JSON keeps each id's type
    item_ids, scores = rec.item_ids.tolist(), rec.scores.tolist()
    return RecommendationOut(
        user_id=user_id,
        items=[ItemScore(item_id=i, score=s) for i, s in zip(item_ids, scores, strict=True)],
        source=rec.source,
        unknown_items=[_plain(i) for i in rec.unknown_items],
    )


#: One model call at a time: on a small CPU, requests scoring in parallel threads only fight
#: over the cores (measured: 16 concurrent clients got 286 requests/s in parallel).
_MODEL_LOCK = threading.Lock()


@contextmanager
def _model_call() -> Iterator[None]:
    """Run recommender code without autograd, and turn the user's errors into 404/422."""
    try:
        with _MODEL_LOCK, torch.inference_mode():
            yield
    except KeyError as exc:  # UnknownIdError is a KeyError
        raise HTTPException(status_code=404, detail=_message(exc)) from exc
    except (HybridRecError, ValueError) as exc:
        raise HTTPException(status_code=422, detail=_message(exc)) from exc


def _message(exc: BaseException) -> str:
    # str(KeyError("x")) is "'x'"; the message itself reads better
    return str(exc.args[0]) if len(exc.args) == 1 else str(exc)


# --------------------------------------------------------------------------- the app


def create_app(
    recommender: Recommender | None = None, model_dir: str | Path | None = None
) -> FastAPI:
    """Build the service around a recommender, or one loaded from ``model_dir`` at startup.

    Args:
        recommender: serve this object (tests, embedding in another app).
        model_dir: load this artifact once when the app starts (its lifespan), so a broken
            artifact stops the server at startup rather than failing requests.

    Raises:
        ValueError: neither or both of ``recommender`` and ``model_dir`` were given.
    """
    if (recommender is None) == (model_dir is None):
        raise ValueError("create_app needs exactly one of recommender or model_dir")
    holder = ModelHolder(recommender)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if model_dir is not None:
            holder.reload(model_dir)
        yield

    app = FastAPI(
        title="hybridrec",
        summary="Recommendations, pair scores and similar items from a trained hybridrec model.",
        lifespan=lifespan,
    )
    app.state.holder = holder

    @app.get("/health", tags=["service"])
    def health() -> HealthOut:
        """Liveness plus the served model's name."""
        return HealthOut(status="ok", model=holder.get().recommender.model_name)

    @app.get("/model", tags=["service"])
    def model_info() -> ModelOut:
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
            hyperparameters=_json_safe(rec.config.get("model_config", {})),
            metrics=served.metrics,
        )

    @app.get("/recommend/{user_id}", tags=["recommend"])
    def recommend_user(
        user_id: Annotated[str, PathParam(description="raw user id; unknown users get popular")],
        k: K = 10,
        exclude_seen: Annotated[bool, Query(description="skip items seen in training")] = True,
    ) -> RecommendationOut:
        """Top-k items for one user (an unknown user gets the most popular items)."""
        rec = holder.get().recommender
        with _model_call():
            result = rec.recommend(user_id, k=k, exclude_seen=exclude_seen)
        return to_out(result, _known_ids(rec, [user_id])[0])

    @app.post("/recommend", tags=["recommend"])
    def recommend_batch(body: RecommendRequest) -> BatchOut | RecommendationOut:
        """Top-k items for several users (``user_ids``: ``{"results": [...]}``), or for a new
        user described by the items they interacted with (``item_ids``: one result)."""
        rec = holder.get().recommender
        if body.item_ids is not None:
            with _model_call():
                result = rec.recommend_for_items(
                    body.item_ids, k=body.k, exclude_seen=body.exclude_seen
                )
            return to_out(result)
        users = body.user_ids or []
        with _model_call():
            results = rec.recommend_many(
                users, k=body.k, exclude_seen=body.exclude_seen, items=body.items
            )
        known = _known_ids(rec, users)
        return BatchOut(results=[to_out(r, u) for r, u in zip(results, known, strict=True)])

    @app.post("/score", tags=["recommend"])
    def score(body: ScoreRequest) -> ScoreOut:
        """Probability of a positive interaction for each ``(user_id, item_id)`` pair."""
        rec = holder.get().recommender
        if not body.pairs:
            return ScoreOut(scores=[])
        users = [p.user_id for p in body.pairs]
        items = [p.item_id for p in body.pairs]
        with _model_call():
            scores = rec.score(users, items)
        return ScoreOut(scores=scores.tolist())

    @app.get("/similar/{item_id}", tags=["recommend"])
    def similar(
        item_id: Annotated[str, PathParam(description="raw item id; must be known")], k: K = 10
    ) -> RecommendationOut:
        """Items most like ``item_id``; 404 when the model does not know it."""
        rec = holder.get().recommender
        with _model_call():
            result = rec.similar_items(item_id, k=k)
        return to_out(result)

    @app.post(
        "/admin/reload",
        tags=["admin"],
        responses={409: {"description": "loading failed; the previous model keeps serving"}},
    )
    def reload(body: ReloadRequest | None = None) -> ReloadOut:
        """Load a model (default: the current directory again) and swap it in once loaded."""
        target = body.model_dir if body is not None else None
        try:
            served = holder.reload(target)
        except Exception as exc:  # any load failure: report it, keep the old model
            logger.warning(f"reload of {target or 'the current model'} failed: {exc}")
            raise HTTPException(status_code=409, detail=f"reload failed: {exc}") from exc
        return ReloadOut(
            status="reloaded", model=served.recommender.model_name, model_dir=str(served.model_dir)
        )

    return app


# --------------------------------------------------------------------------- running it


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
) -> None:
    """Serve ``model_dir`` over HTTP with uvicorn until interrupted; SIGHUP reloads it.

    Set PyTorch's thread count before calling (see the module docstring).
    """
    import uvicorn

    app = create_app(model_dir=model_dir)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level))
    restore_signal = install_reload_signal(app.state.holder)
    try:
        server.run()
    finally:
        if restore_signal is not None:
            restore_signal()
