"""The ``hybridrec`` command line, called in-process through ``cli.main``."""

from __future__ import annotations

import json
import warnings

import pandas as pd
import pytest

import hybridrec
import hybridrec.cli
from hybridrec.cli import main
from tests.helpers import holdout_frame

#: Tiny, fast, hardware-independent training flags (defaults are for real data sizes).
FAST = [
    "--batch-size", "128", "--lr", "0.01", "--embedding-dim", "8", "--mlp-layers", "16,8",
    "--device", "cpu", "--no-progress",
]  # fmt: skip


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """Run in tmp_path, and undo the CLI's global ``warnings.showwarning`` override."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)


def call(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, *fragments):
    assert code == 2
    assert err.startswith("error: ") or "\nerror: " in err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


@pytest.fixture
def trained_model(synthetic_data, tmp_path, capsys):
    train_csv, val_csv = synthetic_data
    code, _, _ = call(
        capsys, "train", "--train", str(train_csv), "--val", str(val_csv), "--out", "m",
        "--epochs", "1", "--json", *FAST,
    )  # fmt: skip
    assert code == 0
    return tmp_path / "m"


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
