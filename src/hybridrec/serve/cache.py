"""The response cache behind ``GET /recommend/{user_id}``: every known user's top items.

At every load each known user's top items (:func:`cache_depth`) are ranked once (for catalogues up
to ``CACHE_MAX_PAIRS`` users x items), so the service's hot path is a lookup whose JSON is
built from pre-encoded pieces. Its answers are exactly :meth:`Recommender.recommend`'s: the
cache is filled from ``recommend_many`` and the logits of
:meth:`Recommender.score_users`, and refuses a model whose two disagree.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hybridrec.recommend import Recommender
from hybridrec.recommend.two_stage import AUTO
from hybridrec.serve.schemas import MAX_K

logger = logging.getLogger(__name__)

#: Items per user kept ready for ``GET /recommend/{user_id}`` (see :class:`TopCache`) at
#: least, when the depth is automatic.
CACHE_TOP = 100
#: Users x depth the automatic depth may keep (~32 bytes each while built, both
#: ``exclude_seen`` settings): 1,000 items for up to 2,000 users, 100 from 20,000 users.
#: Deeper requests (``k=200``) are then lookups too instead of a model call each.
CACHE_ENTRIES = 2_000_000
#: Largest ``users x items`` scored to fill the cache at load (two passes over every known
#: user, with and without seen items: about 0.3 s per million pairs on one CPU core for the
#: default hybrid model, so at most a few seconds). Bigger models are served uncached.
CACHE_MAX_PAIRS = 25_000_000
#: Bytes of finished responses a cache keeps for repeated requests (then it starts afresh).
_MEMO_BYTES = 32 * 2**20
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


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
                results = recommender.recommend_many(
                    known, k=depth, exclude_seen=flag, num_candidates=AUTO
                )
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
        return b'{"results":[' + b",".join(bodies) + b'],"unknown_items":[]}'

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


def cache_depth(num_users: int, num_items: int, requested: int | None = None) -> int:
    """Items kept per user: ``requested`` (``--cache-top``), or by default as many as
    :data:`CACHE_ENTRIES` allows, between :data:`CACHE_TOP` and ``MAX_K`` (at most one more
    than the catalogue: a user's list shorter than the depth is known to be complete)."""
    if requested is not None:
        return min(requested, MAX_K)
    depth = max(CACHE_TOP, min(MAX_K, CACHE_ENTRIES // max(1, num_users)))
    return min(num_items + 1, depth)


def build_cache(recommender: Recommender, depth: int | None = None) -> TopCache | None:
    """A :class:`TopCache` of ``depth`` items per user (None: :func:`cache_depth`'s
    choice), or None when ``depth`` is 0, the model knows no users, scoring every user
    would exceed ``CACHE_MAX_PAIRS``, or the model is not on the CPU (an accelerator scores
    users in padded batches, whose last bits may differ from a single user's, and the cache
    must answer exactly as ``recommend``)."""
    pairs = len(recommender.users) * len(recommender.items)
    depth = cache_depth(len(recommender.users), len(recommender.items), depth)
    if depth <= 0 or len(recommender.users) == 0 or pairs > CACHE_MAX_PAIRS:
        return None
    if recommender.device.type != "cpu":
        return None
    try:
        return TopCache(recommender, depth)
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
