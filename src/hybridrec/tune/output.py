"""What a study leaves in ``--out``: ``best.toml`` (a ``train --config`` file of the best
trial), ``trials.csv``, and PNGs of the optimisation history and parameter importances,
drawn with matplotlib from Optuna's data. Every file is written atomically."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hybridrec.configfile import resolved_options, to_toml
from hybridrec.files import atomic_write_text
from hybridrec.plots import pyplot, save_png
from hybridrec.tune.search import apply
from hybridrec.tune.space import Param, choice_label, searchable

BEST, TRIALS, HISTORY_PNG, IMPORTANCE_PNG = (
    "best.toml",
    "trials.csv",
    "history.png",
    "importance.png",
)


def write_best(
    study: Any, args: argparse.Namespace, space: list[Param], train_parser: argparse.ArgumentParser,
    out: Path, metric: str,
) -> Path:  # fmt: skip
    """The best trial's options as a file ``hybridrec train --config`` accepts: the tune
    command's training options with the trial's values, the model written to ``OUT/model``."""
    best = study.best_trial
    # a study resumed with a narrower --space: the best trial's other values count too
    valid, searched = searchable(train_parser, args.model), {p.key for p in space}
    space = [*space, *(Param(key, valid[key], "the study") for key in best.params
                       if key not in searched and key in valid)]  # fmt: skip
    chosen = {p.key: _value(p, best.params[p.key]) for p in space if p.key in best.params}
    options = resolved_options(apply(args, chosen, space), train_parser)
    options["out"] = str(out / "model")
    comments = [
        f"best of {len(study.trials)} trials of study {study.study_name!r}: trial {best.number}, "
        f"validation {metric} {best.value:.4f} at epoch {best.user_attrs.get('best_epoch', '?')}",
        "train with: hybridrec train --config " + str(out / BEST),
        "searched: " + ", ".join(f"{k} = {v}" for k, v in chosen.items()),
    ]
    path = out / BEST
    atomic_write_text(path, to_toml(options, comments))
    return path


def _value(param: Param, stored: Any) -> Any:
    """A stored Optuna value back in the option's config-file form (a choice's label to the
    choice itself, e.g. ``"64,32"`` to ``[64, 32]``)."""
    if param.choices is None:
        return stored
    labels = [choice_label(c) for c in param.choices]
    return param.choices[labels.index(stored)] if stored in labels else stored


def write_trials(study: Any, out: Path) -> Path:
    """Every trial of the study: number, state, value, epochs run and parameters."""
    frame = study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs"))
    path = out / TRIALS
    atomic_write_text(path, frame.to_csv(index=False))
    return path


def plot_history(study: Any, metric: str, path: Path) -> Path:
    """Each trial's value by trial number, the best so far as a line, pruned trials at the
    last value they reported."""
    import optuna

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in study.trials
              if t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values]  # fmt: skip
    ax.plot([t.number for t in done], [t.value for t in done], "o", label="complete")
    if pruned:
        last = [t.intermediate_values[max(t.intermediate_values)] for t in pruned]
        ax.plot([t.number for t in pruned], last, "x", color="grey", label="pruned (last epoch)")
    better = min if study.direction == optuna.study.StudyDirection.MINIMIZE else max
    best, xs, ys = None, [], []
    for t in done:
        best = t.value if best is None else better(best, t.value)
        xs.append(t.number)
        ys.append(best)
    ax.step(xs, ys, where="post", color="C1", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title("optimisation history")
    ax.legend(fontsize="small")
    return save_png(fig, path)


def plot_importance(study: Any, path: Path) -> Path | str:
    """Parameter importances by Optuna's default evaluator (PED-ANOVA, which needs no
    scikit-learn); a note instead of a file when they cannot be computed (fewer than 2
    complete trials)."""
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) < 2:
        have = len(done)
        return f"no {IMPORTANCE_PNG}: parameter importances need 2 complete trials, have {have}"
    try:
        importances = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError, ImportError) as exc:
        return f"no {IMPORTANCE_PNG}: {exc}"
    if not importances:
        return f"no {IMPORTANCE_PNG}: no parameter varied across the complete trials"
    plt = pyplot()
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.5))
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel("importance (PED-ANOVA, Optuna's default; they sum to 1)")
    ax.set_title(f"parameter importances ({len(done)} complete trials)")
    return save_png(fig, path)
