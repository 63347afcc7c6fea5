"""The :class:`Recommender`: a trained model with its id maps and training positives.

This module is the object's core: loading and saving, scoring pairs, and top-K for users
(known users ranked by the model, unknown users by popularity). The other jobs it offers
live beside it, one module each: :mod:`~hybridrec.recommend.topk` (scoring every item and
taking the best ``k``), :mod:`~hybridrec.recommend.two_stage`,
:mod:`~hybridrec.recommend.cold_start` and :mod:`~hybridrec.recommend.similar`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hybridrec.artifact import load_artifact, moments_of, read_metrics, save_artifact
from hybridrec.data.encoding import UNKNOWN_INDEX, IdEncoder
from hybridrec.data.seen import SeenItems
from hybridrec.models import capabilities, model_device
from hybridrec.recommend import cold_start, fold_in, similar, topk
from hybridrec.recommend.checks import (
    check_chunk_users,
    check_many,
    id_list,
    one_id,
    per_user_k,
)
from hybridrec.recommend.result import IdsLike, Recommendation, frozen
from hybridrec.recommend.two_stage import check_num_candidates, stage1_prior, two_stage_logits


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
        self._linearisation: fold_in.Linearisation | None = None  # closed-form fold-in, too
        self._row_scorer: fold_in.RowScorer | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the caches (two-stage prior, fold-in linearisation and scorer):
        they hold locks and are recomputed on first use, so a copy sent to another process
        (the service's fold-in worker) stays small and self-contained."""
        state = self.__dict__.copy()
        state.update(_item_prior=None, _linearisation=None, _row_scorer=None)
        return state

    @classmethod
    def load(cls, directory: str | Path) -> Recommender:
        """Load an artifact written by :meth:`save` or ``hybridrec train --out``."""
        model, users, items, config, seen = load_artifact(directory)
        config = {**config, "directory": str(directory)}
        return cls(model, users, items, model_name=config["model"], config=config, seen=seen)

    def save(
        self,
        directory: str | Path,
        metrics: dict[str, Any] | None = None,
        moments: dict[str, torch.Tensor] | None = None,
    ) -> Path:
        """Write the artifact atomically (see :mod:`hybridrec.artifact`); ``moments``: the
        optimiser state training ended with, kept for ``hybridrec update``. A recommender
        loaded from a model directory keeps that model's metrics and, while its weights
        still have the same shapes (not grown by :meth:`with_items`), its optimiser state:
        a copy saved elsewhere is updated as the original would be.

        Raises:
            ConfigError: ``directory`` is empty, a file, the working directory (or holds
                it), or holds a ``config.json`` that is not a hybridrec model's.
        """
        from hybridrec.model_dir import check_save_target

        target = check_save_target(directory)
        source = self.config.get("directory")
        if source is not None and metrics is None:
            metrics = self.metrics
        if source is not None and moments is None:
            moments = moments_of(self.model, source)
        return save_artifact(
            target,
            model=self.model,
            model_name=self.model_name,
            users=self.users,
            items=self.items,
            metrics=metrics,
            settings=self.config.get("settings"),
            seen=self.seen,
            moments=moments,
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

    def default_chunk_users(self) -> int:
        """Users per ``score_all`` call: about 2e7 activations (see
        :func:`hybridrec.recommend.topk.default_chunk_users`)."""
        return topk.default_chunk_users(self.model, self.items.num_embeddings)

    def score_users(self, users: np.ndarray) -> torch.Tensor:
        """float32 logits (len(users), num_items) for user indices, the numbers every top-K
        ranking of known users is made of (see :func:`hybridrec.recommend.topk.score_users`
        for why each user gets its own call on CPU)."""
        return topk.score_users(self.model, users)

    # ------------------------------------------------------------------ top-K

    def recommend(
        self,
        user_id: Any,
        k: int = 10,
        exclude_seen: bool = True,
        items: IdsLike | None = None,
        *,
        num_candidates: int | str | None = None,
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
                users still get the popularity ranking. ``"auto"`` (what the CLI and the
                service pass): two-stage with 1,000 candidates above 10,000 items for such
                models, exhaustive otherwise (:data:`hybridrec.recommend.two_stage.AUTO`).

        Raises:
            ConfigError: ``k`` or ``num_candidates`` is not an integer >= 1 (a
                ``ValueError`` too), or ``num_candidates`` is given for a model without
                user and item embeddings (mlp, popularity, sasrec).
        """
        user_id = one_id(user_id, "user_id")
        return self.recommend_many(
            [user_id], k, exclude_seen, items, num_candidates=num_candidates
        )[0]

    @torch.no_grad()
    def recommend_many(
        self,
        user_ids: IdsLike,
        k: int | Sequence[int] = 10,
        exclude_seen: bool = True,
        items: IdsLike | None = None,
        *,
        chunk_users: int | None = None,
        num_candidates: int | str | None = None,
    ) -> list[Recommendation]:
        """:meth:`recommend` for many users at once, in their order: the same results, exactly.

        Known users are scored through ``score_all`` a chunk of users at a time (with
        ``num_candidates``: retrieved and re-ranked a chunk at a time); unknown users share
        one popularity ranking (nothing to exclude: they have no history).

        Args:
            user_ids: raw user ids (known or not; repeats allowed).
            k: as in :meth:`recommend`, or one ``k`` per user (each user's list is then
                exactly what ``recommend`` with that ``k`` returns; with ``num_candidates``,
                while every ``k`` is at most ``num_candidates``).
            exclude_seen, items, num_candidates: as in :meth:`recommend`.
            chunk_users: users per ``score_all`` call; by default enough to keep the
                activations near 2e7 elements (:meth:`default_chunk_users`).
        """
        check_many(user_ids, exclude_seen)
        ids = id_list(user_ids, "user_ids")
        ks = per_user_k(k, len(ids))
        k = int(ks.max()) if len(ks) else 1
        num_candidates = check_num_candidates(self.model, self.model_name, num_candidates)
        chunk = check_chunk_users(chunk_users) if chunk_users is not None else None
        chunk = chunk or self.default_chunk_users()
        allowed, unknown_items = topk.allowed_items(self.items, items, self.device)
        if not ids:
            return []
        user_idx = self.users.transform(ids)
        results: list[Recommendation | None] = [None] * len(ids)
        unknown = np.flatnonzero(user_idx == UNKNOWN_INDEX)
        if len(unknown):
            item_ids, scores = self.popular(k, allowed=allowed)
            for j in unknown:
                results[j] = Recommendation(
                    ids[j], item_ids, scores, "popularity", list(unknown_items)
                ).top(int(ks[j]))
        known = np.flatnonzero(user_idx != UNKNOWN_INDEX)
        for start in range(0, len(known), chunk):
            positions = known[start : start + chunk]
            users = user_idx[positions]
            mask = topk.exclusion_mask(self._seen, users, exclude_seen, allowed, self.device)
            if num_candidates is None:
                logits = self.score_users(users).masked_fill(mask, -torch.inf)
            else:
                n = max(num_candidates, k)
                prior = self._stage1_prior()
                logits = two_stage_logits(self.model, users, mask, n, prior, self.batch_size)
            for j, (top, values) in zip(positions, topk.top_k(logits, k), strict=True):
                top, values = top[: ks[j]], values[: ks[j]]  # before the sigmoid, whose
                # rounding depends on how many values it is given (vectorised or not)
                results[j] = Recommendation(
                    ids[j],
                    frozen(self.items.inverse_transform(top)),
                    frozen(topk.sigmoid(values)),
                    "model",
                    list(unknown_items),
                )
        return results  # type: ignore[return-value]  # every slot is filled

    def popular(
        self,
        k: int,
        *,
        allowed: torch.Tensor | None = None,
        exclude: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(item ids, share of training positives)`` of the ``k`` most popular items: the
        ranking unknown users get.

        Args:
            k: items to return.
            allowed: (num_items,) bool, True where an item may be returned; None: all.
            exclude: item indices to leave out.
        """
        counts = self._seen.item_counts
        mask = torch.zeros(1, len(counts), dtype=torch.bool)
        mask[0, UNKNOWN_INDEX] = True
        if exclude is not None:
            mask[0, torch.as_tensor(exclude)] = True
        if allowed is not None:
            mask |= ~allowed.cpu()
        scores = torch.as_tensor(counts, dtype=torch.float64)[None].masked_fill(mask, -torch.inf)
        ((top, values),) = topk.top_k(scores, k)
        total = counts.sum()
        share = values / total if total else np.zeros_like(values)
        return frozen(self.items.inverse_transform(top)), frozen(share.astype(np.float32))

    def recommend_for_items(
        self,
        item_ids: IdsLike,
        k: int = 10,
        exclude_seen: bool = True,
        steps: int = 50,
        lr: float = 0.05,
        seed: int = 0,
        fit: str = "auto",
    ) -> Recommendation:
        """The ``k`` best items for a new user who interacted with ``item_ids``.

        Sequence models (``score_sequences``, e.g. sasrec) read the items as the user's
        history, oldest first, and rank directly. For other models a user vector is fitted
        to those items. By default (``fit="auto"`` or ``"closed-form"``) in closed form:
        one Newton step from the mean known user on the catalogue-softmax likelihood of the
        given items, with the model linearised around that user once per recommender, which
        is a ridge solve (:mod:`hybridrec.recommend.fold_in`; ~0.1 ms, and on MovieLens-100K
        as good as or better than the gradient fit, docs/benchmarks.md). With
        ``fit="gradient"``: ``steps`` Adam steps on fresh rows of the
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
            steps, lr: Adam steps and learning rate for the user vector (``"gradient"``).
            seed: seed of the negative samples (``"gradient"``): same inputs, same result.
            fit: ``"auto"``, ``"closed-form"`` or ``"gradient"``.

        Returns:
            ``source="items"``; ``source="popularity"`` (the most popular items) when none
            of the items is known or the model has no per-user parameters (popularity).
        """
        return cold_start.recommend_for_items(
            self, item_ids, k, exclude_seen, steps, lr, seed, fit=fit
        )

    def recommend_for_items_many(
        self, requests: list[tuple[IdsLike, int, bool]]
    ) -> list[Recommendation | Exception]:
        """:meth:`recommend_for_items` with its defaults for several new users at once,
        ``(item_ids, k, exclude_seen)`` each, in order; a request's error (e.g. a bad ``k``)
        takes its place. Their fitted rows are scored by one model call, so scores may
        differ from one-at-a-time answers in the last float32 bits."""
        return cold_start.recommend_for_items_many(self, requests)

    def linearisation(self) -> fold_in.Linearisation:
        """The model linearised around the mean known user for the closed-form fold-in,
        computed on first use and kept (``prepare_fold_in`` computes it ahead).

        Like the two-stage prior it is deterministic, so two threads computing it at once
        only waste work; changing the model's weights in place afterwards leaves it stale.
        """
        lin = self._linearisation
        if lin is None:
            names = capabilities(self.model).user_parameters
            lin = fold_in.linearise(self.model, names, self.items.num_embeddings)
            self._linearisation = lin
        return lin

    def row_scorer(self) -> fold_in.RowScorer:
        """Scores new users by their fitted rows (a :class:`~hybridrec.recommend.fold_in.
        RowScorer`, made on first use and kept)."""
        scorer = self._row_scorer
        if scorer is None:
            names = capabilities(self.model).user_parameters
            scorer = self._row_scorer = fold_in.RowScorer(self.model, names)
        return scorer

    def prepare_fold_in(self) -> bool:
        """Compute :meth:`linearisation` now if the model folds new users in by fitting
        their rows (no sequence model, some per-user parameters); True when it does. A
        service calls this at load so that no request pays for it."""
        declared = capabilities(self.model)
        if declared.sequences or not declared.user_parameters:
            return False
        self.linearisation()
        self.row_scorer()
        return True

    def with_items(self, data: Any, id_col: str | None = None) -> Recommender:
        """A new recommender that also ranks the items of ``data`` (a CSV/Parquet feature
        file or frame with the columns of the training ``--item-features`` file), scored
        from their features, with no retraining; this one is unchanged.

        Raises:
            ConfigError: no item features in the model, an unknown column or a known id.
        """
        from hybridrec.recommend.new_items import with_items

        column = id_col or self.config.get("settings", {}).get("data", {}).get("item_col", "itemId")
        return with_items(self, data, column)

    def recommend_for_features(
        self,
        features: dict[str, Any],
        item_ids: IdsLike = (),
        k: int = 10,
        exclude_seen: bool = True,
        steps: int = 50,
        lr: float = 0.05,
        seed: int = 0,
    ) -> Recommendation:
        """The ``k`` best items for a new user described by attributes (and optionally the
        items they interacted with), for a model trained with ``--user-features``.

        ``features`` maps field names of the training user-feature file to values (a
        missing field, or a value never seen in training, is "unknown"). Without items the
        user's vector is its features alone (``source="features"``); with items an id row
        is also fitted to them by gradient as in :meth:`recommend_for_items`
        (``source="features+items"``; the closed form has no features).

        Raises:
            ConfigError: the model has no user features, or ``features`` names a field it
                does not know.
        """
        encoded = cold_start.encode_user_features(self, features)
        return cold_start.recommend_for_items(
            self, item_ids, k, exclude_seen, steps, lr, seed, features=encoded
        )

    def similar_items(self, item_id: Any, k: int = 10) -> Recommendation:
        """The ``k`` items whose embeddings are most cosine-similar to ``item_id``'s.

        Raises:
            HybridRecError: the model has no ``item_embedding`` (mlp, popularity).
            UnknownIdError: the model does not know ``item_id``.
        """
        return similar.similar_items(self, item_id, k)

    def prepare_two_stage(self, num_candidates: int | str | None = "auto") -> bool:
        """Compute two-stage's item prior now if ``num_candidates`` means two-stage for this
        model and catalogue; True when it does.

        The prior costs ~64 full rankings (about 50 s at 1M items on one core), so a service
        calls this before it takes requests instead of letting the first request pay it.
        """
        if check_num_candidates(self.model, self.model_name, num_candidates) is None:
            return False
        self._stage1_prior()
        return True

    def _stage1_prior(self) -> torch.Tensor:
        """(num_items,) the per-item term added to the dot product in two-stage stage 1.

        :func:`hybridrec.retrieval.item_prior` of the model, computed on first use and kept:
        it is deterministic, so computing it twice (two threads at once) is only wasted work.
        Changing the model's weights in place afterwards leaves it stale; load a new
        :class:`Recommender` instead.
        """
        prior = self._item_prior
        if prior is None:
            prior = stage1_prior(self.model)
            self._item_prior = prior
        return prior

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
