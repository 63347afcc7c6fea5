"""The search space of ``hybridrec tune``: a default per model, overridable by a TOML file.

A parameter is a ``train`` option under its config-file key (``lr``, ``embedding_dim``,
``mlp_layers``), so whatever a trial picks can be written back as a config file. A file
names one table per parameter::

    [lr]                      # a range: low and high, optionally log (and step)
    low = 1e-4
    high = 1e-2
    log = true

    [mlp_layers]              # or a list of choices, in the option's config-file spelling
    choices = [[64, 32], [128, 64, 32]]

The file's tables replace the model's default for the parameters they name and add the
others; a top-level ``defaults = false`` searches only the file's parameters.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from hybridrec.config import TrainConfig
from hybridrec.configfile import options_of, to_tokens
from hybridrec.errors import ConfigError
from hybridrec.models import model_class
from hybridrec.values import value_kind

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with the tomli backport
    import tomli as tomllib

#: Training options that are not hyperparameters: where and how fast a run goes, what it
#: writes, and the metric trials are compared by (which must not change between trials).
NOT_SEARCHED = frozenset(
    {"device", "num_threads", "eval_batch_size", "checkpoint_every", "checkpoint_dir",
     "resume", "refit", "compile", "amp", "early_stop", "ks", "seed"}
)  # fmt: skip

_LR = {"lr": {"low": 1e-4, "high": 3e-2, "log": True}}
_DECAY = {"weight_decay": {"low": 1e-8, "high": 1e-3, "log": True}}
_NEGATIVES = {"negatives": {"low": 2, "high": 16}}
_EMBEDDING = {"embedding_dim": {"choices": [16, 32, 64, 128]}}
_MLP = {
    "mlp_layers": {"choices": [[32, 16], [64, 32, 16], [128, 64, 32]]},
    "dropout": {"low": 0.0, "high": 0.5},
}
_SASREC = {
    "hidden_dim": {"choices": [32, 64, 96, 128]},
    "num_blocks": {"low": 1, "high": 3},
    "dropout": {"low": 0.1, "high": 0.7},
}
#: The default space of each model, in the file's format. Models not named here (one
#: registered by a user) get the learning rate, weight decay and negatives.
DEFAULT_SPACES: dict[str, dict[str, dict[str, Any]]] = {
    "hybrid": {**_LR, **_EMBEDDING, **_NEGATIVES, **_DECAY, **_MLP},
    "mlp": {**_LR, **_EMBEDDING, **_NEGATIVES, **_DECAY, **_MLP},
    "neumf": {**_LR, **_EMBEDDING, **_NEGATIVES, **_DECAY, **_MLP},
    "mf": {**_LR, **_EMBEDDING, **_NEGATIVES, **_DECAY},
    "gmf": {**_LR, **_EMBEDDING, **_NEGATIVES, **_DECAY},
    # sasrec's own loss (ce) is a softmax over the catalogue: it samples no negatives
    "sasrec": {**_LR, **_DECAY, **_SASREC},
    "popularity": {},
}
_FALLBACK = {**_LR, **_NEGATIVES, **_DECAY}
_FIELDS = ("low", "high", "log", "step", "choices")


@dataclass(frozen=True)
class Param:
    """One searched option: a range (``low``..``high``, ``log``, ``step``) or ``choices``."""

    key: str
    action: argparse.Action
    source: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None

    @property
    def is_int(self) -> bool:
        return value_kind(self.action.type) == "int"

    def suggest(self, trial: Any) -> Any:
        """The trial's value, in the config file's types (a list for sizes)."""
        if self.choices is not None:
            shown = [choice_label(c) for c in self.choices]
            picked = trial.suggest_categorical(self.key, shown)
            return self.choices[shown.index(picked)]
        if self.is_int:
            step = int(self.step) if self.step is not None else 1
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=step,
                                     log=self.log)  # fmt: skip
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def distribution(self) -> Any:
        """The Optuna distribution :meth:`suggest` draws from (to compare with a study's)."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.choices is not None:
            return CategoricalDistribution([choice_label(c) for c in self.choices])
        if self.is_int:
            step = int(self.step) if self.step is not None else 1
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=step)  # type: ignore[arg-type]
        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)  # type: ignore[arg-type]

    def edge_values(self) -> list[Any]:
        """Values to check against the option's own rules before any trial runs."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(choice_label(c) for c in self.choices)
        text = f"{self.low:g}..{self.high:g}"
        return text + (" (log)" if self.log else "") + (f" step {self.step:g}" if self.step else "")


def choice_label(value: Any) -> Any:
    """A choice as Optuna stores it: lists (layer sizes) as their command-line text."""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return value


def searchable(train_parser: argparse.ArgumentParser, model: str) -> dict[str, argparse.Action]:
    """Key -> action of every option that can be searched for ``model``: the training
    hyperparameters and the model's own options."""
    names = {f.name for f in fields(TrainConfig)} - NOT_SEARCHED
    names |= {f.name for f in fields(model_class(model).config_class)}
    return {k: a for k, a in options_of(train_parser).items() if a.dest in names}


def load_space(
    path: str | Path | None, model: str, train_parser: argparse.ArgumentParser
) -> list[Param]:
    """The parameters to search: the model's defaults, with a ``--space`` file's over them."""
    valid = searchable(train_parser, model)
    default = DEFAULT_SPACES.get(model, {k: v for k, v in _FALLBACK.items() if k in valid})
    tables: dict[str, Mapping[str, Any]] = {k: v for k, v in default.items() if k in valid}
    source = "the default space"
    if path is not None:
        data = _read(path)
        source = str(path)
        keep = data.pop("defaults", True)
        if not isinstance(keep, bool):
            raise ConfigError(f"{path}: 'defaults' must be true or false, got {keep!r}")
        tables = dict(tables) if keep else {}
        for raw, table in data.items():
            key = raw.replace("-", "_")
            if key not in valid:
                raise ConfigError(f"{path}: {_unknown(raw, key, valid, model, train_parser)}")
            if not isinstance(table, dict):
                raise ConfigError(
                    f"{path}: {raw!r} must be a table like [{key}] with low/high or choices, "
                    f"got {type(table).__name__} {table!r}"
                )
            tables[key] = table
    params = [_param(source, key, table, valid[key]) for key, table in tables.items()]
    if not params:
        raise ConfigError(
            f"nothing to search: {source} has no parameters for model {model!r}"
            + (" (it learns nothing)" if model == "popularity" else "")
        )
    return params


def _read(path: str | Path) -> dict[str, Any]:
    if Path(path).exists() and not Path(path).is_file():
        raise ConfigError(f"--space {path} is not a file; give a TOML file")
    try:
        with open(path, encoding="utf-8-sig") as f:  # a byte-order mark, as --config
            return tomllib.loads(f.read())
    except FileNotFoundError:
        raise ConfigError(f"--space {path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"--space {path}: cannot read it ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text (expected a TOML file)") from None


def _unknown(
    raw: str,
    key: str,
    valid: dict[str, argparse.Action],
    model: str,
    train_parser: argparse.ArgumentParser,
) -> str:
    """An unknown parameter's message: the closest valid one, or the models that have it."""
    for name, action in valid.items():
        if action.dest == key:
            return f"unknown parameter {raw!r}; did you mean {name!r}?"
    from hybridrec.models import MODELS

    action = options_of(train_parser).get(key)
    dest = action.dest if action is not None else None
    owners = [m for m, cls in MODELS.items() if dest in {f.name for f in fields(cls.config_class)}]
    if owners:
        return f"parameter {raw!r} is an option of {', '.join(owners)}, not of model {model}"
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.0)
    hint = f"did you mean {close[0]!r}?" if close else "no option can be searched"
    return f"unknown parameter {raw!r} for model {model}; {hint}"


def _param(source: str, key: str, table: Mapping[str, Any], action: argparse.Action) -> Param:
    """One table as a :class:`Param`, every mistake named by file and parameter."""
    where = f"{source}: [{key}]"
    for name in table:
        if name not in _FIELDS:
            close = difflib.get_close_matches(name, _FIELDS, n=1, cutoff=0.0)
            raise ConfigError(f"{where}: unknown key {name!r}; did you mean {close[0]!r}? "
                              "(a parameter has low/high/log/step or choices)")  # fmt: skip
    if "choices" in table:
        extra = sorted(set(table) - {"choices"})
        if extra:
            raise ConfigError(f"{where}: choices cannot be combined with {', '.join(extra)}")
        choices = _choices(where, key, table["choices"], action)
        return Param(key, action, source, choices=choices)
    if "low" not in table or "high" not in table:
        raise ConfigError(f"{where}: give low and high (a range) or choices = [...]")
    kind = value_kind(action.type)
    if kind not in ("int", "float") or action.choices is not None:
        raise ConfigError(f"{where}: --{key.replace('_', '-')} is not a number; give choices")
    low, high = (_number(where, name, table[name], kind) for name in ("low", "high"))
    step = _number(where, "step", table["step"], kind) if "step" in table else None
    log = table.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    if low > high:
        raise ConfigError(f"{where}: low {low:g} is above high {high:g}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got {low:g}")
    if log and step is not None:
        raise ConfigError(f"{where}: give log or step, not both")
    if step is not None and step <= 0:
        raise ConfigError(f"{where}: step must be positive, got {step:g}")
    return Param(key, action, source, low=low, high=high, log=log, step=step)


def _number(where: str, name: str, value: Any, kind: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: {name} must be a number, got {value!r}")
    if kind == "int" and not isinstance(value, int):
        raise ConfigError(f"{where}: {name} must be an integer (the option is), got {value!r}")
    return value


def _choices(where: str, key: str, values: Any, action: argparse.Action) -> tuple[Any, ...]:
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: choices must be a non-empty list, got {values!r}")
    labels = [choice_label(v) for v in values]
    if len(set(map(repr, labels))) < len(labels):
        raise ConfigError(f"{where}: choices repeat a value")
    for value in values:
        if action.nargs == 0 and not isinstance(value, bool):
            raise ConfigError(f"{where}: choices of a switch are true/false, got {value!r}")
        if action.nargs != 0:
            to_tokens(where.split(": ")[0], key, value, action)  # the option's own type check
    return tuple(values)
