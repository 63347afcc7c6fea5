"""The bounded-cost defaults: sampled softmax, sparse tables, amortised weight average,
bounded validation, and the automatic holdout when no validation file is given."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import hybridrec
import hybridrec.cli
import hybridrec.pipeline as pipeline
from hybridrec import TrainConfig
from hybridrec.data.dataset import RecSysDataset
from hybridrec.data.holdout import holdout
from hybridrec.errors import ConfigError
from hybridrec.models import build_model
from hybridrec.objectives import Pointwise
from hybridrec.training import average as average_module
from hybridrec.training import steps, validation
from hybridrec.training.history import EpochStats

CPU = torch.device("cpu")
TINY = {"embedding_dim": 8, "mlp_layer_sizes": (8,)}


# ---------------------------------------------------------------- sparse tables


def _labelled_full_coverage():
    """Every user and every item occurs in the one batch of each epoch."""
    users = torch.tensor([1, 2, 3, 1, 2, 3, 1, 2])
    items = torch.tensor([1, 2, 3, 4, 5, 1, 2, 3])
    target = torch.tensor([1.0, 0, 1, 0, 1, 1, 0, 1])
    return RecSysDataset(users, items, target)


def _fit(sparse: str, data, **kw) -> nn.Module:
    torch.manual_seed(0)
    net = build_model("hybrid", num_users=4, num_items=6, **TINY)
    config = TrainConfig(
        epochs=4, batch_size=64, ema_decay=0.0, early_stop=None, sparse_embeddings=sparse, **kw
    )
    hybridrec.fit(net, data, None, config, show_progress=False)
    return net


def test_sparse_and_dense_tables_train_the_same_model_when_every_row_is_touched():
    """Lazy Adam is Adam when every row has a gradient every step. SparseAdam applies eps
    after the bias correction (Adam before), so they agree to a small share of how far
    training moved the weights, not to the last bit."""
    data = _labelled_full_coverage()
    torch.manual_seed(0)
    start = build_model("hybrid", num_users=4, num_items=6, **TINY).state_dict()
    sparse, dense = _fit("on", data), _fit("off", data)
    for name, a in sparse.state_dict().items():
        b, moved = dense.state_dict()[name], (a - start[name]).norm()
        assert (a - b).norm() <= 0.01 * moved + 1e-7, name
    other = _fit("on", data, learning_rate=0.01)  # a real difference is detected
    assert (other.item_embedding.weight - dense.item_embedding.weight).norm() > 0.1 * (
        dense.item_embedding.weight - start["item_embedding.weight"]
    ).norm()
    assert not sparse.user_embedding.sparse  # switched back after training


def test_sparse_tables_leave_untouched_rows_alone():
    data = _labelled_full_coverage()
    torch.manual_seed(0)
    net = build_model("hybrid", num_users=6, num_items=8, **TINY)  # users 4, 5 never seen
    before = net.user_embedding.weight[4:].clone()
    config = TrainConfig(
        epochs=2, batch_size=4, ema_decay=0.0, early_stop=None, sparse_embeddings="on"
    )
    hybridrec.fit(net, data, None, config, show_progress=False)
    assert torch.equal(net.user_embedding.weight[4:], before)


def test_auto_makes_only_large_tables_sparse(monkeypatch):
    monkeypatch.setattr(steps, "SPARSE_MIN_ELEMENTS", 6 * 8)  # users 7 x 8 > 48
    net = build_model("hybrid", num_users=7, num_items=6, **TINY)
    objective = Pointwise(_labelled_full_coverage(), TrainConfig(loss="bce"), CPU, 6)
    tables = steps.sparse_tables(net, objective, TrainConfig(), CPU, world=1)
    assert tables == [net.user_embedding] and net.user_embedding.sparse
    assert not net.item_embedding.sparse


def test_sparse_on_with_weight_decay_is_refused_and_auto_falls_back():
    data = _labelled_full_coverage()
    with pytest.raises(ConfigError, match="weight-decay"):
        _fit("on", data, weight_decay=0.01)
    _fit("auto", data, weight_decay=0.01)  # dense, no error


# ---------------------------------------------------------------- weight average


def test_weight_average_is_amortised_for_large_models(monkeypatch):
    monkeypatch.setattr(average_module, "EMA_STEP_ELEMENTS", 10)
    param = nn.Parameter(torch.zeros(25))  # 25 weights: every 3rd step
    average = average_module.WeightAverage([param], decay=0.9)
    assert average.every == 3
    values = []
    for step in range(1, 7):
        with torch.no_grad():
            param.fill_(float(step))
        average.update()
        values.append(average.average[0][0].item())
    assert values[0] == values[1] == 0.0  # nothing until step 3
    d3 = min(0.9, 4 / 13) ** 3
    assert values[2] == pytest.approx((1 - d3) * 3.0)
    d6 = min(0.9, 7 / 16) ** 3
    assert values[5] == pytest.approx(d6 * values[2] + (1 - d6) * 6.0)


# ---------------------------------------------------------------- bounded validation


def test_validation_samples_users_and_items_when_the_catalogue_is_large(monkeypatch, caplog):
    rng = np.random.default_rng(0)
    users = torch.from_numpy(rng.integers(1, 60, 600))
    items = torch.from_numpy(rng.integers(1, 200, 600))
    data = RecSysDataset(users, items, torch.ones(600))
    val = RecSysDataset(
        torch.arange(1, 60), torch.from_numpy(rng.integers(1, 200, 59)), torch.ones(59)
    )
    net = build_model("mf", num_users=60, num_items=200, embedding_dim=4)
    config = TrainConfig(epochs=1)
    monkeypatch.setattr(validation, "VAL_PAIRS", 200 * 20)  # 20 users' worth
    monkeypatch.setattr(validation, "VAL_MIN_FULL_USERS", 10)
    full = validation.Validator(net, data, val, config)
    assert len(torch.unique(full.positives[0])) == 20 and full.candidates is None
    monkeypatch.setattr(validation, "VAL_MIN_FULL_USERS", 50)
    monkeypatch.setattr(validation, "VAL_SAMPLED_USERS", 15)
    monkeypatch.setattr(validation, "VAL_SAMPLED_ITEMS", 30)
    sampled = validation.Validator(net, data, val, config)
    assert len(torch.unique(sampled.positives[0])) == 15
    assert len(sampled.candidates[0]) == 15 * 30
    stats = EpochStats(1, 0.0, 0.0, 0.0, 0.0)
    sampled(stats)
    assert 0.0 <= stats.ranking["hr@10"] <= 1.0 and stats.ranking["negatives"] > 20


# ---------------------------------------------------------------- automatic holdout


def _frame(with_time: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [(u, i) for u in range(1, 31) for i in rng.choice(40, 6, replace=False) + 1]
    frame = pd.DataFrame(rows, columns=["userId", "itemId"])
    if with_time:
        frame["timestamp"] = rng.permutation(len(frame))
    frame.loc[len(frame)] = [99, 1] + ([10**6] if with_time else [])  # one-interaction user
    return frame


def test_holdout_is_each_users_latest_and_spares_single_interaction_users():
    frame = _frame()
    users = torch.tensor(frame["userId"].to_numpy())
    data = RecSysDataset(
        users,
        torch.tensor(frame["itemId"].to_numpy()),
        torch.ones(len(frame)),
        torch.tensor(frame["timestamp"].to_numpy(), dtype=torch.float64),
    )
    split = holdout(data)
    assert split.rule == "latest per user" and len(split.val_rows) == 30
    latest = frame.iloc[:-1].groupby("userId")["timestamp"].idxmax().sort_values().to_numpy()
    assert split.val_rows.tolist() == latest.tolist()
    assert len(frame) - 1 not in split.val_rows  # user 99 keeps their only row
    assert sorted([*split.val_rows, *split.train_rows]) == list(range(len(frame)))


def test_labelled_holdout_is_a_random_share_of_rows():
    n = 200
    data = RecSysDataset(
        torch.randint(1, 9, (n,)), torch.randint(1, 9, (n,)), (torch.arange(n) % 2).float()
    )
    split = holdout(data, seed=3)
    assert len(split.val_rows) == 20 and not set(split.val_rows) & set(split.train_rows)


def test_no_val_holds_out_chooses_epochs_then_refits_on_everything(monkeypatch):
    calls = []
    original = pipeline.fit

    def recording(model, train, val, config, **kw):
        calls.append((train, val, config))
        return original(model, train, val, config, **kw)

    monkeypatch.setattr(pipeline, "fit", recording)
    frame = _frame()
    config = TrainConfig(epochs=4, batch_size=64, device="cpu")
    result = hybridrec.train(frame, model="mf", model_options={"embedding_dim": 4},
                             train_config=config)  # fmt: skip
    (choose_train, choose_val, choose_cfg), (refit_train, refit_val, refit_cfg) = calls
    held = set(zip(choose_val.user_idx.tolist(), choose_val.item_idx.tolist(), strict=True))
    trained = set(zip(choose_train.user_idx.tolist(), choose_train.item_idx.tolist(), strict=True))
    assert len(held) == 30 and not held & trained  # nothing held out is trained on
    assert len(refit_train) == len(frame) and refit_val is None
    assert refit_cfg.epochs == result.holdout["best_epoch"] and refit_cfg.early_stop is None
    assert choose_cfg.early_stop == "auto"
    summary = result.summary()
    assert summary["holdout_held_out_rows"] == 30 and summary["holdout_best_epoch"] >= 1


def test_val_none_and_refit_none(monkeypatch):
    calls = []
    original = pipeline.fit
    monkeypatch.setattr(pipeline, "fit", lambda *a, **kw: calls.append(a[2]) or original(*a, **kw))
    frame = _frame(with_time=False)
    config = TrainConfig(epochs=2, batch_size=64, device="cpu")
    hybridrec.train(frame, None, model="mf", train_config=config)
    assert calls == [None]
    calls.clear()
    result = hybridrec.train(
        frame, model="mf", train_config=TrainConfig(epochs=2, device="cpu", refit="none")
    )
    assert len(calls) == 1 and calls[0] is not None
    assert result.holdout["rule"] == "one random interaction per user"


def test_cli_without_val_reports_the_holdout(tmp_path, capsys):
    frame = _frame()
    frame.to_csv(tmp_path / "train.csv", index=False)
    code = hybridrec.cli.main(
        ["train", "--train", str(tmp_path / "train.csv"), "--out", str(tmp_path / "m"),
         "--epochs", "2", "--no-progress", "--device", "cpu", "--embedding-dim", "4"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "30 rows held out (latest per user)" in out
    saved = hybridrec.load(tmp_path / "m")
    assert saved.config["settings"]["holdout"]["held_out_rows"] == 30
