"""Recency-weighted positives (``--recency-half-life``) and the catalogue softmax on the dot
product (``--catalogue-weight``): the weights, where they reach the loss, and that they help
where they should."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

import hybridrec
from hybridrec import TrainConfig
from hybridrec.data import Batch, RecSysDataset
from hybridrec.data.sequences import recency_weights
from hybridrec.errors import ConfigError
from hybridrec.models import MODELS, build_model
from hybridrec.objectives import Pointwise, Softmax, catalogue_loss, make_objective

CPU = torch.device("cpu")
TINY = {"embedding_dim": 8, "mlp_layer_sizes": (16, 8), "init_std": 0.05}


# ---------------------------------------------------------------- the weights


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        ({"recency_half_life": -1}, "--recency-half-life"),
        ({"recency_floor": 0}, "--recency-floor"),
        ({"recency_floor": 1.5}, "--recency-floor"),
        ({"catalogue_weight": -0.1}, "--catalogue-weight"),
    ],
)
def test_config_validation_names_the_flag(options, flag):
    with pytest.raises(ConfigError, match=flag):
        TrainConfig(**options)


# ---------------------------------------------------------------- where they reach the loss


def positives(with_time: bool = True) -> RecSysDataset:
    users = torch.tensor([1, 1, 1, 2, 2, 3])
    items = torch.tensor([1, 2, 3, 2, 4, 5])
    times = torch.tensor([1.0, 2.0, 3.0, 1.0, 2.0, 1.0]) if with_time else None
    return RecSysDataset(users, items, torch.ones(6), times)


def model(name: str = "hybrid"):
    options = {"mf": {"embedding_dim": 8}, "popularity": {}}.get(name, TINY)
    if name == "sasrec":
        options = {"hidden_dim": 8, "max_len": 4}
    return build_model(name, num_users=4, num_items=6, **options)


@pytest.mark.parametrize("loss", ["bce", "bpr"])
def test_each_sampled_row_carries_its_positives_weight(loss):
    data = positives()
    config = TrainConfig(loss=loss, negatives=3, batch_size=100, recency_half_life=1.0)
    objective = Pointwise(data, config, CPU, num_items=6)
    expected = dict(
        zip(
            zip(data.user_idx.tolist(), data.item_idx.tolist(), strict=True),
            recency_weights(data.user_idx, data.timestamp, 1.0, config.recency_floor).tolist(),
            strict=True,
        )
    )
    (batch,) = list(objective.batches(torch.Generator().manual_seed(0)))
    assert batch.weight is not None and len(batch.weight) == len(batch.user_idx)
    if loss == "bce":
        pos = batch.target == 1
        for u, i, w in zip(
            batch.user_idx[pos], batch.item_idx[pos], batch.weight[pos], strict=True
        ):
            assert w.item() == pytest.approx(expected[(u.item(), i.item())])
        # each positive's 3 negatives weigh what it weighs: per user, the weights of the
        # negatives are the user's positive weights, 3 times each
        for user in data.user_idx.unique().tolist():
            mine = (batch.user_idx == user) & ~pos
            got = sorted(batch.weight[mine].tolist())
            want = sorted(w for (u, _), w in expected.items() if u == user for _ in range(3))
            assert got == pytest.approx(want)
    else:  # every row is (user, positive, negative): the positive's weight
        for u, i, w in zip(batch.user_idx, batch.item_idx, batch.weight, strict=True):
            assert w.item() == pytest.approx(expected[(u.item(), i.item())])


def test_distributed_shards_carry_the_same_weights():
    data = positives()
    config = TrainConfig(loss="bce", negatives=2, batch_size=6, recency_half_life=1.0)
    objective = Pointwise(data, config, CPU, num_items=6)
    weight_of = dict(
        zip(
            zip(data.user_idx.tolist(), data.item_idx.tolist(), strict=True),
            objective.weights.tolist(),
            strict=True,
        )
    )
    for rank in range(2):
        gen = torch.Generator().manual_seed(1)
        for batch in objective.batches(gen, rank=rank, world=2):
            for u, i, t, w in zip(*batch, strict=True):
                if t == 1:
                    assert w.item() == pytest.approx(weight_of[(u.item(), i.item())])


@pytest.mark.parametrize(
    "config",
    [
        TrainConfig(loss="bce", recency_half_life=0),  # off
        TrainConfig(loss="bpr", recency_half_life=0),
    ],
)
def test_weights_off_gives_unweighted_batches(config):
    objective = Pointwise(positives(), config, CPU, num_items=6)
    assert all(b.weight is None for b in objective.batches(torch.Generator().manual_seed(0)))


def test_no_timestamps_no_weights_and_softmax_weighted():
    objective = Pointwise(positives(with_time=False), TrainConfig(loss="bce"), CPU, num_items=6)
    assert objective.weights is None
    softmax = Softmax(positives(), TrainConfig(loss="ce", recency_half_life=1.0), CPU)
    (batch,) = list(softmax.batches(torch.Generator().manual_seed(0)))
    assert batch.weight is not None and batch.weight.mean().item() == pytest.approx(1.0)


def test_weighted_step_is_the_weighted_mean_plus_the_catalogue_term():
    torch.manual_seed(0)
    net = model("hybrid")
    data = positives()
    config = TrainConfig(catalogue_weight=0.5)
    objective = make_objective(net, data, config, CPU)
    assert objective.catalogue_weight == 0.5
    batch = Batch(
        torch.tensor([1, 1, 2, 3]),
        torch.tensor([1, 4, 2, 1]),
        torch.tensor([1.0, 0.0, 1.0, 0.0]),
        torch.tensor([2.0, 0.5, 1.0, 0.5]),
    )
    loss, _, n = objective.step(net, batch)
    logits = net(batch.user_idx, batch.item_idx)
    bce = F.binary_cross_entropy_with_logits(logits, batch.target, reduction="none")
    dots = net.user_embedding.weight @ net.item_embedding.weight.T
    dots[:, 0] = -torch.inf
    ce = F.cross_entropy(dots[[1, 2]], torch.tensor([1, 2]), reduction="none")
    expected = (bce * batch.weight).mean() + 0.5 * (ce * torch.tensor([2.0, 1.0])).mean()
    assert n == 4
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert catalogue_loss(net, torch.tensor([1, 2]), torch.tensor([1, 2]), None).item() == (
        pytest.approx(ce.mean().item(), rel=1e-5)
    )


@pytest.mark.parametrize("name", sorted(set(MODELS) - {"sasrec"}))
def test_catalogue_term_only_for_models_with_a_dot_product(name):
    objective = make_objective(model(name), positives(), TrainConfig(), CPU)
    has_dot = name in ("hybrid", "mf", "gmf", "neumf")
    assert (objective.catalogue_weight > 0) == has_dot


def test_labelled_rows_are_not_weighted_or_given_the_catalogue_term():
    data = RecSysDataset(
        torch.tensor([1, 1, 2]),
        torch.tensor([1, 2, 3]),
        torch.tensor([1.0, 0.0, 1.0]),
        torch.tensor([1.0, 2.0, 3.0]),
    )
    net = model("hybrid")
    objective = make_objective(net, data, TrainConfig(), CPU)
    (batch,) = list(objective.batches(torch.Generator().manual_seed(0)))
    assert batch.weight is None
    loss, _, _ = objective.step(net, batch)
    plain = F.binary_cross_entropy_with_logits(net(batch.user_idx, batch.item_idx), batch.target)
    assert loss.item() == pytest.approx(plain.item(), rel=1e-6)


# ---------------------------------------------------------------- that it helps


def drifting_tastes(seed: int, num_users: int = 60, per_group: int = 20, groups: int = 3):
    """Every user first likes 8 items of one group, then (later timestamps) 8 of another,
    and the held-out next item is from the later group. An order-blind model without
    recency weighting splits its top 10 between both groups; with it, it favours the later."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for user in range(1, num_users + 1):
        old, new = rng.choice(groups, 2, replace=False)
        old_items = old * per_group + rng.choice(per_group, 8, replace=False) + 1
        new_items = new * per_group + rng.choice(per_group, 9, replace=False) + 1
        train += [(user, int(i), t) for t, i in enumerate(old_items)]
        train += [(user, int(i), 10 + t) for t, i in enumerate(new_items[:-1])]
        val.append((user, int(new_items[-1])))
    return (
        pd.DataFrame(train, columns=["userId", "itemId", "timestamp"]),
        pd.DataFrame(val, columns=["userId", "itemId"]),
    )


def val_hr(train_frame, val_frame, **overrides) -> float:
    config = TrainConfig(epochs=15, batch_size=256, learning_rate=0.02, device="cpu", **overrides)
    result = hybridrec.train(
        train_frame, val_frame, model="hybrid", model_options=TINY, train_config=config
    )
    return result.history.best.ranking["hr@10"]


def test_recency_weighting_follows_drifting_tastes():
    train_frame, val_frame = drifting_tastes(seed=0)
    plain = val_hr(train_frame, val_frame, recency_half_life=0, catalogue_weight=0)
    recent = val_hr(train_frame, val_frame, recency_half_life=3, catalogue_weight=0)
    # 60 users: a difference of 0.15 is more than 2 standard errors of either
    assert recent >= plain + 0.15
