"""checkpoint.py and training/state.py: a resumed run is the uninterrupted run, bit for bit,
on the CPU; a hard-killed run resumes to a normal artifact; bad checkpoints give one-line
errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import hybridrec
from hybridrec import TrainConfig
from hybridrec.checkpoint import CHECKPOINT, CheckpointError, load_checkpoint
from hybridrec.cli import main as cli_main
from hybridrec.data.synthetic import planted_groups
from hybridrec.errors import ConfigError
from hybridrec.models import build_model
from hybridrec.training import fit

TIMING = ("seconds", "samples_per_second")


planted = planted_groups


MODELS = {
    "hybrid": {"embedding_dim": 8, "mlp_layer_sizes": (16, 8), "dropout": 0.2},
    "sasrec": {"hidden_dim": 8, "max_len": 8, "num_heads": 2, "dropout": 0.1},
}


pytestmark = pytest.mark.usefixtures("one_thread")


class Interrupted(Exception):
    pass


def run_fit(name, config, data, on_epoch_end=None, **options):
    train_set, val_set, num_users, num_items = data
    torch.manual_seed(config.seed)  # as hybridrec.train does before building the model
    options = {**MODELS[name], **options}
    model = build_model(name, num_users=num_users, num_items=num_items, **options)
    history = fit(model, train_set, val_set, config, show_progress=False, on_epoch_end=on_epoch_end)
    return model, history


def metrics(history):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history.to_list()]


@pytest.mark.parametrize(
    ("name", "loss"), [("hybrid", "bce"), ("hybrid", "bpr"), ("sasrec", "bce")]
)
def test_resumed_run_is_bit_identical_to_uninterrupted(tmp_path, name, loss, planted_encoded):
    """Interrupted after epoch 2 (the callback raises), resumed: same weights and metrics.

    Dropout (global RNG), sampled negatives (the shuffling generator; sasrec: global RNG),
    Adam's moments and the early-stopping state all have to be restored exactly for this."""
    data = planted_encoded
    common = dict(
        epochs=5, batch_size=32, learning_rate=1e-2, seed=3, device="cpu", loss=loss, patience=2
    )
    full_model, full = run_fit(name, TrainConfig(**common, early_stop="hr@10"), data)

    def stop_after_two(stats, history):
        if stats.epoch == 2:
            raise Interrupted

    ckpt = dict(checkpoint_every=1, checkpoint_dir=str(tmp_path))
    with pytest.raises(Interrupted):
        run_fit(name, TrainConfig(**common, early_stop="hr@10", **ckpt), data, stop_after_two)
    assert load_checkpoint(tmp_path)["epoch"] == 2
    resumed_model, resumed = run_fit(
        name, TrainConfig(**common, early_stop="hr@10", **ckpt, resume=str(tmp_path)), data
    )
    assert metrics(resumed) == metrics(full)
    assert (resumed.best_epoch, resumed.stopped_early) == (full.best_epoch, full.stopped_early)
    full_state, resumed_state = full_model.state_dict(), resumed_model.state_dict()
    assert full_state.keys() == resumed_state.keys()
    for key in full_state:
        assert torch.equal(full_state[key], resumed_state[key]), key


def test_shorter_run_continued_with_more_epochs_equals_one_long_run(tmp_path):
    """`--epochs 2 --checkpoint-every 1`, then `--resume` with `--epochs 4`: the artifact is
    the one a single 4-epoch run writes."""
    train, val = planted(num_users=48, num_items=40, per_user=7)
    options = {"embedding_dim": 8, "mlp_layer_sizes": (16, 8)}
    common = dict(batch_size=32, learning_rate=1e-2, seed=1, device="cpu", early_stop="none")

    def run(out, **kw):
        return hybridrec.train(
            train, val, out=out, model_options=options, train_config=TrainConfig(**common, **kw)
        )

    full = run(tmp_path / "full", epochs=4)
    run(tmp_path / "part", epochs=2, checkpoint_every=1)
    assert load_checkpoint(tmp_path / "part")["epoch"] == 2
    resumed = run(tmp_path / "part", epochs=4, checkpoint_every=1, resume=str(tmp_path / "part"))
    assert metrics(resumed.history) == metrics(full.history)
    a, b = hybridrec.load(tmp_path / "full"), hybridrec.load(tmp_path / "part")
    for key, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[key]), key
    saved = json.loads((tmp_path / "part" / "metrics.json").read_text())
    assert [row["epoch"] for row in saved["history"]] == [1, 2, 3, 4]


def test_with_refit_none_the_holdout_run_is_the_one_checkpointed_and_resumed(tmp_path, monkeypatch):
    """Under the automatic holdout with --refit none, the epoch-choosing run is the model
    returned: its checkpoints were not written and --resume was ignored (status 0)."""
    train, _ = planted(num_users=48, num_items=40, per_user=7)
    options = {"embedding_dim": 8, "mlp_layer_sizes": (16, 8)}
    common = dict(batch_size=32, learning_rate=1e-2, seed=1, device="cpu", refit="none")

    def run(out, **kw):
        return hybridrec.train(
            train, "auto", out=out, model_options=options, train_config=TrainConfig(**common, **kw)
        )

    full = run(tmp_path / "full", epochs=3)
    assert full.holdout is not None and full.holdout["held_out_rows"] > 0
    run(tmp_path / "part", epochs=2, checkpoint_every=1)
    assert load_checkpoint(tmp_path / "part")["epoch"] == 2
    again = dict(epochs=3, checkpoint_every=1, resume=str(tmp_path / "part"))
    resumed = run(tmp_path / "part", **again)
    assert metrics(resumed.history) == metrics(full.history)
    # a resume from nowhere is refused before any training, refit or not
    monkeypatch.setattr(hybridrec.pipeline, "fit", lambda *a, **k: pytest.fail("trained"))
    for refit in ("none", "all"):
        common["refit"] = refit
        with pytest.raises(CheckpointError, match="no checkpoint at"):
            run(tmp_path / "other", epochs=2, resume=str(tmp_path / "nowhere"))


def test_resume_refuses_other_data(tmp_path):
    """Other ids with the same shape (every row maps to the same embedding rows) or other
    labels: the checkpoint's rows would belong to other ids, so the resume is refused."""
    train, val = planted(num_users=24, num_items=20, per_user=5)
    options = {"embedding_dim": 4, "mlp_layer_sizes": (4,)}
    common = dict(batch_size=32, seed=1, device="cpu", early_stop="none", checkpoint_every=1)

    def run(data, held_out, epochs, **kw):
        return hybridrec.train(data, held_out, out=tmp_path / "m", model_options=options,
                               train_config=TrainConfig(**common, epochs=epochs, **kw))  # fmt: skip

    def shift(frame):
        return frame.assign(userId=frame.userId + 1000, itemId=frame.itemId + 500)

    run(train, val, 1)
    relabelled = train.assign(target=(train.index % 3 > 0).astype(int))
    for other, held_out in ((shift(train), shift(val)), (relabelled, val)):
        with pytest.raises(ConfigError, match="trained on other data"):
            run(other, held_out, 2, resume=str(tmp_path / "m"))
    # the same training rows validated on other rows, or on none: two validation sets in
    # one early-stopping history
    for held_out in (val.iloc[: len(val) // 2], None):
        with pytest.raises(ConfigError, match="validated on other rows"):
            run(train, held_out, 2, resume=str(tmp_path / "m"))
    assert run(train, val, 2, resume=str(tmp_path / "m")).history.epochs[-1].epoch == 2


def test_checkpoint_loads_with_weights_only(tmp_path, planted_encoded):
    data = planted_encoded
    config = TrainConfig(epochs=1, batch_size=64, device="cpu", checkpoint_every=1)
    run_fit(
        "hybrid", config.__class__(**{**config.__dict__, "checkpoint_dir": str(tmp_path)}), data
    )
    raw = torch.load(tmp_path / CHECKPOINT, weights_only=True)  # plain data only
    assert raw["format"] == "hybridrec-checkpoint" and raw["epoch"] == 1
    assert {"model", "optimizer", "rng", "early_stopping", "history"} <= raw.keys()


def test_resume_refuses_other_settings(tmp_path, planted_encoded):
    data = planted_encoded
    common = dict(epochs=2, batch_size=64, device="cpu", checkpoint_every=1)
    run_fit("hybrid", TrainConfig(**common, checkpoint_dir=str(tmp_path)), data)
    changed = TrainConfig(
        **common, learning_rate=0.1, checkpoint_dir=str(tmp_path), resume=str(tmp_path)
    )
    with pytest.raises(ConfigError, match=r"--lr 0\.005 \(now 0\.1\)"):
        run_fit("hybrid", changed, data)


@pytest.mark.parametrize(
    ("name", "option", "flag"),
    [("hybrid", {"dropout": 0.5}, r"--dropout 0\.2 \(now 0\.5\)"),
     ("sasrec", {"num_heads": 4}, r"--num-heads 2 \(now 4\)")],
)  # fmt: skip
def test_resume_refuses_other_model_options_of_the_same_shapes(
    tmp_path, planted_encoded, name, option, flag
):
    """Weights of the same shapes loaded silently, and the model's config then recorded
    options the first epochs never used."""
    common = dict(epochs=2, batch_size=64, device="cpu", checkpoint_every=1)
    run_fit(name, TrainConfig(**common, checkpoint_dir=str(tmp_path)), planted_encoded)
    again = TrainConfig(**common, checkpoint_dir=str(tmp_path), resume=str(tmp_path))
    with pytest.raises(ConfigError, match=flag):
        run_fit(name, again, planted_encoded, **option)
    run_fit(name, again, planted_encoded)  # the same options resume


def test_checkpoint_every_needs_a_folder(planted_encoded):
    with pytest.raises(ConfigError, match="--checkpoint-every needs a folder"):
        run_fit("hybrid", TrainConfig(epochs=1, device="cpu", checkpoint_every=1), planted_encoded)
    with pytest.raises(ConfigError, match="--checkpoint-every must be >= 0"):
        TrainConfig(checkpoint_every=-1)


def test_missing_and_corrupt_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path)
    (tmp_path / CHECKPOINT).write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="damaged or not a hybridrec checkpoint"):
        load_checkpoint(tmp_path)
    torch.save({"something": torch.zeros(1)}, tmp_path / CHECKPOINT)
    with pytest.raises(CheckpointError, match="not a hybridrec training checkpoint"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("content", [None, b"\x00garbage", b"PK\x03\x04truncated zip"])
def test_cli_resume_from_bad_checkpoint_is_one_line(tmp_path, capsys, content):
    train, val = planted(num_users=20, num_items=40)
    train.to_csv(tmp_path / "train.csv", index=False)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    if content is not None:
        (ckpt / CHECKPOINT).write_bytes(content)
    code = cli_main(
        ["train", "--train", str(tmp_path / "train.csv"), "--out", str(tmp_path / "m")]
        + ["--epochs", "1", "--device", "cpu", "--no-progress", "--resume", str(ckpt)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: ") and "Traceback" not in "\n".join(err)
    assert str(ckpt) in err[-1]


def _train_command(train_csv, val_csv, out, epochs, *extra):
    return [
        sys.executable,
        "-m",
        "hybridrec",
        "train",
        "--train",
        str(train_csv),
        "--val",
        str(val_csv),
        "--out",
        str(out),
        "--epochs",
        str(epochs),
        "--batch-size",
        "64",
        "--embedding-dim",
        "8",
        "--mlp-layers",
        "16,8",
        "--early-stop",
        "none",
        "--device",
        "cpu",
        "--no-progress",
        "--checkpoint-every",
        "1",
        *extra,
    ]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_sigkill_mid_run_then_resume_finishes_all_epochs(tmp_path):
    train, val = planted(num_users=100, num_items=60, groups=5, per_user=8)
    train.to_csv(tmp_path / "train.csv", index=False)
    val.to_csv(tmp_path / "val.csv", index=False)
    out, epochs = tmp_path / "model", 10
    command = _train_command(tmp_path / "train.csv", tmp_path / "val.csv", out, epochs)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path
    )
    try:
        deadline = time.monotonic() + 120  # a hung child fails the test, not CI's clock
        while not (out / CHECKPOINT).exists() and proc.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.005)  # poll for the first checkpoint file, then kill at once
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "training ended before it could be killed"
    killed_at = load_checkpoint(out)["epoch"]
    assert 1 <= killed_at < epochs
    assert not (out / "config.json").exists()  # no artifact from the killed run

    done = subprocess.run(
        [*command, "--resume", str(out), "--json"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["epochs"] == epochs
    assert f"resuming after epoch {killed_at} of {epochs}" in done.stderr
    saved = json.loads((out / "metrics.json").read_text())
    assert [row["epoch"] for row in saved["history"]] == list(range(1, epochs + 1))
    rec = hybridrec.load(out)
    assert rec.score_indices([1, 2], [1, 2]).shape == (2,)
    assert load_checkpoint(Path(out))["epoch"] == epochs


def test_keys_written_before_the_validation_part_compare_their_training_part():
    from hybridrec.checkpoint import check_same_data

    check_same_data("abc", "abc+none", "ck")  # an older checkpoint: validation not recorded
    check_same_data("abc", "abc+def", "ck")
    check_same_data("abc+def", "abc+def", "ck")
    with pytest.raises(ConfigError, match="trained on other data"):
        check_same_data("abc", "xyz+none", "ck")
    with pytest.raises(ConfigError, match="validated on other rows"):
        check_same_data("abc+def", "abc+none", "ck")
