"""The service's request and response models (pydantic) and the limits they enforce.

The limits bound the work one request can ask for, so a single request cannot hog a worker;
ids are never coerced, so a malformed id is a 422 rather than a silent wrong id.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Query
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

if TYPE_CHECKING:
    from hybridrec.recommend import Recommendation

#: Largest ``k`` a request may ask for: bounds the work and the response size per user.
MAX_K = 1000
#: Most users per batch request and pairs per score request: one request cannot hog a worker.
MAX_BATCH = 10_000
MAX_PAIRS = 100_000
#: Most pairs per ``POST /score``: validating and mapping 100,000 pairs held the GIL for
#: ~60-70 ms at a stretch, freezing every cached answer meanwhile; 20,000 keep it ~15 ms.
MAX_SCORE_PAIRS = 20_000
#: Most recommended items one request may ask for (users x k): 10,000 users at k=1000 took
#: 45 s and a 450 MB answer; this bounds a request to ~5 MB of JSON.
MAX_RESULTS = 100_000

#: A raw id as it appears in JSON: integers stay integers, text stays text (never coerced, so
#: ``1.5`` or ``true`` is a 422 rather than a silent wrong id).
RawId = StrictInt | StrictStr


def _digits(value: Any) -> Any:
    """A query's ``k`` as plain digits: pydantic's int parsing also reads "1_0", "+10"
    and "10.0", which no client means."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("k must be written as digits, e.g. 10")
    return value


K = Annotated[
    int,
    BeforeValidator(_digits),
    Query(ge=1, le=MAX_K, description="number of items to return"),
]
KField = Annotated[StrictInt, Field(ge=1, le=MAX_K, description="number of items to return")]


#: Attributes a new user may be described by in one request.
MAX_FEATURES = 100


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
    source: Literal[
        "model",
        "popularity",
        "items",
        "features",
        "features+items",
        "similar",
        "model+events",
        "events",
    ] = Field(
        description="model: the user's own scores; popularity: fallback for an unknown "
        "user; items: a new user described by items; features (features+items): a new "
        "user described by attributes (and items); similar: items like a given item; "
        "model+events: the user's own scores without items from their events since the "
        "model was trained; events: a user new to the model, folded in from their events"
    )
    unknown_items: list[RawId] = Field(
        default_factory=list, description="requested ids the model does not know (skipped)"
    )


class BatchOut(BaseModel):
    """One result per requested user, in request order."""

    results: list[RecommendationOut]
    unknown_items: list[RawId] = Field(
        default_factory=list,
        description="candidates (items) the model does not know, listed once for the batch",
    )


class RecommendRequest(BaseModel):
    """Either known users (``user_ids``) or a new user described by ``item_ids``."""

    model_config = ConfigDict(extra="forbid")

    user_ids: list[RawId] | None = Field(default=None, max_length=MAX_BATCH)
    item_ids: list[RawId] | None = Field(
        default=None,
        max_length=MAX_BATCH,
        description="items a new user interacted with; recommendations come from those",
    )
    user_features: dict[str, StrictStr | StrictInt | StrictFloat | None] | None = Field(
        default=None,
        max_length=MAX_FEATURES,
        description="attributes of a new user (field -> value, as in the training "
        "--user-features file), alone or with item_ids; for models trained with them",
    )
    k: KField = 10
    exclude_seen: StrictBool = True
    items: list[RawId] | None = Field(
        default=None,
        max_length=MAX_PAIRS,
        description="restrict candidates to these items (with user_ids only)",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> RecommendRequest:
        # Two shapes share one endpoint; reject ambiguous bodies instead of guessing.
        new_user = self.item_ids is not None or self.user_features is not None
        if (self.user_ids is None) == (not new_user):
            raise ValueError(
                "give exactly one of user_ids (known users) or item_ids and/or user_features "
                "(a new user)"
            )
        if new_user and self.items is not None:
            raise ValueError("items (candidate restriction) can only be used with user_ids")
        if self.user_ids is not None and len(self.user_ids) * self.k > MAX_RESULTS:
            raise ValueError(
                f"len(user_ids) x k may be at most {MAX_RESULTS:,} per request, got "
                f"{len(self.user_ids):,} x {self.k}; split the request"
            )
        return self


class Pair(TypedDict):
    """One ``(user_id, item_id)`` of ``POST /score``. A typed dict, not a model: validating
    100,000 pairs as model instances took ~300-450 ms with the GIL held throughout (the
    event loop froze as long), as dicts ~60 ms."""

    user_id: RawId
    item_id: RawId


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pairs: list[Pair] = Field(max_length=MAX_SCORE_PAIRS)


class ScoreOut(BaseModel):
    scores: list[float] = Field(description="probability of a positive interaction, per pair")


class HealthOut(BaseModel):
    status: Literal["ok"]
    model: str


class ModelOut(BaseModel):
    """Metadata of the served artifact."""

    model_config = ConfigDict(protected_namespaces=(), populate_by_name=True)

    model: str
    model_dir: str | None = Field(description="the served directory's name (not its path)")
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


#: New items one ``POST /admin/items`` may add.
MAX_NEW_ITEMS = 10_000


class NewItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: RawId
    features: dict[str, StrictStr | StrictInt | StrictFloat | None] = Field(
        max_length=MAX_FEATURES,
        description="its attributes: columns of the training --item-features file",
    )


class NewItemsRequest(BaseModel):
    """Items to add to the served model, scored from their features (no retraining)."""

    model_config = ConfigDict(extra="forbid")

    items: list[NewItem] = Field(min_length=1, max_length=MAX_NEW_ITEMS)


class NewItemsOut(BaseModel):
    status: Literal["added"]
    added: int
    num_items: int = Field(description="items the served model now ranks")
    saved: bool = Field(
        description="false: the items live in the served model only; a reload from disk "
        "drops them (save a model with Recommender.with_items to keep them)"
    )


class ReloadOut(BaseModel):
    status: Literal["reloaded"]
    model: str
    model_dir: str


def to_out(rec: Recommendation, user_id: Any = None) -> RecommendationOut:
    """A :class:`Recommendation` as its JSON response model, for ``user_id`` (None: items)."""
    # tolist() turns numpy scalars into Python ints/strs/floats: JSON keeps each id's type
    item_ids, scores = rec.item_ids.tolist(), rec.scores.tolist()
    return RecommendationOut(
        user_id=user_id,
        items=[ItemScore(item_id=i, score=s) for i, s in zip(item_ids, scores, strict=True)],
        source=rec.source,
        unknown_items=[plain(i) for i in rec.unknown_items],
    )


def recommendation_json(
    rec: Recommendation, user_id: Any = None, *, with_unknown: bool = True
) -> bytes:
    """:func:`to_out`'s response as JSON bytes, written without building the pydantic models:
    for 100 users at k=1000, building them took ~520 ms and held the GIL for up to ~200 ms
    at a stretch, which froze the event loop's cached answers (docs/benchmarks.md). Here
    one user's list is one ``json.dumps``, well under a millisecond of C code, so the model
    worker lets the event loop in between users. Same JSON values as the models (a
    non-finite score is null). ``with_unknown=False``: ``unknown_items`` left empty (a
    batch lists its unknown candidates once)."""
    item_ids, scores = rec.item_ids.tolist(), rec.scores.tolist()
    if not all(map(math.isfinite, scores)):
        scores = [s if math.isfinite(s) else None for s in scores]
    body = {
        "user_id": plain(user_id),
        "items": [{"item_id": i, "score": s} for i, s in zip(item_ids, scores, strict=True)],
        "source": rec.source,
        "unknown_items": [plain(i) for i in rec.unknown_items] if with_unknown else [],
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def batch_json(parts: list[bytes], unknown_items: list[Any] | None = None) -> bytes:
    """:class:`BatchOut`'s JSON from each result's :func:`recommendation_json`."""
    unknown = [plain(i) for i in unknown_items or ()]
    tail = json.dumps(unknown, ensure_ascii=False, separators=(",", ":")).encode()
    return b'{"results":[' + b",".join(parts) + b'],"unknown_items":' + tail + b"}"


def plain(value: Any) -> Any:
    """numpy scalar -> Python scalar, so ids keep their JSON type (int stays int)."""
    return value.item() if hasattr(value, "item") else value


def json_safe(value: Any) -> Any:
    """Non-finite floats -> None: JSON has no NaN, and a NaN metric must not break /model."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    value = plain(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
