"""A trained model bundled with its id maps: the object users score and recommend with.

Top-K recommendation ranks every item by the model's ``score_all`` and takes the best ``k``:

- a known user gets the model's ranking, without the items of their training positives
  (``exclude_seen``) and never the unknown item index 0;
- a user the model does not know gets the most popular items (training positives per item);
- a new user described by a few items gets a user vector fitted to them on the spot
  (:meth:`Recommender.recommend_for_items`), everything else in the model frozen;
- an item gets the items whose embeddings point the same way (:meth:`Recommender.similar_items`);
- with ``num_candidates=N`` (two-stage top-K, for large catalogues) a known user's items are
  first narrowed to ``N`` candidates by one matrix product, then only those are scored by the
  model (see :mod:`hybridrec.retrieval`).

Ties are broken by the lower item index, so results never depend on ``torch.topk``'s order.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from hybridrec.artifact import SeenItems, load_artifact, read_metrics, save_artifact
from hybridrec.data.encoding import UNKNOWN_INDEX, IdEncoder
from hybridrec.data.io import PARQUET_SUFFIXES, is_csv_path, parse_ids, read_table
from hybridrec.errors import ConfigError, DataError, HybridRecError, UnknownIdError
from hybridrec.files import atomic_write
from hybridrec.models import model_device
from hybridrec.retrieval import item_prior, query_vectors, retrieval_factors, supports_retrieval

IdsLike = Sequence[Any] | np.ndarray
Source = Literal["model", "popularity", "items", "similar"]

#: Elements of the (users, items, widest layer) activations per ``score_all`` call.
_CHUNK_ELEMENTS = 20_000_000
#: On an accelerator, users per ``score_all`` call are padded to a multiple of this.
_ROW_ALIGN = 8
#: Negatives sampled per given item when fitting a new user's vector.
_NEGATIVES_PER_ITEM = 4

#: Models with the user and item embeddings two-stage top-K retrieves by.
TWO_STAGE_MODELS = ("hybrid", "mf", "gmf", "neumf")

#: Columns of the file :func:`write_recommendations` writes.
RECOMMENDATION_COLUMNS = ("userId", "rank", "itemId", "score", "source")
#: Output formats by file suffix.
OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", **{s: "parquet" for s in PARQUET_SUFFIXES}}


@dataclass(frozen=True, eq=False)
class Recommendation:
    """Top items for one user (or one item list), best first.

    Attributes:
        user_id: the user as given; None for :meth:`Recommender.recommend_for_items` and
            :meth:`Recommender.similar_items`.
        item_ids: raw item ids, best first (read-only array).
        scores: float32, one per item (read-only array): the probability of a positive
            (sigmoid of the model's logit) for ``"model"`` and ``"items"``, the item's share
            of all training positives for ``"popularity"``, the cosine similarity for
            ``"similar"``.
        source: ``"model"`` (the user's own scores), ``"popularity"`` (a user the model does
            not know), ``"items"`` (a new user fitted to given items) or ``"similar"``.
        unknown_items: ids from the input (candidates or given items) that the model does not
            know and therefore ignored, in input order without repeats.
    """

    user_id: Any
    item_ids: np.ndarray
    scores: np.ndarray
    source: Source
    unknown_items: list[Any] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.item_ids)

    def __eq__(self, other: object) -> bool:
        # the generated __eq__ would compare arrays element-wise and fail on bool()
        if not isinstance(other, Recommendation):
            return NotImplemented
        return (
            self.user_id == other.user_id
            and self.source == other.source
            and self.unknown_items == other.unknown_items
            and np.array_equal(self.item_ids, other.item_ids)
            and np.array_equal(self.scores, other.scores)
        )

    __hash__ = None  # type: ignore[assignment]  # holds arrays


class Recommender:
    """Scores raw ``(user_id, item_id)`` pairs and recommends top-K items with a trained model.

    Ids never seen in training are allowed: they map to the unknown index 0, whose embedding
    is zero, so they get a neutral (not an arbitrary) score.

    Args:
        model: a registered model (``score_all`` and ``user_parameters``).
        users, items: the id maps the model was trained with.
        model_name: its name in ``hybridrec.models.MODELS``.
        config: artifact config and settings (``load`` fills it in).
        batch_size: pairs per model call in :meth:`score`.
        seen: the users' training positives and item counts; without them nothing is
            excluded as seen and the popularity fallback has only ties (lowest index first).

    Example:
        >>> rec = hybridrec.load("model")                     # doctest: +SKIP
        >>> rec.score(["u1", "u1"], ["i9", "never-seen"])     # doctest: +SKIP
        array([0.83, 0.41], dtype=float32)
        >>> rec.recommend("u1", k=3).item_ids                 # doctest: +SKIP
        array(['i4', 'i17', 'i2'], dtype=object)
    """

    def __init__(
        self,
        model: nn.Module,
        users: IdEncoder,
        items: IdEncoder,
        *,
        model_name: str = "hybrid",
        config: dict[str, Any] | None = None,
        batch_size: int = 65536,
        seen: SeenItems | None = None,
    ) -> None:
        self.model = model.eval()
        self.users = users
        self.items = items
        self.model_name = model_name
        self.config = config or {}
        self.batch_size = batch_size
        if seen is not None and (
            seen.num_users != users.num_embeddings or seen.num_items != items.num_embeddings
        ):
            raise ValueError(
                f"seen items are sized for {seen.num_users} users and {seen.num_items} items, "
                f"the id maps for {users.num_embeddings} and {items.num_embeddings}"
            )
        self.seen = seen
        self._seen = seen or SeenItems.empty(users.num_embeddings, items.num_embeddings)
        self._item_prior: torch.Tensor | None = None  # two-stage stage 1, computed on first use

    @classmethod
    def load(cls, directory: str | Path) -> Recommender:
        """Load an artifact written by :meth:`save` or ``hybridrec train --out``."""
        model, users, items, config, seen = load_artifact(directory)
        config = {**config, "directory": str(directory)}
        return cls(model, users, items, model_name=config["model"], config=config, seen=seen)

    def save(self, directory: str | Path, metrics: dict[str, Any] | None = None) -> Path:
        """Write the artifact atomically (see :mod:`hybridrec.artifact`)."""
        return save_artifact(
            directory,
            model=self.model,
            model_name=self.model_name,
            users=self.users,
            items=self.items,
            metrics=metrics,
            settings=self.config.get("settings"),
            seen=self.seen,
        )

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    @torch.no_grad()
    def score_indices(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """Probabilities (N,) for encoded index pairs, computed in batches."""
        out = np.empty(len(user_idx), dtype=np.float32)
        device = self.device
        for start in range(0, len(user_idx), self.batch_size):
            end = start + self.batch_size
            u = torch.as_tensor(user_idx[start:end], device=device)
            i = torch.as_tensor(item_idx[start:end], device=device)
            out[start:end] = torch.sigmoid(self.model(u, i).float()).cpu().numpy()
        return out

    def score(self, user_ids: IdsLike, item_ids: IdsLike) -> np.ndarray:
        """Probability of a positive interaction for each ``(user_ids[k], item_ids[k])``.

        Args:
            user_ids: raw user ids, as in the training file (unknown ids allowed).
            item_ids: raw item ids, same length (unknown ids allowed).

        Returns:
            float32 array of probabilities in (0, 1), one per pair.
        """
        u = self.users.transform(user_ids)
        i = self.items.transform(item_ids)
        if len(u) != len(i):
            raise ValueError(
                f"score() needs as many item ids as user ids, got {len(u)} and {len(i)}"
            )
        return self.score_indices(u, i)

    # ------------------------------------------------------------------ top-K

    def recommend(
        self,
        user_id: Any,
        k: int = 10,
        exclude_seen: bool = True,
        items: IdsLike | None = None,
        *,
        num_candidates: int | None = None,
    ) -> Recommendation:
        """The ``k`` best items for one user, best first.

        Args:
            user_id: a raw user id. One the model does not know gets the most popular items
                (``source="popularity"``).
            k: items to return; fewer when fewer candidates are left.
            exclude_seen: leave out the user's training positives.
            items: rank only these raw item ids; unknown ones are reported in
                ``unknown_items``, not an error.
            num_candidates: two-stage top-K for large catalogues. None (the default) scores
                every item with the full model. ``N`` ranks the items by the dot product
                of the user and item embeddings plus a per-item prior
                (:func:`hybridrec.retrieval.item_prior`, computed on first use and cached
                for this recommender), keeps the best ``max(N, k)`` of the items that may
                be recommended (never item 0, seen items or items outside ``items``), and
                scores only those with the full model: ``source="model"``, the scores
                are the model's probabilities as without it. The result can differ from the
                exhaustive one only when an exhaustive top-k item falls outside the
                candidates; with ``N`` >= the catalogue size it is the same. Only for
                models with user and item embeddings (:data:`TWO_STAGE_MODELS`); unknown
                users still get the popularity ranking.

        Raises:
            ConfigError: ``k`` or ``num_candidates`` is not an integer >= 1 (a
                ``ValueError`` too), or ``num_candidates`` is given for a model without
                user and item embeddings (mlp, popularity, sasrec).
        """
        return self.recommend_many(
            [user_id], k, exclude_seen, items, num_candidates=num_candidates
        )[0]

    @torch.no_grad()
    def recommend_many(
        self,
        user_ids: IdsLike,
        k: int = 10,
        exclude_seen: bool = True,
        items: IdsLike | None = None,
        *,
        chunk_users: int | None = None,
        num_candidates: int | None = None,
    ) -> list[Recommendation]:
        """:meth:`recommend` for many users at once, in their order: the same results, exactly.

        Known users are scored through ``score_all`` a chunk of users at a time (with
        ``num_candidates``: retrieved and re-ranked a chunk at a time); unknown users share
        one popularity ranking (nothing to exclude: they have no history).

        Args:
            user_ids: raw user ids (known or not; repeats allowed).
            k, exclude_seen, items, num_candidates: as in :meth:`recommend`.
            chunk_users: users per ``score_all`` call; by default enough to keep the
                activations near 2e7 elements (:meth:`default_chunk_users`).
        """
        k = _check_k(k)
        num_candidates = self._check_two_stage(num_candidates)
        ids = _id_list(user_ids, "user_ids")
        chunk = _check_chunk(chunk_users) if chunk_users is not None else None
        chunk = chunk or self.default_chunk_users()
        allowed, unknown_items = self._candidates(items)
        if not ids:
            return []
        user_idx = self.users.transform(ids)
        results: list[Recommendation | None] = [None] * len(ids)
        unknown = np.flatnonzero(user_idx == UNKNOWN_INDEX)
        if len(unknown):
            item_ids, scores = self._popular(k, allowed, exclude=None)
            for j in unknown:
                results[j] = Recommendation(
                    ids[j], item_ids, scores, "popularity", list(unknown_items)
                )
        known = np.flatnonzero(user_idx != UNKNOWN_INDEX)
        for start in range(0, len(known), chunk):
            positions = known[start : start + chunk]
            users = user_idx[positions]
            mask = self._mask(users, exclude_seen, allowed)
            if num_candidates is None:
                logits = self._score_users(users).masked_fill(mask, -torch.inf)
            else:
                logits = self._two_stage_logits(users, mask, max(num_candidates, k))
            for j, (top, values) in zip(positions, _top_k(logits, k), strict=True):
                results[j] = Recommendation(
                    ids[j],
                    _frozen(self.items.inverse_transform(top)),
                    _frozen(_sigmoid(values)),
                    "model",
                    list(unknown_items),
                )
        return results  # type: ignore[return-value]  # every slot is filled

    def recommend_for_items(
        self,
        item_ids: IdsLike,
        k: int = 10,
        exclude_seen: bool = True,
        steps: int = 50,
        lr: float = 0.05,
        seed: int = 0,
    ) -> Recommendation:
        """The ``k`` best items for a new user who interacted with ``item_ids``.

        Sequence models (``score_sequences``, e.g. sasrec) read the items as the user's
        history, oldest first, and rank directly. For other models a user vector is fitted
        to those items: ``steps`` Adam steps on fresh rows of the
        model's per-user tables (``model.user_parameters``, started at the mean known
        user) with the given items as positives against uniformly sampled other items as
        negatives (4 per positive, fresh each step, seeded), all other weights frozen. The
        model itself is never modified (its parameters are swapped for the fresh rows in a
        structural copy with ``torch.func.functional_call``), so this is safe beside other
        threads scoring with it. Then the full model ranks every item for that vector.

        Args:
            item_ids: raw ids of the items the user interacted with; unknown ones are
                reported in ``unknown_items`` and otherwise ignored.
            k: items to return.
            exclude_seen: leave the given items out of the results.
            steps, lr: Adam steps and learning rate for the user vector.
            seed: seed of the negative samples: same inputs, same result.

        Returns:
            ``source="items"``; ``source="popularity"`` (the most popular items) when none
            of the items is known or the model has no per-user parameters (popularity).
        """
        k = _check_k(k)
        if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 0:
            raise ConfigError(f"steps must be an integer >= 0, got {steps!r}")
        if not lr > 0:
            raise ConfigError(f"lr must be positive, got {lr!r}")
        raw = _id_list(item_ids, "item_ids")
        index = self.items.transform(raw) if raw else np.zeros(0, dtype=np.int64)
        unknown_items = _unique(raw[j] for j in np.flatnonzero(index == UNKNOWN_INDEX))
        known = index[index != UNKNOWN_INDEX]
        given = np.unique(known)
        exclude = given if exclude_seen else None
        if len(given) and hasattr(self.model, "score_sequences"):
            # sequence models read the items themselves, in the order given: no fitting
            with torch.no_grad():
                sequence = torch.as_tensor(known, dtype=torch.int64, device=self.device)[None]
                logits = self.model.score_sequences(sequence).float()
            return self._top_of(logits, k, exclude, unknown_items)
        if len(given) == 0 or not self._user_parameters():
            item_out, scores = self._popular(k, None, exclude=exclude)
            return Recommendation(None, item_out, scores, "popularity", unknown_items)
        # The service calls this under torch.inference_mode(); fitting needs autograd.
        with torch.inference_mode(False), torch.enable_grad():
            scorer, tables = self._fit_user(given, steps, lr, seed)
            with torch.no_grad():
                one = torch.ones(1, dtype=torch.int64, device=self.device)
                logits = torch.func.functional_call(scorer, tables, (one,)).float()
        return self._top_of(logits, k, exclude, unknown_items)

    def _top_of(
        self, logits: torch.Tensor, k: int, exclude: np.ndarray | None, unknown_items: list[Any]
    ) -> Recommendation:
        """The item-based result from one row of logits (1, num_items)."""
        mask = torch.zeros_like(logits, dtype=torch.bool)
        mask[:, UNKNOWN_INDEX] = True
        if exclude is not None:
            mask[0, torch.as_tensor(exclude, device=mask.device)] = True
        ((top, values),) = _top_k(logits.masked_fill(mask, -torch.inf), k)
        return Recommendation(
            None,
            _frozen(self.items.inverse_transform(top)),
            _frozen(_sigmoid(values)),
            "items",
            unknown_items,
        )

    @torch.no_grad()
    def similar_items(self, item_id: Any, k: int = 10) -> Recommendation:
        """The ``k`` items whose embeddings are most cosine-similar to ``item_id``'s.

        Raises:
            HybridRecError: the model has no ``item_embedding`` (mlp, popularity).
            UnknownIdError: the model does not know ``item_id``.
        """
        k = _check_k(k)
        embedding = getattr(self.model, "item_embedding", None)
        if not isinstance(embedding, nn.Embedding):
            raise HybridRecError(
                f"model {self.model_name} has no item embeddings to compare; similar items "
                "need a model with one (hybrid, mf, gmf, neumf)"
            )
        index = int(self.items.transform([item_id])[0])
        if index == UNKNOWN_INDEX:
            raise UnknownIdError(
                f"item {item_id!r} is not known to the model (it has no training rows); "
                "ask with an item id from the training data"
            )
        vectors = F.normalize(embedding.weight.float(), dim=1)  # zero rows stay zero
        similarity = (vectors @ vectors[index])[None]  # (1, I)
        similarity[0, [UNKNOWN_INDEX, index]] = -torch.inf
        ((top, values),) = _top_k(similarity, k)
        return Recommendation(
            None,
            _frozen(self.items.inverse_transform(top)),
            _frozen(values.astype(np.float32)),
            "similar",
        )

    def default_chunk_users(self) -> int:
        """Users per ``score_all`` call: about 2e7 activations (users x items x the widest
        linear layer, since MLP models run every layer on every user-item pair), rounded down
        to a multiple of 8 (see ``_ROW_ALIGN``) and at least 8."""
        linear = [m.out_features for m in self.model.modules() if isinstance(m, nn.Linear)]
        per_user = self.items.num_embeddings * max([1, *linear])
        users = _CHUNK_ELEMENTS // per_user
        return max(_ROW_ALIGN, users // _ROW_ALIGN * _ROW_ALIGN)

    def _score_users(self, users: np.ndarray) -> torch.Tensor:
        """float32 logits (len(users), num_items).

        On CPU each user is scored by its own ``score_all`` call. CPU matrix products round a
        row differently depending on how many rows they multiply (a matrix-vector kernel for
        one row, remainder blocks for odd counts), so this is what makes ``recommend`` and
        ``recommend_many`` agree bit for bit; it also keeps a single request cheap (padding
        one user to an aligned batch cost 8x the work). Accelerators get one padded call.
        """
        if self.device.type == "cpu":
            rows = [
                self.model.score_all(torch.as_tensor(users[j : j + 1])) for j in range(len(users))
            ]
            return torch.cat(rows).float() if rows else torch.zeros(0, self.model.config.num_items)
        padded = np.zeros(-(-len(users) // _ROW_ALIGN) * _ROW_ALIGN, dtype=np.int64)
        padded[: len(users)] = users  # padding rows are the unknown user, then dropped
        logits = self.model.score_all(torch.as_tensor(padded, device=self.device))
        return logits[: len(users)].float()

    def _check_two_stage(self, num_candidates: Any) -> int | None:
        """``num_candidates`` as an int (None: exhaustive), refused where it cannot work."""
        if num_candidates is None:
            return None
        if isinstance(num_candidates, bool) or not isinstance(num_candidates, int | np.integer):
            raise ConfigError(f"num_candidates must be an integer >= 1, got {num_candidates!r}")
        if num_candidates < 1:
            raise ConfigError(f"num_candidates must be >= 1, got num_candidates={num_candidates}")
        if not supports_retrieval(self.model):
            raise ConfigError(
                f"model {self.model_name} has no user and item embeddings to retrieve "
                f"candidates by; two-stage top-K (num_candidates) needs one of "
                f"{', '.join(TWO_STAGE_MODELS)}: leave num_candidates unset to score every item"
            )
        return int(num_candidates)

    def _stage1_prior(self) -> torch.Tensor:
        """(num_items,) the per-item term added to the dot product in two-stage stage 1.

        :func:`hybridrec.retrieval.item_prior` of the model, computed on first use and kept:
        it is deterministic, so computing it twice (two threads at once) is only wasted work.
        Changing the model's weights in place afterwards leaves it stale; load a new
        :class:`Recommender` instead.
        """
        prior = self._item_prior
        if prior is None:
            with torch.no_grad():
                prior = item_prior(self.model).float()
            self._item_prior = prior
        return prior

    def _two_stage_logits(self, users: np.ndarray, mask: torch.Tensor, n: int) -> torch.Tensor:
        """float32 (len(users), num_items): the model's logits for each user's ``n`` stage-1
        candidates, ``-inf`` everywhere else.

        Stage 1 ranks by ``u . i + prior(i)`` with ``mask`` applied first, so the candidates
        are the best ``n`` items that may be recommended (ties: lower index). As in
        :meth:`_score_users`, on CPU each user gets its own matrix product and model call,
        so a user's result does not depend on the users beside it.
        """
        _, item_embedding = retrieval_factors(self.model)
        prior = self._stage1_prior()
        device = self.device
        cpu = device.type == "cpu"
        index = torch.as_tensor(users, dtype=torch.int64, device=device)
        table = item_embedding.weight.T
        if cpu:
            dots = [query_vectors(self.model, index[j : j + 1]) @ table for j in range(len(users))]
            stage1 = torch.cat(dots).float()
        else:
            stage1 = (query_vectors(self.model, index) @ table).float()
        stage1 = (stage1 + prior).masked_fill(mask, -torch.inf)
        candidates = [top for top, _ in _top_k(stage1, n)]
        logits = torch.full_like(stage1, -torch.inf)
        counts = np.array([len(c) for c in candidates], dtype=np.int64)
        if counts.sum() == 0:
            return logits
        rows = torch.as_tensor(np.repeat(np.arange(len(users)), counts), device=device)
        cols = torch.as_tensor(np.concatenate(candidates), dtype=torch.int64, device=device)
        pair_users = index[rows]
        if cpu:
            bounds = np.concatenate([[0], np.cumsum(counts)])
            calls = [
                (int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a
            ]
        else:
            total = int(counts.sum())
            calls = [(a, min(a + self.batch_size, total)) for a in range(0, total, self.batch_size)]
        for a, b in calls:
            logits[rows[a:b], cols[a:b]] = self.model(pair_users[a:b], cols[a:b]).float()
        return logits

    def _mask(
        self, users: np.ndarray, exclude_seen: bool, allowed: torch.Tensor | None
    ) -> torch.Tensor:
        """(len(users), num_items) True where an item must not be recommended."""
        mask = torch.zeros(
            len(users), self.items.num_embeddings, dtype=torch.bool, device=self.device
        )
        mask[:, UNKNOWN_INDEX] = True
        if exclude_seen:
            indptr = self._seen.indptr
            starts, lengths = indptr[users], indptr[users + 1] - indptr[users]
            rows = np.repeat(np.arange(len(users)), lengths)
            offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            cols = self._seen.items[np.repeat(starts, lengths) + offsets]
            rows_t = torch.as_tensor(rows, device=self.device)
            mask[rows_t, torch.as_tensor(cols, dtype=torch.int64, device=self.device)] = True
        if allowed is not None:
            mask |= ~allowed
        return mask

    def _candidates(self, items: IdsLike | None) -> tuple[torch.Tensor | None, list[Any]]:
        """``(allowed (num_items,) bool or None for all, unknown raw ids)``."""
        if items is None:
            return None, []
        raw = _id_list(items, "items")
        index = self.items.transform(raw) if raw else np.zeros(0, dtype=np.int64)
        allowed = torch.zeros(self.items.num_embeddings, dtype=torch.bool, device=self.device)
        allowed[torch.as_tensor(index[index != UNKNOWN_INDEX], device=self.device)] = True
        return allowed, _unique(raw[j] for j in np.flatnonzero(index == UNKNOWN_INDEX))

    def _popular(
        self, k: int, allowed: torch.Tensor | None, exclude: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(item ids, share of training positives)`` of the ``k`` most popular items."""
        counts = self._seen.item_counts
        mask = torch.zeros(1, len(counts), dtype=torch.bool)
        mask[0, UNKNOWN_INDEX] = True
        if exclude is not None:
            mask[0, torch.as_tensor(exclude)] = True
        if allowed is not None:
            mask |= ~allowed.cpu()
        scores = torch.as_tensor(counts, dtype=torch.float64)[None].masked_fill(mask, -torch.inf)
        ((top, values),) = _top_k(scores, k)
        total = counts.sum()
        share = values / total if total else np.zeros_like(values)
        return _frozen(self.items.inverse_transform(top)), _frozen(share.astype(np.float32))

    def _user_parameters(self) -> tuple[str, ...]:
        names = getattr(self.model, "user_parameters", None)
        if names is None:
            raise HybridRecError(
                f"model {self.model_name} does not declare its per-user tables; give its class "
                "a user_parameters attribute (e.g. ('user_embedding.weight',))"
            )
        missing = set(names) - dict(self.model.named_parameters()).keys()
        if missing:
            raise ValueError(
                f"{type(self.model).__name__}.user_parameters names {sorted(missing)}, "
                "which are not parameters of the model"
            )
        return tuple(names)

    def _fit_user(
        self, positives: np.ndarray, steps: int, lr: float, seed: int
    ) -> tuple[nn.Module, dict[str, torch.Tensor]]:
        """Fit a new user's rows to ``positives``: ``(scorer, parameter replacements)``.

        Each per-user table is replaced by two rows: the model's own unknown row 0 and the
        fitted row 1, addressed as user 1. Row 0 itself cannot learn: the embeddings'
        ``padding_idx=0`` gives it no gradient.
        """
        device = self.device
        params = dict(self.model.named_parameters())
        names = self._user_parameters()
        rows = []
        for name in names:
            table = params[name].detach()
            start = table[1:].mean(0, keepdim=True) if len(table) > 1 else table[:1]
            rows.append(start.clone().requires_grad_(True))

        def tables() -> dict[str, torch.Tensor]:
            return {
                f"model.{name}": torch.cat([params[name].detach()[:1], row])
                for name, row in zip(names, rows, strict=True)
            }

        scorer = _Scorer(_structural_copy(self.model))
        num_items = self.items.num_embeddings
        pos = torch.as_tensor(positives, dtype=torch.int64, device=device)
        pool = torch.as_tensor(np.setdiff1d(np.arange(1, num_items), positives))
        n_neg = _NEGATIVES_PER_ITEM * len(pos) if len(pool) else 0
        target = torch.cat([torch.ones(len(pos)), torch.zeros(n_neg)]).to(device)
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(rows, lr=lr)
        for _ in range(steps):
            negatives = pool[torch.randint(len(pool), (n_neg,), generator=generator)]
            item_idx = torch.cat([pos, negatives.to(device)])
            user_idx = torch.ones_like(item_idx)
            logits = torch.func.functional_call(scorer, tables(), (user_idx, item_idx))
            loss = F.binary_cross_entropy_with_logits(logits.float(), target)
            # autograd.grad, not backward(): the frozen weights must not collect .grad
            for row, grad in zip(rows, torch.autograd.grad(loss, rows), strict=True):
                row.grad = grad
            optimizer.step()
        return scorer, {name: t.detach() for name, t in tables().items()}

    @property
    def metrics(self) -> dict[str, Any]:
        """Training metrics stored with the artifact, when loaded from one."""
        directory = self.config.get("directory")
        return read_metrics(directory) if directory else {}

    def __repr__(self) -> str:
        return (
            f"Recommender(model={self.model_name!r}, users={len(self.users)}, "
            f"items={len(self.items)})"
        )


class _Scorer(nn.Module):
    """Routes ``functional_call`` to ``score_all`` (one argument) or ``forward`` (two)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor | None = None) -> torch.Tensor:
        if item_idx is None:
            return self.model.score_all(user_idx)
        return self.model(user_idx, item_idx)


def _structural_copy(model: nn.Module) -> nn.Module:
    """New module objects sharing the model's tensors: ``functional_call`` swaps parameters
    on the copy, so threads scoring with the real model never see the swap."""
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, memo=shared)


def _top_k(scores: torch.Tensor, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per row, ``(column indices, scores)`` of the ``k`` best finite scores, best first.

    Ties are broken by the lower column index, whatever order ``torch.topk`` returned them
    in, so a row's result depends only on its scores. ``-inf`` marks excluded columns; a row
    with fewer than ``k`` finite scores returns all of them.
    """
    kk = min(k, scores.shape[1])
    values, indices = torch.topk(scores, kk, dim=1)
    kth = values[:, -1:]
    # the top set is exact when nothing outside it ties with the k-th score
    exact = ((scores >= kth).sum(dim=1) == kk) & torch.isfinite(kth[:, 0])
    values_np, indices_np = values.cpu().numpy(), indices.cpu().numpy()
    kth_np, exact_np = kth[:, 0].cpu().numpy(), exact.cpu().numpy()
    out = []
    for r in range(scores.shape[0]):
        if exact_np[r]:
            order = np.lexsort((indices_np[r], -values_np[r]))
            out.append((indices_np[r][order], values_np[r][order]))
            continue
        row = scores[r].cpu().numpy()
        candidates = np.flatnonzero((row >= kth_np[r]) & np.isfinite(row))  # ascending index
        best = candidates[np.argsort(-row[candidates], kind="stable")[:kk]]
        out.append((best, row[best]))
    return out


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return torch.sigmoid(torch.as_tensor(logits, dtype=torch.float32)).numpy()


def _frozen(array: np.ndarray) -> np.ndarray:
    """Read-only, so results that share an array (popularity) cannot change each other."""
    array = np.asarray(array)
    array.flags.writeable = False
    return array


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ConfigError(f"k must be an integer >= 1, got {k!r}")
    if k < 1:
        raise ConfigError(f"k must be >= 1, got k={k}")
    return int(k)


def _check_chunk(chunk_users: Any) -> int:
    if isinstance(chunk_users, bool) or not isinstance(chunk_users, int | np.integer):
        raise ConfigError(f"chunk_users must be an integer >= 1, got {chunk_users!r}")
    if chunk_users < 1:
        raise ConfigError(f"chunk_users must be >= 1, got {chunk_users}")
    return int(chunk_users)


def _id_list(ids: Any, name: str) -> list[Any]:
    """Raw ids as a list; a lone string is refused rather than read as its characters."""
    if isinstance(ids, str | bytes):
        raise TypeError(f"{name} must be a list of ids, got the single id {ids!r}")
    return list(ids)


def _unique(values: Iterable[Any]) -> list[Any]:
    """Distinct values in first-seen order."""
    return list(dict.fromkeys(values))


# ---------------------------------------------------------------------- batch output


def read_user_ids(path: str | Path, column: str = "userId") -> np.ndarray:
    """User ids from the ``column`` of a CSV or Parquet file, in file order.

    Raises:
        DataError: the file is missing, unreadable, has no such column, no rows or a bad id.
    """
    path = Path(path)
    frame = read_table(path)
    if column not in frame.columns:
        found = ", ".join(repr(str(c)) for c in frame.columns)
        raise DataError(path, f"missing column {column!r}; found {found}")
    if len(frame) == 0:
        raise DataError(path, "has a header but no rows", expected="at least one user id")
    return parse_ids(frame[column], path, column, is_csv_path(path))


def output_format(path: str | Path) -> str:
    """``"csv"``, ``"jsonl"`` or ``"parquet"`` from the suffix of ``path``.

    Raises:
        ConfigError: any other suffix.
    """
    fmt = OUTPUT_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"cannot tell the output format of {Path(path).name}: "
            f"name it with one of {', '.join(sorted(OUTPUT_FORMATS))}"
        )
    return fmt


def write_recommendations(
    recommender: Recommender,
    user_ids: IdsLike,
    path: str | Path,
    *,
    k: int = 10,
    exclude_seen: bool = True,
    chunk_users: int | None = None,
    show_progress: bool = False,
    num_candidates: int | None = None,
) -> int:
    """Write ``recommend_many(user_ids)`` as rows ``userId, rank, itemId, score, source``.

    Users are processed ``chunk_users`` at a time and each chunk is written before the next
    is scored, so memory does not grow with the number of users. The file appears only when
    complete (a temporary file beside it is renamed over it); its format follows the suffix:
    ``.csv``, ``.jsonl`` or ``.parquet`` (one row group per chunk).

    Args:
        recommender: the model to recommend with.
        user_ids: raw user ids, in output order; unknown users get popular items.
        path: the output file.
        k, exclude_seen: as in :meth:`Recommender.recommend`.
        chunk_users: users per chunk; default :meth:`Recommender.default_chunk_users`.
        show_progress: a progress bar on stderr.
        num_candidates: two-stage top-K with this many candidates per user, as in
            :meth:`Recommender.recommend`; None scores every item.

    Returns:
        The number of rows written.
    """
    from tqdm.auto import tqdm

    fmt = output_format(path)
    k = _check_k(k)
    chunk = _check_chunk(chunk_users) if chunk_users is not None else None
    chunk = chunk or recommender.default_chunk_users()
    num_candidates = recommender._check_two_stage(num_candidates)
    users = np.asarray(user_ids)
    if users.dtype.kind not in "iu":  # text (or mixed) ids: keep each id as given
        users = np.asarray(_id_list(user_ids, "user_ids"), dtype=object)
    written = 0

    def frames() -> Iterable[pd.DataFrame]:
        nonlocal written
        with tqdm(
            total=len(users), unit="user", desc="recommend", file=sys.stderr,
            disable=not show_progress,
        ) as bar:  # fmt: skip
            for start in range(0, len(users), chunk):
                part = users[start : start + chunk]
                recs = recommender.recommend_many(
                    part, k, exclude_seen, chunk_users=chunk, num_candidates=num_candidates
                )
                frame = _frame(part, recs, recommender.items.ids.dtype)
                written += len(frame)
                bar.update(len(part))
                yield frame

    def write(f: Any) -> None:
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = pa.schema(
                [
                    ("userId", _arrow_type(users.dtype)),
                    ("rank", pa.int32()),
                    ("itemId", _arrow_type(recommender.items.ids.dtype)),
                    ("score", pa.float32()),
                    ("source", pa.string()),
                ]
            )
            with pq.ParquetWriter(f, schema) as writer:
                for frame in frames():
                    writer.write_table(
                        pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
                    )
            return
        if fmt == "csv":
            f.write((",".join(RECOMMENDATION_COLUMNS) + "\n").encode("utf-8"))
        for frame in frames():
            if len(frame) == 0:
                continue
            if fmt == "csv":
                text = frame.to_csv(index=False, header=False, lineterminator="\n")
            else:
                text = frame.to_json(orient="records", lines=True, double_precision=15)
                text = text if text.endswith("\n") else text + "\n"
            f.write(text.encode("utf-8"))

    atomic_write(path, write)
    return written


def _frame(users: np.ndarray, recs: list[Recommendation], item_dtype: np.dtype) -> pd.DataFrame:
    counts = np.array([len(r) for r in recs], dtype=np.int64)
    return pd.DataFrame(
        {
            "userId": np.repeat(users, counts),
            "rank": np.concatenate(
                [np.arange(1, n + 1, dtype=np.int32) for n in counts] or [np.zeros(0, np.int32)]
            ),
            "itemId": np.concatenate([r.item_ids for r in recs] or [np.zeros(0, item_dtype)]),
            "score": np.concatenate([r.scores for r in recs] or [np.zeros(0, np.float32)]).astype(
                np.float32
            ),
            "source": np.repeat(np.array([r.source for r in recs], dtype=object), counts),
        },
        columns=list(RECOMMENDATION_COLUMNS),
    )


def _arrow_type(dtype: np.dtype) -> Any:
    import pyarrow as pa

    return pa.int64() if dtype.kind in "iu" else pa.string()
