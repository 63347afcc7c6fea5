"""pipeline.py: train() from files or frames to a saved model: it learns, is reproducible,
stops on divergence, holds out validation rows when none are given, and reports a summary."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

import hybridrec
import hybridrec.pipeline as pipeline
from hybridrec import TrainConfig
from hybridrec.data.popularity import popularity_logits
from hybridrec.errors import TrainingDivergedError
from hybridrec.evaluation import evaluate_full, evaluate_pointwise, pointwise_metrics
from tests.helpers import holdout_frame, planted, planted_labelled, train

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


# ---------------------------------------------------------------- it learns, reproducibly


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


# ---------------------------------------------------------------- holdout, then refit


def test_no_val_holds_out_chooses_epochs_then_refits_on_everything(monkeypatch):
    calls = []
    original = pipeline.fit

    def recording(model, train, val, config, **kw):
        calls.append((train, val, config))
        return original(model, train, val, config, **kw)

    monkeypatch.setattr(pipeline, "fit", recording)
    frame = holdout_frame()
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
    # the chosen epoch's validation metrics too (what a tune trial scored): they were left out
    assert summary["holdout_val_ndcg@10"] == result.holdout["val"]["ndcg@10"]


def test_val_none_and_refit_none(monkeypatch):
    calls = []
    original = pipeline.fit
    monkeypatch.setattr(pipeline, "fit", lambda *a, **kw: calls.append(a[2]) or original(*a, **kw))
    frame = holdout_frame(with_time=False)
    config = TrainConfig(epochs=2, batch_size=64, device="cpu")
    hybridrec.train(frame, None, model="mf", train_config=config)
    assert calls == [None]
    calls.clear()
    result = hybridrec.train(
        frame, model="mf", train_config=TrainConfig(epochs=2, device="cpu", refit="none")
    )
    assert len(calls) == 1 and calls[0] is not None
    assert result.holdout["rule"] == "one random interaction per user"


# ---------------------------------------------------------------- item catalogue


def test_catalogue_items_get_an_index_and_are_ranked(tmp_path):
    train_frame, val_frame = planted(seed=4)
    catalogue = tmp_path / "items.csv"
    pd.DataFrame({"itemId": [*range(1, 41), 500, 501], "title": ["t"] * 42}).to_csv(
        catalogue, index=False
    )
    plain = train(train_frame, val_frame)
    result = train(train_frame, val_frame, items=catalogue)
    encoder = result.recommender.items
    assert plain.recommender.items.transform([500, 501]).tolist() == [0, 0]
    new = encoder.transform([500, 501])
    assert bool((new > 0).all()) and len(set(new.tolist())) == 2
    assert result.recommender.model.config.num_items == plain.recommender.model.config.num_items + 2
    user = int(train_frame["userId"].iloc[0])
    scores = result.recommender.score([user, user, user], [500, 501, 12345])
    assert bool(np.isfinite(scores).all()) and bool(((scores > 0) & (scores < 1)).all())
    assert scores[0] != scores[2]  # a catalogue item is not scored as the unknown item
    # a held-out catalogue item is ranked, not counted as unknown
    metrics = evaluate_full(
        result.recommender.model,
        result.train_data.user_idx,
        result.train_data.item_idx,
        torch.tensor([1]),
        torch.from_numpy(new[:1]),
        num_items=result.recommender.model.config.num_items,
    )
    assert metrics["unknown_test_items"] == 0.0 and metrics["users"] == 1.0


def test_catalogue_without_the_item_column_is_a_data_error():
    train_frame, _ = planted()
    with pytest.raises(hybridrec.DataError, match="item catalogue has no column 'itemId'"):
        train(train_frame, items=pd.DataFrame({"movieId": [1, 2]}))


# ---------------------------------------------------------------- summary


def test_summary_with_positives_only_validation():
    train_frame, val_frame = planted()
    result = train(train_frame, val_frame, epochs=2, ks=(5, 10))
    summary = result.summary()
    for key in ("val_hr@10", "val_ndcg@10", "val_hr@5", "val_mrr", "val_ranking_auc"):
        assert isinstance(summary[key], float), key
        assert 0.0 <= summary[key] <= 1.0, key
    assert summary["val_hr@10"] == result.history.best.ranking["hr@10"]
    assert summary["val_ranking_auc"] == result.history.best.ranking["auc"]
    assert summary["val_auc"] is None and summary["val_loss"] is None
    assert summary["val_ranking_users"] == 40.0
    assert "val_users" not in summary and "val_auc@10" not in summary


def test_summary_with_labelled_validation_keeps_the_pointwise_auc():
    train_frame, val_frame = planted_labelled()
    result = train(train_frame, val_frame, epochs=2)
    summary = result.summary()
    pointwise = evaluate_pointwise(result.recommender.model, result.val_data)
    assert summary["val_auc"] == pytest.approx(pointwise["auc"], rel=1e-9)
    assert summary["val_loss"] == pytest.approx(pointwise["loss"], rel=1e-6)
    positives = result.val_data.target == 1
    ranking = evaluate_full(
        result.recommender.model,
        result.train_data.user_idx,
        result.train_data.item_idx,
        result.val_data.user_idx[positives],
        result.val_data.item_idx[positives],
        num_items=result.recommender.model.config.num_items,
    )
    assert summary["val_ranking_auc"] == ranking["auc"]
    assert summary["val_hr@10"] == ranking["hr@10"]
    assert summary["val_auc"] != summary["val_ranking_auc"]


# ---------------------------------------------------------------- the output directory


def _scores(directory):
    rec = hybridrec.load(directory)
    users, items = rec.users.ids[:20], rec.items.ids[:20]
    return rec.score(users, items)


def test_interrupted_retrain_leaves_the_old_model_intact(
    synthetic_data, tiny_model_options, tmp_path, monkeypatch
):
    out = tmp_path / "model"
    run(synthetic_data, tiny_model_options, epochs=1, out=out)
    before = _scores(out)
    loop = __import__("sys").modules["hybridrec.training.loop"]
    real = loop._describe

    def fail_in_epoch_2(stats, epochs):  # as a Ctrl-C or a crash after epoch 1 would
        if stats.epoch == 2:
            raise KeyboardInterrupt
        return real(stats, epochs)

    monkeypatch.setattr(loop, "_describe", fail_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run(synthetic_data, tiny_model_options, epochs=3, seed=1, out=out)
    assert (out / "progress.json").is_file()  # the run's epoch 1 was recorded beside it
    np.testing.assert_array_equal(_scores(out), before)  # loads, checksums intact


def test_retrain_replaces_the_model_whole_and_keeps_other_files(
    synthetic_data, tiny_model_options, tmp_path
):
    out = tmp_path / "model"
    run(synthetic_data, tiny_model_options, epochs=1, out=out)
    before = _scores(out)
    (out / "notes.txt").write_text("mine")
    (out / ".weights.pt.abc.tmp").write_bytes(b"left by a killed save")
    run(synthetic_data, tiny_model_options, epochs=2, seed=1, out=out, checkpoint_every=1)
    assert not np.array_equal(_scores(out), before)
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "checkpoint.pt").is_file() and not (out / "progress.json").exists()
    assert not (out / ".weights.pt.abc.tmp").exists()  # stale temp file removed
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "model") == [".model.lock"]


def test_a_save_killed_between_its_renames_loses_nothing(
    synthetic_data, tiny_model_options, tmp_path
):
    out = tmp_path / "model"
    run(synthetic_data, tiny_model_options, epochs=1, out=out)
    scores = _scores(out)
    out.rename(tmp_path / ".model.new")  # the moment after `out` was moved aside
    np.testing.assert_array_equal(_scores(out), scores)  # loads from beside it
    run(synthetic_data, tiny_model_options, epochs=1, out=out, early_stop="none")
    assert (out / "config.json").is_file() and not (tmp_path / ".model.new").exists()


def test_out_is_checked_and_locked_before_any_data_is_read(tmp_path):
    from hybridrec.errors import ConfigError
    from hybridrec.files import OutputBusyError, exclusive

    missing = tmp_path / "no-such-train.csv"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out, message in ((a_file, "is a file"), (a_file / "sub", "cannot create")):
        with pytest.raises(ConfigError, match=message):
            hybridrec.train(missing, out=out)
    busy = tmp_path / "busy"
    busy.mkdir()
    with exclusive(busy), pytest.raises(OutputBusyError, match="another hybridrec process"):
        hybridrec.train(missing, out=busy)


def test_training_names_a_validation_frame_and_restores_the_callers_threads():
    """Errors about a validation DataFrame called it "the training frame"; the training's
    thread count (1 by default) stayed set for the whole calling process."""
    frame = pd.DataFrame({"userId": [1, 1, 2, 2, 3], "itemId": [1, 2, 1, 3, 2]})
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        hybridrec.train(frame, None, model="mf", train_config=TrainConfig(epochs=1))
        assert torch.get_num_threads() == 2
        with pytest.raises(hybridrec.DataError, match="the validation frame"):
            hybridrec.train(frame, frame.assign(target=0), model="mf")
        with pytest.raises(hybridrec.DataError, match="the validation frame"):
            hybridrec.train(frame, frame.assign(userId=99), model="mf")
    finally:
        torch.set_num_threads(before)


def test_a_ranking_test_set_holds_each_distinct_positive_pair_once():
    """Repeats of a pair whose item the model does not know were all ranked (after
    encoding every unknown item is index 0); a 0 row before a 1 row of the same pair
    must not hide the positive."""
    from hybridrec.config import DataConfig
    from hybridrec.prepare import load_positives

    frame = pd.DataFrame(
        {"userId": [3, 4, 4, 4, 4, 5, 5], "itemId": [2, 99, 99, 99, 2, 7, 7],
         "target": [1, 1, 1, 1, 1, 0, 1]}
    )  # fmt: skip
    test = load_positives(frame, DataConfig(), "to rank")
    assert list(zip(test["user_id"], test["item_id"], strict=True)) == [
        (3, 2), (4, 99), (4, 2), (5, 7)
    ]  # fmt: skip


def test_arguments_of_the_wrong_kind_are_config_errors():
    """A list as the data or a dict as the config failed deep inside pathlib or training
    (TypeError, AttributeError)."""
    with pytest.raises(hybridrec.ConfigError, match="file path or a pandas DataFrame, got list"):
        hybridrec.train([1, 2, 3])
    with pytest.raises(hybridrec.ConfigError, match="train_config must be a hybridrec.TrainConfig"):
        hybridrec.train("x.csv", train_config={"epochs": 1})
    with pytest.raises(hybridrec.ConfigError, match="data_config must be a hybridrec.DataConfig"):
        hybridrec.train("x.csv", data_config={"user_col": "u"})
