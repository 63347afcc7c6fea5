"""The model directory a training run writes: checked before any data is read, locked for
the run, and never left damaged (see :mod:`hybridrec.files`)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from hybridrec import distributed
from hybridrec.artifact import FORMAT as ARTIFACT_FORMAT
from hybridrec.artifact import is_artifact
from hybridrec.config import TrainConfig
from hybridrec.errors import ConfigError
from hybridrec.files import check_output_dir, exclusive, recover


@contextlib.contextmanager
def output_dir(out: str | Path | None, config: TrainConfig) -> Iterator[None]:
    """The output directory, checked before any data is read and locked for the run.

    A path that is a file, lies under a file or cannot be written is refused now, not after
    the first epoch, and so is a ``--checkpoint-dir`` that could not be written; a second
    process training into the same directory is refused
    (:func:`hybridrec.files.exclusive`); a save that a crash interrupted is completed and
    stale temporary files are removed. Only rank 0 writes, so only it checks and locks.
    """
    if config.checkpoint_every and config.checkpoint_dir is not None and distributed.is_main():
        check_output_dir(config.checkpoint_dir, "--checkpoint-dir")
    if out is None or not distributed.is_main():
        yield
        return
    directory = check_output_dir(out, "--out")
    _check_replaceable(directory)
    try:  # the parents (not the directory itself: a failed run leaves no empty model)
        directory.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"--out {directory}: cannot create the model directory ({exc.strerror or exc})"
        ) from None
    with exclusive(directory):
        recover(directory, is_artifact)
        yield


def model_dir_path(out: str | Path) -> Path:
    """``out`` as the model directory's path: absolute when it ends in ``.``/``..`` or is
    empty, since the staging folders and the lock are named after its last part."""
    path = Path(out)
    return Path(os.path.abspath(path)) if path.name in ("", ".", "..") else path


def check_save_target(directory: str | Path) -> Path:
    """The checks ``--out`` gets, for :meth:`Recommender.save` called directly: not empty,
    not a file, not the working directory or one holding it (a save over a model renames
    the whole folder), not a folder whose ``config.json`` belongs to something else."""
    if str(directory) == "":
        raise ConfigError("save needs a model directory, got an empty path")
    path = model_dir_path(directory)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"cannot save a model to {directory}: it is a file")
    _check_replaceable(path)
    return path


def _check_replaceable(directory: Path) -> None:
    """Refuse an ``--out`` whose replacement would harm something that is not a model.

    A retrain renames the whole directory, so it must not be the working directory (or
    hold it); and a ``config.json`` there that is not a hybridrec model's belongs to
    something else, which the swap would delete.
    """
    resolved = directory.resolve()
    if resolved.name == "" or Path.cwd().resolve().is_relative_to(resolved):
        raise ConfigError(
            f"--out {directory} is the current directory or holds it; a model is replaced as "
            "a whole directory, so give it a folder of its own, e.g. --out model"
        )
    config = directory / "config.json"
    if config.is_file() and not _is_model_config(config):
        raise ConfigError(
            f"--out {directory} holds a config.json that is not a hybridrec model's; choose "
            "another --out (saving would replace that file)"
        )


def _is_model_config(path: Path) -> bool:
    """Whether ``path`` is the ``config.json`` of a hybridrec artifact (even a damaged one)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == ARTIFACT_FORMAT
