"""RecSys.py (cli.recsys_main): the seed's entry point, ``python RecSys.py``, run end to end
as a real process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from hybridrec.cli import recsys_main

SCRIPT = Path(__file__).resolve().parents[1] / "RecSys.py"
FAST = ["--epochs", "2", "--no-progress", "--device", "cpu", "--batch-size", "256"]
FAST += ["--embedding-dim", "8", "--mlp-layers", "16,8"]


def run_script(cwd, *args):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def workdir(tmp_path, synthetic_data):
    """A folder holding train.csv and val.csv, like the seed's usage expects."""
    for path in synthetic_data:
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def test_trains_and_saves(workdir):
    proc = run_script(workdir, *FAST, "--json")
    assert proc.returncode == 0, proc.stderr
    assert (workdir / "model" / "config.json").is_file()
    assert (workdir / "model" / "weights.pt").is_file()
    summary = json.loads(proc.stdout)
    assert summary["epochs"] == 2
    assert summary["val_rows"] > 0  # val.csv was found and used
    assert "Traceback" not in proc.stderr


def test_help(tmp_path):
    proc = run_script(tmp_path, "--help")
    assert proc.returncode == 0
    for flag in ("--train", "--val", "--out", "--epochs", "--lr", "--embedding-dim"):
        assert flag in proc.stdout, flag
    assert "train.csv" in proc.stdout  # the defaults are the seed's file names


def test_bad_train_csv_is_a_clean_error(tmp_path):
    (tmp_path / "train.csv").write_text("user,item,target\n1,2,1\n")
    proc = run_script(tmp_path, *FAST)
    assert proc.returncode == 2
    assert "error:" in proc.stderr
    assert "train.csv" in proc.stderr and "userId" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "model").exists()


def test_without_val_csv_trains_without_validation(tmp_path, synthetic_data, monkeypatch, capsys):
    """In-process (no second interpreter start): a missing val.csv is a note, not an error."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    shutil.copy(synthetic_data[0], tmp_path / "train.csv")
    assert recsys_main([*FAST, "--json"]) == 0
    out, err = capsys.readouterr()
    assert "no val.csv here" in err
    assert json.loads(out)["val_auc"] is None
    assert (tmp_path / "model" / "config.json").is_file()


def test_the_seeds_classes_import_from_recsys_py(tmp_path):
    """The seed defined RecSysDataset and HybridRecSys in RecSys.py: importing them from
    there keeps working (from another folder, the script's own on sys.path)."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import hybridrec\n"
        "from RecSys import RecSysDataset, HybridRecSys\n"
        "assert RecSysDataset is hybridrec.RecSysDataset\n"
        "assert HybridRecSys is hybridrec.HybridRecSys\n"
        "import RecSys\n"
        "try:\n    RecSys.nothing\nexcept AttributeError:\n    print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(SCRIPT.parent)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
