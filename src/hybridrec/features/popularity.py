"""How popular a cold item will be, predicted from its features and put on the model's scale;
and the popularity a cold user's scores get (:func:`fit_cold_user_popularity`).

A model trained with id dropout scores an id-less item from its features, but what it learns
there is mostly *taste* (which users like which genres): the features-to-popularity mapping
it absorbs is weak, because the id rows of the warm items carry their popularity. Yet among
new items, how popular each will be is most of what decides who interacts with it. On the
shared cold-start task a ridge regression of the warm items' log counts on their features
ranks the held-out cold items about as well as the whole trained model does (NDCG@20 0.340
against 0.333 on the validation items), and the two together do much better.

So after training, :func:`fit_feature_popularity` fits that regression on the warm items
(binary token presence, the numeric features, an intercept; ridge, solved by conjugate
gradients so a vocabulary of any size costs O(non-zeros) per iteration) and measures how the
model itself turns popularity into score: the slope of a warm item's mean score over a
sample of users against its log count. The prediction times that slope, centred on the
warm items' mean prediction, is stored in the item table
(:meth:`hybridrec.models.featured.FeaturedEmbedding.feature_popularity`) and added to the
score of every item without a trained id. An item predicted to be as popular as the average
warm item gets nothing added; the model's own score still carries its taste part. This is the
item-bias-from-features of LightFM (Kula 2015) and the popularity prior of cold-start
surveys, fitted in closed form instead of by SGD, because SGD left it to the id rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from hybridrec.models.featured import FeaturedEmbedding, rows_with_ids

#: Ridge penalty of the regression (each warm item is one row of weight 1).
RIDGE = 1.0
#: Conjugate-gradient iterations at most, and the relative residual that stops them.
MAX_ITERATIONS = 200
TOLERANCE = 1e-6
#: Users and warm items sampled to measure the model's popularity slope.
SLOPE_USERS = 256
SLOPE_ITEMS = 2048
#: Pairs scored per forward call while measuring the slope.
CHUNK = 1 << 16
#: Weight of an item's log count in the score of a user known only by features (logits
#: per nat), chosen on the cold-users val split (docs/benchmarks.md, "Cold users").
COLD_USER_POPULARITY = 4.0


def fit_feature_popularity(
    model: nn.Module, counts: torch.Tensor | np.ndarray, seed: int = 0
) -> dict[str, Any] | None:
    """Fit the popularity term of ``model``'s featured item table on ``counts`` (I,), the
    training positives per item index (:func:`hybridrec.data.popularity.item_counts`);
    returns what was fitted (for the artifact), or None when the model has no item
    features or too few warm items to fit on."""
    table = getattr(model, "item_embedding", None)
    if not isinstance(table, FeaturedEmbedding):
        return None
    counts = torch.as_tensor(counts).cpu()
    warm = (table.has_id.cpu() > 0) & (counts > 0)
    warm[0] = False
    rows = torch.nonzero(warm).flatten()
    if len(rows) < 2:
        return None
    design = _Design(table, rows)
    target = torch.log1p(counts[rows].double())
    weights = _ridge(design, target)
    prediction = design.times(weights)
    slope = _slope(model, rows, target, seed)
    scale = max(slope, 0.0)  # a model that does not reward popularity gets no term
    tokens, numeric, intercept = design.split(weights * scale)
    with torch.no_grad():
        table.popularity_tokens.copy_(tokens.to(table.popularity_tokens))
        table.popularity_numeric.copy_(numeric.to(table.popularity_numeric))
        offset = intercept - scale * float(prediction.mean())
        table.popularity_offset.fill_(offset)
    residual = target - prediction
    r2 = 1.0 - float(residual.var() / target.var()) if float(target.var()) > 0 else 0.0
    return {"warm_items": len(rows), "slope": round(slope, 6), "r2": round(r2, 6)}


def fit_cold_user_popularity(
    model: nn.Module, counts: torch.Tensor | np.ndarray, weight: float = COLD_USER_POPULARITY
) -> dict[str, Any] | None:
    """Set ``model``'s cold-user term (``cold_user_item_bias``, which hybrid and mf have when
    trained with user features) to ``weight * log(1 + count)`` per item from ``counts`` (I,), the
    training positives per item index, less its mean over the catalogue; returns what was
    set, or None for a model without it.

    A user known only by features is scored by the model from those features, but age,
    gender and occupation rank a new user's items worse than plain popularity does (NDCG@20
    0.459 against 0.488 on the shared task's cold users); the model plus this term ranks
    better than either (docs/benchmarks.md, "Cold users"), as a segment-aware popularity.
    """
    bias = getattr(model, "cold_user_item_bias", None)
    if not isinstance(bias, torch.Tensor):
        return None
    logs = torch.log1p(torch.as_tensor(counts).to(bias.device, torch.float64).clamp(min=0))
    mean = float(logs[1:].mean()) if len(logs) > 1 else 0.0
    with torch.no_grad():  # centred: an item of average popularity gets nothing added, so
        # scores stay near the model's own; an item added later without rows (with_items)
        # gets what a zero count gives, as a catalogue item without rows has here
        bias.copy_((weight * (logs - mean)).to(bias.dtype))
        bias[0] = 0.0  # the unknown item is never recommended anyway
    return {"weight": weight, "mean_log_count": round(mean, 6)}


class _Design:
    """The regression's design matrix over ``rows`` of a featured table, never built: token
    presence (0/1), the numeric features, and a column of ones, as two products."""

    def __init__(self, table: FeaturedEmbedding, rows: torch.Tensor) -> None:
        self.tokens = table.feature_tokens[rows].cpu()  # (R, W)
        self.present = (table.feature_weights[rows].cpu() > 0).double()
        self.numeric = table.feature_numeric[rows].cpu().double()  # (R, N)
        self.num_tokens = table.popularity_tokens.shape[0]
        self.size = self.num_tokens + self.numeric.shape[1] + 1

    def split(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        tokens = w[: self.num_tokens].clone()
        tokens[0] = 0.0  # the padding token is no feature
        return tokens, w[self.num_tokens : -1], float(w[-1])

    def times(self, w: torch.Tensor) -> torch.Tensor:
        """``X @ w``, (R,)."""
        tokens, numeric, intercept = self.split(w)
        return (tokens[self.tokens] * self.present).sum(1) + self.numeric @ numeric + intercept

    def transposed_times(self, r: torch.Tensor) -> torch.Tensor:
        """``X.T @ r``, (size,)."""
        tokens = torch.zeros(self.num_tokens, dtype=torch.float64)
        tokens.index_add_(0, self.tokens.flatten(), (self.present * r[:, None]).flatten())
        tokens[0] = 0.0
        return torch.cat([tokens, self.numeric.T @ r, r.sum().view(1)])


def _ridge(design: _Design, target: torch.Tensor) -> torch.Tensor:
    """``argmin |X w - y|^2 + RIDGE |w|^2`` by conjugate gradients on the normal equations."""

    def apply(w: torch.Tensor) -> torch.Tensor:
        return design.transposed_times(design.times(w)) + RIDGE * w

    w = torch.zeros(design.size, dtype=torch.float64)
    residual = design.transposed_times(target)
    direction = residual.clone()
    start = norm = float(residual @ residual)
    for _ in range(MAX_ITERATIONS):
        if norm <= TOLERANCE**2 * start or norm == 0.0:
            break
        product = apply(direction)
        step = norm / float(direction @ product)
        w += step * direction
        residual -= step * product
        new = float(residual @ residual)
        direction = residual + (new / norm) * direction
        norm = new
    return w


@torch.no_grad()
def _slope(model: nn.Module, rows: torch.Tensor, target: torch.Tensor, seed: int) -> float:
    """How much the model's mean score over users rises per unit of a warm item's log
    count (least squares over a sample of warm items and users)."""
    generator = torch.Generator().manual_seed(seed)
    items = rows[torch.randperm(len(rows), generator=generator)[:SLOPE_ITEMS]]
    y = target[torch.searchsorted(rows, items)]
    known = rows_with_ids(model.user_embedding)  # type: ignore[arg-type]
    users = known[torch.randperm(len(known), generator=generator)[:SLOPE_USERS]]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        pair_users = users.repeat_interleave(len(items))
        pair_items = items.repeat(len(users))
        scores = torch.cat([
            model(pair_users[s : s + CHUNK].to(device), pair_items[s : s + CHUNK].to(device)).cpu()
            for s in range(0, len(pair_users), CHUNK)
        ])  # fmt: skip
    finally:
        model.train(was_training)
    mean = scores.double().view(len(users), len(items)).mean(0)
    y_centred = y - y.mean()
    spread = float(y_centred @ y_centred)
    return float(y_centred @ (mean - mean.mean())) / spread if spread > 0 else 0.0


def cold_start_settings(net: nn.Module, counts: torch.Tensor, seed: int) -> dict[str, Any]:
    """Settings fitted after training for models with side features: cold items'
    popularity from their features, and the popularity term added for users known by
    features alone (none for models without features)."""
    fitted: dict[str, Any] = {}
    popularity = fit_feature_popularity(net, counts, seed)
    if popularity is not None:
        fitted["feature_popularity"] = popularity
    cold_users = fit_cold_user_popularity(net, counts)
    if cold_users is not None:
        fitted["cold_user_popularity"] = cold_users
    return fitted


__all__ = ["cold_start_settings", "fit_cold_user_popularity", "fit_feature_popularity"]
