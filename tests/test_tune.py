"""hybridrec tune: the search space and its file, the pruning callback, a tiny study that
prunes and resumes from its SQLite storage, and the best.toml it writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from hybridrec import TrainConfig
from hybridrec.cli import build_parser, main
from hybridrec.configfile import subparser, tomllib
from hybridrec.errors import ConfigError
from hybridrec.training import EpochStats, History
from hybridrec.tune import DEFAULT_SPACES, EpochReporter, load_space
from hybridrec.tune.search import metric_for

TINY = ["--epochs", "2", "--batch-size", "32", "--embedding-dim", "8", "--mlp-layers", "16,8",
        "--device", "cpu", "--no-progress"]  # fmt: skip


@pytest.fixture(autouse=True)
def in_tmp(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def train_csv(tmp_path):
    """60 users in 4 groups of 10 items, 6 in-group positives each, with timestamps."""
    rng = np.random.default_rng(0)
    rows = [(u, int(i), t) for u in range(1, 61)
            for t, i in enumerate(rng.choice(10, 6, replace=False) + 1 + (u % 4) * 10)]  # fmt: skip
    path = tmp_path / "train.csv"
    pd.DataFrame(rows, columns=["userId", "itemId", "timestamp"]).to_csv(path, index=False)
    return path


def train_parser():
    return subparser(build_parser(), "train")


def write(tmp_path, text, name="space.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def call(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- the search space


def test_default_spaces_are_per_model():
    keys = {m: {p.key for p in load_space(None, m, train_parser())} for m in ("hybrid", "sasrec")}
    assert {"lr", "embedding_dim", "negatives", "weight_decay", "mlp_layers", "dropout"} == keys[
        "hybrid"
    ]
    assert {"num_blocks", "hidden_dim", "dropout", "lr"} <= keys["sasrec"]
    assert "negatives" not in keys["sasrec"] and "mlp_layers" not in keys["sasrec"]
    lr = next(p for p in load_space(None, "mf", train_parser()) if p.key == "lr")
    assert lr.log and lr.low < lr.high
    with pytest.raises(ConfigError, match="nothing to search"):
        load_space(None, "popularity", train_parser())
    assert set(DEFAULT_SPACES) >= {"hybrid", "mf", "gmf", "mlp", "neumf", "sasrec"}


def test_a_space_file_may_start_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf[lr]\nlow = 0.001\nhigh = 0.01\n")
    space = {p.key: p for p in load_space(path, "hybrid", train_parser())}
    assert space["lr"].low == 0.001


def test_space_file_overrides_and_adds(tmp_path):
    path = write(tmp_path, "[lr]\nlow = 0.001\nhigh = 0.01\n[batch-size]\nchoices = [32, 64]\n"
                           "[mlp_layers]\nchoices = [[8], [16, 8]]\n")  # fmt: skip
    space = {p.key: p for p in load_space(path, "hybrid", train_parser())}
    assert (space["lr"].low, space["lr"].high, space["lr"].log) == (0.001, 0.01, False)
    assert space["batch_size"].choices == (32, 64)  # added; dashes accepted
    assert "embedding_dim" in space  # defaults kept
    trial = optuna.trial.FixedTrial({"mlp_layers": "16,8", "batch_size": 64, "lr": 0.005})
    assert space["mlp_layers"].suggest(trial) == [16, 8]
    assert space["batch_size"].suggest(trial) == 64
    only = load_space(write(tmp_path, "defaults = false\n[lr]\nlow = 1e-4\nhigh = 1e-2\n"),
                      "hybrid", train_parser())  # fmt: skip
    assert [p.key for p in only] == ["lr"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[lrr]\nlow = 1\nhigh = 2\n",
            "unknown parameter 'lrr' for model hybrid; did you mean 'lr'",
        ),
        ("[learning_rate]\nlow = 1\nhigh = 2\n", "did you mean 'lr'"),
        ("[num_blocks]\nlow = 1\nhigh = 2\n", "'num_blocks' is an option of sasrec"),
        ("[lr]\nlow = 1e-4\nhi = 1e-2\n", r"\[lr\]: unknown key 'hi'; did you mean 'high'"),
        ("[lr]\nlow = 0.1\nhigh = 0.01\n", "low 0.1 is above high 0.01"),
        ("[lr]\nlow = 0\nhigh = 0.01\nlog = true\n", "a log range needs low > 0"),
        ("[lr]\nlow = 1e-4\n", "give low and high"),
        ("[lr]\nchoices = []\n", "choices must be a non-empty list"),
        ("[lr]\nchoices = [0.1]\nlow = 0.1\n", "choices cannot be combined with low"),
        ("[embedding_dim]\nlow = 8.5\nhigh = 16\n", "low must be an integer"),
        ("[mlp_layers]\nlow = 1\nhigh = 2\n", "not a number; give choices"),
        ('[mlp_layers]\nchoices = [[64, "x"]]\n', "expected a list of integers"),
        ('[lr]\nlow = 1e-4\nhigh = 1e-2\nlog = "yes"\n', "log must be true or false"),
        ("lr = 3\n", "'lr' must be a table"),
        ("defaults = 1\n", "'defaults' must be true or false"),
        ("[lr\n", "is not valid TOML"),
    ],
)
def test_space_file_errors(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_space(path, "hybrid", train_parser())
    assert str(path) in str(info.value) or "TOML" in str(info.value)


def test_space_mistakes_exit_2_with_one_line(tmp_path, capsys, train_csv):
    cases = {
        "[negatives]\nlow = 0\nhigh = 4\n": "[negatives] value 0: --negatives must be at least 1",
        "[lrr]\nlow = 1e-4\nhigh = 1e-2\n": "did you mean 'lr'?",
    }
    for text, message in cases.items():
        path = write(tmp_path, text)
        code, out, err = call(capsys, "tune", "--train", train_csv, "--space", path, *TINY)
        assert code == 2 and message in err and str(path) in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, _, err = call(capsys, "tune", "--train", train_csv, "--space", "missing.toml", *TINY)
    assert code == 2 and "--space missing.toml: no such file" in err
    assert not Path("tune").exists()  # nothing written before the options are known good


def test_refused_options_exit_2(capsys, train_csv):
    for extra, message in [
        (["--val", "none"], "give --val FILE"),
        (["--checkpoint-every", "1"], "--checkpoint-every is not for tune"),
        (["--trials", "0"], "--trials must be at least 1"),
        (["--early-stop", "none"], "--early-stop none cannot be compared"),
        (["--storage", "sqlite://x.db"], "three slashes"),
        (["--model", "popularity"], "nothing to search"),
        (["--batch-size", "0"], "error: --batch-size must be"),  # not the space's fault
        (["--embedding-dim", "0"], "error: --embedding-dim must be"),
    ]:
        code, _, err = call(capsys, "tune", "--train", train_csv, *TINY, *extra)
        assert code == 2 and message in err, (extra, err)
        assert "Traceback" not in err
        assert "must be" not in message or "space" not in err  # a fixed option's own error


def test_metric_follows_early_stop():
    assert metric_for(TrainConfig(), labelled=False) == "ndcg@10"
    assert metric_for(TrainConfig(ks=(5, 10)), labelled=False) == "ndcg@5"
    assert metric_for(TrainConfig(), labelled=True) == "loss"
    assert metric_for(TrainConfig(early_stop="hr@10"), labelled=False) == "hr@10"


# ---------------------------------------------------------------- pruning


def stats(epoch, ndcg):
    return EpochStats(epoch, 0.5, 0.5, 1.0, 1.0, ranking={"ndcg@10": ndcg})


def test_reporter_prunes_a_trial_worse_than_the_median():
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1)
    )
    done = optuna.trial.create_trial(
        value=0.6, intermediate_values={1: 0.5, 2: 0.6}, params={}, distributions={}
    )
    study.add_trial(done)
    better = EpochReporter(study.ask(), "ndcg@10")
    better(stats(1, 0.55), History())  # above the median: goes on
    assert better.epochs == 1
    worse = EpochReporter(study.ask(), "ndcg@10")
    with pytest.raises(optuna.TrialPruned, match="ndcg@10 0.1000 at epoch 1"):
        worse(stats(1, 0.1), History())
    assert worse.trial.user_attrs["epochs"] == 1


def test_a_pruned_trial_stops_training_at_once(train_csv):
    """The exception of the epoch callback leaves pipeline.train unchanged (not turned into
    a user error) after the epoch that raised it."""
    import hybridrec

    calls = []

    def prune(stats, history):
        calls.append(stats.epoch)
        raise optuna.TrialPruned("hopeless")

    with pytest.raises(optuna.TrialPruned, match="hopeless"):
        hybridrec.train(train_csv, "auto", model="mf", model_options={"embedding_dim": 8},
                        train_config=TrainConfig(epochs=5, batch_size=32, device="cpu"),
                        on_epoch_end=prune)  # fmt: skip
    assert calls == [1]


# ---------------------------------------------------------------- a study


def tune(capsys, train_csv, *extra):
    return call(capsys, "tune", "--train", train_csv, "--out", "study", *TINY, *extra)


def test_tiny_study_prunes_resumes_and_writes_best_toml(tmp_path, capsys, train_csv):
    space = write(tmp_path, "defaults = false\n[lr]\nlow = 1e-6\nhigh = 0.05\nlog = true\n")
    Path("study").mkdir()
    # the first two trials fixed: a good learning rate, then one that learns nothing, which
    # the median pruner (no warm-up, one finished trial) stops after its first epoch
    first = optuna.create_study(storage="sqlite:///study/study.db",
                                study_name="hybridrec-hybrid", direction="maximize")  # fmt: skip
    first.enqueue_trial({"lr": 0.05})
    first.enqueue_trial({"lr": 1e-6})
    prune = ["--space", space, "--startup-trials", "1", "--warmup-epochs", "0"]
    code, out, err = tune(capsys, train_csv, "--trials", "2", *prune)
    assert code == 0, err
    assert "2 trials (2 by this run): 1 complete, 1 pruned, 0 failed; 3 epochs" in out
    assert "trial 1: pruned after 1 epoch(s)" in err
    assert "no importance.png: parameter importances need 2 complete trials" in out
    assert sorted(p.name for p in Path("study").iterdir()) == [
        "best.toml", "history.png", "study.db", "trials.csv"]  # fmt: skip
    # resumed from the storage: a second run adds to the same study
    code, out, err = tune(capsys, train_csv, "--trials", "1", *prune)
    assert code == 0, err
    assert "3 trials (1 by this run)" in out
    study = optuna.load_study(study_name="hybridrec-hybrid", storage="sqlite:///study/study.db")
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert len(pd.read_csv("study/trials.csv")) == 3
    assert Path("study/history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = tomllib.loads(Path("study/best.toml").read_text())
    assert best["lr"] == study.best_trial.params["lr"]
    assert best["train"] == str(train_csv) and best["out"] == "study/model"
    assert best["mlp_layers"] == [16, 8] and best["epochs"] == 2  # the fixed flags kept
    # the same study with lr drawn another way (not log): refused before any trial, as
    # Optuna would fail every new trial and keep it as FAIL
    linear = write(tmp_path, "defaults = false\n[lr]\nlow = 1e-6\nhigh = 0.05\n", "lin.toml")
    code, out, err = tune(capsys, train_csv, "--trials", "1", "--space", linear)
    assert code == 2 and "searched lr differently before" in err and "Traceback" not in err
    assert len(optuna.load_study(study_name="hybridrec-hybrid",
                                 storage="sqlite:///study/study.db").trials) == 3  # fmt: skip
    # best.toml is a train --config file
    code, out, err = call(capsys, "train", "--config", "study/best.toml", "--json")
    assert code == 0, err
    assert Path("study/model/config.json").exists()


def test_best_toml_keeps_the_best_trials_values_after_a_narrower_space(tmp_path, capsys, train_csv):
    """Resumed with a space of lr alone, best.toml wrote the defaults for every other
    parameter of the best trial (here: negatives), so it no longer reproduced it."""
    both = write(tmp_path, "defaults = false\n[lr]\nlow = 1e-6\nhigh = 0.05\nlog = true\n"
                 "[negatives]\nlow = 2\nhigh = 6\n", "both.toml")  # fmt: skip
    lr_only = write(tmp_path, "defaults = false\n[lr]\nlow = 1e-6\nhigh = 0.05\nlog = true\n",
                    "lr.toml")  # fmt: skip
    Path("study").mkdir()
    study = optuna.create_study(storage="sqlite:///study/study.db",
                                study_name="hybridrec-hybrid", direction="maximize")  # fmt: skip
    study.enqueue_trial({"lr": 0.05, "negatives": 3})
    study.enqueue_trial({"lr": 1e-6})  # learns nothing: trial 0 stays the best
    assert tune(capsys, train_csv, "--trials", "1", "--space", both, "--pruner", "none")[0] == 0
    assert tune(capsys, train_csv, "--trials", "1", "--space", lr_only, "--pruner", "none")[0] == 0
    best = tomllib.loads(Path("study/best.toml").read_text())
    assert best["lr"] == 0.05 and best["negatives"] == 3


def test_importances_and_a_study_of_another_model(capsys, train_csv):
    code, out, err = tune(capsys, train_csv, "--trials", "2", "--model", "mf", "--pruner", "none",
                          "--study-name", "s")  # fmt: skip
    assert code == 0, err
    assert Path("study/importance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = tune(capsys, train_csv, "--trials", "1", "--study-name", "s")
    assert code == 2 and "tunes model 'mf', not 'hybrid'" in err


def test_two_processes_share_one_sqlite_study(tmp_path, train_csv):
    """Parallel workers on one storage: every trial is in the study once, numbered apart,
    and their draws differ (each trial is seeded by its own number)."""
    argv = [sys.executable, "-m", "hybridrec", "tune", "--train", str(train_csv),
            "--storage", f"sqlite:///{tmp_path / 'shared.db'}", "--trials", "2",
            "--model", "mf", "--epochs", "1", "--embedding-dim", "8", "--device", "cpu",
            "--no-progress"]  # fmt: skip
    src = str(Path(__file__).parents[1] / "src")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": src}
    workers = [subprocess.Popen([*argv, "--out", f"w{i}"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE) for i in range(2)]  # fmt: skip
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err.decode()
    study = optuna.load_study(study_name="hybridrec-mf", storage=f"sqlite:///{tmp_path}/shared.db")
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert len({t.params["lr"] for t in study.trials}) == 4


def test_tune_reads_a_config_file(tmp_path, capsys, train_csv):
    text = f'train = "{train_csv}"\ntrials = 3\nmodel = "mf"\nepochs = 1\ndevice = "cpu"\n'
    config = write(tmp_path, text + 'no_progress = true\nout = "cfg"\n', "tune.toml")
    code, out, err = call(capsys, "tune", "--config", config, "--trials", "1")  # flag wins
    assert code == 0, err
    assert "1 trials (1 by this run)" in out and Path("cfg/best.toml").exists()
    code, _, err = call(capsys, "tune", "--config", write(tmp_path, "trial = 2\n", "bad.toml"))
    assert code == 2 and "unknown key 'trial' for hybridrec tune; did you mean 'trials'?" in err


def test_the_default_storage_is_a_url_of_the_folders_own_file(tmp_path, monkeypatch):
    """`--out 't?x'` put the study in a file 't' of the working directory: the URL was
    pasted together, and SQLAlchemy read '?x/study.db' as its query."""
    from sqlalchemy.engine import make_url

    from hybridrec.tune.search import check_storage_path, default_storage

    monkeypatch.chdir(tmp_path)
    for name in ("t?x", "a#b", "p%20q"):
        url = default_storage(Path(name))
        assert make_url(url).database == f"{name}/study.db"
        check_storage_path(url)
    check_storage_path("sqlite:///db.sqlite?timeout=5")  # the file checked is db.sqlite
    assert not (tmp_path / "db.sqlite?timeout=5").exists()
