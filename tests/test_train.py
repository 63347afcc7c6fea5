"""Training: it learns, it is reproducible, it stops on divergence and records its history."""

from __future__ import annotations

import json
import math

import pytest
import torch

import hybridrec
from hybridrec import TrainConfig
from hybridrec.data import RecSysDataset
from hybridrec.data.popularity import popularity_logits
from hybridrec.errors import ConfigError, TrainingDivergedError
from hybridrec.evaluation import evaluate_pointwise, pointwise_metrics
from hybridrec.models import build_model
from hybridrec.training import EpochStats, History, fit

#: Small batches and a brisk learning rate: a few epochs on the tiny data are enough to learn.
FAST = {"batch_size": 128, "learning_rate": 1e-2, "weight_decay": 1e-5, "device": "cpu"}


def run(synthetic_data, tiny_model_options, *, epochs=2, seed=0, out=None, **overrides):
    train_csv, val_csv = synthetic_data
    config = TrainConfig(epochs=epochs, seed=seed, **{**FAST, **overrides})
    return hybridrec.train(
        train_csv, val_csv, out=out, model_options=tiny_model_options, train_config=config
    )


def history_key(history):
    return [
        (e.train_loss, e.train_accuracy, e.val_loss, e.val_accuracy, e.val_auc)
        for e in history.epochs
    ]


def test_model_beats_item_popularity(synthetic_data, tiny_model_options):
    """The synthetic data has planted user groups that popularity alone cannot see."""
    result = run(synthetic_data, tiny_model_options, epochs=5)
    baseline = pointwise_metrics(
        popularity_logits(result.train_data, result.val_data), result.val_data.target
    )
    model_auc = result.history.best.val_auc  # the epoch early stopping kept
    assert 0.5 < baseline["auc"] < 0.7  # popularity is informative but clearly beatable
    assert model_auc >= baseline["auc"] + 0.05
    # the validation AUC the history reports is the model's real AUC on those rows
    assert model_auc == pytest.approx(
        evaluate_pointwise(result.recommender.model, result.val_data)["auc"]
    )


def test_training_reduces_the_loss(synthetic_data, tiny_model_options):
    history = run(synthetic_data, tiny_model_options, epochs=4).history
    losses = [e.train_loss for e in history.epochs]
    assert losses[-1] < losses[0]
    assert history.epochs[-1].val_loss < history.epochs[0].val_loss


def test_same_seed_same_history(synthetic_data, tiny_model_options):
    first = run(synthetic_data, tiny_model_options, seed=3)
    second = run(synthetic_data, tiny_model_options, seed=3)
    assert history_key(first.history) == history_key(second.history)  # exactly equal
    u = first.train_data.user_idx[:50].numpy()
    i = first.train_data.item_idx[:50].numpy()
    assert (first.recommender.score_indices(u, i) == second.recommender.score_indices(u, i)).all()


def test_same_seed_same_history_with_dropout(synthetic_data):
    """Dropout masks come from the global RNG, which ``train`` seeds too."""
    options = {"embedding_dim": 8, "mlp_layer_sizes": (16, 8), "dropout": 0.3}
    first = run(synthetic_data, options, seed=5)
    second = run(synthetic_data, options, seed=5)
    assert history_key(first.history) == history_key(second.history)


def test_different_seeds_differ(synthetic_data, tiny_model_options):
    first = run(synthetic_data, tiny_model_options, seed=0)
    second = run(synthetic_data, tiny_model_options, seed=1)
    assert [e.train_loss for e in first.history.epochs] != [
        e.train_loss for e in second.history.epochs
    ]


def test_fit_seed_controls_shuffling():
    """Same initial weights: only ``config.seed`` (the batch order) differs between runs."""
    gen = torch.Generator().manual_seed(0)
    users = torch.randint(1, 9, (96,), generator=gen)
    items = torch.randint(1, 6, (96,), generator=gen)
    data = RecSysDataset(users, items, ((users * items) % 3 == 0).float())

    def losses(seed):
        torch.manual_seed(0)
        model = build_model(
            "hybrid", num_users=9, num_items=6, embedding_dim=4, mlp_layer_sizes=(4,)
        )
        config = TrainConfig(epochs=2, batch_size=8, learning_rate=1e-2, seed=seed, device="cpu")
        return [e.train_loss for e in fit(model, data, None, config, show_progress=False).epochs]

    assert losses(1) == losses(1)
    assert losses(1) != losses(2)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_huge_learning_rate_raises_diverged(synthetic_data, tiny_model_options, tmp_path):
    with pytest.raises(TrainingDivergedError, match="Lower the learning rate") as info:
        run(synthetic_data, tiny_model_options, learning_rate=1e12, out=tmp_path / "m")
    assert "--lr 1e+12" in str(info.value)
    assert not (tmp_path / "m" / "config.json").exists()  # no model is saved


class NanModel(torch.nn.Module):
    """A model whose logits are NaN: divergence without relying on float overflow."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))

    def forward(self, user_idx, item_idx):
        return self.weight * torch.full(user_idx.shape, float("nan"))


def test_nan_loss_raises_in_fit():
    data = RecSysDataset(torch.arange(10), torch.arange(10), (torch.arange(10) % 2).float())
    config = TrainConfig(epochs=3, batch_size=4, learning_rate=0.1, device="cpu")
    with pytest.raises(TrainingDivergedError, match=r"became nan in epoch 1.*Lower the learning"):
        fit(NanModel(), data, None, config, show_progress=False)


def test_fit_history_fields_and_callback():
    torch.manual_seed(0)
    n = 64
    users = torch.randint(1, 9, (n,))
    items = torch.randint(1, 6, (n,))
    target = ((users + items) % 2).float()
    train = RecSysDataset(users, items, target)
    val = RecSysDataset(users[:20], items[:20], target[:20])
    model = build_model("hybrid", num_users=9, num_items=6, embedding_dim=4, mlp_layer_sizes=(4,))
    seen = []
    config = TrainConfig(epochs=3, batch_size=16, learning_rate=1e-2, device="cpu")
    history = fit(
        model,
        train,
        val,
        config,
        show_progress=False,
        on_epoch_end=lambda stats, hist: seen.append((stats.epoch, len(hist.epochs))),
    )
    assert isinstance(history, History)
    assert seen == [(1, 1), (2, 2), (3, 3)]
    assert [e.epoch for e in history.epochs] == [1, 2, 3]
    assert history.last is history.epochs[-1]
    for e in history.epochs:
        assert isinstance(e, EpochStats)
        assert math.isfinite(e.train_loss) and e.train_loss > 0
        assert 0.0 <= e.train_accuracy <= 1.0
        assert e.samples_per_second > 0 and e.seconds > 0
        assert math.isfinite(e.val_loss)
        assert 0.0 <= e.val_accuracy <= 1.0
        assert 0.0 <= e.val_auc <= 1.0
    rows = history.to_list()
    assert rows[0]["epoch"] == 1
    assert set(rows[0]) == {
        "epoch",
        "train_loss",
        "train_accuracy",
        "samples_per_second",
        "seconds",
        "val_loss",
        "val_accuracy",
        "val_auc",
        "ranking",
    }
    assert not model.training  # fit leaves the model in eval mode


def test_fit_without_validation_leaves_val_fields_empty():
    data = RecSysDataset(torch.tensor([1, 2]), torch.tensor([1, 2]), torch.tensor([1.0, 0.0]))
    model = build_model("hybrid", num_users=3, num_items=3, embedding_dim=2, mlp_layer_sizes=(2,))
    config = TrainConfig(epochs=1, batch_size=2, device="cpu")
    history = fit(model, data, None, config, show_progress=False)
    assert history.last.val_loss is None
    assert history.last.val_auc is None


def test_fit_rejects_empty_training_data():
    data = RecSysDataset(torch.zeros(0), torch.zeros(0), torch.zeros(0))
    model = build_model("hybrid", num_users=2, num_items=2)
    with pytest.raises(ValueError, match="no rows"):
        fit(model, data, None, TrainConfig(epochs=1, device="cpu"), show_progress=False)


def test_train_result_and_metrics_json(synthetic_data, tiny_model_options, tmp_path):
    out = tmp_path / "model"
    result = run(synthetic_data, tiny_model_options, epochs=2, out=out)
    assert len(result.history.epochs) == 2
    assert result.out == out
    assert result.val_unknown is not None and result.val_unknown.rows == len(result.val_data)

    metrics = json.loads((out / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["history"]] == [1, 2]
    assert metrics["history"] == json.loads(json.dumps(result.history.to_list()))
    final = metrics["final"]
    assert final["val_auc"] == pytest.approx(result.history.last.val_auc)
    assert final["epochs"] == 2
    assert final["val_rows"] == len(result.val_data)
    assert final["model_dir"] == str(out)
    assert metrics["val_unknown"]["rows"] == len(result.val_data)

    summary = result.summary()
    for key in ("train_loss", "train_accuracy", "samples_per_second", "val_loss", "val_auc"):
        assert math.isfinite(summary[key]), key


def test_train_from_frames(tiny_model_options):
    import pandas as pd

    frame = pd.DataFrame(
        {"userId": ["a", "b", "a", "c"], "itemId": [1, 2, 2, 1], "target": [1, 0, 0, 1]}
    )
    config = TrainConfig(epochs=1, batch_size=2, device="cpu")
    result = hybridrec.train(frame, frame, model_options=tiny_model_options, train_config=config)
    assert len(result.recommender.users) == 3
    assert result.val_unknown.rows_with_unknown == 0
    assert result.out is None


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        ({"epochs": 0}, "--epochs"),
        ({"batch_size": 0}, "--batch-size"),
        ({"eval_batch_size": 0}, "--eval-batch-size"),
        ({"learning_rate": 0.0}, "--lr"),
        ({"learning_rate": float("nan")}, "--lr"),
        ({"weight_decay": -1.0}, "--weight-decay"),
        ({"num_threads": -1}, "--threads"),
    ],
)
def test_train_config_validation(options, flag):
    with pytest.raises(ConfigError, match=flag):
        TrainConfig(**options)


def test_unknown_device_name():
    from hybridrec.runtime import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="--device 'toaster'"):
        resolve_device("toaster")
