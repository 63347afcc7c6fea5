"""Training: it learns, it is reproducible, it stops on divergence and records its history."""

from __future__ import annotations

import json
import math

import pytest

import hybridrec
from hybridrec import TrainConfig
from hybridrec.data.popularity import popularity_logits
from hybridrec.errors import TrainingDivergedError
from hybridrec.evaluation import evaluate_pointwise, pointwise_metrics

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


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_huge_learning_rate_raises_diverged(synthetic_data, tiny_model_options, tmp_path):
    with pytest.raises(TrainingDivergedError, match="Lower the learning rate") as info:
        run(synthetic_data, tiny_model_options, learning_rate=1e12, out=tmp_path / "m")
    assert "--lr 1e+12" in str(info.value)
    assert not (tmp_path / "m" / "config.json").exists()  # no model is saved


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
