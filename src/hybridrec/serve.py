"""HTTP service: recommendations, scores and similar items from a saved model (FastAPI).

One process serves one model at a time. The model lives in a :class:`ModelHolder` whose single
reference is replaced in one assignment on reload, so a request that has read it keeps a
consistent model to the end, and a failed reload never disturbs the model being served.

Model work never runs on the event loop: endpoints that may call the model are plain
``def`` functions, which FastAPI runs in its threadpool, or, for ``/recommend``, ``async``
functions that hand anything but a cache lookup to that threadpool. Each model call runs
under ``torch.inference_mode()``, one at a time.

The hot path, ``GET /recommend/{user_id}``, is a lookup: at every load each known user's top
``CACHE_TOP`` items are ranked once (:class:`TopCache`, for catalogues up to
``CACHE_MAX_PAIRS`` users x items), and a small ASGI middleware
(:class:`CachedRecommendations`) answers canonical requests from it on the event loop, with
JSON built from pre-encoded pieces, before FastAPI's routing and validation. Answers are
exactly :meth:`Recommender.recommend`'s; anything the cache cannot answer goes to the model.

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

import json
import logging
import math
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Query, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator
from starlette.concurrency import run_in_threadpool

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
#: Items per user kept ready for ``GET /recommend/{user_id}`` (see :class:`TopCache`).
CACHE_TOP = 100
#: Largest ``users x items`` scored to fill the cache at load (two passes over every known
#: user, with and without seen items: about 0.3 s per million pairs on one CPU core for the
#: default hybrid model, so at most a few seconds). Bigger models are served uncached.
CACHE_MAX_PAIRS = 25_000_000
#: Bytes of finished responses a cache keeps for repeated requests (then it starts afresh).
_MEMO_BYTES = 32 * 2**20
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: Most users of a cached batch answered on the event loop (about 1 µs each); larger
#: batches are looked up in a worker thread.
_LOOP_BATCH = 1000

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


class TopCache:
    """Every known user's top items, computed once at load, for ``GET /recommend/{user_id}``.

    For each known user and both ``exclude_seen`` settings it keeps the first ``depth`` items
    of :meth:`Recommender.recommend_many` with their logits, and the popularity list that
    unknown users get. The top ``k`` of a ranking is the first ``k`` of its top ``depth``
    (ties are broken by item index, whatever ``torch.topk`` does), so any ``k <= depth`` is
    answered exactly as :meth:`Recommender.recommend` answers it, as JSON built from
    pre-encoded pieces: no model call, no pydantic models. Deeper requests get None here
    and go to the model.

    Scores are the sigmoid of the first ``k`` logits, taken per request: PyTorch's sigmoid
    can round an element differently depending on the length of the vector it is part of
    (SIMD blocks and a scalar tail), so a stored top-``depth`` score may differ from the
    top-``k`` one in the last bit. The logits are ``Recommender.score_users``' own, the
    numbers its ranking used.

    Built before a model is swapped in, and swapped with it (:class:`Served`), so a reload
    never serves one model's cache with another's weights.
    """

    def __init__(self, recommender: Recommender, depth: int) -> None:
        self.depth = depth
        self._users = users = recommender.users
        known = users.ids.tolist()
        #: canonical text of each known user id (what a URL holds) -> its user index
        self.index = {str(u): i for i, u in enumerate(known, start=1)}
        self.user_json = [b"null", *(_json(u) for u in known)]
        items = recommender.items
        # '{"item_id":<id>,"score":' per item index; the score and '}' follow per request
        self.item_head = [b""] + [
            b'{"item_id":' + _json(i) + b',"score":' for i in items.ids.tolist()
        ]
        rows = len(known) + 1  # row r: user index r (row 0, the unknown user, is never read)
        self.top = {flag: np.zeros((rows, depth), dtype=np.int64) for flag in (True, False)}
        self.count = {flag: np.zeros(rows, dtype=np.int64) for flag in (True, False)}
        self.logits = {flag: np.zeros((rows, depth), dtype=np.float32) for flag in (True, False)}
        scores = {flag: np.zeros((rows, depth), dtype=np.float32) for flag in (True, False)}
        with torch.inference_mode():
            for flag in (True, False):  # the ranking: exactly recommend_many's
                results = recommender.recommend_many(known, k=depth, exclude_seen=flag)
                for row, result in enumerate(results, start=1):
                    self.count[flag][row] = len(result)
                    self.top[flag][row, : len(result)] = items.transform(result.item_ids)
                    scores[flag][row, : len(result)] = result.scores
            chunk = recommender.default_chunk_users()
            for first in range(1, rows, chunk):  # the logits of the ranked items
                block = np.arange(first, min(first + chunk, rows))
                logits = recommender.score_users(block).cpu().numpy()
                for flag in (True, False):
                    picked = self.top[flag][block]
                    self.logits[flag][block] = np.take_along_axis(logits, picked, axis=1)
            unknown = recommender.recommend_many([_unknown_id(recommender)], k=depth)[0]
            for flag in (True, False):  # the logits must be the ones the ranking was made of
                again = torch.sigmoid(torch.from_numpy(self.logits[flag])).numpy()
                filled = np.arange(depth) < self.count[flag][:, None]
                if not np.allclose(again[filled], scores[flag][filled], rtol=1e-5, atol=1e-7):
                    raise CacheMismatchError(
                        f"{recommender.model_name}: the logits of score_users do not give "
                        "recommend_many's scores"
                    )
        if unknown.source != "popularity":  # pragma: no cover - _unknown_id makes sure
            raise RuntimeError(f"expected the popularity ranking, got {unknown.source}")
        # popularity shares are divided in numpy (exactly rounded), so prefixes are exact
        self.popular = (items.transform(unknown.item_ids).tolist(), unknown.scores.tolist())
        # finished responses (after the user id) by (user index, items, exclude_seen)
        self._memo: dict[tuple[int, int, bool], bytes] = {}
        self._memo_bytes = 0

    def lookup(self, user_id: str) -> int:
        """The user index of ``user_id`` as text from a URL (0: unknown to the model)."""
        index = self.index.get(user_id)
        if index is None:  # unknown, or a non-canonical spelling the encoder accepts (" 42")
            return int(self._users.transform([user_id])[0])
        return index

    def batch(self, user_ids: Sequence[Any], k: int, exclude_seen: bool) -> bytes | None:
        """The JSON of ``POST /recommend`` for ``user_ids`` (ints or strings, as in the
        request), or None when one of them needs the model."""
        bodies = []
        for raw in user_ids:
            if isinstance(raw, int) and not _INT64_MIN <= raw <= _INT64_MAX:
                return None  # not an id an encoder can hold: the model path decides
            body = self.body(str(raw), k, exclude_seen, raw)
            if body is None:
                return None
            bodies.append(body)
        return b'{"results":[' + b",".join(bodies) + b"]}"

    def body(self, user_id: str, k: int, exclude_seen: bool, as_given: Any = None) -> bytes | None:
        """The JSON of ``GET /recommend/{user_id}?k=&exclude_seen=``, or None when ``k`` is
        deeper than what is kept for this user. ``as_given``: the id as the request wrote it
        (an unknown user is answered with it), when not the text ``user_id``."""
        index = self.lookup(user_id)
        if index == 0:
            n, user = len(self.popular[0]), _json(user_id if as_given is None else as_given)
            exclude_seen = False  # unknown users have nothing to exclude
        else:
            n, user = int(self.count[exclude_seen][index]), self.user_json[index]
        if k > n == self.depth:
            return None
        key = (index, min(k, n), exclude_seen)
        rest = self._memo.get(key)
        if rest is None:
            rest = self._rest(*key)
            if self._memo_bytes + len(rest) > _MEMO_BYTES:  # bounded: start afresh
                self._memo.clear()
                self._memo_bytes = 0
            self._memo[key] = rest
            self._memo_bytes += len(rest)
        return b'{"user_id":' + user + rest

    def _rest(self, index: int, m: int, exclude_seen: bool) -> bytes:
        """The response after its user id: the first ``m`` items, source, unknown items."""
        if index == 0:
            top, scores = self.popular[0][:m], self.popular[1][:m]
            source = b"popularity"
        else:
            top = self.top[exclude_seen][index, :m].tolist()
            logits = torch.from_numpy(self.logits[exclude_seen][index, :m])
            scores = torch.sigmoid(logits).tolist()  # as recommend does, on these m logits
            source = b"model"
        head = self.item_head
        items = b",".join(
            [head[i] + _score_json(s) + b"}" for i, s in zip(top, scores, strict=True)]
        )
        return b',"items":[' + items + b'],"source":"' + source + b'","unknown_items":[]}'


def build_cache(recommender: Recommender, depth: int = CACHE_TOP) -> TopCache | None:
    """A :class:`TopCache` of ``depth`` items per user, or None when ``depth`` is 0, the
    model knows no users, scoring every user would exceed ``CACHE_MAX_PAIRS``, or the model
    is not on the CPU (an accelerator scores users in padded batches, whose last bits may
    differ from a single user's, and the cache must answer exactly as ``recommend``)."""
    pairs = len(recommender.users) * len(recommender.items)
    if depth <= 0 or len(recommender.users) == 0 or pairs > CACHE_MAX_PAIRS:
        return None
    if recommender.device.type != "cpu":
        return None
    try:
        return TopCache(recommender, min(depth, MAX_K))
    except CacheMismatchError:  # a model scored another way: serve it uncached, correctly
        logger.warning("not caching recommendations", exc_info=True)
        return None


class CacheMismatchError(RuntimeError):
    """The cache could not reproduce :meth:`Recommender.recommend`'s scores."""


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _score_json(score: float) -> bytes:
    # what the pydantic response models write: the shortest repr, null for NaN/infinity
    return repr(score).encode() if math.isfinite(score) else b"null"


def _unknown_id(recommender: Recommender) -> str:
    """An id the model does not know, to ask for the popularity ranking unknown users get."""
    candidate = "unknown user"
    while recommender.users.transform([candidate])[0] != 0:
        candidate += "?"
    return candidate


@dataclass(frozen=True)
class Served:
    """Everything a request needs about the current model, swapped as one object."""

    recommender: Recommender
    model_dir: str | None
    metrics: dict[str, Any]  # final metrics, read once at load so they match the weights
    cache: TopCache | None = None  # this model's precomputed top lists


class ModelHolder:
    """The current model; reads are lock-free, reloads are serialised.

    ``current`` is replaced by a single attribute assignment (atomic in CPython), so readers
    see either the old or the new model, never a mix. The lock only keeps two reloads from
    racing each other; the load happens before the swap, so a failure leaves the old model.
    """

    def __init__(self, recommender: Recommender | None = None, cache_top: int = CACHE_TOP) -> None:
        self.cache_top = cache_top
        self.current: Served | None = (
            _served(recommender, cache_top) if recommender is not None else None
        )
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
            served = _served(Recommender.load(model_dir), self.cache_top)
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


def _served(recommender: Recommender, cache_top: int) -> Served:
    try:
        final = recommender.metrics.get("final", {})
    except (OSError, ValueError):  # an unreadable metrics.json must not stop serving
        logger.warning("could not read the model's metrics.json", exc_info=True)
        final = {}
    directory = recommender.config.get("directory")
    started = time.perf_counter()
    cache = build_cache(recommender, cache_top)
    if cache is not None:
        logger.info(
            f"cached the top {cache.depth} items of {len(recommender.users)} users "
            f"in {time.perf_counter() - started:.2f} s"
        )
    return Served(recommender, str(directory) if directory else None, _json_safe(final), cache)


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


def _json_response(out: BaseModel) -> Response:
    """A response model as JSON, serialised here (in the worker thread) rather than by
    FastAPI on the event loop."""
    return Response(out.model_dump_json(), media_type="application/json")


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


class CachedRecommendations:
    """ASGI middleware: answers ``GET /recommend/{user_id}`` from the :class:`TopCache`.

    The hot path of the service skips FastAPI's routing, parameter validation and response
    machinery (most of a cached request's cost), but only for requests whose meaning is
    beyond doubt: a path ``/recommend/<id>`` and a query of at most ``k=<1..MAX_K>`` and
    ``exclude_seen=true|false``, each once, in canonical spelling. Everything else (other
    spellings, extra parameters, bad values, a ``k`` deeper than the cache, no model yet)
    goes on to the app, which answers as it always has. Both give the same JSON.
    """

    def __init__(self, app: Any, holder: ModelHolder) -> None:
        self.app = app
        self.holder = holder

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            body = self._answer(scope)
            if body is not None:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [
                            (b"content-length", b"%d" % len(body)),
                            (b"content-type", b"application/json"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
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


def create_app(
    recommender: Recommender | None = None,
    model_dir: str | Path | None = None,
    *,
    cache_top: int = CACHE_TOP,
) -> FastAPI:
    """Build the service around a recommender, or one loaded from ``model_dir`` at startup.

    Args:
        recommender: serve this object (tests, embedding in another app).
        model_dir: load this artifact once when the app starts (its lifespan), so a broken
            artifact stops the server at startup rather than failing requests.
        cache_top: items per user precomputed for ``GET /recommend/{user_id}`` at every
            load (:class:`TopCache`); 0 scores every request with the model.

    Raises:
        ValueError: neither or both of ``recommender`` and ``model_dir`` were given.
    """
    if (recommender is None) == (model_dir is None):
        raise ValueError("create_app needs exactly one of recommender or model_dir")
    holder = ModelHolder(recommender, cache_top)

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
    app.add_middleware(CachedRecommendations, holder=holder)

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

    def recommend_one(rec: Recommender, user_id: str, k: int, exclude_seen: bool) -> Response:
        with _model_call():
            result = rec.recommend(user_id, k=k, exclude_seen=exclude_seen)
        return _json_response(to_out(result, _known_ids(rec, [user_id])[0]))

    @app.get("/recommend/{user_id}", tags=["recommend"], response_model=RecommendationOut)
    async def recommend_user(
        user_id: Annotated[str, PathParam(description="raw user id; unknown users get popular")],
        k: K = 10,
        exclude_seen: Annotated[bool, Query(description="skip items seen in training")] = True,
    ) -> Response:
        """Top-k items for one user (an unknown user gets the most popular items)."""
        served = holder.get()
        # The cached answer is a lookup, cheap enough for the event loop; the model runs in
        # the threadpool so it never blocks the loop.
        if served.cache is not None:
            body = served.cache.body(user_id, k, exclude_seen)
            if body is not None:
                return Response(body, media_type="application/json")
        return await run_in_threadpool(recommend_one, served.recommender, user_id, k, exclude_seen)

    def recommend_batch_sync(served: Served, body: RecommendRequest) -> Response:
        rec = served.recommender
        if body.user_ids is not None and body.items is None and served.cache is not None:
            cached = served.cache.batch(body.user_ids, body.k, body.exclude_seen)
            if cached is not None:
                return Response(cached, media_type="application/json")
        if body.item_ids is not None:
            with _model_call():
                result = rec.recommend_for_items(
                    body.item_ids, k=body.k, exclude_seen=body.exclude_seen
                )
            return _json_response(to_out(result))
        users = body.user_ids or []
        with _model_call():
            results = rec.recommend_many(
                users, k=body.k, exclude_seen=body.exclude_seen, items=body.items
            )
        known = _known_ids(rec, users)
        out = BatchOut(results=[to_out(r, u) for r, u in zip(results, known, strict=True)])
        return _json_response(out)

    @app.post("/recommend", tags=["recommend"], response_model=BatchOut | RecommendationOut)
    async def recommend_batch(body: RecommendRequest) -> Response:
        """Top-k items for several users (``user_ids``: ``{"results": [...]}``), or for a new
        user described by the items they interacted with (``item_ids``: one result)."""
        served = holder.get()
        users = body.user_ids
        # A small batch from the cache is answered on the event loop: in a worker thread it
        # would wait for the GIL behind other requests (p95 60 ms at 16 clients, measured).
        if (
            users is not None
            and len(users) <= _LOOP_BATCH
            and body.items is None
            and served.cache is not None
        ):
            cached = served.cache.batch(users, body.k, body.exclude_seen)
            if cached is not None:
                return Response(cached, media_type="application/json")
        return await run_in_threadpool(recommend_batch_sync, served, body)

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
    *,
    cache_top: int = CACHE_TOP,
    access_log: bool = False,
) -> None:
    """Serve ``model_dir`` over HTTP with uvicorn until interrupted; SIGHUP reloads it.

    One worker process: reloads (endpoint or SIGHUP) swap the model of the only process
    there is. uvicorn picks its fastest HTTP parser and event loop that are installed
    (httptools and uvloop, dependencies of this package: the parser alone halved the CPU
    time of a cached request). Set PyTorch's thread count before calling (see the module
    docstring).

    Args:
        cache_top: items per user precomputed for ``GET /recommend`` (0: none).
        access_log: log a line per request (off: it nearly doubles a cached request's CPU time).
    """
    import uvicorn

    app = create_app(model_dir=model_dir, cache_top=cache_top)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log)
    server = uvicorn.Server(config)
    restore_signal = install_reload_signal(app.state.holder)
    try:
        server.run()
    finally:
        if restore_signal is not None:
            restore_signal()
