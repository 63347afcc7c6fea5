"""HTTP service: recommendations, scores and similar items from a saved model (FastAPI).

One process serves one model at a time. The model lives in a :class:`ModelHolder` whose single
reference is replaced in one assignment on reload, so a request that has read it keeps a
consistent model to the end, and a failed reload never disturbs the model being served.

Model work never runs on the event loop: it runs one call at a time in one worker thread
with a bounded queue (:class:`ModelGate`; 503 beyond it), as does parsing a large body.
Connections must send complete request headers within a deadline and their number is
capped (:mod:`hybridrec.serve.connections`), because uvicorn itself only times out idle
keep-alive connections.

The hot path, ``GET /recommend/{user_id}``, is a lookup: at every load each known user's top
items are ranked once (:class:`TopCache`, ``CACHE_TOP`` to ``MAX_K`` deep by
:func:`cache_depth`, for catalogues up to ``CACHE_MAX_PAIRS`` users x items), and a small
ASGI middleware
(:class:`CachedRecommendations`) answers canonical requests from it on the event loop, with
JSON built from pre-encoded pieces, before FastAPI's routing and validation. Answers are
exactly :meth:`Recommender.recommend`'s; anything the cache cannot answer goes to the model.

Threads: set PyTorch's thread count once at startup, before :func:`serve` (see
:mod:`hybridrec.serve.run` for why one thread per request).

Security: ``POST /admin/reload`` is off (403) unless a secret is configured
(``--admin-token`` or ``HYBRIDREC_ADMIN_TOKEN``); then it needs ``Authorization: Bearer
<secret>``, compared in constant time. It loads any model directory the server process can
read (the loader only reads the artifact's own files and never runs code; a model with
non-finite weights is refused). Bind to 127.0.0.1 (the default) or keep ``/admin`` private
behind a proxy as well.

Modules: ``schemas`` (request and response models, limits), ``cache`` (:class:`TopCache`),
``holder`` (the served model and reload), ``gate`` (:class:`ModelGate`), ``app``
(:func:`create_app`), ``bodies`` (body parsing, 422 and HTTP error answers), ``routes``
(the public routes and their worker side), ``admin`` (the admin routes), ``middleware``
(:class:`BodyLimit`, :class:`CachedRecommendations`), ``calls`` (what model calls share),
``events`` (``POST /events``, recent events), ``connections`` (the HTTP protocol's header
deadline and connection cap), ``run`` (:func:`serve` with uvicorn, SIGHUP).

Example:
    >>> from hybridrec.serve import serve
    >>> serve("model", port=8000)  # doctest: +SKIP
"""

from hybridrec.serve.app import CachedRecommendations, create_app
from hybridrec.serve.cache import (
    CACHE_MAX_PAIRS,
    CACHE_TOP,
    CacheMismatchError,
    TopCache,
    build_cache,
    cache_depth,
)
from hybridrec.serve.gate import MAX_PENDING, ModelGate
from hybridrec.serve.holder import ModelHolder, Served
from hybridrec.serve.run import install_reload_signal, serve
from hybridrec.serve.schemas import (
    MAX_BATCH,
    MAX_K,
    MAX_PAIRS,
    MAX_SCORE_PAIRS,
    BatchOut,
    HealthOut,
    ItemScore,
    K,
    KField,
    ModelOut,
    Pair,
    RawId,
    RecommendationOut,
    RecommendRequest,
    ReloadOut,
    ReloadRequest,
    ScoreOut,
    ScoreRequest,
    to_out,
)

__all__ = [
    "CACHE_MAX_PAIRS",
    "CACHE_TOP",
    "MAX_BATCH",
    "MAX_K",
    "MAX_PAIRS",
    "MAX_SCORE_PAIRS",
    "MAX_PENDING",
    "BatchOut",
    "CacheMismatchError",
    "CachedRecommendations",
    "HealthOut",
    "ItemScore",
    "K",
    "KField",
    "ModelGate",
    "ModelHolder",
    "ModelOut",
    "Pair",
    "RawId",
    "RecommendRequest",
    "RecommendationOut",
    "ReloadOut",
    "ReloadRequest",
    "ScoreOut",
    "ScoreRequest",
    "Served",
    "TopCache",
    "build_cache",
    "cache_depth",
    "create_app",
    "install_reload_signal",
    "serve",
    "to_out",
]
