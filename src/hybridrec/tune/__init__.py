"""Hyperparameter search with Optuna: ``hybridrec tune`` (see :mod:`hybridrec.tune.search`
for how trials are sampled, pruned and stored, :mod:`hybridrec.tune.space` for the search
space and its file, :mod:`hybridrec.tune.output` for what is written)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hybridrec.errors import ConfigError
from hybridrec.files import check_output_dir
from hybridrec.tune.output import (
    HISTORY_PNG,
    IMPORTANCE_PNG,
    plot_history,
    plot_importance,
    write_best,
    write_trials,
)
from hybridrec.tune.search import (
    EpochReporter,
    StudySettings,
    check_same_space,
    check_space,
    check_storage_path,
    default_storage,
    labelled_validation,
    metric_for,
    objective,
    open_study,
)
from hybridrec.tune.space import DEFAULT_SPACES, Param, load_space

__all__ = ["DEFAULT_SPACES", "EpochReporter", "Param", "load_space", "run_tune"]

logger = logging.getLogger(__name__)

#: Training options a study sets itself: trials train in memory, without checkpoints.
_REFUSED = {"checkpoint_every": 0, "checkpoint_dir": None, "resume": None}


def run_tune(
    args: argparse.Namespace,
    train_parser: argparse.ArgumentParser,
    build: Callable[[argparse.Namespace], dict[str, Any]],
) -> dict[str, Any]:
    """Run ``args.trials`` trials of the study and write its outputs to ``args.out``.

    ``build(namespace)`` turns parsed options into ``hybridrec.train``'s keyword arguments
    (model, model_options, data_config, train_config, items, feature_config). Returns a
    summary of this run and the study.
    """
    settings = _settings(args)
    out = check_output_dir(args.out, "--out", model_ok=False)
    storage = settings.storage
    check_storage_path(storage)
    _refuse_options(args)
    space = load_space(args.space, args.model, train_parser)
    from hybridrec.pipeline import check_model_options

    base = build(args)  # the fixed options first: their errors are not the space's
    check_model_options(base["model"], base["model_options"])
    check_space(args, space, build)
    metric = metric_for(base["train_config"], labelled_validation(args, base["data_config"]))
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    seed = settings.sampler_seed if settings.sampler_seed is not None else args.seed
    seed = seed % 2**32  # numpy's range
    with _quiet():
        try:
            study = open_study(settings, args.model, metric, seed)
            check_same_space(study, space)
        except BaseException:
            if created and not any(out.iterdir()):
                out.rmdir()  # a storage that cannot be opened leaves no empty --out
            raise
        with _TrialBar(settings.trials, metric, not args.no_progress) as bar:
            run = objective(args, space, metric, build, args.val)
            study.optimize(run, n_trials=settings.trials, timeout=settings.timeout,
                           callbacks=[bar])  # fmt: skip
    return _finish(study, args, space, train_parser, out, metric, bar.count)


def _settings(args: argparse.Namespace) -> StudySettings:
    if args.storage is not None and not args.storage.strip():
        raise ConfigError("--storage must not be blank; leave it out for DIR/study.db")
    if args.study_name is not None and not args.study_name.strip():
        raise ConfigError("--study-name must not be blank; leave it out for hybridrec-MODEL")
    settings = StudySettings(
        trials=args.trials,
        timeout=args.timeout,
        storage=args.storage or default_storage(Path(args.out)),
        study_name=args.study_name or f"hybridrec-{args.model}",
        sampler_seed=args.sampler_seed,
        pruner=args.pruner,
        warmup_epochs=args.warmup_epochs,
        startup_trials=args.startup_trials,
    )
    settings.check()
    return settings


def _refuse_options(args: argparse.Namespace) -> None:
    if args.val == "none":
        raise ConfigError(
            "tune compares trials on validation rows: give --val FILE, or leave it out to "
            "hold each user's latest interaction out of --train"
        )
    for dest, default in _REFUSED.items():
        if getattr(args, dest, default) != default:
            flag = "--" + dest.replace("_", "-")
            raise ConfigError(f"{flag} is not for tune: trials train in memory; use it with "
                              "hybridrec train --config best.toml")  # fmt: skip


def _finish(study: Any, args: argparse.Namespace, space: list[Param],
            train_parser: argparse.ArgumentParser, out: Path, metric: str,
            ran: int) -> dict[str, Any]:  # fmt: skip
    """Write the outputs and tell what the study holds."""
    import optuna

    states = optuna.trial.TrialState
    trials = study.trials
    count = {s.name.lower(): sum(t.state == s for t in trials) for s in
             (states.COMPLETE, states.PRUNED, states.FAIL)}  # fmt: skip
    epochs = sum(int(t.user_attrs.get("epochs", 0)) for t in trials)
    summary: dict[str, Any] = {"study": study.study_name, "metric": metric,
                               "trials": len(trials), "this_run": ran,
                               **count, "epochs": epochs}  # fmt: skip
    write_trials(study, out)
    if not count["complete"]:
        raise ConfigError(
            f"no trial of study {study.study_name!r} completed ({count['pruned']} pruned, "
            f"{count['fail']} failed), so there is no best configuration; see {out}/trials.csv"
        )
    summary["best"] = str(write_best(study, args, space, train_parser, out, metric))
    summary["best_trial"] = study.best_trial.number
    summary["best_value"] = study.best_value
    summary["best_params"] = study.best_trial.params
    summary["history_png"] = str(plot_history(study, metric, out / HISTORY_PNG))
    importance = plot_importance(study, out / IMPORTANCE_PNG)
    if not isinstance(importance, Path):  # an older run's plot would pass for this one's
        (out / IMPORTANCE_PNG).unlink(missing_ok=True)
    summary["importance_png" if isinstance(importance, Path) else "note"] = str(importance)
    return summary


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Per-epoch logs of every trial, and Optuna's own per-trial lines, are left out: the
    bar and one line per trial tell the study's progress."""
    import optuna

    ours = logging.getLogger("hybridrec")
    level, verbosity = ours.level, optuna.logging.get_verbosity()
    ours.setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        ours.setLevel(level)
        optuna.logging.set_verbosity(verbosity)


class _TrialBar:
    """A tqdm bar over this run's trials (an Optuna callback), and one line per trial."""

    def __init__(self, total: int, metric: str, show: bool) -> None:
        from tqdm.auto import tqdm

        self.metric, self.show, self.count = metric, show, 0
        self.bar = tqdm(total=total, desc="trials", unit="trial", disable=not show)

    def __enter__(self) -> _TrialBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def __call__(self, study: Any, trial: Any) -> None:
        import optuna

        from hybridrec.tune.space import choice_label

        self.bar.update(1)
        self.count += 1
        epochs = trial.user_attrs.get("epochs", 0)
        params = " ".join(f"{k}={_short(choice_label(v))}" for k, v in trial.params.items())
        if trial.state == optuna.trial.TrialState.COMPLETE:
            what = f"{self.metric} {trial.value:.4f} ({epochs} epochs)"
        elif trial.state == optuna.trial.TrialState.PRUNED:
            what = f"pruned after {epochs} epoch(s)"
        else:
            what = "failed: " + str(trial.user_attrs.get("error", "see trials.csv"))
        try:
            self.bar.set_postfix(best=f"{study.best_value:.4f}", refresh=False)
        except ValueError:  # no complete trial yet
            pass
        self.bar.write(f"trial {trial.number}: {what}  {params}", file=sys.stderr)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
