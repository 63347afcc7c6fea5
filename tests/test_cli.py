"""hybridrec.cli: the ``hybridrec`` command line (train, evaluate, split, data, demo), called
in-process through ``cli.main``."""

from __future__ import annotations

import json
import math
import os
import re
import sys
import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import hybridrec
import hybridrec.cli
from hybridrec import TrainConfig
from hybridrec.cli import build_parser, config_from_args, main
from hybridrec.data import movielens
from hybridrec.data.dataset import RecSysDataset
from hybridrec.evaluation import evaluate_full
from hybridrec.events import EventLog
from hybridrec.prepare import load_data
from tests.helpers import holdout_frame

#: Tiny, fast, hardware-independent training flags (defaults are for real data sizes).
FAST = [
    "--batch-size", "128", "--lr", "0.01", "--embedding-dim", "8", "--mlp-layers", "16,8",
    "--device", "cpu", "--no-progress",
]  # fmt: skip


#: The ranking tests' flags: smaller batches and a brisker rate, for the planted groups.
FAST_RANKING = [
    "--batch-size", "64", "--lr", "0.02", "--embedding-dim", "8", "--mlp-layers", "16,8",
    "--device", "cpu", "--no-progress",
]  # fmt: skip


MODEL_NAMES = ("hybrid", "mf", "gmf", "mlp", "neumf", "popularity", "sasrec")


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """Run in tmp_path, never touch the real download cache, and undo the CLI's global
    ``warnings.showwarning`` override."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYBRIDREC_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)


def call(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, *fragments):
    assert code == 2
    assert err.startswith("error: ") or "\nerror: " in err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


# ---------------------------------------------------------------- train, evaluate, demo and help


@pytest.fixture
def trained_model(synthetic_data, tmp_path, capsys):
    train_csv, val_csv = synthetic_data
    code, _, _ = call(
        capsys, "train", "--train", str(train_csv), "--val", str(val_csv), "--out", "m",
        "--epochs", "1", "--json", *FAST,
    )  # fmt: skip
    assert code == 0
    return tmp_path / "m"


def test_a_reader_closing_the_pipe_stops_the_command_quietly(trained_model):
    """``hybridrec info | true``: the write fails with EPIPE; no traceback, the exit
    status a command killed by SIGPIPE has (128 + 13), as ``cat`` gives."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    reader, writer = os.pipe()
    os.close(reader)  # nobody will read
    try:
        done = subprocess.run(
            [sys.executable, "-m", "hybridrec", "info", "--model", str(trained_model)],
            stdout=writer, stderr=subprocess.PIPE, text=True, timeout=120, env=env,
        )  # fmt: skip
    finally:
        os.close(writer)
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    assert done.returncode == 141, done.stderr


def test_train_json(synthetic_data, tmp_path, capsys):
    train_csv, val_csv = synthetic_data
    code, out, _ = call(
        capsys, "train", "--train", str(train_csv), "--val", str(val_csv), "--out", "model",
        "--epochs", "2", "--json", *FAST,
    )  # fmt: skip
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 1  # one JSON object, nothing else on stdout
    summary = json.loads(lines[0])
    for key in ("val_loss", "val_accuracy", "val_auc", "samples_per_second"):
        assert isinstance(summary[key], float), key
    assert summary["epochs"] == 2
    assert 0.0 <= summary["val_auc"] <= 1.0
    assert summary["samples_per_second"] > 0
    assert summary["val_rows"] == len(pd.read_csv(val_csv))
    assert (tmp_path / "model" / "config.json").is_file()


def test_train_table_output(synthetic_data, capsys):
    train_csv, _ = synthetic_data
    code, out, _ = call(capsys, "train", "--train", str(train_csv), "--epochs", "1", *FAST)
    assert code == 0
    assert "samples/s" in out and "kept epoch 1 of 1" in out
    assert "saved to model/" in out
    assert "val_auc" not in out  # no validation file, no validation table


def test_evaluate_json_counts_unknown_ids(trained_model, synthetic_data, tiny_csv, capsys):
    train = pd.read_csv(synthetic_data[0])
    u, i = train["userId"].iloc[0], train["itemId"].iloc[0]
    rows = pd.DataFrame(
        {
            "userId": [u, u, 10**6, 10**6, 10**6 + 1],
            "itemId": [i, 10**7, i, 10**7, i],
            "target": [1, 0, 1, 0, 0],
        }
    )
    path = tiny_csv(rows, "eval.csv")
    code, out, err = call(
        capsys, "evaluate", "--model", str(trained_model), "--data", str(path), "--json"
    )
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["rows"] == 5
    assert metrics["rows_with_unknown"] == 4
    assert metrics["unknown_users"] == 2
    assert metrics["unknown_items"] == 1
    assert 0.0 < metrics["loss"]
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert 0.0 <= metrics["auc"] <= 1.0


def test_evaluate_table_describes_unknowns(trained_model, tiny_csv, capsys):
    path = tiny_csv({"userId": [10**6, 10**6], "itemId": [10**7, 1], "target": [1, 0]}, "new.csv")
    code, out, _ = call(capsys, "evaluate", "--model", str(trained_model), "--data", str(path))
    assert code == 0
    assert "new.csv: 2 of 2 rows with 1 unknown users and 1 unknown items" in out
    assert "auc" in out


def test_evaluate_one_class_prints_null_auc(trained_model, tiny_csv, capsys):
    """AUC is undefined with one class; JSON has no NaN, so it must come out as null."""
    path = tiny_csv({"userId": [1, 2], "itemId": [1, 2], "target": [1, 1]}, "pos.csv")
    code, out, _ = call(
        capsys, "evaluate", "--model", str(trained_model), "--data", str(path), "--json"
    )
    assert code == 0
    assert "NaN" not in out
    assert json.loads(out)["auc"] is None
    code, out, _ = call(capsys, "evaluate", "--model", str(trained_model), "--data", str(path))
    assert code == 0 and "auc: undefined, the scored rows are all of one label" in out


def test_missing_train_file(capsys):
    code, out, err = call(capsys, "train", "--train", "missing.csv", "--epochs", "1", *FAST)
    assert_user_error(code, err, "missing.csv: file not found")
    assert out == ""


def test_bad_column(synthetic_data, capsys):
    code, _, err = call(
        capsys,
        "train",
        "--train",
        str(synthetic_data[0]),
        "--user-col",
        "uid",
        "--epochs",
        "1",
        *FAST,
    )
    assert_user_error(code, err, "missing column(s) 'uid'", "'userId'")


def test_bad_target_row(tiny_csv, capsys):
    path = tiny_csv("userId,itemId,target\n1,2,1\n2,3,5\n", "ratings.csv")
    code, _, err = call(capsys, "train", "--train", str(path), "--epochs", "1", *FAST)
    assert_user_error(code, err, "ratings.csv, row 2", "column 'target'", "'5'", "--threshold")


def test_threshold_flag(tiny_csv, tmp_path, capsys):
    path = tiny_csv("userId,itemId,target\n1,2,5\n2,3,1\n1,3,2\n2,2,4\n", "ratings.csv")
    code, _, err = call(
        capsys, "train", "--train", str(path), "--threshold", "4", "--epochs", "1", *FAST
    )
    assert code == 0, err
    assert (tmp_path / "model" / "config.json").is_file()


def test_evaluate_missing_model(tiny_csv, capsys):
    path = tiny_csv({"userId": [1], "itemId": [2], "target": [1]})
    code, _, err = call(capsys, "evaluate", "--model", "no-model", "--data", str(path))
    assert_user_error(code, err, "no model directory at no-model")


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--embedding-dim", "0"], "--embedding-dim"),
        (["--dropout", "1.5"], "--dropout"),
        (["--device", "toaster"], "--device"),
    ],
)
def test_bad_option_values(synthetic_data, capsys, flags, fragment):
    code, _, err = call(capsys, "train", "--train", str(synthetic_data[0]), *FAST, *flags)
    assert_user_error(code, err, fragment)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["train", "--train", "t.csv", "--seed", "-1"], "argument --seed"),
        (["train", "--train", "t.csv", "--seed", str(2**64)], "from 0 to 2^63-1"),
        (["split", "--data", "t.csv", "--out", "s", "--seed", "-1"], "argument --seed"),
        (["evaluate", "--model", "m", "--seed", "-2"], "argument --seed"),
        (["update", "--model", "m", "--train", "t.csv", "--out", "u", "--seed", "-1"], "--seed"),
        (["tune", "--train", "t.csv", "--sampler-seed", "-1"], "argument --sampler-seed"),
        (["demo", "--users", "0"], "argument --users: expected a count of at least 1"),
        (["demo", "--positives", "-5"], "argument --positives"),
        (["train", "--train", "t.csv", "--mlp-layers", "4,,8"], "expected sizes"),
        (["train", "--train", "t.csv", "--k", "5,,10"], "expected sizes"),
        (["train", "--train", "t.csv", "--k", "1_0"], "expected sizes"),
        (["train", "--train", "t.csv", "--epochs", "1_0"], "expected an integer"),
        (["recommend", "--model", "m", "--all", "--output", "r.csv", "--k", "\u0663"], "--k"),
        (["serve", "--model", "m", "--port", " 80"], "expected an integer"),
    ],
)
def test_integers_are_plain_digits_and_seeds_not_negative(capsys, argv, fragment):
    """int() reads '1_0', ' 80' and other scripts' digits, and '4,,8' lost a size; NumPy's
    generators refuse a negative seed with a traceback: argparse errors now, exit 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_a_validation_file_of_strangers_is_refused_before_training(ranking_files, tmp_path,
                                                                  capsys):  # fmt: skip
    val = pd.read_csv(ranking_files["val"])
    val.assign(userId=val.userId + 1000).to_csv(tmp_path / "strangers.csv", index=False)
    code, _, err = call(capsys, "train", "--train", ranking_files["train"], "--val",
                        tmp_path / "strangers.csv", "--out", "m", *FAST)  # fmt: skip
    assert_user_error(code, err, "strangers.csv", "nothing to validate on")
    assert "epoch 1" not in err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["split", "--data", "t.csv", "--out", "s", "--method", "loo", "--test-fraction", "0.3"],
         "--test-fraction does not apply to --method loo"),
        (["info", "--model", "t.csv"], "t.csv is a file, not a model directory"),
        (["tune", "--train", "t.csv", "--study-name", " "], "--study-name must not be blank"),
        (["tune", "--train", "t.csv", "--storage", ""], "--storage must not be blank"),
        (["split", "--data", "t.csv", "--out", "s", "--method", "cold-items",
          "--test-fraction", "0.01"], "held out no row for test"),
        (["tune", "--train", "t.csv", "--storage", "sqlite:///log.db"], "something else"),
    ],
)  # fmt: skip
def test_options_that_would_be_ignored_or_misread_are_named(tmp_path, capsys, argv, fragment):
    (tmp_path / "t.csv").write_text("userId,itemId\n1,2\n")
    EventLog(tmp_path / "log.db").close()  # an event log: not a study's storage
    code, _, err = call(capsys, *argv)
    assert_user_error(code, err, fragment)


def test_an_empty_input_path_is_named_as_such(capsys):
    code, _, err = call(capsys, "train", "--train", "", "--out", "m")
    assert_user_error(code, err, "the path is empty or '.'")
    assert not err.startswith("error: :")


def test_a_sequence_model_without_histories_says_the_holdout_took_them(tmp_path, capsys):
    """One user with two positives: the automatic holdout leaves everyone one, and the
    error says so (and how to train on every row) instead of blaming the file alone."""
    data = tmp_path / "t.csv"
    data.write_text("userId,itemId\n1,2\n1,3\n2,3\n3,1\n")
    code, _, err = call(capsys, "train", "--train", str(data), "--model", "sasrec", "--epochs", "1")
    assert_user_error(code, err, "at least two positive interactions", "--val none")


def test_unparseable_option_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--train", "x.csv", "--mlp-layers", "a,b"])
    assert info.value.code == 2
    assert "expected sizes like 64,32,16" in capsys.readouterr().err


def test_demo(tmp_path, capsys):
    code, out, err = call(
        capsys, "demo", "--out", "demo", "--users", "200", "--items", "100",
        "--positives", "3000", "--epochs", "2", "--json", *FAST,
        "--batch-size", "32", "--lr", "0.02",  # later flags win: more steps for 2 epochs
    )  # fmt: skip
    assert code == 0, err
    for name in ("train.csv", "val.csv", "model/config.json"):
        assert (tmp_path / "demo" / name).is_file(), name
    report = json.loads(out)
    assert report["model"]["auc"] > report["popularity"]["auc"]
    assert report["model"]["auc"] == report["val_auc"]
    assert report["model_dir"] == "demo/model"
    # info knows how the model was made (it said "saved before hybridrec recorded
    # configurations")
    code, out, err = call(capsys, "info", "--model", "demo/model")
    assert code == 0 and "hybridrec demo --config FILE" in out and "users = 200" in out


def test_main_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "evaluate", "demo"):
        assert command in out


def test_train_help_lists_options(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--epochs", "--batch-size", "--lr", "--embedding-dim", "--mlp-layers", "--dropout",
        "--seed", "--device", "--threads", "--user-col", "--threshold",
    ):  # fmt: skip
        assert flag in out, flag
    assert "(default: 64,32,16)" in out  # tuple defaults are shown comma-separated


def test_no_command_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


# ---------------------------------------------------------------- ranking data


def rows(path, columns=("userId", "itemId", "timestamp")):
    """The rows of a CSV as a sorted list of tuples of the given columns."""
    frame = pd.read_csv(path)
    return sorted(map(tuple, frame[list(columns)].to_numpy().tolist()))


def interactions(seed=0, num_users=12, per_user=5, num_items=30):
    """Positives with distinct timestamps: ``userId, itemId, timestamp``."""
    rng = np.random.default_rng(seed)
    records = []
    for user in range(1, num_users + 1):
        items = rng.choice(np.arange(1, num_items + 1), per_user, replace=False)
        stamps = rng.choice(10_000, per_user, replace=False) + 1_000_000
        records += [(user, int(i), int(t)) for i, t in zip(items, stamps, strict=True)]
    return pd.DataFrame(records, columns=["userId", "itemId", "timestamp"])


@pytest.fixture(scope="module")
def ranking_files(tmp_path_factory):
    """Positives-only ``train.csv``, ``val.csv``, ``test.csv`` with planted groups: 40 users,
    40 items in 4 groups; each user likes 7 items of their own group, one held out for val and
    one for test."""
    directory = tmp_path_factory.mktemp("ranking")
    rng = np.random.default_rng(0)
    parts = {"train": [], "val": [], "test": []}
    for user in range(40):
        group = user % 4
        liked = group * 10 + rng.choice(10, 7, replace=False) + 1
        parts["train"] += [(user + 1, int(i)) for i in liked[:-2]]
        parts["val"].append((user + 1, int(liked[-2])))
        parts["test"].append((user + 1, int(liked[-1])))
    paths = {}
    for name, records in parts.items():
        paths[name] = directory / f"{name}.csv"
        pd.DataFrame(records, columns=["userId", "itemId"]).to_csv(paths[name], index=False)
    return paths


@pytest.fixture(scope="module")
def model_dir(ranking_files, tmp_path_factory):
    """A small hybrid model trained on ``ranking_files`` and saved."""
    out = tmp_path_factory.mktemp("model") / "m"
    hybridrec.train(
        ranking_files["train"],
        ranking_files["val"],
        out=out,
        model_options={"embedding_dim": 8, "mlp_layer_sizes": (16, 8)},
        train_config=TrainConfig(epochs=5, batch_size=64, learning_rate=0.02, device="cpu"),
    )
    return out


def udata_text(frame, ratings):
    return "".join(
        f"{u}\t{i}\t{r}\t{t}\n"
        for (u, i, t), r in zip(frame.to_numpy().tolist(), ratings, strict=True)
    )


# ---------------------------------------------------------------- split


def test_split_loo_partitions_and_holds_out_the_latest(tmp_path, capsys):
    frame = interactions()
    frame.to_csv(tmp_path / "all.csv", index=False)
    code, out, err = call(capsys, "split", "--data", "all.csv", "--out", "parts", "--method", "loo")
    assert code == 0, err
    paths = [tmp_path / "parts" / f"{name}.csv" for name in ("train", "val", "test")]
    for path in paths:
        assert path.is_file()
        assert str(path.relative_to(tmp_path)) in out
    train, val, test = (pd.read_csv(p) for p in paths)
    together = sorted(rows(paths[0]) + rows(paths[1]) + rows(paths[2]))
    assert together == rows(tmp_path / "all.csv")  # every input row exactly once
    assert len(test) == len(val) == 12  # one per user each
    latest = frame.sort_values("timestamp").groupby("userId").tail(1)
    assert rows(paths[2]) == sorted(map(tuple, latest.to_numpy().tolist()))
    # val holds each user's latest row among what test left
    rest = frame.drop(latest.index)
    second = rest.sort_values("timestamp").groupby("userId").tail(1)
    assert rows(paths[1]) == sorted(map(tuple, second.to_numpy().tolist()))
    assert set(train["target"]) == {1}


def test_split_ratio_half(tmp_path, capsys):
    frame = interactions(seed=1, per_user=6)
    frame.to_csv(tmp_path / "all.csv", index=False)
    code, _, err = call(
        capsys, "split", "--data", "all.csv", "--out", "parts", "--method", "ratio",
        "--test-fraction", "0.5", "--seed", "3",
    )  # fmt: skip
    assert code == 0, err
    paths = [tmp_path / "parts" / f"{name}.csv" for name in ("train", "val", "test")]
    assert sorted(rows(paths[0]) + rows(paths[1]) + rows(paths[2])) == rows(tmp_path / "all.csv")
    train, val, test = (pd.read_csv(p) for p in paths)
    # half of each user's 6 rows to test, then half of the remaining 3 (floored) to val
    assert test.groupby("userId").size().eq(3).all() and len(test) == 36
    assert val.groupby("userId").size().eq(1).all() and len(val) == 12
    assert train.groupby("userId").size().eq(2).all() and len(train) == 24


def test_split_loo_without_timestamps_is_a_user_error(tmp_path, capsys):
    interactions()[["userId", "itemId"]].to_csv(tmp_path / "plain.csv", index=False)
    code, out, err = call(capsys, "split", "--data", "plain.csv", "--out", "parts")  # loo default
    assert_user_error(code, err, "plain.csv", "timestamp", "--method loo-random")
    assert out == ""
    assert not (tmp_path / "parts").exists()


def test_split_movielens_udata(tmp_path, capsys):
    frame = interactions(seed=2)
    (tmp_path / "u.data").write_text(udata_text(frame, [1 + k % 5 for k in range(len(frame))]))
    code, _, err = call(
        capsys, "split", "--data", "u.data", "--movielens", "--out", "ml", "--method", "loo"
    )
    assert code == 0, err
    paths = [tmp_path / "ml" / f"{name}.csv" for name in ("train", "val", "test")]
    assert sorted(rows(paths[0]) + rows(paths[1]) + rows(paths[2])) == sorted(
        map(tuple, frame.to_numpy().tolist())
    )
    for path in paths:
        assert set(pd.read_csv(path)["target"]) == {1}  # every rating is a positive


def test_split_movielens_threshold_labels_ratings_as_it_does_any_file(tmp_path, capsys):
    """--threshold turns ratings into 0/1 labels (it dropped the low ones from MovieLens
    files only, while a CSV of ratings kept them as 0 rows)."""
    frame = interactions(seed=2)
    ratings = [1 + k % 5 for k in range(len(frame))]
    (tmp_path / "u.data").write_text(udata_text(frame, ratings))
    code, _, err = call(
        capsys, "split", "--data", "u.data", "--movielens", "--threshold", "4", "--out", "ml",
        "--method", "ratio", "--test-fraction", "0.5",
    )  # fmt: skip
    assert code == 0, err
    parts = pd.concat([pd.read_csv(tmp_path / "ml" / f"{n}.csv") for n in ("train", "val", "test")])
    assert len(parts) == len(frame)
    assert int(parts["target"].sum()) == sum(r >= 4 for r in ratings)
    assert set(parts["target"]) == {0, 1}
    # the written labels are read without --threshold (with it, every 0/1 is below 4)
    assert "0/1 labels in a column named 'target'" in err and "without" in err


# ---------------------------------------------------------------- data


def test_data_from_a_local_file(tmp_path, capsys):
    frame = interactions(seed=3)
    (tmp_path / "u.data").write_text(udata_text(frame, [4] * len(frame)))
    code, out, err = call(capsys, "data", "movielens-100k", "--data", "u.data", "--out", "ml100k")
    assert code == 0, err
    for name in ("interactions.csv", "train.csv", "val.csv", "test.csv"):
        assert (tmp_path / "ml100k" / name).is_file(), name
        assert name in out
    assert rows(tmp_path / "ml100k" / "interactions.csv") == sorted(
        map(tuple, frame.to_numpy().tolist())
    )
    parts = [tmp_path / "ml100k" / f"{n}.csv" for n in ("train", "val", "test")]
    assert sorted(sum((rows(p) for p in parts), [])) == rows(
        tmp_path / "ml100k" / "interactions.csv"
    )
    assert len(pd.read_csv(parts[2])) == 12  # loo by default: one test row per user
    assert not (tmp_path / "cache").exists()  # a local file needs no cache


def test_data_refuses_a_split_it_cannot_make_and_names_its_own_option(tmp_path, capsys):
    # an atomic file without timestamps: loo needs them, and `data`'s option is --split
    lines = ["user_id:token\titem_id:token"] + [f"{u}\t{i}" for u in (1, 2) for i in (1, 2)]
    (tmp_path / "x.inter").write_text("\n".join(lines) + "\n")
    code, out, err = call(capsys, "data", "movielens-100k", "--data", "x.inter", "--out", "d")
    assert_user_error(code, err, "timestamp", "--split loo-random")
    assert "--method" not in err and not (tmp_path / "d").exists()
    # every user with one interaction: nothing to test on, and nothing written
    (tmp_path / "u.data").write_text("1\t1\t5\t100\n2\t2\t4\t101\n")
    code, out, err = call(capsys, "data", "movielens-100k", "--data", "u.data", "--out", "e")
    assert_user_error(code, err, "--split loo held out no row for test from 2 rows")
    assert not (tmp_path / "e").exists()


def test_data_and_demo_check_everything_before_writing(tmp_path, capsys):
    """`data` wrote its split into a saved model's folder; `demo` wrote its data over the
    user's train.csv and only then refused a bad option or a model path that is a file."""
    frame = interactions(seed=3)
    (tmp_path / "u.data").write_text(udata_text(frame, [4] * len(frame)))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"sha256": {}}))  # a model
    code, out, err = call(capsys, "data", "movielens-100k", "--data", "u.data", "--out", "m")
    assert_user_error(code, err, "model directory")
    assert not (tmp_path / "m" / "train.csv").exists()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.csv").write_text("my data\n")
    code, out, err = call(capsys, "demo", "--out", "d", *FAST, "--embedding-dim", "0")
    assert_user_error(code, err, "--embedding-dim")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "model").write_text("a file")
    code, out, err = call(capsys, "demo", "--out", "e", *FAST)
    assert_user_error(code, err, "is a file")
    assert (tmp_path / "d" / "train.csv").read_text() == "my data\n"
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["model"]


def test_data_min_rating(tmp_path, capsys):
    frame = interactions(seed=3)
    ratings = [1 + k % 5 for k in range(len(frame))]
    (tmp_path / "u.data").write_text(udata_text(frame, ratings))
    code, _, err = call(
        capsys, "data", "movielens-100k", "--data", "u.data", "--min-rating", "3", "--out", "d"
    )
    assert code == 0, err
    assert len(pd.read_csv(tmp_path / "d" / "interactions.csv")) == sum(r >= 3 for r in ratings)
    code, _, err = call(
        capsys, "data", "movielens-100k", "--data", "u.data", "--min-rating", "nan", "--out", "e"
    )
    assert_user_error(code, err, "min_rating must be a finite number")


@pytest.fixture
def offline(monkeypatch):
    """No network: every download fails as a DNS failure would. Returns the URLs tried."""
    tried = []

    def refuse(url, dest, timeout):
        tried.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(movielens, "_download", refuse)
    return tried


@pytest.mark.parametrize("cache", [None, "mycache"])
def test_data_offline_without_a_local_file(tmp_path, capsys, offline, cache):
    argv = ["data", "movielens-100k", "--out", "ml"]
    if cache:
        argv += ["--cache", cache]
    code, out, err = call(capsys, *argv)
    assert_user_error(code, err, "could not download movielens-100k", "--data")
    assert "Temporary failure in name resolution" in err
    assert offline == [movielens.DATASETS["movielens-100k"][0]]
    assert out == ""
    assert not (tmp_path / "ml").exists()


# ---------------------------------------------------------------- train: ranking options


def test_train_neumf_implicit_json(ranking_files, tmp_path, capsys):
    code, out, err = call(
        capsys, "train", "--train", ranking_files["train"], "--val", ranking_files["val"],
        "--out", "neumf", "--model", "neumf", "--negatives", "2", "--loss", "bce",
        "--early-stop", "ndcg@10", "--patience", "2", "--epochs", "3", "--json", *FAST_RANKING,
    )  # fmt: skip
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert 1 <= summary["epochs"] <= 3
    assert 1 <= summary["best_epoch"] <= summary["epochs"]
    for key in ("val_hr@10", "val_ndcg@10", "val_mrr", "val_ranking_auc"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert summary["val_auc"] is None  # positives-only validation has no pointwise AUC
    assert math.isfinite(summary["train_loss"])
    assert (tmp_path / "neumf" / "config.json").is_file()
    assert (tmp_path / "neumf" / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "neumf" / "config.json").read_text())
    assert saved["model"] == "neumf"
    assert saved["settings"]["train"]["negatives"] == 2
    assert saved["settings"]["train"]["early_stop"] == "ndcg@10"
    metrics = json.loads((tmp_path / "neumf" / "metrics.json").read_text())
    kept = metrics["history"][summary["best_epoch"] - 1]
    assert kept["ranking"]["hr@10"] == summary["val_hr@10"]
    assert max(e["ranking"]["ndcg@10"] for e in metrics["history"]) == summary["val_ndcg@10"]


def test_train_popularity(ranking_files, tmp_path, capsys):
    code, out, err = call(
        capsys, "train", "--train", ranking_files["train"], "--val", ranking_files["val"],
        "--out", "pop", "--model", "popularity", "--json", "--device", "cpu", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["best_epoch"] == 0 and summary["epochs"] == 1
    assert 0.0 <= summary["val_hr@10"] <= 1.0
    assert json.loads((tmp_path / "pop" / "config.json").read_text())["model"] == "popularity"


def test_train_bpr_with_cut_offs(ranking_files, tmp_path, capsys):
    code, out, err = call(
        capsys, "train", "--train", ranking_files["train"], "--val", ranking_files["val"],
        "--out", "bpr", "--model", "mf", "--loss", "bpr", "--sampling", "popularity",
        "--k", "5,20", "--epochs", "2", "--json", *FAST_RANKING,
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["epochs"] == 2 and summary["best_epoch"] == 2
    assert math.isfinite(summary["train_loss"]) and summary["train_loss"] > 0
    assert {"val_hr@5", "val_hr@20", "val_ndcg@20"} <= set(summary)
    assert "val_hr@10" not in summary
    assert summary["val_hr@5"] <= summary["val_hr@20"]
    saved = json.loads((tmp_path / "bpr" / "config.json").read_text())["settings"]["train"]
    assert (saved["loss"], saved["sampling"], saved["ks"]) == ("bpr", "popularity", [5, 20])


def test_train_human_output_shows_full_ranking(ranking_files, capsys):
    code, out, err = call(
        capsys, "train", "--train", ranking_files["train"], "--val", ranking_files["val"],
        "--epochs", "1", *FAST_RANKING,
    )  # fmt: skip
    assert code == 0, err
    assert "full ranking" in out and "HR@10" in out
    assert "kept epoch 1 of 1" in out
    assert "val_auc" not in out  # no labelled rows, no pointwise table


def test_train_items_catalogue(ranking_files, tmp_path, capsys):
    pd.DataFrame({"itemId": [*range(1, 41), 77]}).to_csv(tmp_path / "items.csv", index=False)
    code, _, err = call(
        capsys, "train", "--train", ranking_files["train"], "--items", "items.csv",
        "--out", "cat", "--epochs", "1", *FAST_RANKING,
    )  # fmt: skip
    assert code == 0, err
    loaded = hybridrec.load(tmp_path / "cat")
    assert loaded.items.transform([77])[0] != 0
    pd.DataFrame({"userId": [1], "itemId": [77]}).to_csv(tmp_path / "new.csv", index=False)
    code, out, err = call(
        capsys, "evaluate", "--model", "cat", "--train", ranking_files["train"],
        "--test", "new.csv", "--json",
    )  # fmt: skip
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["unknown_test_items"] == 0 and metrics["users"] == 1


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--loss", "hinge"], "--loss must be one of auto, bce, bpr, ce"),
        (["--negatives", "0"], "--negatives"),
        (["--sampling", "zipf"], "--sampling"),
        (["--patience", "0"], "--patience"),
        (["--k", "0"], "--k"),
        (["--early-stop", "ndcg"], "--early-stop"),
    ],
)
def test_train_bad_implicit_options(ranking_files, capsys, flags, fragment):
    code, out, err = call(
        capsys, "train", "--train", ranking_files["train"], "--epochs", "1", *FAST_RANKING, *flags
    )
    assert_user_error(code, err, fragment)
    assert out == ""


def test_train_early_stop_without_val_is_a_user_error(ranking_files, capsys):
    # without --val the holdout supplies validation data; --val none takes it away
    code, _, err = call(
        capsys, "train", "--train", ranking_files["train"], "--val", "none",
        "--early-stop", "ndcg@10", "--epochs", "2", *FAST_RANKING,
    )  # fmt: skip
    assert_user_error(code, err, "--early-stop")


def test_train_help_lists_the_ranking_options(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--loss", "--negatives", "--sampling", "--early-stop", "--patience", "--k",
                 "--items"):  # fmt: skip
        assert re.search(rf"(^|\s){re.escape(flag)}\b", out), flag
    choices = re.search(r"--model \{([^}]*)\}", out)
    assert choices is not None
    assert set(choices.group(1).split(",")) == set(MODEL_NAMES)


# ---------------------------------------------------------------- evaluate: both protocols


def reference_full(model_dir, ranking_files, ks):
    rec = hybridrec.load(model_dir)
    config = hybridrec.DataConfig()
    train, _ = RecSysDataset.from_frame(
        load_data(ranking_files["train"], config), rec.users, rec.items
    )
    test, _ = RecSysDataset.from_frame(
        load_data(ranking_files["test"], config), rec.users, rec.items
    )
    return evaluate_full(
        rec.model, train.user_idx, train.item_idx, test.user_idx, test.item_idx,
        num_items=rec.items.num_embeddings, ks=ks,
    )  # fmt: skip


def evaluate(capsys, model_dir, ranking_files, *flags):
    return call(
        capsys, "evaluate", "--model", model_dir, "--train", ranking_files["train"],
        "--test", ranking_files["test"], *flags,
    )  # fmt: skip


def test_evaluate_full_json(model_dir, ranking_files, capsys):
    code, out, err = evaluate(
        capsys, model_dir, ranking_files, "--protocol", "full", "--k", "5,10", "--json"
    )
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["protocol"] == "full"
    for key in ("hr@5", "hr@10", "ndcg@5", "ndcg@10", "mrr", "auc"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["hr@5"] <= metrics["hr@10"]
    assert metrics["users"] == 40
    reference = reference_full(model_dir, ranking_files, (5, 10))
    for key in ("hr@5", "hr@10", "ndcg@10", "mrr", "auc"):
        assert metrics[key] == reference[key], key
    assert metrics["hr@10"] > 10 / 34  # the planted groups were learned: better than random


def test_evaluate_ranks_only_the_test_files_positive_rows(model_dir, ranking_files, tmp_path,
                                                          capsys):  # fmt: skip
    """A test row labelled 0 (or below --threshold) is no held-out choice of its user: it
    was ranked as one, inflating every metric. A file with no positive, or no known user,
    is refused rather than scored NaN over nobody."""
    test = pd.read_csv(ranking_files["test"])
    labelled = test.assign(target=[1] * 20 + [0] * 20)
    labelled.to_csv(tmp_path / "labelled.csv", index=False)
    files = {**ranking_files, "test": tmp_path / "labelled.csv"}
    code, out, err = evaluate(capsys, model_dir, files, "--protocol", "full", "--json")
    assert code == 0, err
    assert json.loads(out)["users"] == 20
    labelled.assign(target=0).to_csv(tmp_path / "zero.csv", index=False)
    code, _, err = evaluate(capsys, model_dir, {**files, "test": tmp_path / "zero.csv"})
    assert_user_error(code, err, "zero.csv", "no positive rows to rank")
    test.assign(userId=test.userId + 1000).to_csv(tmp_path / "strangers.csv", index=False)
    code, _, err = evaluate(capsys, model_dir, {**files, "test": tmp_path / "strangers.csv"})
    assert_user_error(code, err, "strangers.csv", "no user the model knows")


def test_recommend_refuses_text_users_for_an_integer_model(model_dir, tmp_path, capsys):
    """'alice' can never be a user of an integer-id model: every such id got the popular
    items without a word. Integer ids written as text ("2") still find their user."""
    (tmp_path / "text.csv").write_text("userId\n1\nalice\n")
    code, _, err = call(capsys, "recommend", "--model", model_dir, "--users",
                        tmp_path / "text.csv", "--output", tmp_path / "r.csv")  # fmt: skip
    assert_user_error(code, err, "text.csv", "row 2", "'alice' is not an integer")
    (tmp_path / "quoted.csv").write_text('userId\n1\n"2"\n')
    code, out, err = call(capsys, "recommend", "--model", model_dir, "--users",
                          tmp_path / "quoted.csv", "--output", tmp_path / "r.csv")  # fmt: skip
    assert code == 0, err
    assert set(pd.read_csv(tmp_path / "r.csv")["userId"]) == {1, 2}
    (tmp_path / "twice.csv").write_text("userId\n2\n1\n2\n")  # one block per user
    twice = ["--users", tmp_path / "twice.csv", "--output", tmp_path / "r.csv", "--k", "3"]
    code, out, err = call(capsys, "recommend", "--model", model_dir, *twice)
    assert code == 0 and "1 repeated user id(s)" in err
    written = pd.read_csv(tmp_path / "r.csv")
    assert written["userId"].tolist() == [2, 2, 2, 1, 1, 1]


def test_evaluate_full_human_output(model_dir, ranking_files, capsys):
    code, out, err = evaluate(capsys, model_dir, ranking_files, "--k", "10")
    assert code == 0, err
    assert "full ranking" in out
    assert "HR@10" in out and "NDCG@10" in out and "MRR" in out
    assert "40 users" in out


def write_candidates(path, ranking_files, layout, per_user=3):
    """Negatives for each test user: items of another group the user has not seen."""
    test = pd.read_csv(ranking_files["test"])
    wide = []
    for user in test["userId"]:
        group = (user - 1) % 4
        other = (group + 1) % 4
        wide.append([user, *(other * 10 + k + 1 for k in range(per_user))])
    columns = ["userId", *(f"neg_{k + 1}" for k in range(per_user))]
    frame = pd.DataFrame(wide, columns=columns)
    if layout == "long":
        frame = frame.melt(id_vars="userId", value_name="itemId")[["userId", "itemId"]]
    frame.to_csv(path, index=False)
    return path


def test_evaluations_over_no_user_are_refused(model_dir, ranking_files, tmp_path, capsys):
    """Every metric NaN over 0 users used to be printed with status 0."""
    test = pd.read_csv(ranking_files["test"])
    test.assign(itemId=test.itemId + 9000).to_csv(tmp_path / "cold.csv", index=False)
    files = {**ranking_files, "test": tmp_path / "cold.csv"}
    code, _, err = evaluate(capsys, model_dir, files, "--protocol", "cold")
    assert_user_error(code, err, "cold.csv", "no test user could be ranked")
    pd.DataFrame({"userId": test.userId + 5000, "itemId": 1}).to_csv(
        tmp_path / "cands.csv", index=False
    )
    code, _, err = evaluate(capsys, model_dir, ranking_files, "--protocol", "sampled",
                            "--candidates", tmp_path / "cands.csv")  # fmt: skip
    assert code == 2 and "Traceback" not in err


def test_evaluate_sampled_with_candidate_files(model_dir, ranking_files, tmp_path, capsys):
    results = {}
    for layout in ("wide", "long"):
        path = write_candidates(tmp_path / f"{layout}.csv", ranking_files, layout)
        code, out, err = evaluate(
            capsys, model_dir, ranking_files, "--protocol", "sampled", "--candidates", path,
            "--k", "1,3", "--json",
        )  # fmt: skip
        assert code == 0, err
        results[layout] = json.loads(out)
    wide, long = results["wide"], results["long"]
    assert wide == long  # the same candidates in either layout give the same metrics
    assert wide["protocol"] == "sampled"
    assert wide["negatives"] == 3.0 and wide["queries"] == 40
    assert wide["unknown_candidates"] == 0
    assert wide["hr@3"] == 1.0  # with 3 negatives, the top 4 holds every test item
    assert 0.0 <= wide["hr@1"] <= 1.0 and wide["auc"] >= 0.5


def test_evaluate_sampled_human_output(model_dir, ranking_files, tmp_path, capsys):
    path = write_candidates(tmp_path / "wide.csv", ranking_files, "wide", per_user=4)
    code, out, err = evaluate(
        capsys, model_dir, ranking_files, "--protocol", "sampled", "--candidates", path
    )
    assert code == 0, err
    assert "sampled (test item vs 4 negatives)" in out


def test_evaluate_sampled_without_candidates_samples_num_negatives(
    model_dir, ranking_files, capsys
):
    code, out, err = evaluate(
        capsys, model_dir, ranking_files, "--protocol", "sampled", "--num-negatives", "7",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["protocol"] == "sampled"
    assert metrics["negatives"] == 7.0 and metrics["queries"] == 40
    code, again, _ = evaluate(
        capsys, model_dir, ranking_files, "--protocol", "sampled", "--num-negatives", "7",
        "--json",
    )  # fmt: skip
    assert json.loads(again) == metrics  # seeded: the same negatives every run


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--test", "TEST"], "--test needs --train"),
        (["--train", "TRAIN", "--test", "TEST", "--candidates", "c.csv"], "--candidates"),
        (
            ["--train", "TRAIN", "--test", "TEST", "--protocol", "full", "--candidates", "c.csv"],
            "--protocol sampled",
        ),
        ([], "--data"),
        (["--train", "TRAIN"], "--test"),
    ],
)
def test_evaluate_usage_errors(model_dir, ranking_files, capsys, flags, fragment):
    names = {"TRAIN": ranking_files["train"], "TEST": ranking_files["test"]}
    argv = [names.get(f, f) for f in flags]
    code, out, err = call(capsys, "evaluate", "--model", model_dir, *argv)
    assert_user_error(code, err, fragment)
    assert out == ""


def test_evaluate_rejects_zero_cut_off(model_dir, ranking_files, capsys):
    code, _, err = evaluate(capsys, model_dir, ranking_files, "--k", "0")
    assert_user_error(code, err, "cut-offs K must be positive")


def test_evaluate_pointwise_and_ranking_together(model_dir, ranking_files, tmp_path, capsys):
    labelled = pd.DataFrame({"userId": [1, 1, 2, 2], "itemId": [1, 21, 2, 22]})
    labelled["target"] = [1, 0, 1, 0]
    labelled.to_csv(tmp_path / "labelled.csv", index=False)
    code, out, err = evaluate(capsys, model_dir, ranking_files, "--data", "labelled.csv", "--json")
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["rows"] == 4 and metrics["protocol"] == "full"
    assert {"loss", "accuracy", "hr@10", "ndcg@10", "mrr"} <= set(metrics)
    assert torch.isfinite(torch.tensor(metrics["loss"]))


def test_evaluate_pointwise_on_a_popularity_model(ranking_files, tmp_path, capsys):
    code, _, err = call(
        capsys, "train", "--train", ranking_files["train"], "--out", "pop", "--model",
        "popularity", "--device", "cpu", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    labelled = pd.DataFrame({"userId": [1, 1], "itemId": [1, 21], "target": [1, 0]})
    labelled.to_csv(tmp_path / "labelled.csv", index=False)
    code, out, err = call(capsys, "evaluate", "--model", "pop", "--data", "labelled.csv", "--json")
    assert code == 0, err
    assert 0.0 <= json.loads(out)["auc"] <= 1.0


# ---------------------------------------------------------------- flags that reach the config


def test_cli_flags_reach_the_config():
    args = build_parser().parse_args(
        ["train", "--train", "t.csv", "--amp", "bf16", "--compile", "--checkpoint-every", "2"]
    )
    config = config_from_args(TrainConfig, args)
    assert (config.amp, config.compile, config.checkpoint_every) == ("bf16", True, 2)
    default = config_from_args(TrainConfig, build_parser().parse_args(["train", "--train", "t"]))
    assert (default.amp, default.compile, default.checkpoint_every) == ("off", False, 0)


# ---------------------------------------------------------------- no validation file: the holdout


def test_cli_without_val_reports_the_holdout(tmp_path, capsys):
    frame = holdout_frame()
    frame.to_csv(tmp_path / "train.csv", index=False)
    code = hybridrec.cli.main(
        ["train", "--train", str(tmp_path / "train.csv"), "--out", str(tmp_path / "m"),
         "--epochs", "2", "--no-progress", "--device", "cpu", "--embedding-dim", "4"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "30 rows held out (latest per user)" in out
    saved = hybridrec.load(tmp_path / "m")
    assert saved.config["settings"]["holdout"]["held_out_rows"] == 30


# ---------------------------------------------------------------- nothing done before a bad path


@pytest.fixture
def no_work(monkeypatch):
    """Make reading data, training and loading a model fail loudly: a command refused for a
    bad path or option must stop before any of them (asserted by the exit status 2)."""

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the paths and options were checked")

    import hybridrec.artifact
    import hybridrec.pipeline
    import hybridrec.prepare
    import hybridrec.recommend

    monkeypatch.setattr(hybridrec.prepare, "load_data", forbidden)
    monkeypatch.setattr(hybridrec.pipeline, "fit", forbidden)
    monkeypatch.setattr(hybridrec.recommend.Recommender, "load", forbidden)
    monkeypatch.setattr(hybridrec.artifact, "load_artifact", forbidden)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["train", "--train", "t.csv", "--out", "afile"], "--out afile is a file"),
        (["train", "--train", "t.csv", "--out", "afile/m"], "(afile is a file)"),
        (["train", "--train", "t.csv", "--out", ""], "--out must name a directory"),
        (["train", "--train", "t.csv", "--out", "."], "is the current directory"),
        (["train", "--train", "t.csv", "--out", ".."], "is the current directory or holds it"),
        (
            ["train", "--train", "t.csv", "--checkpoint-every", "1", "--checkpoint-dir", "afile"],
            "--checkpoint-dir afile is a file",
        ),
        (
            ["train", "--train", "t.csv", "--checkpoint-every", "1", "--checkpoint-dir", "afile/c"],
            "--checkpoint-dir afile/c: cannot create the directory (afile is a file)",
        ),
        (["recommend", "--model", "m", "--all", "--output", "afile/r.csv"], "(afile is a file)"),
        (["recommend", "--model", "m", "--all", "--output", "adir.csv"], "is a directory"),
        (["export", "--model", "m", "--out", "afile/m.pt"], "--out afile/m.pt: cannot create"),
        (["export", "--model", "m", "--out", "amodel/weights.pt"], "is a file of the model"),
        (["export", "--model", "m", "--out", "amodel/config.json"], "is a file of the model"),
        (["export", "--model", "m", "--out", "train.csv"], "a torchscript export is a .pt"),
        (["export", "--model", "m", "--format", "onnx", "--out", "m.pt"], "ending in .onnx"),
        (["update", "--model", "m", "--train", "t.csv", "--out", "amodel/sub"], "lies inside"),
        (["train", "--train", "t.csv", "--out", "amodel/deeper/m"], "lies inside the model"),
        (["split", "--data", "t.csv", "--out", "amodel"], "is a model directory"),
        (
            ["report", "--models", "m", "--train", "t.csv", "--test", "t.csv", "--out", "amodel"],
            "is a model directory",
        ),
        (["split", "--data", "t.csv", "--out", "afile/s"], "--out afile/s: cannot create"),
        (["demo", "--out", "afile"], "--out afile is a file"),
        (["data", "movielens-100k", "--out", "afile/x"], "--out afile/x: cannot create"),
    ],
)
def test_bad_output_paths_are_refused_before_any_work(tmp_path, capsys, no_work, argv, fragment):
    (tmp_path / "afile").write_text("not a directory")
    (tmp_path / "adir.csv").mkdir()
    (tmp_path / "amodel").mkdir()  # a saved model's files: replacing one breaks the model
    (tmp_path / "amodel" / "config.json").write_text('{"sha256": {"weights.pt": "0"}}')
    code, _, err = call(capsys, *argv)
    assert_user_error(code, err, fragment)
    assert err.count("\n") == 1  # one line


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_an_unwritable_out_is_refused_before_training(capsys, no_work):
    """/proc refuses new files even to root (a chmod would not stop root)."""
    code, _, err = call(capsys, "train", "--train", "t.csv", "--out", "/proc/hybridrec-m")
    assert_user_error(code, err, "--out /proc/hybridrec-m: cannot write in /proc")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_folder_is_refused_before_training(tmp_path, capsys, no_work):
    (tmp_path / "ro").mkdir(mode=0o555)
    code, _, err = call(capsys, "recommend", "--model", "m", "--all", "--output", "ro/r.csv")
    assert_user_error(code, err, "cannot write in ro")


def test_a_foreign_config_json_is_never_replaced(tmp_path, capsys, no_work):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "config.json").write_text('{"theirs": true}')
    code, _, err = call(capsys, "train", "--train", "t.csv", "--out", "proj")
    assert_user_error(code, err, "holds a config.json that is not a hybridrec model's")
    assert (tmp_path / "proj" / "config.json").read_text() == '{"theirs": true}'


# ---------------------------------------------------------------- option values


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--embedding-dim", str(2**63)], "--embedding-dim must be a 64-bit integer"),
        (["--mlp-layers", f"8,{2**64}"], "--mlp-layers must be a 64-bit integer"),
        (["--negatives", str(2**63)], "--negatives must be a 64-bit integer"),
        (["--threads", "100000"], "--threads must be in 0..1024"),
        (["--weight-decay", "nan"], "--weight-decay must be a finite number"),
    ],
)
def test_out_of_range_numbers_are_refused(tmp_path, capsys, no_work, flags, fragment):
    code, _, err = call(capsys, "train", "--train", "t.csv", *flags)
    assert_user_error(code, err, fragment)


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--embedding-dim", str(10**10)], "weights x 5 float32 copies"),
        (["--mlp-layers", f"{10**6},{10**6}"], "weights x 5 float32 copies"),
        (["--negatives", str(10**10)], "10,000,000,000 negatives for each of"),
    ],
)
def test_options_that_would_exhaust_memory_are_refused_before_training(
    ranking_files, capsys, monkeypatch, flags, fragment
):
    import hybridrec.pipeline

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(hybridrec.pipeline, "fit", no_training)
    code, _, err = call(
        capsys, "train", "--train", ranking_files["train"], "--out", "m", "--val", "none",
        *FAST, *flags,
    )  # fmt: skip
    assert_user_error(code, err, "needs about", "available on cpu", fragment)


def test_the_memory_rule_uses_what_is_available(ranking_files, monkeypatch):
    """The same options pass with room to spare and fail with too little (the weights of
    this tiny model take ~100 KB)."""
    import hybridrec.memory
    from hybridrec.errors import ConfigError

    monkeypatch.setattr(hybridrec.memory, "available_memory", lambda device: 10_000)
    with pytest.raises(ConfigError, match=r"more than the 0\.0 GiB available"):
        hybridrec.train(ranking_files["train"], None, train_config=TrainConfig(epochs=1))
    monkeypatch.setattr(hybridrec.memory, "available_memory", lambda device: None)
    options = {"embedding_dim": 4, "mlp_layer_sizes": (4,)}
    result = hybridrec.train(
        ranking_files["train"], None, model_options=options, train_config=TrainConfig(epochs=1)
    )
    assert len(result.history.epochs) == 1


@pytest.mark.parametrize(
    ("error", "fragment"),
    [
        (
            RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory"),
            "out of memory",
        ),
        (MemoryError(), "out of memory; lower --batch-size"),
        (OSError(28, "No space left on device", "m/weights.pt"), "m/weights.pt: No space left"),
        (PermissionError(13, "Permission denied", "r.csv"), "r.csv: Permission denied"),
    ],
)
def test_memory_and_disk_failures_are_one_line(capsys, monkeypatch, error, fragment):
    """Whatever the up-front checks cannot foresee (a disk filling up, memory taken by
    another process) still ends in one line and status 2."""

    def fail(args):
        raise error

    monkeypatch.setitem(hybridrec.cli.COMMANDS, "split", fail)
    code, _, err = call(capsys, "split", "--data", "x.csv", "--out", "s")
    assert_user_error(code, err, fragment)
    assert err.count("\n") == 1


def test_a_programming_error_is_not_disguised(monkeypatch):
    def fail(args):
        raise RuntimeError("a bug")

    monkeypatch.setitem(hybridrec.cli.COMMANDS, "split", fail)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["split", "--data", "x.csv", "--out", "s"])


def test_interrupted_training_says_no_model_was_saved(capsys, monkeypatch):
    def interrupt(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(hybridrec.cli.COMMANDS, "train", interrupt)
    code, _, err = call(capsys, "train", "--train", "t.csv", "--checkpoint-every", "1")
    assert code == 130
    assert "no model was saved; a model already there is unchanged" in err
    assert "last checkpoint is kept" in err


# ---------------------------------------------------------------- serve: the port first


def test_serve_on_a_busy_port_fails_before_loading(capsys, no_work):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = call(capsys, "serve", "--model", "m", "--port", port)
    assert_user_error(code, err, f"cannot listen on 127.0.0.1:{port}: the port is in use")


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--port", "65536"], "--port must be in 0..65535, got 65536"),
        (["--port", "-1"], "--port must be in 0..65535"),
        (["--host", "no-such-host.invalid"], "--host 'no-such-host.invalid' is not an address"),
        (["--threads", "-2"], "--threads must be in 0..1024"),
        (["--cache-top", "-1"], "--cache-top must be >= 0"),
        (["--header-timeout", "0"], "--header-timeout must be in (0, 3600]"),
        (["--header-timeout", "nan"], "--header-timeout must be in (0, 3600]"),
        (["--max-connections", "0"], "--max-connections must be in 1..1000000"),
        (["--max-pending", "-3"], "--max-pending must be in 1..1000000"),
    ],
)
def test_serve_options_are_checked_before_loading(capsys, no_work, flags, fragment):
    code, _, err = call(capsys, "serve", "--model", "m", *flags)
    assert_user_error(code, err, fragment)


# ---------------------------------------------------------------- which files need --target-col


def test_a_target_col_asked_for_is_required_of_labelled_files_only(
    model_dir, ranking_files, tmp_path, capsys
):
    """evaluate's ranking files (--train, --test) are positives and may lack the column;
    training data and evaluate --data are read for their labels and may not."""
    code, out, err = call(
        capsys, "evaluate", "--model", model_dir, "--train", ranking_files["train"],
        "--test", ranking_files["test"], "--target-col", "label", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["protocol"] == "full"
    code, _, err = call(
        capsys, "evaluate", "--model", model_dir, "--data", ranking_files["test"],
        "--target-col", "label",
    )  # fmt: skip
    assert_user_error(code, err, "test.csv: missing target column 'label' (named by --target-col)")
    code, _, err = call(
        capsys, "train", "--train", ranking_files["train"], "--target-col", "label", *FAST
    )
    assert_user_error(code, err, "train.csv: missing target column 'label'")


def test_training_data_without_positives_is_refused(tmp_path, capsys):
    (tmp_path / "neg.csv").write_text("userId,itemId,target\n1,2,0\n2,3,0\n")
    code, _, err = call(capsys, "train", "--train", "neg.csv", "--out", "m", *FAST)
    assert_user_error(code, err, "neg.csv, column 'target': no positive rows to learn from")
    assert not (tmp_path / "m").exists()


def test_validation_data_without_positives_is_refused(tmp_path, capsys, ranking_files):
    """A val file of negatives only has no AUC and no ranking metric: nothing to choose by."""
    (tmp_path / "neg.csv").write_text("userId,itemId,target\n1,2,0\n2,3,0\n")
    code, _, err = call(
        capsys, "train", "--train", ranking_files["train"], "--val", "neg.csv", "--out", "m",
        *FAST,
    )  # fmt: skip
    assert_user_error(code, err, "neg.csv, column 'target': no positive rows to validate on")
    assert not (tmp_path / "m").exists()


def test_serve_passes_its_limits_on(monkeypatch, capsys):
    import hybridrec.artifact
    import hybridrec.serve

    seen = {}
    monkeypatch.setattr(hybridrec.serve, "serve", lambda model, **kw: seen.update(kw))
    monkeypatch.setattr(hybridrec.cli.serving, "check_port", lambda host, port: None)
    monkeypatch.setattr(hybridrec.artifact, "load_artifact", lambda path: None)
    code, _, err = call(capsys, "serve", "--model", "m", "--header-timeout", "2.5",
                        "--max-connections", "10", "--max-pending", "3")  # fmt: skip
    assert code == 0, err
    assert (seen["header_timeout"], seen["max_connections"], seen["max_pending"]) == (2.5, 10, 3)


def test_the_parser_is_built_once_per_state_of_the_model_registry(monkeypatch):
    """``main`` reuses its parser (argparse costs ~10 ms a build), but a model registered
    since is a choice of ``--model`` at once."""
    from hybridrec.cli.parser import cached_parser
    from hybridrec.models import MODELS, HybridRecSys

    first = cached_parser()
    assert cached_parser() is first
    monkeypatch.setitem(MODELS, "toy-hybrid", HybridRecSys)
    second = cached_parser()
    assert second is not first
    args = second.parse_args(["train", "--train", "t.csv", "--model", "toy-hybrid"])
    assert args.model == "toy-hybrid"
    with pytest.raises(SystemExit):
        first.parse_args(["train", "--train", "t.csv", "--model", "toy-hybrid"])


#: Run first in the child: importing hybridrec.cli says so and then takes 30 s, so the test
#: interrupts it inside that import for certain (a warm import of PyTorch can take 0.2 s).
_SLOW_CLI_IMPORT = """
import sys, time
class Slow:
    def find_spec(self, name, path=None, target=None):
        if name == "hybridrec.cli":
            print("importing", flush=True)
            time.sleep(30)
        return None
sys.meta_path.insert(0, Slow())
"""


@pytest.mark.parametrize(
    "start",
    [
        "from hybridrec._entry import main; sys.exit(main())",  # the console script's call
        f"import runpy; runpy.run_path({str(Path(__file__).parents[1] / 'RecSys.py')!r}, "
        "run_name='__main__')",
    ],
)
def test_ctrl_c_while_the_command_starts_is_a_quiet_interruption(tmp_path, start):
    """A Ctrl-C during the seconds PyTorch takes to load printed a KeyboardInterrupt
    traceback from inside an import; now it is status 130 and one line."""
    import signal
    import subprocess

    process = subprocess.Popen(
        [sys.executable, "-c", _SLOW_CLI_IMPORT + start],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout.readline() == b"importing\n"
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err.decode()
    assert b"Traceback" not in err and b"interrupted" in err


def test_abbreviated_flags_are_refused(tmp_path, capsys):
    """argparse took `--confi FILE` for --config, but the file (read before parsing) was
    never read: the run trained on the defaults without a word."""
    (tmp_path / "c.toml").write_text("epochs = 1\n")
    for argv in (["train", "--train", "x.csv", "--confi", str(tmp_path / "c.toml")],
                 ["train", "--train", "x.csv", "--epo", "3"]):  # fmt: skip
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        assert "unrecognized arguments" in capsys.readouterr().err
