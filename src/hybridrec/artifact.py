"""Save and load a trained model as a directory that reloads exactly and never runs code.

Layout (``FORMAT_VERSION`` 1):

- ``weights.pt``    the model's ``state_dict`` only, read back with ``weights_only=True``;
- ``id_maps.json``  raw id <-> index maps for users and items;
- ``metrics.json``  per-epoch training history and final validation metrics;
- ``seen.npz``      optional: each user's training positives (CSR ``indptr``/``items``) and
  each item's positive count (``item_counts``), so recommendations can leave out what a user
  already has and fall back to popularity; artifacts saved before it existed load without it;
- ``optimizer.pt``  optional: Adam's moments by parameter name, so ``hybridrec update``
  continues the optimisation; read only by :func:`load_moments` (serving never needs it);
- ``config.json``   written last: format version, model name and hyper-parameters, data and
  training settings, and the SHA-256 of every other file, so a truncated file or a mix of two
  saves is detected on load instead of producing wrong scores.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from hybridrec.data.encoding import IdEncoder
from hybridrec.data.seen import SeenItems
from hybridrec.errors import ArtifactError
from hybridrec.files import atomic_write, atomic_write_json, staging_path, swap_in
from hybridrec.models import model_class

FORMAT = "hybridrec-model"
FORMAT_VERSION = 1
CONFIG, WEIGHTS, ID_MAPS, METRICS = "config.json", "weights.pt", "id_maps.json", "metrics.json"
SEEN, OPTIMIZER = "seen.npz", "optimizer.pt"


class Artifact(NamedTuple):
    """What :func:`load_artifact` returns."""

    model: nn.Module
    users: IdEncoder
    items: IdEncoder
    config: dict[str, Any]
    seen: SeenItems | None  # None for artifacts saved without seen.npz


def save_artifact(
    directory: str | Path,
    *,
    model: nn.Module,
    model_name: str,
    users: IdEncoder,
    items: IdEncoder,
    metrics: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    seen: SeenItems | None = None,
    moments: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write the artifact; each file atomically, ``config.json`` (with checksums) last.

    ``seen`` (the users' training positives) is written as ``seen.npz`` and ``moments``
    (the optimiser's state, :meth:`hybridrec.training.optim.Optimizers.export_moments`)
    as ``optimizer.pt`` when given.
    """
    from hybridrec import __version__

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, buffer)
    payloads = {
        WEIGHTS: buffer.getvalue(),
        ID_MAPS: _json_bytes({"users": users.to_dict(), "items": items.to_dict()}),
        METRICS: _json_bytes(metrics or {}),
    }
    if seen is not None:
        payloads[SEEN] = seen.to_bytes()
    if moments:
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in moments.items()}, buffer)
        payloads[OPTIMIZER] = buffer.getvalue()
    # Over an existing model the new one is built beside it and swapped in whole, so a
    # crash mid-save leaves a loadable model (the old or the new), never a mix.
    replacing = (directory / CONFIG).exists()
    target = staging_path(directory, "new") if replacing else directory
    if replacing:
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
    for name, payload in payloads.items():
        atomic_write(target / name, lambda f, p=payload: f.write(p))
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "hybridrec_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model_name,
        "model_config": asdict(model.config),  # type: ignore[arg-type]
        "settings": settings or {},
        "sha256": {name: hashlib.sha256(p).hexdigest() for name, p in payloads.items()},
    }
    atomic_write_json(target / CONFIG, config)
    if replacing:  # what is not the artifact (checkpoint, progress, plots) stays; an
        # export of the old model would score the new id maps wrongly: it goes
        swap_in(target, directory, keep=lambda name: name not in ARTIFACT_FILES | EXPORTS)
    return directory


#: The files of an artifact; anything else in a model directory is left alone on a resave.
ARTIFACT_FILES = frozenset({CONFIG, WEIGHTS, ID_MAPS, METRICS, SEEN, OPTIMIZER})
#: ``hybridrec export``'s default files in the model directory (``export.FORMATS``): removed
#: when another model is saved there, as they belong to the old one.
EXPORTS = frozenset({"model.pt", "model.onnx"})


def is_artifact(directory: Path) -> bool:
    """Whether ``directory`` holds a complete artifact (its config, written last, exists)."""
    return (directory / CONFIG).is_file()


def load_artifact(directory: str | Path) -> Artifact:
    """Read an artifact back: ``(model in eval mode on CPU, users, items, config, seen)``.

    ``seen`` is None when the artifact has no ``seen.npz`` (saved before it existed).

    Raises:
        ArtifactError: the directory is missing, is not an artifact, is damaged or was
            written by an incompatible version.
    """
    directory = Path(directory)
    if not directory.exists() and is_artifact(staging_path(directory, "new")):
        # a save is between its two renames, or was killed there: the new model is
        # complete beside it (the next training into it moves it into place)
        directory = staging_path(directory, "new")
    if directory.is_file():  # a data file given as --model, say
        raise ArtifactError(
            f"{directory} is a file, not a model directory; give the folder that "
            "`hybridrec train --out` wrote"
        )
    if not directory.is_dir():
        raise ArtifactError(
            f"no model directory at {directory}; train one with `hybridrec train --out {directory}`"
        )
    config = _read_json(directory, CONFIG, what="is not a hybridrec model")
    if config.get("format") != FORMAT or not isinstance(config.get("format_version"), int):
        raise ArtifactError(f"{directory / CONFIG} is not a hybridrec model config")
    if config["format_version"] > FORMAT_VERSION:
        raise ArtifactError(
            f"{directory} was saved in format {config['format_version']}, newer than this "
            f"hybridrec reads ({FORMAT_VERSION}); upgrade hybridrec to load it"
        )
    settings = config.get("settings", {})  # not checksummed: its shape is checked here
    if not isinstance(settings, dict) or not all(
        isinstance(settings.get(part, {}), dict) for part in ("data", "train")
    ):
        raise ArtifactError(
            f"{directory / CONFIG} is damaged (its settings are not JSON objects); save it again"
        )
    checksums = config.get("sha256")
    if not isinstance(checksums, dict) or not all(isinstance(v, str) for v in checksums.values()):
        raise ArtifactError(f"{directory / CONFIG} is damaged (no file checksums); save it again")
    strange = sorted(set(checksums) - ARTIFACT_FILES)
    if strange:  # the loader reads its own files only, never a path a config points to
        raise ArtifactError(
            f"{directory / CONFIG} lists files that are not part of a model "
            f"({', '.join(repr(n[:40]) for n in strange[:3])}); save the model again"
        )
    blobs = {
        name: _checked_bytes(directory / name, digest)
        for name, digest in checksums.items()
        if name != OPTIMIZER  # training state: read by load_moments alone
    }
    if WEIGHTS not in blobs or ID_MAPS not in blobs:
        raise ArtifactError(f"{directory / CONFIG} lists no {WEIGHTS}/{ID_MAPS}; save it again")
    try:
        cls = model_class(config["model"])
        model = cls(cls.config_class(**config["model_config"]))
    except Exception as exc:
        raise ArtifactError(
            f"{directory / CONFIG} describes a model this hybridrec cannot build: {exc}"
        ) from exc
    try:
        state = torch.load(io.BytesIO(blobs[WEIGHTS]), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:
        raise ArtifactError(f"{directory / WEIGHTS} does not fit the model: {exc}") from exc
    for name, tensor in state.items():  # NaN weights would serve empty or arbitrary lists
        if torch.is_floating_point(tensor) and not bool(torch.isfinite(tensor).all()):
            raise ArtifactError(
                f"{directory / WEIGHTS}: {name[:60]} holds NaN or infinite weights; retrain "
                "the model (a diverging run is stopped before it saves)"
            )
    maps = json.loads(blobs[ID_MAPS])
    users, items = IdEncoder.from_dict(maps["users"]), IdEncoder.from_dict(maps["items"])
    seen = None
    if SEEN in blobs:
        try:
            seen = SeenItems.from_bytes(
                blobs[SEEN], num_users=users.num_embeddings, num_items=items.num_embeddings
            )
        except Exception as exc:  # numpy raises several types for a bad .npz
            raise ArtifactError(
                f"{directory / SEEN} does not fit the model ({exc}); save the model again"
            ) from exc
    model.eval()
    _check_scores(model, directory, users.num_embeddings, items.num_embeddings)
    return Artifact(model, users, items, config, seen)


#: Items a loaded model scores once, to see that its finite weights give finite scores.
_PROBE_ITEMS = 1024


def _check_scores(model: torch.nn.Module, directory: Path, num_users: int, num_items: int) -> None:
    """Refuse finite weights too large to compute with (scaled by 1e30, say): the scores
    overflow to NaN or infinity and every list would be served empty."""
    user = torch.full((min(num_items, _PROBE_ITEMS),), min(1, num_users - 1))
    items = torch.arange(len(user)).clamp(min=1 if num_items > 1 else 0)
    with torch.no_grad():
        scores = model(user, items).float()
    if bool(torch.isnan(scores).any() or torch.isposinf(scores).any()):
        raise ArtifactError(
            f"{directory / WEIGHTS}: the weights are finite but too large to compute with "
            "(the model's scores overflow); retrain the model"
        )


def load_moments(directory: str | Path) -> dict[str, torch.Tensor] | None:
    """The optimiser state saved with an artifact, or None when it has none (saved before
    ``optimizer.pt`` existed, or by a model with nothing to optimise).

    Raises:
        ArtifactError: the file is missing, damaged or not a flat dict of tensors.
    """
    directory = Path(directory)
    config = _read_json(directory, CONFIG, what="is not a hybridrec model")
    digest = (config.get("sha256") or {}).get(OPTIMIZER)
    if not isinstance(digest, str):
        return None
    path = directory / OPTIMIZER
    blob = _checked_bytes(path, digest)
    try:
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ArtifactError(f"{path} cannot be read ({exc}); retrain the model") from exc
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ArtifactError(f"{path} is not an optimiser state; retrain the model")
    return state


def moments_of(model: nn.Module, directory: str | Path) -> dict[str, torch.Tensor] | None:
    """The optimiser state saved in ``directory`` when every tensor of it belongs to a
    parameter of ``model`` with the same shape (a model loaded from there and not grown
    since); None otherwise, or when the directory no longer holds a readable one."""
    try:
        moments = load_moments(directory)
    except ArtifactError:
        return None
    if not moments:
        return None
    params = dict(model.named_parameters())
    for key, value in moments.items():
        name, _, field = key.rpartition(":")
        if name not in params or (field != "step" and value.shape != params[name].shape):
            return None
    return moments


def _checked_bytes(path: Path, digest: str) -> bytes:
    """The file's bytes, checked against the SHA-256 the config lists for it."""
    if not path.is_file():
        raise ArtifactError(f"{path} is missing; the artifact is incomplete, save it again")
    blob = path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != digest:
        raise ArtifactError(
            f"{path} is truncated or belongs to another save (checksum mismatch); "
            "save or copy the model again"
        )
    return blob


def read_metrics(directory: str | Path) -> dict[str, Any]:
    """The training metrics stored with an artifact (empty when there are none)."""
    path = Path(directory) / METRICS
    return json.loads(path.read_text()) if path.is_file() else {}


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _read_json(directory: Path, name: str, what: str) -> dict[str, Any]:
    path = directory / name
    if not path.is_file():
        raise ArtifactError(f"{directory} {what}: it has no {name}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is damaged ({exc}); save the model again") from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} is damaged (not a JSON object); save the model again")
    return data
