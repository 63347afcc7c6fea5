"""Retraining into an existing model directory, killed (SIGKILL) at several points: during
the epochs, and at three moments of the final save. The old model must still load and give
the same recommendations (or, once the new one is complete and swapped in, the new one must
load), and a later training into the same ``--out`` must succeed and leave no staging
folders or temporary files behind.

Each kill point runs ``hybridrec train`` in a subprocess through a small driver that holds
the save at the chosen moment (it writes a marker file and sleeps), so the kill lands
exactly there whatever the machine's speed: no sleeps, no timed assertions.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hybridrec
from hybridrec import TrainConfig

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL and flock are POSIX")

#: Runs ``hybridrec.cli.main(argv)`` after arranging for the save to stop at ``MODE``:
#: it creates ``MARKER`` and sleeps, waiting for the test's SIGKILL.
DRIVER = r"""
import os, sys, time
from pathlib import Path

mode, marker, argv = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
import hybridrec.artifact as artifact
import hybridrec.files as files


def hold():
    marker.write_text(mode)
    time.sleep(600)


class Os:
    # hybridrec.files' view of os: os itself, except for the one call to stop at
    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def replace(src, dst):
        os.replace(src, dst)
        if mode == "between-renames" and str(dst).endswith(".old"):
            hold()  # the old model moved aside, the new one not yet in its place


class Shutil:
    def __getattr__(self, name):
        import shutil
        return getattr(shutil, name)

    @staticmethod
    def rmtree(path, ignore_errors=False):
        import shutil
        if mode == "after-swap" and str(path).endswith(".old") and Path(path).exists():
            hold()  # the new model in place, the old one not yet deleted
        shutil.rmtree(path, ignore_errors=ignore_errors)


if mode == "before-config":
    real_json = artifact.atomic_write_json

    def write_json(path, data):
        if Path(path).name == "config.json":
            hold()  # every other file of the new artifact written, its config not
        real_json(path, data)

    artifact.atomic_write_json = write_json
files.os = Os()
files.shutil = Shutil()
from hybridrec.cli import main

sys.exit(main(argv))
"""

OPTIONS = {"embedding_dim": 8, "mlp_layer_sizes": (8,)}
FLAGS = ["--embedding-dim", "8", "--mlp-layers", "8", "--device", "cpu", "--no-progress",
         "--val", "none", "--batch-size", "64", "--seed", "7"]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Positives of 30 users over 40 items (each user 6 items)."""
    rng = np.random.default_rng(0)
    rows = [(u, int(i)) for u in range(1, 31) for i in rng.choice(np.arange(1, 41), 6, False)]
    path = tmp_path_factory.mktemp("kill") / "train.csv"
    pd.DataFrame(rows, columns=["userId", "itemId"]).to_csv(path, index=False)
    return path


def artifact_digest(directory: Path) -> dict[str, str]:
    """sha256 of each file of the artifact proper (what a model load reads)."""
    names = ("config.json", "weights.pt", "id_maps.json", "metrics.json", "seen.npz")
    return {n: hashlib.sha256((directory / n).read_bytes()).hexdigest() for n in names}


def recommendations(directory: Path) -> list[list]:
    rec = hybridrec.load(directory)
    return [rec.recommend(user, k=5).item_ids.tolist() for user in rec.users.ids[:10]]


def wait_for(path: Path, process: subprocess.Popen, limit: float = 120.0) -> None:
    """Until ``path`` exists; fails if the process ends first or nothing happens for
    ``limit`` seconds (a hang, not a measurement)."""
    deadline = time.monotonic() + limit
    while not path.exists():
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"training ended (status {process.returncode}) before {path}: {err}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{path} did not appear")
        time.sleep(0.01)


def start(data: Path, out: Path, mode: str, marker: Path, epochs: int) -> subprocess.Popen:
    argv = ["train", "--train", str(data), "--out", str(out), "--epochs", str(epochs), *FLAGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, mode, str(marker), *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    ("mode", "epochs", "wait_for_name", "old_survives"),
    [
        ("epoch", 100_000, "progress.json", True),  # epoch 1 recorded: killed in a later one
        ("before-config", 1, "marker", True),  # new artifact half written beside the old
        ("between-renames", 1, "marker", False),  # the directory itself is missing
        ("after-swap", 1, "marker", False),  # new model in place, old not yet deleted
    ],
)
def test_a_killed_retrain_never_damages_the_model(
    data, tmp_path, mode, epochs, wait_for_name, old_survives
):
    out = tmp_path / "model"
    hybridrec.train(
        data, None, out=out, model_options=OPTIONS,
        train_config=TrainConfig(epochs=1, batch_size=64, device="cpu", seed=0),
    )  # fmt: skip
    before_files, before_recs = artifact_digest(out), recommendations(out)
    marker = tmp_path / "marker"
    process = start(data, out, mode, marker, epochs)
    wait_for(marker if wait_for_name == "marker" else out / wait_for_name, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL

    if old_survives:
        assert artifact_digest(out) == before_files  # not a byte of the artifact changed
        assert recommendations(out) == before_recs
    else:  # the swap had begun: the new model is complete and is what loads
        assert recommendations(tmp_path / "model") is not None

    # a later training into the same --out: the kernel dropped the lock with the process,
    # and what the killed run left (staging folders, temp files) is recovered or removed
    result = hybridrec.train(
        data, None, out=out, model_options=OPTIONS,
        train_config=TrainConfig(epochs=1, batch_size=64, device="cpu", seed=3),
    )  # fmt: skip
    assert result.out == out
    assert artifact_digest(out) != before_files
    assert recommendations(out) == [
        result.recommender.recommend(u, k=5).item_ids.tolist()
        for u in result.recommender.users.ids[:10]
    ]
    leftovers = {p.name for p in tmp_path.iterdir()} - {"model", "marker", ".model.lock"}
    assert leftovers == set()
    assert not list(out.glob(".*.tmp"))
    assert not (out / "progress.json").exists()
