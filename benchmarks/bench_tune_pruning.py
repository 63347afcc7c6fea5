"""What the pruner of a ``hybridrec tune`` study saved, measured rather than estimated.

Every pruned trial of the study is run again with its own parameters and no pruning (a
fresh study in another storage, the trials enqueued with Optuna's ``enqueue_trial``, then
``hybridrec tune --pruner none``), with the first complete trial as a control: trials train
with the study's seed, so a rerun is the trial itself, and the control must give the same
value and epochs. The table compares the epochs of the study with those of a study of the
same trials without pruning, and lists which pruned trials would have beaten the best.

    python benchmarks/bench_tune_pruning.py --study sqlite:///tune/study.db \\
        --rerun sqlite:///nop.db --out nop -- --train val/train.csv --val val/test.csv \\
        --model hybrid

Everything after ``--`` is passed to ``hybridrec tune`` as the study was run (training
options; the storage, study name, trials and pruner are set here).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

import optuna

from hybridrec.cli import main as hybridrec_main


def enqueue(source: Any, storage: str, name: str) -> list[Any]:
    """A new study ``name`` in ``storage`` holding, as waiting trials, the first complete
    trial of ``source`` (the control) and every pruned one; returns those trials."""
    states = optuna.trial.TrialState
    complete = [t for t in source.trials if t.state == states.COMPLETE]
    pruned = [t for t in source.trials if t.state == states.PRUNED]
    if not complete or not pruned:
        sys.exit("the study needs at least one complete and one pruned trial")
    rerun = optuna.create_study(study_name=name, storage=storage, direction=source.direction)
    for key, value in source.user_attrs.items():
        rerun.set_user_attr(key, value)
    chosen = [complete[0], *pruned]
    for trial in chosen:
        rerun.enqueue_trial(trial.params, user_attrs={"source_trial": trial.number})
    return chosen


def report(source: Any, rerun: Any) -> None:
    """Print the epochs with and without pruning, the control, and the pruned trials."""
    states = optuna.trial.TrialState
    epochs = {t.number: int(t.user_attrs.get("epochs", 0)) for t in source.trials}
    again = {t.user_attrs["source_trial"]: t for t in rerun.trials if t.state == states.COMPLETE}
    complete = [t for t in source.trials if t.state == states.COMPLETE]
    pruned = [t for t in source.trials if t.state == states.PRUNED]
    missing = [t.number for t in pruned if t.number not in again]
    if missing:
        sys.exit(f"pruned trials not rerun to completion: {missing}")
    control = again[complete[0].number]
    first = complete[0]
    rerun_epochs = int(control.user_attrs["epochs"])
    same = control.value == first.value and rerun_epochs == epochs[first.number]
    verdict = "identical" if same else "DIFFERENT"
    print(f"control trial {first.number}: {first.value!r} in {epochs[first.number]} epochs, "
          f"rerun {control.value!r} in {rerun_epochs} epochs: {verdict}")  # fmt: skip
    with_pruner = sum(epochs.values())
    unpruned = {t.number: int(again[t.number].user_attrs["epochs"]) for t in pruned}
    without = sum(epochs[t.number] for t in complete) + sum(unpruned.values())
    print("| | epochs |\n|---|---|")
    print(f"| {len(complete)} complete trials | {sum(epochs[t.number] for t in complete)} |")
    print(f"| {len(pruned)} pruned trials, as pruned | {sum(epochs[t.number] for t in pruned)} |")
    print(f"| the same without pruning (median {statistics.median(unpruned.values())}) "
          f"| {sum(unpruned.values())} |")  # fmt: skip
    print(f"| **with the pruner / without** | **{with_pruner} / {without}: "
          f"{1 - with_pruner / without:.1%} saved** |")  # fmt: skip
    best = source.best_value
    better = (lambda v: v > best) if source.direction.name == "MAXIMIZE" else (lambda v: v < best)
    for number, trial in sorted(again.items()):
        if number in unpruned:
            mark = "  <- beats the study's best" if better(trial.value) else ""
            print(f"trial {number}: pruned after {epochs[number]}, unpruned {unpruned[number]} "
                  f"epochs, value {trial.value:.4f}{mark}")  # fmt: skip
    print(f"study's best: {best:.4f} (trial {source.best_trial.number})")


def main() -> None:
    argv = sys.argv[1:]
    tune_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="storage URL of the pruned study")
    parser.add_argument("--study-name", default="hybridrec-hybrid")
    parser.add_argument("--rerun", required=True, help="a new storage URL for the reruns")
    parser.add_argument("--out", required=True, help="tune's --out for the reruns")
    parser.add_argument("--report-only", action="store_true", help="the reruns exist already")
    args = parser.parse_args(own)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    source = optuna.load_study(study_name=args.study_name, storage=args.study)
    if not args.report_only:
        chosen = enqueue(source, args.rerun, args.study_name)
        code = hybridrec_main([
            "tune", *tune_args, "--pruner", "none", "--trials", str(len(chosen)),
            "--storage", args.rerun, "--study-name", args.study_name, "--out", args.out,
        ])  # fmt: skip
        if code:
            sys.exit(code)
    report(source, optuna.load_study(study_name=args.study_name, storage=args.rerun))


if __name__ == "__main__":
    main()
