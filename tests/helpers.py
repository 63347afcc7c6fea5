"""Helpers shared by several test modules (imported as ``tests.helpers``): the planted
data, a one-call ``train`` with tiny models, and the ranking metrics' reference values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import hybridrec
from hybridrec import TrainConfig
from hybridrec.data.synthetic import planted_groups
from hybridrec.evaluation import evaluate_full

TINY = {"embedding_dim": 8, "mlp_layer_sizes": (16, 8), "init_std": 0.05}
#: Options each model accepts (mf has no MLP, popularity has no options at all).
OPTIONS = {
    "hybrid": TINY,
    "gmf": TINY,
    "mlp": TINY,
    "neumf": TINY,
    "mf": {"embedding_dim": 8, "init_std": 0.05},
    "popularity": {},
    "sasrec": {"hidden_dim": 8, "max_len": 8, "num_heads": 2, "dropout": 0.1},
}


# ---------------------------------------------------------------- data with planted structure


planted = planted_groups


def planted_labelled(seed=0, num_users=40, num_items=40, groups=4):
    """Labelled ``(train, val)``: 6 in-group positives and 6 out-of-group negatives per user,
    a random fifth of the rows held out."""
    rng = np.random.default_rng(seed)
    per_group = num_items // groups
    rows = []
    for user in range(num_users):
        group = user % groups
        positives = group * per_group + rng.choice(per_group, 6, replace=False) + 1
        others = [i for i in range(1, num_items + 1) if (i - 1) // per_group != group]
        negatives = rng.choice(others, 6, replace=False)
        rows += [(user + 1, int(i), 1) for i in positives]
        rows += [(user + 1, int(i), 0) for i in negatives]
    frame = pd.DataFrame(rows, columns=["userId", "itemId", "target"])
    is_val = rng.random(len(frame)) < 0.2
    return frame[~is_val].reset_index(drop=True), frame[is_val].reset_index(drop=True)


def holdout_frame(with_time: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [(u, i) for u in range(1, 31) for i in rng.choice(40, 6, replace=False) + 1]
    frame = pd.DataFrame(rows, columns=["userId", "itemId"])
    if with_time:
        frame["timestamp"] = rng.permutation(len(frame))
    frame.loc[len(frame)] = [99, 1] + ([10**6] if with_time else [])  # one-interaction user
    return frame


# ---------------------------------------------------------------- training with tiny models


def config(**overrides):
    base = {"epochs": 1, "batch_size": 64, "learning_rate": 0.02, "device": "cpu"}
    return TrainConfig(**{**base, **overrides})


def train(train_data, val_data=None, *, model="hybrid", **overrides):
    out = overrides.pop("out", None)
    items = overrides.pop("items", None)
    return hybridrec.train(
        train_data,
        val_data,
        out=out,
        model=model,
        model_options=OPTIONS[model],
        train_config=config(**overrides),
        items=items,
    )


def full_ranking(result, model=None, ks=(10,)):
    """Full-ranking metrics of the validation rows, recomputed from the trained model."""
    net = model if model is not None else result.recommender.model
    return evaluate_full(
        net,
        result.train_data.user_idx,
        result.train_data.item_idx,
        result.val_data.user_idx,
        result.val_data.item_idx,
        num_items=net.config.num_items,
        ks=ks,
    )


def keys(users, items, num_items=10_000):
    return set((users.long() * num_items + items.long()).tolist())


# ---------------------------------------------------------------- ranking metrics


INF = math.inf
IDCG2 = 1 + 1 / math.log2(3)  # ideal DCG of two relevant items


def t(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


def assert_metrics_equal(actual: dict[str, float], expected: dict[str, float]) -> None:
    assert set(actual) == set(expected)
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(actual[key]), key
        else:
            assert actual[key] == pytest.approx(value, abs=1e-6), key
