"""A new user's rows in closed form: one Newton step on the linearised model, a ridge solve.

The gradient fold-in (:mod:`hybridrec.recommend.cold_start`) runs 50 Adam steps through the
whole model, ~30 ms of CPU per new user. Here the model's score of every item is linearised
once per loaded model around the mean known user ``z0`` (that user's rows of the model's
``user_parameters``, concatenated): ``s_j(z) ~= s_j(z0) + J_j . (z - z0)``, exact for a
dot-product model (mf, gmf), the MLP linearised for hybrid. A new user who gave ``n`` items
then maximises the catalogue-softmax log-likelihood of those items (the ranking objective
behind ``--catalogue-weight``) minus ``L2 / 2 * |z - z0|^2``, by one Newton step from
``z0``. The softmax's curvature at ``z0`` is the same for every new user, so the step is a
ridge regression with a precomputed Gram matrix, as implicit ALS solves a user:

    z = z0 + (n H + L2 I)^-1 (sum_given J_j - n m),  m = E_softmax[J],  H = Cov_softmax[J]

With ``H``'s eigenvectors kept, a new user costs two ``P x P`` matrix-vector products
(``P`` = embedding size plus biases). The fitted rows are then scored by the real model:
on a catalogue much larger than the request's ``k``, only the best
:func:`candidate_depth` items by the linearised scores (one matrix-vector product), which
the real model re-ranks (:func:`fitted_logits`). The linearisation alone ranks poorly far
from the mean user (on MovieLens-100K it finds 73% of the real top 10), but the real top
10 lies within its top 400 for every one of 943 test users (docs/benchmarks.md), and
re-ranking 400 of 1,683 items costs a quarter of scoring them all.

Like the gradient fold-in, nothing here writes to the model: the Jacobian is taken on a
structural copy through ``torch.func.functional_call`` with fresh rows.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from hybridrec.models import model_device
from hybridrec.models.featured import FeaturedEmbedding

#: Items linearised per model: every item of a catalogue up to this size; a larger one is
#: represented among the negatives by this many items drawn once (seeded).
MAX_LINEARISED_ITEMS = 1 << 15
#: Weight of the L2 pull towards the mean user, against one unit per given item in the
#: log-likelihood. Chosen on the MovieLens-100K validation split (docs/benchmarks.md,
#: "New-user fold-in"); it also keeps a handful of items from pushing the user to infinity.
L2 = 5.0
#: Pairs per forward/backward pass when linearising.
_CHUNK = 8192
#: Fewest items the real model re-ranks for a fold-in (:func:`candidate_depth`), and the
#: multiple of ``k`` it re-ranks beyond that.
MIN_CANDIDATES = 400
CANDIDATES_PER_K = 4


@dataclass(frozen=True)
class Linearisation:
    """A model's item scores as linear functions of a new user's rows, around the mean user.

    Attributes:
        names: the per-user parameter names (``user_parameters``), in order.
        widths: their row widths; ``start`` and the Jacobian's columns follow this order.
        start: (P,) the mean known user's rows, concatenated.
        items: (S,) the item indices linearised, ascending (every item, or a sample).
        every_item: ``items`` is the whole catalogue (0..num_items-1).
        jacobian: (S, P) d score(user, item) / d user rows, at ``start``.
        scores: (S,) the logits at ``start``.
        mean_gradient: (P,) float64, ``m = sum_j p_j J_j`` for ``p`` the softmax of
            ``scores`` over the items (item 0 left out).
        eigenvalues, eigenvectors: float64, of the softmax's curvature at ``start``,
            ``H = sum_j p_j J_j J_j^T - m m^T`` (P x P).
        scorer: a structural copy of the model, for linearising given items outside the
            sample (a copy per request cost ~8 ms), used under ``lock``.
    """

    names: tuple[str, ...]
    widths: tuple[int, ...]
    start: torch.Tensor
    items: torch.Tensor
    every_item: bool
    jacobian: torch.Tensor
    scores: torch.Tensor
    mean_gradient: torch.Tensor
    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    scorer: nn.Module = field(repr=False, compare=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


def linearise(
    model: nn.Module,
    names: tuple[str, ...],
    num_items: int,
    max_items: int = MAX_LINEARISED_ITEMS,
    seed: int = 0,
) -> Linearisation:
    """The :class:`Linearisation` of ``model`` (once per loaded model: ~50 ms for hybrid on
    MovieLens-100K's 1,683 items on one core)."""
    params = dict(model.named_parameters())
    tables = [params[name].detach() for name in names]
    start = torch.cat([t[1:].mean(0) if len(t) > 1 else t[0] for t in tables]).float()
    widths = tuple(int(t.shape[1]) for t in tables)
    every_item = num_items <= max_items
    if every_item:
        items = torch.arange(num_items)
    else:  # the real items 1..num_items-1, a seeded sample, ascending
        generator = torch.Generator().manual_seed(seed)
        items = torch.randperm(num_items - 1, generator=generator)[:max_items].sort().values + 1
    scorer = _structural_copy(model)
    scores, jacobian = scores_and_jacobian(model, names, widths, start, items, scorer)
    real = items != 0
    prob = torch.softmax(scores[real].double(), dim=0)
    design = jacobian[real].double()
    mean = design.T @ prob
    curvature = (design * prob[:, None]).T @ design - torch.outer(mean, mean)
    eigenvalues, eigenvectors = torch.linalg.eigh(curvature)
    return Linearisation(
        names, widths, start, items, every_item, jacobian, scores,
        mean, eigenvalues.clamp(min=0), eigenvectors, scorer,
    )  # fmt: skip


def scores_and_jacobian(
    model: nn.Module,
    names: tuple[str, ...],
    widths: tuple[int, ...],
    start: torch.Tensor,
    items: torch.Tensor,
    scorer: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits (S,), d logit / d user rows (S, P))`` of the user ``start`` with ``items``.

    Each pair gets its own copy of the user's rows (user ``j + 1`` of a replacement table),
    so one backward pass of the summed logits gives every pair's gradient. ``scorer``: a
    structural copy of ``model`` to swap them into, used by one thread at a time (default:
    a new one).
    """
    device = model_device(model)
    scorer = _structural_copy(model) if scorer is None else scorer
    scores, jacobians = [], []
    # The service calls this under torch.inference_mode(); the Jacobian needs autograd, and
    # tensors made in inference mode could not be saved for backward.
    with torch.inference_mode(False), torch.enable_grad():
        for begin in range(0, len(items), _CHUNK):
            chunk = items[begin : begin + _CHUNK].clone().to(device)
            rows = [
                part.to(device).expand(len(chunk), -1).clone().requires_grad_(True)
                for part in start.clone().split(widths)
            ]
            replaced = user_tables(model, names, rows)
            users = torch.arange(1, len(chunk) + 1, device=device)
            logits = torch.func.functional_call(scorer, replaced, (users, chunk)).float()
            grads = torch.autograd.grad(logits.sum(), rows)
            scores.append(logits.detach().cpu())
            jacobians.append(torch.cat([g.float() for g in grads], dim=1).cpu())
    return torch.cat(scores), torch.cat(jacobians)


def closed_form_rows(
    model: nn.Module, lin: Linearisation, positives: np.ndarray, l2: float = L2
) -> list[torch.Tensor]:
    """A new user's fitted rows (one (1, width) tensor per name in ``lin.names``) for the
    known item indices ``positives`` (distinct, non-empty): the module's ridge solve.

    One step, not the optimum: on the validation split the optimum (4 Newton steps) ranked
    worse, as did a pointwise (BCE) likelihood, one step or solved (docs/benchmarks.md).
    """
    pos = torch.as_tensor(positives, dtype=torch.int64)
    if lin.every_item:
        rows = lin.jacobian[pos]
    else:  # a large catalogue: the given items are linearised now
        with lin.lock:
            _, rows = scores_and_jacobian(model, lin.names, lin.widths, lin.start, pos, lin.scorer)
    n = len(pos)
    gradient = rows.double().sum(0) - n * lin.mean_gradient
    basis = lin.eigenvectors
    delta = basis @ ((basis.T @ gradient) / (n * lin.eigenvalues + l2))
    fitted = (lin.start.double() + delta).float()
    return [row[None] for row in fitted.split(lin.widths)]


def closed_form_rows_many(
    model: nn.Module, lin: Linearisation, positives: list[np.ndarray], l2: float = L2
) -> list[torch.Tensor]:
    """:func:`closed_form_rows` of several new users at once: one (R, width) tensor per
    name, row r fitted to ``positives[r]`` (distinct, non-empty). The same solve with every
    user's sums in one matrix, so a batch costs a handful of tensor operations, not a
    handful per user."""
    if not lin.every_item:  # a large catalogue: each user's items are linearised anew
        per_user = [closed_form_rows(model, lin, p, l2) for p in positives]
        return [torch.cat(parts) for parts in zip(*per_user, strict=True)]
    counts = torch.as_tensor([len(p) for p in positives], dtype=torch.float64)
    pos = torch.as_tensor(np.concatenate(positives), dtype=torch.int64)
    owner = torch.repeat_interleave(torch.arange(len(positives)), counts.long())
    jacobian = lin.jacobian[pos].double()
    gradient = torch.zeros(len(positives), jacobian.shape[1], dtype=torch.float64)
    gradient.index_add_(0, owner, jacobian)
    gradient -= counts[:, None] * lin.mean_gradient
    basis = lin.eigenvectors
    delta = ((gradient @ basis) / (counts[:, None] * lin.eigenvalues + l2)) @ basis.T
    fitted = (lin.start.double() + delta).float()
    return list(fitted.split(lin.widths, dim=1))


def candidate_depth(k: int, num_items: int) -> int | None:
    """How many items, best by the linearised score, the real model re-ranks for a top
    ``k``; ``None`` (score every item) where that would be half the catalogue or more."""
    depth = max(MIN_CANDIDATES, CANDIDATES_PER_K * k)
    return depth if 2 * depth < num_items else None


def linear_scores(lin: Linearisation, rows: list[torch.Tensor]) -> torch.Tensor:
    """(R, S) the linearised logits of the users whose fitted rows are ``rows`` (one
    (R, width) tensor per name), for ``lin.items``: ``s(z0) + J (z - z0)``."""
    delta = torch.cat(rows, dim=1).float() - lin.start
    return torch.addmm(lin.scores, delta, lin.jacobian.T)


def fitted_logits(
    lin: Linearisation,
    scorer: RowScorer,
    rows: list[torch.Tensor],
    k: int,
    excludes: list[np.ndarray | None],
) -> torch.Tensor:
    """(R, num_items) float32 logits of R fitted users for their top ``k``: every item's
    real score, or, on a catalogue more than twice :func:`candidate_depth`, the real scores
    of each user's best candidates by :func:`linear_scores` (given items in ``excludes[r]``
    left out) and ``-inf`` elsewhere."""
    depth = candidate_depth(k, len(lin.items)) if lin.every_item else None
    if depth is None:
        return scorer.score(rows)
    approx = linear_scores(lin, rows)
    approx[:, 0] = -torch.inf  # the unknown item is never recommended
    excluded = [(r, given) for r, given in enumerate(excludes) if given is not None and len(given)]
    if excluded:  # every user's given items at once, as _tops_of masks them
        rows_at = np.concatenate([np.full(len(given), r) for r, given in excluded])
        cols_at = np.concatenate([given for _, given in excluded])
        approx[torch.as_tensor(rows_at), torch.as_tensor(cols_at, dtype=torch.int64)] = -torch.inf
    candidates = torch.topk(approx, depth, dim=1).indices  # (R, depth)
    exact = scorer.score_items(rows, candidates)
    return torch.full_like(approx, -torch.inf).scatter_(1, candidates, exact)


def user_tables(
    model: nn.Module, names: tuple[str, ...], rows: list[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``functional_call`` replacements of the model's per-user tables: its unknown row 0,
    then ``rows`` as users 1..R. A featured user table gets R + 1 rows without features and
    with every id row kept (a new user is known by the fitted rows alone)."""
    params = dict(model.named_parameters())
    modules = dict(model.named_modules())
    count = len(rows[0]) + 1
    out: dict[str, torch.Tensor] = {}
    for name, row in zip(names, rows, strict=True):
        out[name] = torch.cat([params[name].detach()[:1], row])
        owner = name.rpartition(".")[0]
        table = modules.get(owner)
        if isinstance(table, FeaturedEmbedding):
            for buffer in ("feature_tokens", "feature_weights", "feature_numeric"):
                like = getattr(table, buffer)
                out[f"{owner}.{buffer}"] = like.new_zeros(count, *like.shape[1:])
            out[f"{owner}.has_id"] = table.has_id.new_ones(count)
    return out


class RowScorer:
    """Scores users given by their rows with the model's own ``score_all``.

    A structural copy of the model, made once, whose per-user tables are small tables of
    its own (row 0 the model's unknown row, then room for ``capacity`` users), written
    under a lock: copying the module tree for each call cost ~8 ms, and
    ``functional_call``'s swap ~1 ms, against ~0.4 ms for hybrid's ``score_all`` on
    MovieLens-100K. The model's own tensors are shared, never written.
    """

    def __init__(self, model: nn.Module, names: tuple[str, ...], capacity: int = 16) -> None:
        self._model, self._names = model, names
        self._device = model_device(model)
        self._lock = threading.Lock()
        self._capacity = 0
        self._grow(capacity)

    def score(self, rows: list[torch.Tensor]) -> torch.Tensor:
        """float32 logits (R, num_items) for R users, one (R, width) tensor per name."""
        with self._lock, torch.no_grad():
            users = self._write(rows)  # first: it may replace the copy with a larger one
            return self._copy.score_all(users).float()

    def score_items(self, rows: list[torch.Tensor], items: torch.Tensor) -> torch.Tensor:
        """float32 logits (R, N) of R users, given by their rows, with their own ``items``
        (R, N): the model's ``score_groups`` where it has one, else its pairwise forward."""
        count, width = items.shape
        with self._lock, torch.no_grad():
            users = self._write(rows)
            items = items.to(self._device)
            score_groups = getattr(self._copy, "score_groups", None)
            if score_groups is not None:
                return score_groups(users, items).float()
            pairs = self._copy(users.repeat_interleave(width), items.reshape(-1))
            return pairs.float().view(count, width)

    def score_pairs(
        self, rows: list[torch.Tensor], owner: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        """float32 logits (N,) of the pairs (user ``owner[n]``, given by row ``owner[n]`` of
        ``rows``, item ``items[n]``): the model's pairwise forward."""
        with self._lock, torch.no_grad():
            users = self._write(rows)
            return self._copy(users[owner.to(self._device)], items.to(self._device)).float()

    def _write(self, rows: list[torch.Tensor]) -> torch.Tensor:
        """Write ``rows`` as users 1..R of the copy's tables (under the lock); their indices."""
        count = len(rows[0])
        if count > self._capacity:
            self._grow(max(count, 2 * self._capacity))
        for table, row in zip(self._tables, rows, strict=True):
            table[1 : count + 1] = row.to(table)
        return torch.arange(1, count + 1, device=self._device)

    def _grow(self, capacity: int) -> None:
        """A new copy with user tables of ``capacity + 1`` rows (made as normal tensors even
        when called in inference mode, so that later calls outside it can write them)."""
        with torch.inference_mode(False), torch.no_grad():
            params = dict(self._model.named_parameters())
            modules = dict(self._model.named_modules())
            memo: dict[int, Any] = {
                id(t): t for t in (*self._model.parameters(), *self._model.buffers())
            }
            tables = []
            for name in self._names:
                weight = params[name]
                small = weight.new_zeros(capacity + 1, *weight.shape[1:])
                small[0] = weight[0]
                memo[id(weight)] = table = nn.Parameter(small, requires_grad=False)
                tables.append(table)
                owner = modules.get(name.rpartition(".")[0])
                if isinstance(owner, FeaturedEmbedding):  # the new users have no features
                    for buffer in ("feature_tokens", "feature_weights", "feature_numeric"):
                        like = getattr(owner, buffer)
                        memo[id(like)] = like.new_zeros(capacity + 1, *like.shape[1:])
                    memo[id(owner.has_id)] = owner.has_id.new_ones(capacity + 1)
            self._copy = copy.deepcopy(self._model, memo=memo)
            self._tables, self._capacity = tables, capacity


def _structural_copy(model: nn.Module) -> nn.Module:
    """New module objects sharing the model's tensors: ``functional_call`` swaps parameters
    on the copy, so threads scoring with the real model never see the swap."""
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, memo=shared)
