"""Synthetic interaction logs with planted structure: the built-in default data.

Users and items belong to latent groups; a user's positives come mostly from their own group,
weighted by a Zipf-like item popularity. Negatives mix popularity-weighted and uniform draws
(like impressions that were not clicked), so item popularity alone is an informative but
clearly beatable baseline, while the group structure rewards a collaborative model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hybridrec.files import atomic_write


@dataclass
class SyntheticConfig:
    """Shape of the generated data."""

    num_users: int = 2000
    num_items: int = 1000
    num_positives: int = 60_000
    negatives_per_positive: int = 1
    num_groups: int = 8
    affinity: float = 0.8  # share of positives drawn from the user's own group
    popularity_skew: float = 0.8  # Zipf exponent of item popularity
    val_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.num_users, self.num_items, self.num_positives, self.num_groups) < 1:
            raise ValueError("users, items, positives and groups must all be at least 1")
        if not 0 <= self.affinity <= 1 or not 0 <= self.val_fraction < 1:
            raise ValueError("affinity must be in [0, 1] and val_fraction in [0, 1)")


def generate_interactions(config: SyntheticConfig | None = None) -> pd.DataFrame:
    """A shuffled frame ``userId, itemId, target`` (ids are 1-based integers)."""
    c = config or SyntheticConfig()
    rng = np.random.default_rng(c.seed)
    user_group = rng.integers(0, c.num_groups, c.num_users)
    item_group = rng.integers(0, c.num_groups, c.num_items)
    popularity = 1.0 / np.arange(1, c.num_items + 1) ** c.popularity_skew
    popularity = popularity[rng.permutation(c.num_items)]

    # Items sorted by group: group g owns the slice [start[g], end[g]) of the cumulative weights.
    by_group = np.argsort(item_group, kind="stable")
    cum = np.cumsum(popularity[by_group])
    bounds = np.searchsorted(item_group[by_group], np.arange(c.num_groups + 1))
    cum0 = np.concatenate([[0.0], cum])
    low, high = cum0[bounds[:-1]], cum0[bounds[1:]]

    activity = rng.lognormal(0.0, 0.7, c.num_users)
    users = rng.choice(c.num_users, size=c.num_positives, p=activity / activity.sum())
    g = user_group[users]
    own = rng.random(c.num_positives) < c.affinity
    own &= high[g] > low[g]  # a group may have no items
    draw = np.where(
        own,
        low[g] + rng.random(c.num_positives) * (high[g] - low[g]),
        rng.random(c.num_positives) * cum[-1],
    )
    items = by_group[np.minimum(np.searchsorted(cum, draw, side="right"), c.num_items - 1)]
    pos = pd.DataFrame({"userId": users, "itemId": items}).drop_duplicates()

    n_neg = len(pos) * c.negatives_per_positive
    neg_users = np.repeat(pos["userId"].to_numpy(), c.negatives_per_positive)
    uniform = rng.integers(0, c.num_items, n_neg)
    popular = np.minimum(
        np.searchsorted(np.cumsum(popularity), rng.random(n_neg) * popularity.sum(), side="right"),
        c.num_items - 1,
    )
    neg_items = np.where(rng.random(n_neg) < 0.5, uniform, popular)
    pos_keys = pos["userId"].to_numpy() * c.num_items + pos["itemId"].to_numpy()
    keep = ~np.isin(neg_users * c.num_items + neg_items, pos_keys)
    neg = pd.DataFrame({"userId": neg_users[keep], "itemId": neg_items[keep]}).drop_duplicates()

    frame = pd.concat([pos.assign(target=1), neg.assign(target=0)], ignore_index=True)
    frame = frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)
    frame["userId"] += 1
    frame["itemId"] += 1
    return frame


def split_rows(
    frame: pd.DataFrame, val_fraction: float, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random row split into ``(train, val)``."""
    rng = np.random.default_rng(seed)
    is_val = rng.random(len(frame)) < val_fraction
    return frame[~is_val].reset_index(drop=True), frame[is_val].reset_index(drop=True)


def write_synthetic_data(
    directory: str | Path, config: SyntheticConfig | None = None
) -> tuple[Path, Path]:
    """Generate data and write ``train.csv`` and ``val.csv`` (atomically) into ``directory``."""
    c = config or SyntheticConfig()
    train, val = split_rows(generate_interactions(c), c.val_fraction, c.seed + 1)
    directory = Path(directory)
    paths = directory / "train.csv", directory / "val.csv"
    for frame, path in zip((train, val), paths, strict=True):
        atomic_write(path, lambda f, fr=frame: fr.to_csv(f, index=False))
    return paths


def planted_groups(
    seed: int = 0, num_users: int = 40, num_items: int = 40, groups: int = 4, per_user: int = 6
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tiny positives-only ``(train, val)`` frames with a structure a model must learn.

    Users and items fall into ``groups`` groups; each user likes ``per_user`` random items of
    their own group only, and the last of them is held out as the user's validation
    positive. A model that learned the groups ranks it among the user's few unseen in-group
    items; popularity cannot. Columns ``userId, itemId`` (no target: all positives).
    """
    rng = np.random.default_rng(seed)
    per_group = num_items // groups
    train, val = [], []
    for user in range(num_users):
        liked = (user % groups) * per_group + rng.choice(per_group, per_user, replace=False) + 1
        train += [(user + 1, int(item)) for item in liked[:-1]]
        val.append((user + 1, int(liked[-1])))
    columns = ["userId", "itemId"]
    return pd.DataFrame(train, columns=columns), pd.DataFrame(val, columns=columns)
