"""Training checkpoints: everything ``fit`` needs to continue a run where it stopped.

``--checkpoint-every N`` writes ``checkpoint.pt`` (in ``--checkpoint-dir``, by default the
model directory) after every N-th epoch and after the last one; ``--resume DIR`` reads it
back and continues. A checkpoint holds only plain data (tensors, numbers, strings, lists and
dicts), so it is read with ``torch.load(weights_only=True)``: loading one never runs code
from the file. It is written to a temporary file and renamed into place (see
:mod:`hybridrec.files`), so a process killed mid-write leaves the previous checkpoint
intact.

Contents (format version 1):

- ``epoch``: epochs completed; ``stopped_early``: whether early stopping ended the run;
- ``model``, ``optimizer`` (and ``scaler`` with ``--amp fp16``): their ``state_dict``;
- ``rng``: the shuffling generator (identical on all ranks), and per rank the negative
  sampling generator and torch's global CPU (and CUDA) RNG state (dropout, sequence-model
  negatives);
- ``early_stopping``: best value, best epoch, the best epoch's weights, epochs waited;
- ``history``: the per-epoch statistics so far;
- ``train_config``, ``model_name``, ``model_options`` (the model's hyper-parameters),
  ``world_size``, ``data_key`` (a digest of the training and validation rows and the ids,
  :func:`run_key`): to refuse a resume with
  different settings or data, which would silently give a different run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybridrec.config import TrainConfig
from hybridrec.errors import ArtifactError, ConfigError
from hybridrec.files import atomic_write

CHECKPOINT = "checkpoint.pt"
FORMAT = "hybridrec-checkpoint"
FORMAT_VERSION = 1
#: Training settings a resumed run may change: they do not alter the optimisation path.
MAY_CHANGE = frozenset(
    {
        "epochs",
        "device",
        "num_threads",
        "eval_batch_size",
        "checkpoint_every",
        "checkpoint_dir",
        "resume",
        "patience",
        "compile",
    }
)


class CheckpointError(ArtifactError):
    """A checkpoint is missing, damaged, or does not belong to this training run."""


def checkpoint_file(path: str | Path) -> Path:
    """``path`` itself if it names a file, else ``path / checkpoint.pt``."""
    path = Path(path)
    return path if path.suffix == ".pt" else path / CHECKPOINT


def config_dict(config: TrainConfig) -> dict[str, Any]:
    """The settings as plain JSON types (tuples become lists)."""
    return json.loads(json.dumps(asdict(config)))


def model_options(model: Any) -> dict[str, Any]:
    """The hyper-parameters a user chose for ``model`` (its config's fields that are
    command-line options), as plain JSON: what a resume must keep. Sizes taken from the
    data (users, items, feature shapes) are the data key's to check."""
    config = getattr(model, "config", None)
    if config is None or not is_dataclass(config):
        return {}
    chosen = {
        f.name: getattr(config, f.name) for f in fields(config) if f.metadata.get("cli", True)
    }
    return json.loads(json.dumps(chosen, default=str))


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plain data only) atomically to ``path`` (a file or a directory)."""
    path = checkpoint_file(path)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **payload}
    atomic_write(path, lambda f: torch.save(payload, f))
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint (a file, or a directory holding ``checkpoint.pt``) safely.

    Raises:
        CheckpointError: no such file, not a checkpoint, damaged or truncated.
    """
    file = checkpoint_file(path)
    if not file.is_file():
        raise CheckpointError(
            f"--resume {path}: no checkpoint at {file}; train with --checkpoint-every N "
            "to write one"
        )
    try:
        data = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip, pickle and EOF errors alike: the file is unusable
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{file} is damaged or not a hybridrec checkpoint ({reason[:200]}); resume from "
            "another checkpoint or train from the start"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{file} is not a hybridrec training checkpoint")
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{file} was written by a newer hybridrec (format {data['format_version']}); "
            "upgrade hybridrec to resume from it"
        )
    missing = {"epoch", "model", "optimizer", "rng", "early_stopping", "history"} - set(data)
    if missing:
        raise CheckpointError(f"{file} is incomplete (no {', '.join(sorted(missing))})")
    return data


def data_key(users: Any, items: Any, data: Any) -> str:
    """A digest of a run's training rows (encoded users, items, targets) and of the raw ids
    behind the encodings: two files with the same shape but other ids, or one read with
    another ``--threshold``, differ. Hashing 20M rows takes about a second, so only runs
    that checkpoint or resume compute it."""
    digest = hashlib.blake2b(digest_size=16)
    for encoder in (users, items):
        ids = np.asarray(encoder.ids)
        digest.update(ids.tobytes() if ids.dtype != object else "\x00".join(map(str, ids)).encode())
        digest.update(b"|")
    for column in (data.user_idx, data.item_idx, data.target):
        digest.update(column.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def run_key(users: Any, items: Any, data: Any, val: Any | None) -> str:
    """:func:`data_key` of the training rows, then ``+`` and that of the validation rows
    (``none`` without them): a resume validating on other rows would mix two validation
    sets in one early-stopping history. Keys written before this part existed have no
    ``+``; :func:`check_same_data` then compares the training part alone."""
    return (
        data_key(users, items, data)
        + "+"
        + ("none" if val is None else data_key(users, items, val))
    )


def check_same_data(saved: str | None, now: str | None, where: str | Path) -> None:
    """Refuse a resume on other training rows, or (keys that record it) other validation
    rows, than the checkpoint's (:func:`run_key`)."""
    if saved is None or now is None:
        return
    saved_train, with_val, saved_val = saved.partition("+")
    now_train, _, now_val = now.partition("+")
    if saved_train != now_train:
        raise ConfigError(
            f"--resume {where}: the checkpoint was trained on other data (other ids, rows "
            "or --threshold); resume with the interrupted run's data and data options"
        )
    if with_val and saved_val != now_val:
        raise ConfigError(
            f"--resume {where}: the checkpoint was validated on other rows (another --val "
            "file, or none where it had one, or one where it had none); early stopping "
            "would compare epochs on two validation sets: resume with the interrupted "
            "run's --val"
        )


def check_compatible(
    data: dict[str, Any],
    config: TrainConfig,
    model_name: str,
    where: str | Path,
    options: dict[str, Any] | None = None,
) -> None:
    """Refuse to resume a checkpoint written with other settings, another model, or other
    model hyper-parameters (``options``, :func:`model_options`; checkpoints written before
    they were kept are not checked for them).

    Raises:
        ConfigError: naming the first options that differ and their saved values.
    """
    if data.get("model_name") != model_name:
        raise ConfigError(
            f"--resume {where}: the checkpoint is of a {data.get('model_name')} model, "
            f"not {model_name}; pass the same --model as the interrupted run"
        )
    saved_model = data.get("model_options")
    if options is not None and isinstance(saved_model, dict):
        changed = [k for k in options if k in saved_model and saved_model[k] != options[k]]
        if changed:
            shown = ", ".join(
                f"{_model_flag(k)} {saved_model[k]!r} (now {options[k]!r})" for k in changed
            )
            raise ConfigError(
                f"--resume {where}: the checkpoint's model was built with {shown}; resume "
                "with the interrupted run's model options"
            )
    saved, now = data.get("train_config", {}), config_dict(config)
    differ = [k for k in now if k not in MAY_CHANGE and k in saved and saved[k] != now[k]]
    if differ:
        shown = ", ".join(f"{_flag(k)} {saved[k]!r} (now {now[k]!r})" for k in differ)
        raise ConfigError(
            f"--resume {where}: the checkpoint was trained with {shown}; resume with the "
            "interrupted run's options (only --epochs, --patience, --device, --threads and "
            "checkpoint options may change)"
        )


def _model_flag(name: str) -> str:
    """The flag of a model option (the registered models' configs agree on names)."""
    from hybridrec.models import MODELS

    return _flag(name, *(cls.config_class for cls in MODELS.values()))


def _flag(name: str, *classes: Any) -> str:
    """The flag of option ``name`` of the first of ``classes`` (default: TrainConfig) that
    has it."""
    for cls in classes or (TrainConfig,):
        for f in fields(cls):
            if f.name == name:
                return str(f.metadata.get("flag", "--" + name.replace("_", "-")))
    return "--" + name.replace("_", "-")
