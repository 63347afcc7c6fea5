"""hybridrec report: several models on one split, report.md and its PNGs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import hybridrec
from hybridrec import TrainConfig
from hybridrec.cli import main
from hybridrec.report.evaluate import label_models, popularity_groups, popularity_shares
from hybridrec.report.markdown import table

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """Train/test files (each user's latest positive held out) and two tiny saved models."""
    root = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    rows = []
    for u in range(1, 61):  # 4 to 7 training items per user, in its group's 10 items
        items = rng.choice(10, 5 + u % 4, replace=False) + 1 + (u % 4) * 10
        rows += [(u, int(i), t) for t, i in enumerate(items)]
    frame = pd.DataFrame(rows, columns=["userId", "itemId", "timestamp"])
    latest = frame["timestamp"] == frame.groupby("userId")["timestamp"].transform("max")
    frame[~latest].to_csv(root / "train.csv", index=False)
    frame[latest].to_csv(root / "test.csv", index=False)
    config = TrainConfig(epochs=2, batch_size=32, device="cpu")
    for name, options in (("mf", {"embedding_dim": 8}), ("popularity", {})):
        hybridrec.train(root / "train.csv", None, out=root / name, model=name,
                        model_options=options, train_config=config)  # fmt: skip
    return root


def call(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_report_writes_markdown_and_pngs(split, tmp_path, capsys):
    out = tmp_path / "report"
    code, stdout, err = call(capsys, "report", "--models", split / "mf", split / "popularity",
                             "--train", split / "train.csv", "--test", split / "test.csv",
                             "--out", out, "--no-progress")  # fmt: skip
    assert code == 0, err
    names = ["report.md", "accuracy_at_k.png", "user_activity.png", "popularity.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    for png in names[1:]:
        data = (out / png).read_bytes()
        assert data[:8] == PNG and len(data) > 1000
    text = (out / "report.md").read_text()
    assert text.startswith("# hybridrec report\n")
    for heading in ("## Accuracy", "## Beyond accuracy (top 10)", "## By user activity",
                    "## Recommended-item popularity (top 10)"):  # fmt: skip
        assert heading in text
    header = next(line for line in text.splitlines() if line.startswith("| model | type"))
    assert [f"HR@{k}" in header for k in (1, 5, 10, 20, 50)] == [True] * 5
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines()
            if line.startswith(("| mf |", "| popularity |"))}  # fmt: skip
    assert set(rows) == {"mf", "popularity"}
    assert "| mf | mf | 60 |" in text and "| popularity | popularity | 60 |" in text
    for png in names[1:]:
        assert f"]({png})" in text  # the plots are linked from the report
    assert "mf: HR@10" in stdout and "popularity: HR@10" in stdout
    # the same numbers as evaluate's full protocol
    files = ["--train", split / "train.csv", "--test", split / "test.csv"]
    code, js, _ = call(capsys, "evaluate", "--model", split / "mf", *files, "--k", "10", "--json")
    hr = json.loads(js)["hr@10"]
    assert f"mf: HR@10 {hr:.4f}" in stdout


def test_report_mistakes_exit_2(split, tmp_path, capsys):
    base = ["report", "--train", split / "train.csv", "--test", split / "test.csv"]
    file = tmp_path / "file"
    file.write_text("x")
    cases = [
        ([*base, "--models", tmp_path / "nope", "--out", tmp_path / "r"], "nope"),
        ([*base, "--models", split / "mf", "--out", file], "is a file; give a directory"),
        ([*base, "--models", split / "mf", split / "mf", "--out", tmp_path / "r"], "twice"),
        ([*base, "--models", split / "mf", f"{split / 'mf'}/", "--out", tmp_path / "r"], "twice"),
        ([*base, "--models", split / "mf", "--out", tmp_path / "r", "--k", "0"], "positive"),
    ]
    strangers = tmp_path / "strangers.csv"  # printed NaN metrics with exit status 0
    strangers.write_text("userId,itemId\n9001,1\n9002,2\n")
    cases.append(
        (["report", "--train", split / "train.csv", "--test", strangers, "--models",
          split / "mf", "--out", tmp_path / "r"], "names no user the model")
    )  # fmt: skip
    for argv, message in cases:
        code, _, err = call(capsys, *argv)
        assert code == 2 and message in err, (argv, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_popularity_shares_hand_computed():
    counts = torch.tensor([0, 5, 1, 3, 0, 1])  # items 1..5; groups of 1 item each
    assert popularity_groups(counts).tolist() == [-1, 0, 2, 1, 4, 3]
    top = torch.tensor([[1, 3], [1, -1]])
    training, recommended = popularity_shares(counts, top)
    assert training == pytest.approx([0.5, 0.3, 0.1, 0.1, 0.0])
    assert recommended == pytest.approx([2 / 3, 1 / 3, 0.0, 0.0, 0.0])


def test_labels_and_table():
    assert label_models(["a/model", "b/model", "c"]) == ["a/model", "b/model", "c"]
    assert label_models(["runs/mf", "runs/hybrid"]) == ["mf", "hybrid"]
    assert table(["m", "x"], [["a|b", float("nan")]]).splitlines()[-1] == "| a\\|b | - |"


def test_main_k():
    from hybridrec.report import main_k

    assert main_k([1, 5, 10]) == 10 and main_k([1, 5, 20]) == 5


def test_models_with_other_id_maps_are_refused_not_mislabelled(split, tmp_path, capsys):
    """A model trained on part of the items counts the users' training interactions
    differently: the activity plot crashed (a traceback) or the table mislabelled its rows."""
    train = pd.read_csv(split / "train.csv")
    part = tmp_path / "part.csv"
    train[train.itemId <= 15].to_csv(part, index=False)
    hybridrec.train(part, None, out=tmp_path / "sub", model="mf",
                    model_options={"embedding_dim": 8},
                    train_config=TrainConfig(epochs=1, batch_size=32, device="cpu"))  # fmt: skip
    code, _, err = call(capsys, "report", "--models", split / "mf", tmp_path / "sub",
                        "--train", split / "train.csv", "--test", split / "test.csv",
                        "--out", tmp_path / "r", "--no-progress")  # fmt: skip
    assert code == 2 and "report them separately" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
