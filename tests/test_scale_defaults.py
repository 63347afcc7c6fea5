"""The bounded-cost defaults: sampled softmax, sparse tables, amortised weight average,
bounded validation, and the automatic holdout when no validation file is given."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

import hybridrec
import hybridrec.cli
import hybridrec.pipeline as pipeline
from hybridrec import TrainConfig
from hybridrec.data.dataset import RecSysDataset
from hybridrec.data.holdout import holdout

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
