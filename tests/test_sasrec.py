"""models/sasrec.py: causal attention, next-item training, and the shared workflow (the
packed histories it reads are data/sequences.py's, tested in test_sequences.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import hybridrec
from hybridrec import TrainConfig
from hybridrec.cli import main
from hybridrec.errors import ConfigError
from hybridrec.evaluation import evaluate_full
from hybridrec.models import SASRec, SASRecConfig

TINY = {"hidden_dim": 16, "max_len": 10, "num_heads": 2, "dropout": 0.0}


# ------------------------------------------------------------------ the model


def model(**options):
    torch.manual_seed(0)
    return SASRec(SASRecConfig(num_users=5, num_items=20, **{**TINY, **options})).eval()


def test_states_are_causal():
    """Changing a later item never changes an earlier position's state."""
    net = model()
    seq = torch.tensor([[0, 0, 3, 4, 5, 6]])
    changed = seq.clone()
    changed[0, -1] = 9
    with torch.no_grad():
        a, b = net.encode(seq), net.encode(changed)
    torch.testing.assert_close(a[:, :-1], b[:, :-1])
    assert not torch.allclose(a[:, -1], b[:, -1])


def test_left_padding_does_not_change_the_user_state():
    net = model()
    short = torch.tensor([[3, 4, 5]])
    long = torch.tensor([[0, 0, 0, 0, 3, 4, 5]])
    with torch.no_grad():
        torch.testing.assert_close(net.user_state(short), net.user_state(long))


def test_order_matters():
    net = model()
    with torch.no_grad():
        forward = net.score_sequences(torch.tensor([[3, 4, 5]]))
        backward = net.score_sequences(torch.tensor([[5, 4, 3]]))
    assert not torch.allclose(forward, backward)


def test_all_padding_history_gives_finite_scores():
    net = model()
    with torch.no_grad():
        scores = net.score_all(torch.tensor([0, 3]))  # no histories at all
    assert torch.isfinite(scores).all()


def test_config_errors_name_the_flag():
    with pytest.raises(ConfigError, match="--num-heads"):
        SASRecConfig(hidden_dim=10, num_heads=3)
    with pytest.raises(ConfigError, match="--max-len"):
        SASRecConfig(max_len=0)


def test_prepare_reads_histories_in_time_order():
    net = model(max_len=3)
    users = torch.tensor([1, 1, 1, 2])
    items = torch.tensor([7, 8, 9, 4])
    net.prepare(
        users, items, torch.tensor([1.0, 1.0, 0.0, 1.0]), torch.tensor([2.0, 1.0, 0.0, 0.0])
    )
    assert net.histories[1].tolist() == [0, 8, 7]  # the negative row is not history
    assert net.histories[2].tolist() == [0, 0, 4]


# ------------------------------------------------------------------ learning order


def cycles(num_users=120, num_items=24, length=8, seed=0):
    """Each user walks the catalogue one step at a time, up or down, from a random start,
    with timestamps; rows are shuffled in the file, so only the timestamps give the order.
    The held-out item is the next step. The set of items seen is the same for a walk up from
    ``a`` and down from ``a + length - 1``, so an order-blind model can at best guess which
    end continues (about half right); an order-aware one knows."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for user in range(1, num_users + 1):
        start, step = int(rng.integers(num_items)), int(rng.choice([-1, 1]))
        walk = [(start + step * t) % num_items + 1 for t in range(length + 1)]
        train += [(user, item, 1, t) for t, item in enumerate(walk[:-1])]
        test.append((user, walk[-1]))
    frame = pd.DataFrame(train, columns=["userId", "itemId", "target", "timestamp"])
    frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return frame, pd.DataFrame(test, columns=["userId", "itemId"])


@pytest.fixture(scope="module")
def trained_on_cycles():
    train_frame, test_frame = cycles()
    config = TrainConfig(
        epochs=40, batch_size=256, learning_rate=0.01, loss="ce", device="cpu", early_stop="none"
    )
    result = hybridrec.train(train_frame, model="sasrec", model_options=TINY, train_config=config)
    return result, test_frame


def hit_rate(result, test_frame, k):
    rec = result.recommender
    users = torch.from_numpy(rec.users.transform(test_frame["userId"].to_numpy()))
    items = torch.from_numpy(rec.items.transform(test_frame["itemId"].to_numpy()))
    train = result.train_data
    metrics = evaluate_full(
        rec.model, train.user_idx, train.item_idx, users, items,
        num_items=rec.items.num_embeddings, ks=(k,),
    )  # fmt: skip
    return metrics[f"hr@{k}"]


def test_sasrec_learns_what_comes_next(trained_on_cycles):
    result, test_frame = trained_on_cycles
    assert hit_rate(result, test_frame, 1) >= 0.9
    mf = hybridrec.train(
        cycles()[0],
        model="mf",
        model_options={"embedding_dim": 16},
        # recency weighting off: with it, mf sees some of the order (0.72 here)
        train_config=TrainConfig(
            epochs=20, batch_size=256, learning_rate=0.01, device="cpu", recency_half_life=0
        ),
    )
    assert hit_rate(mf, test_frame, 1) <= 0.7  # the order-blind model cannot (~0.5)


@pytest.mark.parametrize("loss", ["bce", "bpr"])
def test_sampled_losses_train(loss):
    train_frame, test_frame = cycles(num_users=60)
    config = TrainConfig(
        epochs=3, batch_size=128, learning_rate=0.01, loss=loss, negatives=4, device="cpu",
        early_stop="none",
    )  # fmt: skip
    result = hybridrec.train(train_frame, model="sasrec", model_options=TINY, train_config=config)
    losses = [e.train_loss for e in result.history.epochs]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_single_interaction_users_cannot_train():
    frame = pd.DataFrame({"userId": [1, 2], "itemId": [1, 2]})
    with pytest.raises(ConfigError, match="at least two"):
        hybridrec.train(frame, model="sasrec", model_options=TINY)


def test_new_user_gets_sequence_aware_recommendations(trained_on_cycles):
    result, _ = trained_on_cycles
    rec = result.recommender
    out = rec.recommend_for_items([3, 4, 5, 6], k=1)
    assert out.source == "items" and out.item_ids.tolist() == [7]
    # the same items in another order point elsewhere
    assert rec.recommend_for_items([6, 5, 4, 3], k=1).item_ids.tolist() != [7]


def test_reload_is_exact(trained_on_cycles, tmp_path):
    result, test_frame = trained_on_cycles
    result.recommender.save(tmp_path / "m")
    loaded = hybridrec.load(tmp_path / "m")
    users = test_frame["userId"].tolist()[:20]
    before = [r.item_ids.tolist() for r in result.recommender.recommend_many(users, k=5)]
    after = [r.item_ids.tolist() for r in loaded.recommend_many(users, k=5)]
    assert before == after
    torch.testing.assert_close(loaded.model.histories, result.recommender.model.histories)


# ------------------------------------------------------------------ the CLI workflow


def test_cli_train_evaluate_recommend_export(tmp_path, capsys):
    train_frame, test_frame = cycles(num_users=40)
    train_frame.to_csv(tmp_path / "train.csv", index=False)
    test_frame.to_csv(tmp_path / "test.csv", index=False)
    model_dir = tmp_path / "model"
    flags = ["--hidden-dim", "8", "--max-len", "6", "--num-heads", "2", "--epochs", "2"]
    code = main([
        "train", "--train", str(tmp_path / "train.csv"), "--val", str(tmp_path / "test.csv"),
        "--model", "sasrec", "--loss", "ce", "--out", str(model_dir), "--device", "cpu",
        "--no-progress", "--json", *flags,
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "val_hr@10" in json.loads(out.strip().splitlines()[-1])
    loaded = hybridrec.load(model_dir)
    assert loaded.model.config.dropout == 0.5  # the model's own default, not hybrid's 0.0
    assert loaded.model.config.max_len == 6
    code = main([
        "evaluate", "--model", str(model_dir), "--train", str(tmp_path / "train.csv"),
        "--test", str(tmp_path / "test.csv"), "--protocol", "sampled", "--num-negatives", "10",
        "--json",
    ])  # fmt: skip
    assert code == 0
    assert "hr@10" in json.loads(capsys.readouterr().out)
    code = main([
        "recommend", "--model", str(model_dir), "--all", "--k", "3",
        "--output", str(tmp_path / "recs.csv"), "--no-progress",
    ])  # fmt: skip
    assert code == 0
    recs = pd.read_csv(tmp_path / "recs.csv")
    assert len(recs) == 3 * 40
    code = main(["export", "--model", str(model_dir), "--format", "torchscript"])
    assert code == 0
    scorer = torch.jit.load(str(model_dir / "model.pt"))
    u, i = torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])
    with torch.no_grad():
        torch.testing.assert_close(scorer(u, i), loaded.model(u, i))


def test_auto_loss_is_the_models_own(monkeypatch):
    """--loss auto (the default) trains sasrec with ce and pointwise models with bce."""
    import sys

    import hybridrec.objectives as objectives

    seen = []
    original = objectives.make_objective

    def recording(model, train, config, device):
        objective = original(model, train, config, device)
        seen.append(objective.config.loss)
        return objective

    monkeypatch.setattr(objectives, "make_objective", recording)
    monkeypatch.setattr(sys.modules["hybridrec.training.loop"], "make_objective", recording)
    train_frame, _ = cycles(num_users=10)
    config = TrainConfig(epochs=1, device="cpu")
    hybridrec.train(train_frame, None, model="sasrec", model_options=TINY, train_config=config)
    hybridrec.train(train_frame, None, model="mf", train_config=config)
    assert seen == ["ce", "bce"]


@pytest.mark.parametrize("known", ["exclude", "include"])
def test_softmax_leaves_out_the_windows_own_items_unless_told(known):
    """--known-negatives: a position's softmax does not count the other items of its own
    history window (earlier or later) as negatives; ``include`` is the plain softmax."""
    from hybridrec.data.dataset import RecSysDataset
    from hybridrec.objectives.next_item import NextItem

    users = torch.tensor([1, 1, 1, 1, 2, 2, 2])
    items = torch.tensor([3, 5, 7, 9, 2, 4, 6])
    train = RecSysDataset(users, items, torch.ones(7), timestamp=torch.arange(7.0))
    config = TrainConfig(loss="ce", known_negatives=known, batch_size=64, device="cpu")
    objective = NextItem(train, config, torch.device("cpu"), num_items=20, max_len=10)
    net = model()
    batch = next(objective.batches(torch.Generator().manual_seed(0)))
    loss, _, n = objective.step(net, batch)
    inputs, targets = batch[:, :-1], batch[:, 1:]
    valid = (targets != 0) & (inputs != 0)
    states = net.encode(inputs)[valid]
    logits = states @ net.item_embedding.weight.T
    logits[:, 0] = -torch.inf
    window = torch.arange(len(batch))[:, None].expand_as(valid)[valid]
    if known == "exclude":
        for row, target in enumerate(targets[valid].tolist()):
            for item in batch[window[row]].tolist():
                if item and item != target:
                    logits[row, item] = -torch.inf
    expected = torch.nn.functional.cross_entropy(logits, targets[valid])
    assert n == 5 and loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("windows", ["all", "latest"])
def test_long_histories_train_on_every_next_item_when_asked(windows):
    """--history-windows all: a history longer than --max-len is cut into windows, so each
    item but a user's first is predicted once; latest (the default) keeps the newest window."""
    from hybridrec.data.dataset import RecSysDataset
    from hybridrec.objectives.next_item import NextItem

    users = torch.tensor([1] * 9 + [2] * 3 + [3])
    items = torch.arange(1, 14)
    train = RecSysDataset(users, items, torch.ones(13), timestamp=torch.arange(13.0))
    config = TrainConfig(loss="ce", history_windows=windows, batch_size=64, device="cpu")
    objective = NextItem(train, config, torch.device("cpu"), num_items=20, max_len=4)
    targets = sorted(
        int(t)
        for batch in objective.batches(torch.Generator().manual_seed(0))
        for t in batch[:, 1:][(batch[:, 1:] != 0) & (batch[:, :-1] != 0)]
    )
    if windows == "all":  # user 1: items 2-9, user 2: 11-12; user 3 has one item
        assert targets == [*range(2, 10), 11, 12] and objective.num_samples == 10
    else:  # user 1's latest 5 items, 5-9, predict 6-9
        assert targets == [6, 7, 8, 9, 11, 12] and objective.num_samples == 6


def test_history_windows_option_is_checked():
    with pytest.raises(ConfigError, match="--history-windows"):
        TrainConfig(history_windows="some")


def test_empty_batches_score_nothing():
    net = model()
    empty = torch.zeros(0, dtype=torch.long)
    assert net(empty, empty).shape == (0,)
    assert net.score_all(empty).shape == (0, net.config.num_items)
