"""What recorded events change in ``/recommend`` at once: the events after the served
model's watermark, kept in memory per user (:class:`RecentEvents`).

Loaded from the log at startup and after every reload, extended by the log's writer after
each commit (before the batch is acknowledged), so:

- a user the model knows does not get items they interacted with since (with
  ``exclude_seen``); the cached top list is filtered on the event loop when enough of it is
  left, else the model ranks ``k`` + those items (``source: "model+events"``);
- a user the model does not know but the log does is folded in from their positive events
  (:meth:`Recommender.recommend_for_items`; ``source: "events"``) instead of getting the
  popular items.

Users without such events are answered exactly as before (cache, then model).
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from fastapi import Response

from hybridrec.events import Event, EventLog, read_rows, watermark_of
from hybridrec.recommend.cold_start import score_for_items_many
from hybridrec.recommend.two_stage import AUTO
from hybridrec.serve.calls import _known_ids, _model_call
from hybridrec.serve.schemas import BatchOut, ItemScore, RecommendationOut, plain
from hybridrec.serve.user_events import ItemCodes, UserEvents, user_key

if TYPE_CHECKING:
    from hybridrec.recommend import Recommendation, Recommender
    from hybridrec.serve.gate import ModelGate
    from hybridrec.serve.holder import Served

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: Finished answers kept for users with events (fold-ins cost a fit each), then cleared.
_MEMO_ENTRIES = 10_000
SOURCE_EXCLUDED, SOURCE_FOLDED = "model+events", "events"


class RecentEvents:
    """The events after the served model's watermark, per user, kept current.

    Built from the log by :meth:`sync` (at startup and after each reload: the new model's
    watermark), extended by the log's writer after each commit (:meth:`add`). Both hold a
    lock and remember the last event id applied, so an event read by a rebuild and also
    reported by the writer counts once.
    """

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.watermark: int | None = None
        self.threshold: float | None = None  # the served model's --threshold, if any
        self.last_id = 0
        self.users: dict[str, UserEvents] = {}
        self.codes = ItemCodes()
        self._lock = threading.Lock()
        self._memo: dict[tuple[Any, ...], tuple[weakref.ref[Any], bytes]] = {}
        log.add_listener(self.add)

    def sync(self, served: Served) -> None:
        """A model was swapped in: forget finished answers, and reload the per-user events
        when its watermark differs from the previous model's."""
        self._memo = {}
        watermark = watermark_of(served.recommender.config)
        threshold = served.recommender.config.get("settings", {}).get("data", {}).get("threshold")
        if (watermark, threshold) == (self.watermark, self.threshold):
            return
        with self._lock:
            self.threshold = threshold
            users: dict[str, UserEvents] = {}
            codes = ItemCodes()
            last = watermark
            for event_id, user, item, target, _ in read_rows(self.log.path, watermark):
                events = users.get(key := user_key(user))
                if events is None:
                    events = users[key] = UserEvents(codes)
                events.add(item, self._positive(target))
                last = event_id
            self.users, self.codes, self.last_id, self.watermark = users, codes, last, watermark

    def add(self, first_id: int, events: Sequence[Event]) -> None:
        """A committed batch (the log's writer thread calls this before acknowledging it)."""
        with self._lock:
            users = self.users
            for offset, event in enumerate(events):
                if first_id + offset > self.last_id:
                    events_of = users.get(key := user_key(event.user))
                    if events_of is None:
                        events_of = users[key] = UserEvents(self.codes)
                    events_of.add(event.item, self._positive(event.target))
            self.last_id = max(self.last_id, first_id + len(events) - 1)

    def _positive(self, target: float) -> bool:
        """As the model's training read its rows: >= ``--threshold``, else 1 (of 0/1)."""
        return target >= self.threshold if self.threshold is not None else target > 0.5

    # -------------------------------------------------------------- which users

    def of(self, rec: Recommender, user_id: Any, index: int) -> UserEvents | None:
        """The events of a user (``index``: their index in ``rec``, 0 when unknown)."""
        if not self.users:
            return None
        raw = rec.users.ids[index - 1] if index > 0 else user_id
        return self.users.get(user_key(plain(raw)))

    def concerns(self, served: Served, user_id: Any, exclude_seen: bool) -> bool:
        """Whether events change this user's answer: a known user with event items the
        model knows (and ``exclude_seen``), or an unknown user with events."""
        if not self.users:  # the common case, and the cheapest test
            return False
        rec = served.recommender
        index = _index(served, user_id)
        events = self.of(rec, user_id, index)
        if events is None:
            return False
        if index == 0:
            return True
        return exclude_seen and len(events.item_indices(rec)) > 0

    # -------------------------------------------------------------- answers

    def cached_body(self, served: Served, user_id: str, k: int, exclude_seen: bool) -> bytes | None:
        """The answer for a user with events, on the event loop when it is cheap: a known
        user's cached top list without their event items (when at least ``k`` are left or
        the list is the whole ranking), or a memoised fold-in; None: ask the model."""
        cache, rec = served.cache, served.recommender
        index = _index(served, user_id)
        events = self.of(rec, user_id, index)
        if events is None:
            return None
        if index == 0:
            return self._recall(rec, _fold_key(rec, user_id, events, k, exclude_seen))
        if cache is None or not exclude_seen:
            return None
        drop = events.item_indices(rec)
        key = (id(cache), index, len(events.items), k)
        body = self._recall(cache, key)
        if body is not None:
            return body
        n = int(cache.count[True][index])
        top = cache.top[True][index, :n]
        kept = np.flatnonzero(~np.isin(top, drop))
        if len(kept) < k and n == cache.depth:
            return None  # the list was cut at its depth: the model must rank further
        kept = kept[:k]
        scores = torch.sigmoid(torch.from_numpy(cache.logits[True][index, kept])).tolist()
        head = cache.item_head
        items = b",".join(
            head[i] + _score_json(s) + b"}" for i, s in zip(top[kept].tolist(), scores, strict=True)
        )
        body = (
            b'{"user_id":' + cache.user_json[index] + b',"items":[' + items + b'],"source":"'
            + SOURCE_EXCLUDED.encode() + b'","unknown_items":[]}'
        )  # fmt: skip
        self._remember(cache, key, body)
        return body

    async def recommend_one(
        self, served: Served, user_id: str, k: int, exclude_seen: bool, gate: ModelGate
    ) -> Response:
        """``GET /recommend/{user_id}`` for a user with events: on the loop when cached,
        else in the model's worker."""
        body = self.cached_body(served, user_id, k, exclude_seen)
        if body is None:
            body = await gate.run(self._one_json, served, user_id, k, exclude_seen)
        return Response(body, media_type="application/json")

    def _one_json(self, served: Served, user_id: Any, k: int, exclude_seen: bool) -> bytes:
        rec = served.recommender
        out = self.result(served, user_id, k, exclude_seen, None)
        body = out.model_dump_json().encode()
        events = self.of(rec, user_id, _index(served, user_id))
        if out.source == SOURCE_FOLDED and events is not None:
            self._remember(rec, _fold_key(rec, user_id, events, k, exclude_seen), body)
        return body

    def concerns_any(self, served: Served, user_ids: Sequence[Any], exclude_seen: bool) -> bool:
        """Whether events change the answer of any of ``user_ids`` (on the event loop: one
        vectorised id lookup for the batch)."""
        return bool(self.users) and any(self.concerned(served, user_ids, exclude_seen))

    def concerned(self, served: Served, user_ids: Sequence[Any], exclude_seen: bool) -> list[bool]:
        """:meth:`concerns` for each of ``user_ids``."""
        if not self.users:
            return [False] * len(user_ids)
        rec = served.recommender
        ids = list(user_ids)
        index = rec.users.transform(ids).tolist() if ids else []
        known, users, out = rec.users.ids, self.users, []
        for raw, i in zip(ids, index, strict=True):
            events = users.get(user_key(plain(known[i - 1]) if i > 0 else raw))
            out.append(
                events is not None
                and (i == 0 or (exclude_seen and len(events.item_indices(rec)) > 0))
            )
        return out

    def batch_response(self, served: Served, body: Any) -> Response:
        """``POST /recommend`` with ``user_ids`` of which some have events (model worker):
        the rest as one ``recommend_many`` call; each distinct user with events once, and
        those the model does not know folded in together (one model call per
        :data:`_FOLD_CHUNK` at most), so a batch of 10,000 such ids costs what its distinct users
        cost, not a fit each. Candidates (``items``) the model does not know are listed
        once, in the batch's ``unknown_items``, not in every user's answer."""
        rec = served.recommender
        users = list(body.user_ids)
        special = self.concerned(served, users, body.exclude_seen)
        plain_users = [u for u, s in zip(users, special, strict=True) if not s]
        candidates = _Candidates(rec, body.items)
        with _model_call():
            normal = iter(
                rec.recommend_many(
                    plain_users,
                    k=body.k,
                    exclude_seen=body.exclude_seen,
                    items=body.items,
                    num_candidates=AUTO,
                )
            )
            known = iter(_known_ids(rec, plain_users))
            answers, folded = self._answers(served, users, special, body, candidates)
            results = []
            for user, is_special in zip(users, special, strict=True):
                if is_special:
                    answer = answers[_distinct(user)]
                    if _distinct(user) in folded and answer.user_id != user:
                        # a user the model does not know is answered with their id as
                        # written (" zz" and "zz" share events, not the spelling)
                        answer = answer.model_copy(update={"user_id": user})
                    results.append(answer)
                else:
                    results.append(_to_out(next(normal), next(known), unknown=[]))
        out = BatchOut(results=results, unknown_items=candidates.unknown)
        return Response(out.model_dump_json(), media_type="application/json")

    def _answers(
        self,
        served: Served,
        users: list[Any],
        special: list[bool],
        body: Any,
        candidates: _Candidates,
    ) -> tuple[dict[tuple[str, type], RecommendationOut], set[tuple[str, type]]]:
        """The answer of each distinct user with events, keyed by :func:`_distinct`, and
        the keys of those the model does not know (folded in)."""
        distinct: dict[tuple[str, type], Any] = {}
        for user, is_special in zip(users, special, strict=True):
            if is_special:
                distinct.setdefault(_distinct(user), user)
        answers: dict[tuple[str, type], RecommendationOut] = {}
        new = []
        for key, user in distinct.items():
            index = _index(served, user)
            if index > 0:
                answers[key] = self.result(
                    served, user, body.k, body.exclude_seen, body.items, candidates
                )
            else:
                new.append((key, user))
        size = max(1, min(_FOLD_CHUNK, _FOLD_SCORES // served.recommender.items.num_embeddings))
        for start in range(0, len(new), size):
            chunk = new[start : start + size]
            folded = self._fold_many(served, [u for _, u in chunk], body, candidates)
            answers.update(zip([key for key, _ in chunk], folded, strict=True))
        return answers, {key for key, _ in new}

    def _fold_many(
        self, served: Served, users: list[Any], body: Any, candidates: _Candidates
    ) -> list[RecommendationOut]:
        """Users the model does not know, folded in from their events by one call."""
        rec = served.recommender
        drops, requests = [], []
        for user in users:
            events = self.of(rec, user, 0)
            drop = events.item_indices(rec) if events is not None and body.exclude_seen else _NONE
            positives = events.positive_items() if events is not None else []
            depth = candidates.depth(rec, body.k + len(drop))
            drops.append(drop)
            requests.append((positives, depth, body.exclude_seen))
        out = []
        for user, drop, result in zip(
            users, drops, rec.recommend_for_items_many(requests), strict=True
        ):
            if isinstance(result, Exception):  # as one user's own call would fail
                raise result
            source = SOURCE_FOLDED if result.source == "items" else result.source
            kept = _without(rec, result, drop, candidates.allowed, body.k)
            out.append(_to_out(result, user, kept, source, []))
        return out

    def result(
        self,
        served: Served,
        user_id: Any,
        k: int,
        exclude_seen: bool,
        items: Sequence[Any] | None,
        candidates: _Candidates | None = None,
    ) -> RecommendationOut:
        """One user's answer with their events (in the model worker). With ``candidates``
        (a batch's), the unknown candidates are left to the batch's list."""
        rec = served.recommender
        listed = candidates is None
        candidates = candidates or _Candidates(rec, items)
        unknown = candidates.unknown if listed else []
        own = None if listed else []  # a known user's result lists its own unknown candidates
        index = _index(served, user_id)
        events = self.of(rec, user_id, index)
        drop = events.item_indices(rec) if events is not None and exclude_seen else _NONE
        if index > 0:
            known_id = plain(rec.users.ids[index - 1])
            if not len(drop):
                result = rec.recommend(user_id, k, exclude_seen, items, num_candidates=AUTO)
                return _to_out(result, known_id, None, None, own)
            result = rec.recommend(user_id, k + len(drop), True, items, num_candidates=AUTO)
            kept = _without(rec, result, drop, None, k)
            return _to_out(result, known_id, kept, SOURCE_EXCLUDED, own)
        positives = events.positive_items() if events is not None else []
        depth = candidates.depth(rec, k + len(drop))
        result = rec.recommend_for_items(positives, k=depth, exclude_seen=exclude_seen)
        source = SOURCE_FOLDED if result.source == "items" else result.source
        kept = _without(rec, result, drop, candidates.allowed, k)
        return _to_out(result, user_id, kept, source, unknown)

    def score(self, served: Served, users: list[Any], items: list[Any]) -> np.ndarray:
        """``/score``'s probabilities (in the model worker): a user the model does not know
        but the log does is scored as their fold-in ranks items (as ``/recommend`` folds
        them in); every other pair by the model alone."""
        rec = served.recommender
        index, item_idx = rec.users.transform(users), rec.items.transform(items)
        scores = rec.score_indices(index, item_idx)  # what rec.score(users, items) gives
        histories: list[list[Any]] = []
        owner_of: dict[str, int] = {}
        owner = np.full(len(users), -1, dtype=np.int64)
        for n in np.flatnonzero(index == 0):
            events = self.of(rec, users[n], 0)
            if events is None:
                continue
            key = user_key(users[n])
            if key not in owner_of:
                owner_of[key] = len(histories)
                histories.append(events.positive_items())
            owner[n] = owner_of[key]
        mine = np.flatnonzero(owner >= 0)
        if len(mine):
            scores[mine] = score_for_items_many(rec, histories, owner[mine], item_idx[mine])
        return scores

    def _remember(self, owner: Any, key: tuple[Any, ...], body: bytes) -> None:
        """Keep ``body``, made from ``owner`` (a model or its cache), for :meth:`_recall`."""
        if len(self._memo) >= _MEMO_ENTRIES:
            self._memo = {}
        self._memo[key] = (weakref.ref(owner), body)

    def _recall(self, owner: Any, key: tuple[Any, ...]) -> bytes | None:
        """A kept answer, only if made from this very ``owner`` (an ``id`` in the key
        may have been reused by a later model's object)."""
        kept = self._memo.get(key)
        return kept[1] if kept is not None and kept[0]() is owner else None


_NONE = np.zeros(0, dtype=np.int64)
#: Users folded in from their events per model call of a batch, and the most scores such a
#: call may hold ((users, items) floats: 64 MB), so a large catalogue takes fewer users.
_FOLD_CHUNK, _FOLD_SCORES = 256, 2**24


class _Candidates:
    """A request's candidate restriction (``items``), resolved once for all its users:
    the allowed item indices (None: every item) and the ids the model does not know."""

    def __init__(self, rec: Recommender, items: Sequence[Any] | None) -> None:
        self.allowed = None if items is None else np.unique(rec.items.transform(list(items)))
        self.unknown = [] if items is None else _unknown(rec, items)

    def depth(self, rec: Recommender, wanted: int) -> int:
        """How many of a fold-in's best items to rank so ``wanted`` survive the filter."""
        return rec.items.num_embeddings if self.allowed is not None else wanted


def _distinct(user_id: Any) -> tuple[str, type]:
    """One key per user a batch names: their events' key, and the id's JSON type (the
    answer repeats the id as given)."""
    return (user_key(user_id), type(user_id))


def _index(served: Served, user_id: Any) -> int:
    """The user's index in the served model (0: unknown), by the cache's lookup if any."""
    if served.cache is not None and isinstance(user_id, str):
        return served.cache.lookup(user_id)
    if isinstance(user_id, int) and not _INT64_MIN <= user_id <= _INT64_MAX:
        return 0
    return int(served.recommender.users.transform([user_id])[0])


def _fold_key(rec: Any, user_id: Any, events: UserEvents, k: int, exclude: bool) -> tuple:
    # the id as given, not its key: the kept answer repeats the request's spelling
    return ("fold", id(rec), user_id, len(events.items), k, exclude, type(user_id))


def _without(
    rec: Recommender,
    result: Recommendation,
    drop: np.ndarray,
    allowed: np.ndarray | None,
    k: int,
) -> np.ndarray:
    """Positions of ``result`` kept: not in ``drop``, in ``allowed`` (if given), the first k."""
    index = rec.items.transform(result.item_ids)
    keep = ~np.isin(index, drop)
    if allowed is not None:
        keep &= np.isin(index, allowed)
    return np.flatnonzero(keep)[:k]


def _unknown(rec: Recommender, items: Sequence[Any]) -> list[Any]:
    index = rec.items.transform(list(items))
    seen: dict[Any, None] = {}
    for raw, i in zip(items, index, strict=True):
        if i == 0:
            seen.setdefault(raw, None)
    return list(seen)


def _to_out(
    result: Recommendation,
    user_id: Any,
    kept: np.ndarray | None = None,
    source: str | None = None,
    unknown: list[Any] | None = None,
) -> RecommendationOut:
    item_ids, scores = result.item_ids, result.scores
    if kept is not None:
        item_ids, scores = item_ids[kept], scores[kept]
    return RecommendationOut(
        user_id=user_id,
        items=[
            ItemScore(item_id=i, score=s)
            for i, s in zip(item_ids.tolist(), scores.tolist(), strict=True)
        ],
        source=source or result.source,  # type: ignore[arg-type]
        unknown_items=[plain(i) for i in (result.unknown_items if unknown is None else unknown)],
    )


def _score_json(score: float) -> bytes:
    # as the cache writes scores: the shortest repr, null for NaN/infinity
    return repr(score).encode() if math.isfinite(score) else b"null"


# ---------------------------------------------------------------------- the route
