"""``hybridrec train``, ``tune`` and ``info``: training a model, searching its
hyperparameters, and the options a model was trained with (saved by training)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hybridrec.cli.options import config_from_args, model_options
from hybridrec.cli.output import print_json, print_table
from hybridrec.cli.parser import cached_parser
from hybridrec.config import DataConfig, TrainConfig
from hybridrec.evaluation import format_metrics
from hybridrec.features.attach import FeatureConfig


def cmd_train(args: argparse.Namespace) -> int:
    from hybridrec.pipeline import train

    result = train(
        args.train,
        None if args.val == "none" else args.val,
        out=args.out,
        model=args.model,
        model_options=model_options(args),
        data_config=config_from_args(DataConfig, args),
        train_config=config_from_args(TrainConfig, args),
        items=args.items,
        feature_config=config_from_args(FeatureConfig, args),
        show_progress=not args.no_progress,
        run_config=run_config(args),
    )
    if not result.is_main:  # a rank other than 0 of `torchrun ... -m hybridrec train`
        return 0
    summary = result.summary()
    if args.json:
        print_json(summary)
    else:
        if summary.get("val_loss") is not None:
            print_table([("validation", summary)], ["val_loss", "val_accuracy", "val_auc"])
        best = result.history.best
        if best.ranking:
            print(format_metrics(best.ranking, "full"))
        held = result.holdout
        if held and held.get("held_out_rows"):
            shown = " ".join(
                f"{k} {v:.4f}" for k, v in held["val"].items() if k.startswith(("hr@", "ndcg@"))
            )
            print(
                f"validation: {held['held_out_rows']:,} rows held out ({held['rule']}); "
                f"best epoch {held['best_epoch']} by {held['metric']}"
                + (f": {shown}" if shown else "")
            )
        print(
            f"kept epoch {best.epoch} of {len(result.history.epochs)}; "
            f"{summary['samples_per_second']:,.0f} samples/s; saved to {args.out}/"
        )
    return 0


def _train_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``hybridrec.train``'s options from parsed flags (what a tune trial trains with)."""
    return {
        "model": args.model,
        "model_options": model_options(args),
        "data_config": config_from_args(DataConfig, args),
        "train_config": config_from_args(TrainConfig, args),
        "items": args.items,
        "feature_config": config_from_args(FeatureConfig, args),
    }


def cmd_tune(args: argparse.Namespace) -> int:
    from hybridrec.configfile import subparser
    from hybridrec.tune import run_tune

    train_parser = subparser(cached_parser(), "train")
    assert train_parser is not None
    summary = run_tune(args, train_parser, _train_kwargs)
    if args.json:
        print_json(summary)
        return 0
    print(
        f"study {summary['study']}: {summary['trials']} trials ({summary['this_run']} "
        f"by this run): {summary['complete']} complete, {summary['pruned']} pruned, "
        f"{summary['fail']} failed; {summary['epochs']} epochs trained"
    )
    params = " ".join(f"{k}={v}" for k, v in summary["best_params"].items())
    print(f"best: trial {summary['best_trial']}, {summary['metric']} "
          f"{summary['best_value']:.4f}: {params}")  # fmt: skip
    if "note" in summary:
        print(summary["note"])
    print(f"wrote {summary['best']} (hybridrec train --config {summary['best']}), "
          f"{summary['history_png']}" + (f", {summary['importance_png']}"
                                          if "importance_png" in summary else ""))  # fmt: skip
    return 0


def run_config(args: argparse.Namespace) -> dict[str, Any]:
    """The command's options as they took effect, saved with the model for ``info``."""
    from hybridrec.configfile import resolved_options, subparser

    sub = subparser(cached_parser(), args.command)
    assert sub is not None
    return {"command": args.command, "cwd": str(Path.cwd()),
            "options": resolved_options(args, sub)}  # fmt: skip


def cmd_info(args: argparse.Namespace) -> int:
    from hybridrec.configfile import model_config_toml

    print(model_config_toml(args.model, cached_parser()), end="")
    return 0
