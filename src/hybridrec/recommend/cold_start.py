"""Cold start: recommendations for a new user described by the items they interacted with.

Sequence models (the ``sequences`` capability: ``score_sequences``) read the items as a
history and rank directly. Other models fold the user in: fresh rows of the model's per-user
tables (its declared ``user_parameters``) are fitted to the items on the spot, every other
weight frozen: by default in closed form (:mod:`hybridrec.recommend.fold_in`, ~0.1 ms), or
by Adam steps through the model (``fit="gradient"``, ~30 ms; the only way for a user who is
also described by features). The model itself is never modified: the fitted rows replace
its tables only inside a structural copy, through ``torch.func.functional_call``, so
threads scoring with the real model never see them.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hybridrec.data.encoding import UNKNOWN_INDEX, IdEncoder
from hybridrec.errors import ConfigError
from hybridrec.features.table import EncodedFeatures, FeatureTable
from hybridrec.models import capabilities, model_device
from hybridrec.models.featured import FeaturedEmbedding
from hybridrec.recommend import fold_in
from hybridrec.recommend.checks import check_k, id_list, unique
from hybridrec.recommend.result import IdsLike, Recommendation, frozen
from hybridrec.recommend.topk import sigmoid, top_k

if TYPE_CHECKING:
    from hybridrec.recommend.recommender import Recommender

#: Negatives sampled per given item when fitting a new user's vector by gradient.
_NEGATIVES_PER_ITEM = 4
#: How a new user's rows are fitted: ``closed-form`` (:mod:`~hybridrec.recommend.fold_in`),
#: ``gradient`` (Adam steps), or ``auto``: closed form unless the user also has features.
FIT_METHODS = ("auto", "closed-form", "gradient")
#: New users scored per model call by :func:`score_for_items_many`, and the most logits
#: (users x items) one call may hold.
_SCORED_USERS, _SCORED_LOGITS = 256, 2**24


def recommend_for_items(
    recommender: Recommender,
    item_ids: IdsLike,
    k: int,
    exclude_seen: bool,
    steps: int,
    lr: float,
    seed: int,
    features: EncodedFeatures | None = None,
    fit: str = "auto",
) -> Recommendation:
    """:meth:`Recommender.recommend_for_items`, which documents the arguments; with
    ``features`` (two encoded rows, the new user's in row 1) the user is known by them too."""
    k = check_k(k)
    closed_form = _closed_form(fit, features)
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 0:
        raise ConfigError(f"steps must be an integer >= 0, got {steps!r}")
    if not lr > 0:
        raise ConfigError(f"lr must be positive, got {lr!r}")
    model, items, device = recommender.model, recommender.items, recommender.device
    raw = id_list(item_ids, "item_ids")
    index = items.transform(raw) if raw else np.zeros(0, dtype=np.int64)
    unknown_items = unique(raw[j] for j in np.flatnonzero(index == UNKNOWN_INDEX))
    known = index[index != UNKNOWN_INDEX]
    given = np.unique(known)
    exclude = given if exclude_seen else None
    declared = capabilities(model)
    if len(given) and declared.sequences and features is None:
        # sequence models read the items themselves, in the order given: no fitting
        with torch.no_grad():
            sequence = torch.as_tensor(known, dtype=torch.int64, device=device)[None]
            logits = model.score_sequences(sequence).float()
        return _top_of(items, logits, k, exclude, unknown_items)
    names = _user_parameters(model, declared.user_parameters)
    if not (len(given) or features is not None):
        names = ()
    if not names:
        item_out, scores = recommender.popular(k, exclude=exclude)
        return Recommendation(None, item_out, scores, "popularity", unknown_items)
    if len(given) and closed_form:
        lin = recommender.linearisation()
        rows = fold_in.closed_form_rows(model, lin, given)
        logits = fold_in.fitted_logits(lin, recommender.row_scorer(), rows, k, [exclude])
        return _top_of(items, logits, k, exclude, unknown_items)
    if len(given):
        # The service calls this under torch.inference_mode(); fitting needs autograd.
        with torch.inference_mode(False), torch.enable_grad():
            if features is not None:  # encoded under inference mode: autograd cannot save them
                features = EncodedFeatures(
                    features.tokens.clone(), features.weights.clone(), features.numeric.clone()
                )
            scorer, tables = _fit_user(
                model, names, given, items.num_embeddings, steps, lr, seed, features
            )
    else:  # features alone: an id row of zeros, nothing to fit
        scorer = _Scorer(_structural_copy(model))
        params = dict(model.named_parameters())
        tables = {
            **_featured_user_rows(model, names, features, has_id=False),
            **{f"model.{n}": torch.cat([params[n].detach()[:1], torch.zeros_like(params[n][:1])])
               for n in names},
        }  # fmt: skip
    with torch.no_grad():
        one = torch.ones(1, dtype=torch.int64, device=device)
        logits = torch.func.functional_call(scorer, tables, (one,)).float()
    result = _top_of(items, logits, k, exclude, unknown_items)
    if features is not None:
        source = "features+items" if len(given) else "features"
        result = Recommendation(None, result.item_ids, result.scores, source, unknown_items)
    return result


def recommend_for_items_many(
    recommender: Recommender, requests: list[tuple[IdsLike, int, bool]]
) -> list[Recommendation | Exception]:
    """:func:`recommend_for_items` (closed form, defaults) for several new users at once:
    ``(item_ids, k, exclude_seen)`` each, answered in order, a bad request's error in its
    place. The users' fitted rows are scored by one call of the model, not one each: a
    service answering fold-ins that waited together then hands the GIL back and forth a
    few times per batch instead of ~200 times per fold-in (one per tensor operation). The
    scores may differ from one user's call in the last bits of float32 (the products are
    blocked differently); requests a fit does not serve (sequence models, no known item,
    no per-user parameters) go through :func:`recommend_for_items` one by one."""
    model, items = recommender.model, recommender.items
    declared = capabilities(model)
    names = _user_parameters(model, declared.user_parameters)
    out: list[Recommendation | Exception | None] = [None] * len(requests)
    fitted: list[tuple[int, np.ndarray, int, bool, list[Any]]] = []
    for j, (item_ids, k, exclude_seen) in enumerate(requests):
        try:
            k = check_k(k)
            raw = id_list(item_ids, "item_ids")
            index = items.transform(raw) if raw else np.zeros(0, dtype=np.int64)
            given = np.unique(index[index != UNKNOWN_INDEX])
            if declared.sequences or not names or not len(given):
                out[j] = recommend_for_items(recommender, item_ids, k, exclude_seen, 50, 0.05, 0)
                continue
            unknown = unique(raw[i] for i in np.flatnonzero(index == UNKNOWN_INDEX))
            fitted.append((j, given, k, bool(exclude_seen), unknown))
        except Exception as exc:  # this request alone fails
            out[j] = exc
    if fitted:
        lin, ks = recommender.linearisation(), [f[2] for f in fitted]
        excludes = [f[1] if f[3] else None for f in fitted]
        rows = fold_in.closed_form_rows_many(model, lin, [f[1] for f in fitted])
        logits = fold_in.fitted_logits(lin, recommender.row_scorer(), rows, max(ks), excludes)
        results = _tops_of(items, logits, ks, excludes, [f[4] for f in fitted])
        for j, result in zip([f[0] for f in fitted], results, strict=True):
            out[j] = result
    assert all(o is not None for o in out)
    return out  # type: ignore[return-value]


def score_for_items_many(
    recommender: Recommender, histories: list[IdsLike], owner: np.ndarray, item_idx: np.ndarray
) -> np.ndarray:
    """Probabilities (N,) of the encoded items ``item_idx`` for new users, pair ``n`` for
    the user whose items are ``histories[owner[n]]`` (raw ids, oldest first): the scores
    their fold-in ranks by in :func:`recommend_for_items_many` (the closed form; sequence
    models read the items). A user with no known item, or a model that folds nobody in,
    is scored as an unknown user, as :meth:`Recommender.score` scores one."""
    model, items = recommender.model, recommender.items
    declared = capabilities(model)
    names = _user_parameters(model, declared.user_parameters)
    given = []
    for history in histories:
        index = items.transform(id_list(history, "item_ids")) if len(history) else np.zeros(0)
        given.append(index[index != UNKNOWN_INDEX].astype(np.int64))
    owner, item_idx = np.asarray(owner, dtype=np.int64), np.asarray(item_idx, dtype=np.int64)
    folds = declared.sequences or bool(names)
    fits = np.asarray([folds and len(g) > 0 for g in given], dtype=bool)  # per user
    folded = fits[owner]  # per pair
    out = np.empty(len(owner), dtype=np.float32)
    if (~folded).any():
        out[~folded] = recommender.score_indices(
            np.zeros(int((~folded).sum()), dtype=np.int64), item_idx[~folded]
        )
    users = np.flatnonzero(fits)
    if not len(users):
        return out
    per_call = max(1, min(_SCORED_USERS, _SCORED_LOGITS // items.num_embeddings))
    for start in range(0, len(users), per_call):
        chunk = users[start : start + per_call]
        row_of = np.full(len(given), -1, dtype=np.int64)
        row_of[chunk] = np.arange(len(chunk))
        pairs = np.flatnonzero(row_of[owner] >= 0)
        rows, cols = torch.as_tensor(row_of[owner[pairs]]), torch.as_tensor(item_idx[pairs])
        if declared.sequences:
            logits = _sequence_logits(recommender, [given[u] for u in chunk])[rows, cols]
        else:
            fitted = fold_in.closed_form_rows_many(
                model, recommender.linearisation(), [np.unique(given[u]) for u in chunk]
            )
            logits = recommender.row_scorer().score_pairs(fitted, rows, cols).cpu()
        out[pairs] = sigmoid(logits.numpy())
    return out


def _sequence_logits(recommender: Recommender, sequences: list[np.ndarray]) -> torch.Tensor:
    """(R, num_items) float32 logits of a sequence model for R item histories (left-padded
    to one length, as ``score_sequences`` reads them)."""
    limit = getattr(getattr(recommender.model, "config", None), "max_len", None)
    if limit:  # the model reads the latest max_len items of a history
        sequences = [s[-limit:] for s in sequences]
    width = max(len(s) for s in sequences)
    padded = np.full((len(sequences), width), UNKNOWN_INDEX, dtype=np.int64)
    for r, sequence in enumerate(sequences):
        padded[r, width - len(sequence) :] = sequence
    with torch.no_grad():
        batch = torch.as_tensor(padded, device=recommender.device)
        return recommender.model.score_sequences(batch).float().cpu()


def _closed_form(fit: str, features: EncodedFeatures | None) -> bool:
    """Whether ``fit`` means the closed form; refused where it is not a method, or the
    closed form where the user has features (its linearisation has none)."""
    if fit not in FIT_METHODS:
        raise ConfigError(f"fit must be one of {', '.join(FIT_METHODS)}, got {fit!r}")
    if fit == "closed-form" and features is not None:
        raise ConfigError(
            "fit='closed-form' cannot use user features; use fit='gradient' or 'auto'"
        )
    return fit == "closed-form" or (fit == "auto" and features is None)


def encode_user_features(recommender: Recommender, features: dict[str, Any]) -> EncodedFeatures:
    """A new user's attributes (field name -> value; missing fields are unknown) as the two
    encoded rows :func:`recommend_for_items` takes, by the vocabularies saved at training."""
    table = getattr(recommender.model, "user_embedding", None)
    stored = recommender.config.get("settings", {}).get("features", {}).get("users")
    if not isinstance(table, FeaturedEmbedding) or stored is None:
        raise ConfigError(
            "this model was trained without user features (train with --user-features); "
            "describe the user by items instead"
        )
    if not isinstance(features, dict):
        raise ConfigError(
            f"user features must be a mapping of field to value, got {features!r:.60}"
        )
    fitted = FeatureTable.from_dict(stored)
    names = {f.name for f in fitted.fields}
    strange = sorted(str(n) for n in features if n not in names)
    if strange:
        raise ConfigError(
            f"unknown user feature(s) {', '.join(map(repr, strange[:5]))}; the model knows "
            f"{', '.join(sorted(names))}"
        )
    values = {name: [value] for name, value in features.items()}
    return fitted.encode(values, np.array([1]), 2, new=True)


def _tops_of(
    items: IdEncoder,
    logits: torch.Tensor,
    ks: list[int],
    excludes: list[np.ndarray | None],
    unknowns: list[list[Any]],
) -> list[Recommendation]:
    """The item-based results of every row of ``logits`` (R, num_items) at once (one mask,
    one top-k): row r keeps its best ``ks[r]`` items, without ``excludes[r]``."""
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask[:, UNKNOWN_INDEX] = True
    excluded = [(r, given) for r, given in enumerate(excludes) if given is not None]
    if excluded:
        rows = np.concatenate([np.full(len(given), r) for r, given in excluded])
        cols = np.concatenate([given for _, given in excluded])
        where = (
            torch.as_tensor(rows, device=mask.device),
            torch.as_tensor(cols, device=mask.device),
        )
        mask[where] = True
    tops = top_k(logits.masked_fill(mask, -torch.inf), max(ks))
    # a row's top k is the first k of its deeper top (ties go to the lower index)
    return [
        Recommendation(
            None,
            frozen(items.inverse_transform(top[:k])),
            frozen(sigmoid(values[:k])),  # on k values, as a lone fold-in computes them
            "items",
            unknown,
        )
        for (top, values), k, unknown in zip(tops, ks, unknowns, strict=True)
    ]


def _top_of(
    items: IdEncoder,
    logits: torch.Tensor,
    k: int,
    exclude: np.ndarray | None,
    unknown_items: list[Any],
) -> Recommendation:
    """The item-based result from one row of logits (1, num_items)."""
    return _tops_of(items, logits, [k], [exclude], [unknown_items])[0]


def _user_parameters(model: nn.Module, names: tuple[str, ...]) -> tuple[str, ...]:
    """``names``, the per-user tables ``model`` declares, once they are known to be its
    parameters (empty for a model without users)."""
    missing = set(names) - dict(model.named_parameters()).keys()
    if missing:
        raise ValueError(
            f"{type(model).__name__}.user_parameters names {sorted(missing)}, "
            "which are not parameters of the model"
        )
    return names


def _fit_user(
    model: nn.Module,
    names: tuple[str, ...],
    positives: np.ndarray,
    num_items: int,
    steps: int,
    lr: float,
    seed: int,
    features: EncodedFeatures | None = None,
) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Fit a new user's rows to ``positives``: ``(scorer, parameter replacements)``.

    ``steps`` Adam steps on the per-user tables ``names``, started at the mean known user,
    with ``positives`` against uniformly sampled other items (``_NEGATIVES_PER_ITEM`` per
    positive, fresh each step, seeded). Each per-user table is replaced by two rows: the
    model's own unknown row 0 and the fitted row 1, addressed as user 1. Row 0 itself
    cannot learn: the embeddings' ``padding_idx=0`` gives it no gradient.
    """
    device = model_device(model)
    params = dict(model.named_parameters())
    rows = []
    for name in names:
        table = params[name].detach()
        start = table[1:].mean(0, keepdim=True) if len(table) > 1 else table[:1]
        rows.append(start.clone().requires_grad_(True))

    fixed = _featured_user_rows(model, names, features)

    def tables() -> dict[str, torch.Tensor]:
        return {
            **fixed,
            **{
                f"model.{name}": torch.cat([params[name].detach()[:1], row])
                for name, row in zip(names, rows, strict=True)
            },
        }

    scorer = _Scorer(_structural_copy(model))
    pos = torch.as_tensor(positives, dtype=torch.int64, device=device)
    pool = torch.as_tensor(np.setdiff1d(np.arange(1, num_items), positives))
    n_neg = _NEGATIVES_PER_ITEM * len(pos) if len(pool) else 0
    target = torch.cat([torch.ones(len(pos)), torch.zeros(n_neg)]).to(device)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(rows, lr=lr)
    for _ in range(steps):
        draw = torch.randint(len(pool), (n_neg,), generator=generator) if n_neg else []
        negatives = pool[draw]  # none when every item is a positive (the whole catalogue)
        item_idx = torch.cat([pos, negatives.to(device)])
        user_idx = torch.ones_like(item_idx)
        logits = torch.func.functional_call(scorer, tables(), (user_idx, item_idx))
        loss = F.binary_cross_entropy_with_logits(logits.float(), target)
        # autograd.grad, not backward(): the frozen weights must not collect .grad
        for row, grad in zip(rows, torch.autograd.grad(loss, rows), strict=True):
            row.grad = grad
        optimizer.step()
    return scorer, {name: t.detach() for name, t in tables().items()}


def _featured_user_rows(
    model: nn.Module,
    names: tuple[str, ...],
    features: EncodedFeatures | None = None,
    has_id: bool = True,
) -> dict[str, torch.Tensor]:
    """Two-row feature buffers for a per-user table that has features: the new user (row
    1) is known by ``features`` (row 1 of them) and the fitted id row, never by another
    user's row 1; without ``features`` by the id row alone. ``has_id=False``: the user has
    no id row (features alone), so the model scores them as it scores its cold users."""
    modules = dict(model.named_modules())
    out: dict[str, torch.Tensor] = {}
    for name in names:
        owner = name.rpartition(".")[0]
        table = modules.get(owner)
        if not isinstance(table, FeaturedEmbedding):
            continue
        given = (features.tokens, features.weights, features.numeric) if features else None
        for j, buffer in enumerate(("feature_tokens", "feature_weights", "feature_numeric")):
            rows = getattr(table, buffer)
            out[f"model.{owner}.{buffer}"] = (
                torch.zeros_like(rows[:2]) if given is None else given[j].to(rows)
            )
        flags = torch.ones_like(table.has_id[:2])
        if not has_id:
            flags[1] = 0.0
        out[f"model.{owner}.has_id"] = flags
    return out


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
