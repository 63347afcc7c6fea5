"""``hybridrec tune``: an Optuna study over a search space, one ``hybridrec.train`` per trial.

- **Sampling**: TPE, its random state seeded before every trial from ``--sampler-seed``
  (default ``--seed``) and the trial's number, which the storage makes unique: a trial's
  draws are reproducible from the study's history, and neither a resumed run nor a second
  process sharing the study repeats another's draws.
- **Pruning**: each epoch's validation metric is reported to the trial; a median pruner
  stops a trial whose metric is worse than the median of earlier trials at the same epoch,
  once it is past its warm-up epochs. The report raises :class:`optuna.TrialPruned` from
  the training loop's epoch callback, which ends training at once (nothing is saved: trials
  train in memory).
- **Storage**: an Optuna RDB URL (``sqlite:///tune.db``; default ``sqlite:///OUT/study.db``);
  a study of that name is loaded if it exists, so a rerun resumes it and several processes
  on one storage share it.
- **Validation**: the ``--val`` file, or without one the automatic holdout of ``train``
  (each user's latest interaction held out of ``--train``), never a test split. Trials keep
  the model trained without the held-out rows (no refit), so every trial is scored on rows
  it did not train on.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hybridrec.config import TrainConfig
from hybridrec.configfile import to_tokens
from hybridrec.errors import ConfigError, TrainingDivergedError
from hybridrec.training import EpochStats, History
from hybridrec.training.validation import LOWER_IS_BETTER
from hybridrec.tune.space import Param

logger = logging.getLogger(__name__)

#: Seconds a process waits for another's write lock on a shared SQLite file.
SQLITE_TIMEOUT = 60


@dataclass(frozen=True)
class StudySettings:
    """How the study runs (the ``tune`` flags that are not training options)."""

    trials: int
    timeout: float | None
    storage: str
    study_name: str
    sampler_seed: int | None
    pruner: str
    warmup_epochs: int
    startup_trials: int

    def check(self) -> None:
        if self.trials < 1:
            raise ConfigError(f"--trials must be at least 1, got {self.trials}")
        if self.timeout is not None and not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ConfigError(f"--timeout must be a positive number of seconds, got {self.timeout}")
        if self.warmup_epochs < 0 or self.startup_trials < 0:
            raise ConfigError("--warmup-epochs and --startup-trials must be >= 0")
        if not self.study_name.strip():
            raise ConfigError("--study-name must not be empty")


class EpochReporter:
    """The epoch callback of one trial: reports the validation metric at each epoch and
    prunes (raises :class:`optuna.TrialPruned`) when the pruner says so."""

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial, self.metric, self.epochs = trial, metric, 0

    def __call__(self, stats: EpochStats, history: History) -> None:
        import optuna

        self.epochs += 1
        value = stats.metric(self.metric)
        if value is None or not math.isfinite(value):
            return  # an epoch without validation (none while tuning)
        self.trial.report(value, step=stats.epoch)
        if self.trial.should_prune():
            self.trial.set_user_attr("epochs", self.epochs)
            raise optuna.TrialPruned(f"{self.metric} {value:.4f} at epoch {stats.epoch}")


def metric_for(config: TrainConfig, labelled: bool) -> str:
    """The metric trials are compared by: ``--early-stop``'s, as ``auto`` resolves it
    (loss for 0/1 validation labels, NDCG@K of the first ``--k`` for positives)."""
    if config.early_stop is None:
        raise ConfigError("tune needs a validation metric: --early-stop none cannot be compared")
    if config.early_stop != "auto":
        return config.early_stop
    return "loss" if labelled else f"ndcg@{config.ks[0]}"


def check_same_space(study: Any, space: list[Param]) -> None:
    """Refuse a space that draws a parameter of the study's earlier trials differently
    (another kind, log scale, step or choices): Optuna fails each such trial with a
    ValueError and keeps it in the study as FAIL. A changed range is fine."""
    from optuna.distributions import check_distribution_compatibility

    new = {p.key: p for p in space}
    for trial in study.get_trials(deepcopy=False):
        for key, old in trial.distributions.items():
            if key not in new:
                continue
            try:
                check_distribution_compatibility(old, new[key].distribution())
            except ValueError:
                raise ConfigError(
                    f"study {study.study_name!r} searched {key} differently before (trial "
                    f"{trial.number}: {type(old).__name__}); this --space searches it as "
                    f"{new[key].describe()}: give another --study-name, or the study's space"
                ) from None


def open_study(settings: StudySettings, model: str, metric: str, seed: int) -> Any:
    """Create the study or load the one of that name, checking it optimises the same."""
    import optuna

    direction = "minimize" if metric in LOWER_IS_BETTER else "maximize"
    storage = _storage(settings.storage)
    pruner: Any = optuna.pruners.NopPruner()
    if settings.pruner == "median":
        pruner = optuna.pruners.MedianPruner(
            n_startup_trials=settings.startup_trials,
            n_warmup_steps=settings.warmup_epochs + 1,  # steps are epochs, from 1
        )
    try:
        study = _retry(lambda: optuna.create_study(
            storage=storage, study_name=settings.study_name, direction=direction,
            load_if_exists=True, pruner=pruner, sampler=trial_seeded_tpe(seed),
        ))  # fmt: skip
    except ValueError as exc:  # an existing study with another direction
        raise ConfigError(f"study {settings.study_name!r} in {settings.storage}: {exc}") from None
    for name, value in (("model", model), ("metric", metric)):
        held = study.user_attrs.get(name)
        if held is None:
            study.set_user_attr(name, value)
        elif held != value:
            raise ConfigError(
                f"study {settings.study_name!r} in {settings.storage} tunes {name} {held!r}, "
                f"not {value!r}; choose another --study-name or --storage"
            )
    return study


def trial_seeded_tpe(seed: int) -> Any:
    """A TPE sampler whose random state is re-seeded from ``(seed, trial number)`` before
    each trial (see the module's docstring)."""
    import optuna

    class TrialSeededTPE(optuna.samplers.TPESampler):
        def before_trial(self, study: Any, trial: Any) -> None:
            super().before_trial(study, trial)
            state = (seed * 1_000_003 + trial.number) % 2**32
            # TPE's own state and that of the random sampler of its first trials; where a
            # later Optuna names them otherwise, plain seeded TPE remains
            inner = getattr(self, "_random_sampler", None)
            for holder in (getattr(self, "_rng", None), getattr(inner, "_rng", None)):
                if holder is not None and hasattr(holder, "rng"):
                    holder.rng.seed(state)

    return TrialSeededTPE(seed=seed)


def _retry(call: Callable[[], Any], attempts: int = 5) -> Any:
    """``call()``, again after a moment when another process was creating the same tables
    or study at the same time (SQLAlchemy's integrity and operational errors)."""
    import time

    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:
            kind = type(exc).__name__
            if attempt == attempts - 1 or kind not in ("IntegrityError", "OperationalError"):
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _storage(url: str) -> Any:
    """The RDB storage; SQLite waits for another process's write instead of failing."""
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT}
    try:
        return _retry(lambda: optuna.storages.RDBStorage(url, engine_kwargs=kwargs))
    except Exception as exc:  # SQLAlchemy's errors: a bad URL, an unreadable database
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"--storage {url}: cannot open it ({text})") from None


def check_storage_path(url: str) -> None:
    """A ``sqlite:///PATH`` storage must be a file that can be created or written."""
    from hybridrec.files import check_output_file

    if not url.strip():
        raise ConfigError("--storage must not be blank; leave it out for DIR/study.db")
    if not url.startswith("sqlite:///"):
        if url.startswith("sqlite:"):
            raise ConfigError(f"--storage {url}: write sqlite:///PATH (three slashes)")
        return
    from sqlalchemy.engine import make_url

    try:
        path = make_url(url).database or ""  # without its query (?timeout=5)
    except Exception as exc:  # SQLAlchemy's ArgumentError, ValueError
        raise ConfigError(f"--storage {url}: not a database URL ({exc})") from exc
    if path and path != ":memory:":
        check_output_file(path, "--storage")
        _not_another_database(path)


def _not_another_database(path: str) -> None:
    """Refuse an existing SQLite file that is not an Optuna storage (an event log, say):
    Optuna would add its tables to it."""
    import sqlite3

    if not Path(path).is_file() or Path(path).stat().st_size == 0:
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    except sqlite3.Error:
        raise ConfigError(f"--storage {path} is not a SQLite database") from None
    if tables and "studies" not in tables:
        raise ConfigError(
            f"--storage {path} is a SQLite database of something else (tables "
            f"{', '.join(sorted(tables)[:3])}); give a file of its own for the study"
        )


def apply(
    args: argparse.Namespace, params: dict[str, Any], space: list[Param]
) -> argparse.Namespace:
    """A copy of the parsed options with the trial's values, parsed as the flags would be."""
    ns = copy.copy(args)
    by_key = {p.key: p for p in space}
    for key, value in params.items():
        action = by_key[key].action
        if action.nargs == 0:
            setattr(ns, action.dest, bool(value))
            continue
        text = to_tokens("the search space", key, value, action)[0].split("=", 1)[1]
        setattr(ns, action.dest, action.type(text) if action.type is not None else text)
    return ns


def check_space(args: argparse.Namespace, space: list[Param],
                build: Callable[[argparse.Namespace], dict[str, Any]]) -> None:  # fmt: skip
    """Each parameter's bounds or choices must be values the options accept (``negatives =
    0`` is not), checked before the first trial."""
    from hybridrec.pipeline import check_model_options

    for param in space:
        for value in param.edge_values():
            try:
                options = build(apply(args, {param.key: value}, space))
                check_model_options(options["model"], options["model_options"])
            except ConfigError as exc:
                where = f"{param.source}: [{param.key}]"
                raise ConfigError(f"{where} value {value!r}: {exc}") from None


def objective(
    args: argparse.Namespace,
    space: list[Param],
    metric: str,
    build: Callable[[argparse.Namespace], dict[str, Any]],
    val: Any,
) -> Callable[[Any], float]:
    """The function Optuna calls per trial: train with the trial's values, in memory, and
    return the kept epoch's validation metric."""
    from hybridrec.pipeline import train

    def run(trial: Any) -> float:
        params = {p.key: p.suggest(trial) for p in space}
        options = build(apply(args, params, space))
        options["train_config"] = replace(options["train_config"], refit="none",
                                          checkpoint_every=0, resume=None)  # fmt: skip
        reporter = EpochReporter(trial, metric)
        try:
            result = train(args.train, val, out=None, show_progress=False,
                           on_epoch_end=reporter, **options)  # fmt: skip
        except TrainingDivergedError as exc:
            trial.set_user_attr("epochs", reporter.epochs)
            trial.set_user_attr("error", str(exc).split(".")[0])
            return math.nan  # Optuna records a failed trial; the study goes on
        except ConfigError as exc:
            raise ConfigError(f"trial {trial.number} ({_shown(params)}): {exc}") from None
        trial.set_user_attr("epochs", reporter.epochs)
        trial.set_user_attr("best_epoch", result.history.best.epoch)
        value = result.history.best.metric(metric)
        return math.nan if value is None else float(value)

    return run


def _shown(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def labelled_validation(args: argparse.Namespace, data_config: Any) -> bool:
    """Read the validation rows (or the training rows they come from) once, before the
    study: bad data fails now, and their labels decide the metric's direction."""
    from hybridrec.prepare import load_data

    source = args.train if args.val == "auto" else args.val
    frame = load_data(source, data_config)
    if source != args.train:
        load_data(args.train, data_config)
    return bool((frame["target"].to_numpy() < 0.5).any())


def default_storage(out: Path) -> str:
    """``DIR/study.db`` as a SQLAlchemy URL, built (not pasted: a ``?`` or ``#`` in the
    folder's name would start the URL's query, and the file would land elsewhere)."""
    from sqlalchemy.engine import URL

    return URL.create("sqlite", database=str(out / "study.db")).render_as_string()
