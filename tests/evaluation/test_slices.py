"""evaluation/slices.py and ``hybridrec evaluate``'s beyond-accuracy metrics, breakdowns and
``--per-user`` file, on hand-made cases and a tiny featured model."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

import hybridrec
from hybridrec import TrainConfig
from hybridrec.cli import main
from hybridrec.evaluation.beyond import ItemPopularity
from hybridrec.evaluation.protocols import FullRanking
from hybridrec.evaluation.slices import (
    bin_labels,
    bin_of,
    by_item_popularity,
    by_user_activity,
    quartile_edges,
)

# ---------------------------------------------------------------- bins by hand


def test_quartile_bins_by_hand():
    edges = quartile_edges(np.array([1, 2, 3, 4, 5, 6, 7, 8]))
    assert edges == [0, 2, 4, 6, 8]
    assert bin_labels(edges) == ["1-2", "3-4", "5-6", "7-8"]
    assert bin_of(np.array([1, 2, 3, 8]), edges).tolist() == [0, 0, 1, 3]
    # most users alike: the repeated quartiles merge into one bin
    edges = quartile_edges(np.array([5, 5, 5, 5, 9]))
    assert edges == [4, 5, 9] and bin_labels(edges) == ["5", "6-9"]


def test_breakdowns_by_hand():
    activity = np.array([1, 2, 3, 4, 5, 6, 7, 8])
    hr = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, float("nan")])
    table = by_user_activity({"hr@1": hr}, activity)
    assert [b["users"] for b in table["bins"]] == [2, 2, 2, 2]
    assert [b["hr@1"] for b in table["bins"]] == [0.5, 1.0, 0.0, 1.0]  # NaN left out
    # two users; user 1's held-out items 1 (rank 0) and 2 (rank 3); user 2's item 3 (rank 1)
    ranking = FullRanking(
        metrics={}, users=torch.tensor([1, 2]), per_user={},
        items=torch.tensor([[1, 2], [3, 0]]),
        ranks=torch.tensor([[0.0, 3.0], [1.0, math.inf]]),
        num_relevant=torch.tensor([2, 1]),
    )  # fmt: skip
    popularity = ItemPopularity(torch.tensor([0, 9, 1, 1]), 9)
    table = by_item_popularity(ranking, popularity, [2])
    assert table["edges"] == [0, 1, 9]
    low, high = table["bins"]
    assert (low["range"], low["items"], high["range"], high["items"]) == ("1", 2, "2-9", 1)
    assert low["hr@2"] == 0.5 and high["hr@2"] == 1.0
    assert low["ndcg@2"] == pytest.approx(0.5 / math.log2(3))
    assert low["mrr"] == pytest.approx((1 / 4 + 1 / 2) / 2)


# ---------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def featured(tmp_path_factory):
    """40 users with text ids in 4 taste groups over 40 items with a genre and tags; an mf
    model with item features trained on them; one held-out item per user."""
    directory = tmp_path_factory.mktemp("slices")
    rng = np.random.default_rng(0)
    train, test = [], []
    for user in range(40):
        group = user % 4
        liked = group * 10 + rng.choice(10, 2 + user % 5 * 2, replace=False) + 1
        train += [(f"u{user:03d}", int(i)) for i in liked[:-1]]
        test.append((f"u{user:03d}", int(liked[-1])))
    paths = {name: directory / f"{name}.csv" for name in ("train", "test", "items")}
    pd.DataFrame(train, columns=["userId", "itemId"]).to_csv(paths["train"], index=False)
    pd.DataFrame(test, columns=["userId", "itemId"]).to_csv(paths["test"], index=False)
    items = pd.DataFrame(
        {
            "itemId": range(1, 41),
            "genre": [f"g{(i - 1) // 10}" for i in range(1, 41)],
            "tags": [f"t{i % 3}|t{i % 5}" for i in range(1, 41)],
        }
    )
    items.to_csv(paths["items"], index=False)
    paths["model"] = directory / "m"
    hybridrec.train(
        paths["train"], None, out=paths["model"], model="mf", item_features=paths["items"],
        model_options={"embedding_dim": 8},
        train_config=TrainConfig(epochs=3, batch_size=64, learning_rate=0.02, device="cpu"),
    )  # fmt: skip
    return paths


def evaluate(capsys, paths, *flags):
    code = main(
        ["evaluate", "--model", str(paths["model"]), "--train", str(paths["train"]),
         "--test", str(paths["test"]), "--k", "3,5", *map(str, flags)]
    )  # fmt: skip
    out, err = capsys.readouterr()
    return code, out, err


def test_json_has_beyond_accuracy_and_slices(featured, tmp_path, capsys):
    code, out, err = evaluate(capsys, featured, "--json", "--per-user", tmp_path / "u.parquet")
    assert code == 0, err
    metrics = json.loads(out)
    for k in (3, 5):
        for name in ("coverage", "gini", "tail", "diversity"):
            assert 0.0 <= metrics[f"{name}@{k}"] <= 1.0, name
        assert metrics[f"novelty@{k}"] > 0 and metrics[f"popularity@{k}"] >= 1
    assert metrics["coverage@3"] <= metrics["coverage@5"]  # longer lists cover more
    assert metrics["catalogue_items"] == 40
    activity = metrics["slices"]["user_activity"]
    assert sum(b["users"] for b in activity["bins"]) == metrics["users"] == 40
    assert activity["edges"] == sorted(activity["edges"])
    held = metrics["slices"]["item_popularity"]
    assert sum(b["items"] for b in held["bins"]) == 40

    per_user = pd.read_parquet(tmp_path / "u.parquet")
    assert len(per_user) == 40
    assert per_user["userId"].iloc[0] == "u000"  # raw ids, as in the files
    assert per_user["train_interactions"].min() == 1 and per_user["test_items"].eq(1).all()
    # the file's columns average to the reported metrics
    for name in ("hr@5", "ndcg@3", "mrr", "popularity@5", "novelty@3", "diversity@5"):
        assert per_user[name].mean() == pytest.approx(metrics[name], rel=1e-12), name
    first = activity["bins"][0]
    mine = per_user[per_user["train_interactions"] <= activity["edges"][1]]
    assert first["users"] == len(mine)
    assert first["hr@5"] == pytest.approx(mine["hr@5"].mean())


def test_terminal_output_and_csv(featured, tmp_path, capsys):
    code, out, err = evaluate(capsys, featured, "--per-user", tmp_path / "u.csv")
    assert code == 0, err
    assert "beyond accuracy of the top-K lists (catalogue 40 items" in out
    assert "coverage" in out and "Gini" in out and "novelty" in out and "diversity" in out
    assert "by user activity (training interactions per user; quartile edges" in out
    assert "by popularity of the held-out item" in out
    frame = pd.read_csv(tmp_path / "u.csv")
    assert len(frame) == 40 and frame["userId"].str.startswith("u").all()


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--per-user", "u.txt"], "--per-user u.txt: name the file with one of .csv"),
        (["--per-user", "u.csv", "--protocol", "sampled"], "--per-user needs --train and"),
    ],
)
def test_per_user_errors(featured, tmp_path, capsys, flags, fragment, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = evaluate(capsys, featured, *flags)
    assert code == 2 and err.startswith("error: ") and fragment in err
    assert "Traceback" not in err
    assert not (tmp_path / "u.csv").exists()
