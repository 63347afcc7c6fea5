"""configfile.py and ``--config``: TOML run files for train, evaluate and recommend, the
resolved configuration saved with a model and printed by ``hybridrec info``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import hybridrec
from hybridrec import TrainConfig
from hybridrec.cli import build_parser, main
from hybridrec.configfile import expand_config, to_toml, tomllib
from hybridrec.errors import ConfigError


@pytest.fixture(autouse=True)
def in_tmp(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def train_csv(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(u, int(i)) for u in range(1, 31) for i in rng.choice(20, 5, replace=False) + 1]
    path = tmp_path / "train.csv"
    pd.DataFrame(rows, columns=["userId", "itemId"]).to_csv(path, index=False)
    return path


def parse(*argv):
    parser = build_parser()
    return parser.parse_args(expand_config(parser, [str(a) for a in argv]))


def write(tmp_path, text, name="run.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def call(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_to_toml_round_trip():
    options = {
        "train": 'a "quoted" \\ path\twith\nodd characters é',
        "epochs": 3,
        "lr": 1e-05,
        "ema_decay": 0.999,
        "mlp_layers": [64, 32],
        "compile": False,
        "no_progress": True,
    }
    text = to_toml(options, ["a comment"])
    assert text.startswith("# a comment\n")
    assert tomllib.loads(text) == options


def test_command_line_overrides_file_which_overrides_defaults(tmp_path):
    path = write(tmp_path, 'train = "t.csv"\nepochs = 7\nbatch-size = 64\nmlp_layers = [16, 8]\n')
    args = parse("train", "--config", path, "--epochs", "2")
    assert args.epochs == 2  # the command line wins
    assert args.batch_size == 64  # dashes are accepted in keys
    assert args.mlp_layer_sizes == (16, 8) and args.train == "t.csv"
    assert args.learning_rate is None  # neither: the default, chosen for the data
    # the last --config given is the one read, wherever it is on the line
    other = write(tmp_path, 'train = "u.csv"\n', "other.toml")
    assert parse("train", "--config", path, "--config", other).train == "u.csv"


def test_a_byte_order_mark_is_read_past(tmp_path):
    """Editors on Windows save one; the data readers accept it, so config files do too."""
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbftrain = 't.csv'\nepochs = 3\n")
    assert parse("train", "--config", path).epochs == 3


def test_exclusive_options_follow_the_command_line(tmp_path):
    path = write(tmp_path, 'model = "m"\nall = true\noutput = "r.csv"\nk = 3\n')
    args = parse("recommend", "--config", path, "--users", "u.csv")
    assert not args.all and args.users == "u.csv" and args.k == 3
    assert parse("recommend", "--config", path).all


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("epoch = 3\n", ["unknown key 'epoch' for hybridrec train", "did you mean 'epochs'?"]),
        ("learning_rate = 0.1\n", ["unknown key 'learning_rate'", "did you mean 'lr'?"]),
        ("batch_size = 1\nbatch-size = 2\n", ["key 'batch_size' is given twice"]),
        ('lr = "fast"\n', ["key 'lr' (--lr): expected a number, got a string"]),
        ("epochs = 2.5\n", ["key 'epochs' (--epochs): expected an integer, got a number"]),
        ("epochs = true\n", ["key 'epochs' (--epochs): expected an integer, got a boolean"]),
        ('no_progress = "yes"\n', ["key 'no_progress' (--no-progress): expected true or false"]),
        ('model = "bogus"\n', ["key 'model' (--model): expected one of", "hybrid"]),
        ("mlp_layers = [16.5]\n", ["key 'mlp_layers' (--mlp-layers): expected a list of int"]),
        ('mlp_layers = "16,x"\n', ["key 'mlp_layers'", "expected sizes like 64,32,16"]),
        ("[train]\nepochs = 1\n", ["key 'train' (--train): expected a single value, got a table"]),
        ("epochs = \n", ["is not valid TOML", "line 1"]),
    ],
)
def test_mistakes_are_one_line_naming_file_and_key(tmp_path, capsys, text, fragments):
    path = write(tmp_path, text)
    code, _, err = call(capsys, "train", "--config", path, "--train", "t.csv")
    assert code == 2, err
    assert err.startswith(f"error: {path}") and err.count("\n") == 1
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_missing_config_file(capsys):
    code, _, err = call(capsys, "evaluate", "--config", "nope.toml")
    assert code == 2 and "error: --config nope.toml: no such file" in err
    with pytest.raises(ConfigError, match="no such file"):
        parse("train", "--config", "nope.toml")


def train_flags(train_csv):
    return [
        "--train", train_csv, "--out", "m1", "--epochs", "2", "--batch-size", "64",
        "--lr", "0.02", "--embedding-dim", "8", "--mlp-layers", "16,8", "--device", "cpu",
        "--no-progress", "--json",
    ]  # fmt: skip


def test_saved_config_reproduces_the_model(train_csv, tmp_path, capsys):
    code, _, err = call(capsys, "train", *train_flags(train_csv))
    assert code == 0, err
    saved = json.loads((tmp_path / "m1" / "config.json").read_text())["settings"]["run_config"]
    assert saved["command"] == "train" and saved["options"]["epochs"] == 2

    code, printed, err = call(capsys, "info", "--model", "m1")
    assert code == 0, err
    assert printed.startswith("# model m1: hybrid")
    options = tomllib.loads(printed)
    assert options == saved["options"]
    assert options["mlp_layers"] == [16, 8] and options["lr"] == 0.02
    write(tmp_path, printed, "again.toml")
    code, _, err = call(capsys, "train", "--config", "again.toml", "--out", "m2")
    assert code == 0, err
    first = torch.load(tmp_path / "m1" / "weights.pt", weights_only=True)
    second = torch.load(tmp_path / "m2" / "weights.pt", weights_only=True)
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name
    # and the printed config of the rerun differs only in where it was saved
    code, again, _ = call(capsys, "info", "--model", "m2")
    assert {**tomllib.loads(again), "out": "m1"} == options


def test_info_of_a_model_saved_without_a_run_config(train_csv, capsys):
    hybridrec.train(
        train_csv, None, out="old", model="mf", model_options={"embedding_dim": 4},
        train_config=TrainConfig(epochs=1, batch_size=64, device="cpu"),
    )  # fmt: skip
    code, printed, err = call(capsys, "info", "--model", "old")
    assert code == 0, err
    assert "rebuilt from its settings" in printed
    options = tomllib.loads(printed)
    assert options["model"] == "mf" and options["embedding_dim"] == 4
    assert options["batch_size"] == 64 and "train" not in options
    code, _, err = call(capsys, "info", "--model", "nothere")
    assert code == 2 and "no model directory at nothere" in err


def test_evaluate_and_recommend_read_config(train_csv, tmp_path, capsys):
    code, _, err = call(capsys, "train", *train_flags(train_csv))
    assert code == 0, err
    write(tmp_path, f'model = "m1"\ntrain = "{train_csv}"\ntest = "{train_csv}"\nk = [2, 4]\n'
                    "json = true\n", "ev.toml")  # fmt: skip
    code, out, err = call(capsys, "evaluate", "--config", "ev.toml", "--k", "3")
    assert code == 0, err
    metrics = json.loads(out)
    assert "hr@3" in metrics and "hr@2" not in metrics  # --k on the command line won
    write(tmp_path, 'model = "m1"\nall = true\noutput = "recs.csv"\nk = 2\nno_progress = true\n',
          "rec.toml")  # fmt: skip
    code, out, err = call(capsys, "recommend", "--config", "rec.toml")
    assert code == 0, err
    assert pd.read_csv(tmp_path / "recs.csv").groupby("userId").size().eq(2).all()


def test_the_resolved_configuration_leaves_out_resume():
    """`info` of a model trained with --resume printed `resume = ...`: training from that
    file reloaded the old checkpoint (or failed once it was gone) instead of training."""
    from hybridrec.cli.parser import build_parser
    from hybridrec.configfile import resolved_options, subparser

    parser = build_parser()
    args = parser.parse_args(["train", "--train", "x.csv", "--resume", "ck", "--epochs", "3"])
    options = resolved_options(args, subparser(parser, "train"))
    assert "resume" not in options and options["epochs"] == 3 and options["train"] == "x.csv"


def test_comments_stay_comments_whatever_they_quote():
    """A model path with a line break made `info`'s output invalid TOML."""
    text = to_toml({"epochs": 2}, ["model /tmp/a\nepochs = 9", "x\r\ny = 1"])
    assert tomllib.loads(text) == {"epochs": 2} and text.count("\n") == 3
