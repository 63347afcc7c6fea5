"""Command line: ``hybridrec train | update | evaluate | recommend | serve | export | demo | split |
data`` and ``python RecSys.py``.

Options are generated from the config dataclasses, so flags, defaults and help text always
match the API. User mistakes (``HybridRecError``) print one clear line and exit with status 2.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import math
import socket
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import MISSING, fields
from pathlib import Path
from string import Template
from typing import Any

from hybridrec.config import MAX_THREADS, DataConfig, TrainConfig
from hybridrec.configfile import add_config_option, expand_config
from hybridrec.data.split import METHODS as SPLIT_METHODS
from hybridrec.errors import ConfigError, HybridRecError
from hybridrec.evaluation import format_metrics
from hybridrec.features.attach import FeatureConfig
from hybridrec.files import check_output_dir, check_output_file
from hybridrec.models import MODELS, capabilities, model_class, models_with
from hybridrec.update import command as update_command

logger = logging.getLogger("hybridrec")


# ---------------------------------------------------------------- options from dataclasses


def _parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 64,32,16, got {text!r}") from None
    return sizes


def add_config_arguments(
    parser: argparse.ArgumentParser | Any,
    cls: type | Sequence[type],
    title: str,
    defaults: dict[str, Any] | None = None,
) -> None:
    """Add one ``--flag`` per field with help text in its metadata (first class wins).

    A field several classes share with different defaults (``--dropout`` of two models) gets
    ``None`` as its flag default, meaning "the class's own default"; the help lists them.
    """
    group = parser.add_argument_group(title)
    defaults = defaults or {}
    model_lists = _model_lists()
    classes = cls if isinstance(cls, Sequence) else [cls]
    owners: dict[str, dict[str, Any]] = {}  # field name -> {class name: its default}
    for c in classes:
        for f in fields(c):
            owners.setdefault(f.name, {})[c.__name__] = f.default
    seen: set[str] = set()
    for f in (f for c in classes for f in fields(c)):
        if "help" not in f.metadata or f.name in seen:
            continue
        seen.add(f.name)
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        text = Template(f.metadata["help"]).safe_substitute(model_lists)
        default = defaults.get(f.name, f.default if f.default is not MISSING else None)
        kind = str(f.type)
        if "tuple" in kind:
            parse: Callable[[str], Any] = _parse_sizes
            shown = ",".join(str(x) for x in default)
        elif "float" in kind:
            parse, shown = float, default
        elif "int" in kind:
            parse, shown = int, default
        else:
            parse, shown = str, default
        if kind == "bool":  # an on/off switch: --flag turns it on
            group.add_argument(flag, dest=f.name, action="store_true", default=default, help=text)
            continue
        if f.name not in defaults and len(set(map(repr, owners[f.name].values()))) > 1:
            default = None
            shown = ", ".join(f"{name} {value}" for name, value in owners[f.name].items())
        group.add_argument(
            flag,
            dest=f.name,
            type=parse,
            default=default,
            metavar=f.name.split("_")[-1].upper() if "tuple" not in kind else "SIZES",
            help=f"{text} (default: {shown})",
        )


def _model_lists() -> dict[str, str]:
    """What the ``$placeholders`` of help texts stand for: the models able to do something,
    asked of the registry (so a newly registered model is listed too)."""
    losses = {capabilities(name).default_loss for name in MODELS}
    by_loss = {loss: models_with(default_loss=loss) for loss in sorted(losses)}
    common = max(by_loss, key=lambda loss: len(by_loss[loss]))  # "bce for the others"
    own = [f"{loss} for {', '.join(names)}" for loss, names in by_loss.items() if loss != common]
    return {
        "retrieval_models": ", ".join(models_with(retrieval=True)),
        "next_item_models": ", ".join(models_with(objective="next_item")),
        "feature_models": ", ".join(models_with(features=True)),
        "default_losses": ", ".join([*own, f"{common} for the others"]),
    }


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """Build dataclass ``cls`` from the parsed flags that ``add_config_arguments`` added."""
    values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    return cls(**values)


def _model_options(args: argparse.Namespace) -> dict[str, Any]:
    cls = model_class(args.model).config_class
    # None: a flag shared by models with different defaults, not given: the model's own
    return {
        f.name: getattr(args, f.name)
        for f in fields(cls)
        if getattr(args, f.name, None) is not None
    }


# ---------------------------------------------------------------- parsers


def _add_train_options(p: argparse.ArgumentParser, defaults: dict[str, Any] | None = None) -> None:
    add_config_arguments(p, DataConfig, "data columns")
    add_config_arguments(p, FeatureConfig, "side features")
    add_config_arguments(
        p,
        [c.config_class for c in MODELS.values()],
        "model (each model uses the options it has)",
    )
    add_config_arguments(p, TrainConfig, "training", defaults)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("--json", action="store_true", help="print the final metrics as one JSON object")


def _train_parser(
    parser: argparse.ArgumentParser, *, train: str | None, val: str | None, out: str
) -> None:
    parser.add_argument(
        "--train",
        required=train is None,
        default=train,
        metavar="PATH",
        help="training interactions, CSV or Parquet" + (f" (default: {train})" if train else ""),
    )
    parser.add_argument(
        "--val",
        default=val or "auto",
        metavar="PATH",
        help="validation interactions, evaluated after every epoch; 'auto' (the default"
        + (f" when {val} does not exist" if val else "")
        + ") holds each user's latest interaction out of --train, chooses the number of "
        "epochs on it and retrains on everything (see --refit); 'none' trains without "
        "validation",
    )
    parser.add_argument(
        "--out", default=out, metavar="DIR", help=f"model directory (default: {out})"
    )
    parser.add_argument(
        "--model", default="hybrid", choices=sorted(MODELS), help="model to train (default: hybrid)"
    )
    parser.add_argument(
        "--items",
        metavar="PATH",
        help="item catalogue (a file with the item column): its items are ranked even "
        "without training rows",
    )
    _add_train_options(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybridrec",
        description="Train, evaluate and use hybrid (dot product + MLP) recommenders.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("train", help="train a model on interaction files and save it")
    _train_parser(p, train=None, val=None, out="model")
    add_config_option(p)
    update_command.add_parser(sub)
    p = sub.add_parser(
        "evaluate",
        help="evaluate a saved model: pointwise (--data) and/or ranking (--train + --test)",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model directory")
    p.add_argument(
        "--data", metavar="PATH", help="labelled rows for loss, accuracy and AUC (CSV/Parquet)"
    )
    p.add_argument(
        "--train", metavar="PATH", help="training interactions: their items are not candidates"
    )
    p.add_argument("--test", metavar="PATH", help="held-out positives to rank (userId,itemId)")
    p.add_argument(
        "--protocol",
        choices=("full", "sampled", "cold"),
        default="full",
        help="full: rank against every item not in the user's training rows (default); "
        "sampled: against N sampled negatives or a --candidates file; cold: each user's "
        "--test items among all --test items (for cold-items splits; --train not needed)",
    )
    p.add_argument("--k", type=_parse_sizes, default=(10,), help="cut-offs, e.g. 5,10,20")
    p.add_argument(
        "--candidates",
        metavar="PATH",
        help="sampled protocol: negatives per user, wide (userId,neg_1,...) or long "
        "(userId,itemId)",
    )
    p.add_argument(
        "--num-negatives", type=int, default=100, help="sampled negatives per test item (100)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for sampled negatives (0)")
    add_config_arguments(p, DataConfig, "data columns")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument(
        "--per-user",
        metavar="PATH",
        help="full protocol: write each evaluated user's metrics (raw user id, training "
        "interactions, HR/NDCG/... and the beyond-accuracy ones) to a .parquet, .csv or "
        ".jsonl file",
    )
    add_config_option(p)
    p = sub.add_parser(
        "recommend", help="write the top-k items of many users to a CSV, JSONL or Parquet file"
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model directory")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument(
        "--users",
        metavar="PATH",
        help="CSV/Parquet file with a userId column; users the model does not know get the "
        "most popular items",
    )
    who.add_argument(
        "--all", action="store_true", help="every user the model knows, in its id order"
    )
    p.add_argument(
        "--user-col",
        metavar="COL",
        help="user column of --users (default: the one the model was trained with)",
    )
    p.add_argument("--k", type=int, default=10, help="items per user (default: 10)")
    p.add_argument(
        "--include-seen",
        action="store_true",
        help="also recommend the items a user has in the training data (left out by default)",
    )
    p.add_argument(
        "--output",
        required=True,
        metavar="PATH",
        help="rows userId,rank,itemId,score,source; format from the suffix: "
        ".csv, .jsonl or .parquet",
    )
    p.add_argument(
        "--chunk-users",
        type=int,
        metavar="N",
        help="users scored and written per step (default: sized to the model and catalogue)",
    )
    p.add_argument(
        "--two-stage",
        type=_two_stage,
        default="auto",
        metavar="N",
        dest="num_candidates",
        help="two-stage top-k for large catalogues: keep each user's best N items by the "
        "embedding dot product (plus an item prior), re-rank only those with the full model "
        f"({', '.join(models_with(retrieval=True))}); none: score every item; auto "
        "(default): 1000 above 10,000 items for those models, else none",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_config_option(p)
    p = sub.add_parser("serve", help="serve a model over HTTP (FastAPI + uvicorn)")
    p.add_argument("--model", required=True, metavar="DIR", help="model directory")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (8000)")
    p.add_argument(
        "--log-level", default="info", choices=("critical", "error", "warning", "info", "debug")
    )
    p.add_argument(
        "--threads", type=int, default=1, help="PyTorch CPU threads for scoring (default: 1)"
    )
    p.add_argument(
        "--cache-top",
        type=int,
        default=100,
        metavar="N",
        help="rank every known user's top N items at each load, so GET /recommend with "
        "k <= N is a lookup; 0 = score every request (default: 100; skipped for catalogues "
        "over 25M users x items)",
    )
    p.add_argument(
        "--access-log",
        action="store_true",
        help="log every request (off by default: it nearly doubles the cost of a cached request)",
    )
    p.add_argument(
        "--admin-token",
        metavar="SECRET",
        help="enable POST /admin/reload for clients sending 'Authorization: Bearer SECRET' "
        "(default: the HYBRIDREC_ADMIN_TOKEN environment variable, which other users "
        "cannot read in the process list; neither: admin endpoints are off)",
    )
    p.add_argument(
        "--models-root",
        metavar="DIR",
        help="POST /admin/reload loads only model directories under DIR (default: the "
        "directory that holds --model)",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds a connection has to send a request's headers, and an idle keep-alive "
        "connection stays open (5)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=1000,
        metavar="N",
        help="open connections beyond which requests get a 503 (1000; twice as many are "
        "refused when accepted)",
    )
    p.add_argument(
        "--max-pending",
        type=int,
        default=32,
        metavar="N",
        help="model requests running or waiting beyond which a request gets a 503 (32)",
    )
    p.add_argument(
        "--events",
        metavar="PATH",
        help="event log (SQLite; created if missing): enables POST /events, and events after "
        "the model's watermark change /recommend at once (their items excluded, new users "
        "folded in); hybridrec update trains on them",
    )
    p.add_argument(
        "--events-sync",
        choices=("full", "normal"),
        default="full",
        help="full (default): every commit of the event log is fsynced, so an acknowledged "
        "event survives a power loss; normal: it survives the server being killed, not a "
        "power loss (see docs/benchmarks.md#event-ingestion)",
    )
    p = sub.add_parser(
        "export", help="write a model as a TorchScript or ONNX scorer of (user_idx, item_idx)"
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model directory")
    p.add_argument("--format", choices=("torchscript", "onnx"), default="torchscript")
    p.add_argument(
        "--out", metavar="PATH", help="output file (default: DIR/model.pt or DIR/model.onnx)"
    )
    p = sub.add_parser(
        "info", help="print the configuration a model was trained with, as a --config file"
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model directory")
    p = sub.add_parser("split", help="split interactions into train.csv, val.csv and test.csv")
    p.add_argument("--data", required=True, metavar="PATH", help="interactions to split")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the three files")
    p.add_argument(
        "--method",
        choices=sorted(SPLIT_METHODS),
        default="loo",
        help="loo: each user's latest interaction (needs timestamp); loo-random: a random one; "
        "ratio: a per-user share; temporal: the globally latest share; cold-items "
        "(cold-users): every interaction of a --test-fraction of the items (users), for "
        "evaluate --protocol cold (default: loo)",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="share for ratio, temporal and the cold methods (0.2)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for random methods (0)")
    p.add_argument(
        "--movielens",
        action="store_true",
        help="read --data as a MovieLens ratings file (u.data, ratings.dat, ratings.csv, .inter)",
    )
    add_config_arguments(p, DataConfig, "data columns")
    p = sub.add_parser(
        "data", help="download a MovieLens dataset (cached) and write train-ready CSV files"
    )
    p.add_argument("name", choices=("movielens-100k", "movielens-1m"), help="dataset")
    p.add_argument("--out", metavar="DIR", help="folder for the CSV files (default: ./NAME)")
    p.add_argument("--cache", metavar="DIR", help="download cache (default: ~/.cache/hybridrec)")
    p.add_argument(
        "--data",
        metavar="PATH",
        help="use this local MovieLens ratings file (u.data, ratings.dat, ratings.csv, .inter) "
        "instead of downloading",
    )
    p.add_argument(
        "--min-rating",
        type=float,
        help="keep ratings >= this as positives (default: every rating is a positive)",
    )
    p.add_argument(
        "--split",
        choices=sorted(SPLIT_METHODS),
        default="loo",
        help="also write train/val/test with this method (default: loo)",
    )
    p = sub.add_parser(
        "demo", help="generate synthetic data with planted structure, train, compare, save"
    )
    p.add_argument(
        "--out",
        default="hybridrec-demo",
        metavar="DIR",
        help="folder for train.csv, val.csv and model/ (default: hybridrec-demo)",
    )
    p.add_argument("--users", type=int, default=2000, help="synthetic users (default: 2000)")
    p.add_argument("--items", type=int, default=1000, help="synthetic items (default: 1000)")
    p.add_argument(
        "--positives",
        type=int,
        default=60_000,
        help="positive interactions to draw before de-duplication (default: 60000)",
    )
    p.add_argument("--model", default="hybrid", choices=sorted(MODELS), help=argparse.SUPPRESS)
    _add_train_options(p)
    _tune_parser(sub)
    _report_parser(sub)
    return parser


def _tune_parser(sub: Any) -> None:
    """``hybridrec tune``: the training options (fixed for every trial unless searched)
    and the study's own."""
    p = sub.add_parser(
        "tune", help="search hyperparameters with Optuna; write the best as a --config file"
    )
    _train_parser(p, train=None, val=None, out="tune")
    p._option_string_actions["--out"].help = (
        "folder for best.toml, trials.csv, history.png, importance.png and the default "
        "storage study.db (default: tune)"
    )
    g = p.add_argument_group("search")
    g.add_argument("--trials", type=int, default=20, help="trials this run adds (default: 20)")
    g.add_argument("--space", metavar="PATH", help="TOML search space over the model's default")
    g.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage shared by runs and processes (default: sqlite:///OUT/study.db)",
    )
    g.add_argument("--study-name", metavar="NAME", help="default: hybridrec-MODEL")
    g.add_argument("--timeout", type=float, metavar="S", help="start no trial after S seconds")
    g.add_argument(
        "--sampler-seed",
        type=int,
        metavar="N",
        help="TPE seed, combined with each trial's number (default: --seed)",
    )
    g.add_argument(
        "--pruner", choices=("median", "none"), default="median", help="(default: median)"
    )
    g.add_argument(
        "--warmup-epochs", type=int, default=2, help="epochs of a trial never pruned (default: 2)"
    )
    g.add_argument(
        "--startup-trials",
        type=int,
        default=3,
        help="trials the study completes before any is pruned (default: 3)",
    )
    add_config_option(p)


def _report_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="compare saved models on one split: report.md and PNG plots")
    p.add_argument("--models", nargs="+", required=True, metavar="DIR", help="model directories")
    p.add_argument("--train", required=True, metavar="PATH", help="training interactions")
    p.add_argument("--test", required=True, metavar="PATH", help="held-out positives")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for report.md and PNGs")
    p.add_argument(
        "--k", type=_parse_sizes, default=(1, 5, 10, 20, 50), help="cut-offs (1,5,10,20,50)"
    )
    add_config_arguments(p, DataConfig, "data columns")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


# ---------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    from hybridrec.pipeline import train

    result = train(
        args.train,
        None if args.val == "none" else args.val,
        out=args.out,
        model=args.model,
        model_options=_model_options(args),
        data_config=config_from_args(DataConfig, args),
        train_config=config_from_args(TrainConfig, args),
        items=args.items,
        feature_config=config_from_args(FeatureConfig, args),
        show_progress=not args.no_progress,
        run_config=_run_config(args),
    )
    if not result.is_main:  # a rank other than 0 of `torchrun ... -m hybridrec train`
        return 0
    summary = result.summary()
    if args.json:
        _print_json(summary)
    else:
        if summary.get("val_loss") is not None:
            _print_table([("validation", summary)], ["val_loss", "val_accuracy", "val_auc"])
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
        "model_options": _model_options(args),
        "data_config": config_from_args(DataConfig, args),
        "train_config": config_from_args(TrainConfig, args),
        "items": args.items,
        "feature_config": config_from_args(FeatureConfig, args),
    }


def cmd_tune(args: argparse.Namespace) -> int:
    from hybridrec.configfile import subparser
    from hybridrec.tune import run_tune

    train_parser = subparser(build_parser(), "train")
    assert train_parser is not None
    summary = run_tune(args, train_parser, _train_kwargs)
    if args.json:
        _print_json(summary)
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


def cmd_report(args: argparse.Namespace) -> int:
    from hybridrec.report import write_report

    done = write_report(args.models, args.train, args.test, args.out, ks=args.k,
                        data_config=config_from_args(DataConfig, args),
                        show_progress=not args.no_progress)  # fmt: skip
    k = done["k"]
    for r in done["results"]:
        print(f"{r.name}: HR@{k} {r.metrics.get(f'hr@{k}', float('nan')):.4f}  "
              f"NDCG@{k} {r.metrics.get(f'ndcg@{k}', float('nan')):.4f}  "
              f"coverage@{k} {r.beyond.get(f'coverage@{k}', float('nan')):.4f}")  # fmt: skip
    print("wrote " + ", ".join(done["files"]))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from hybridrec.data.dataset import RecSysDataset
    from hybridrec.evaluation import (
        evaluate_pointwise,
        evaluate_sampled,
        read_candidates,
    )
    from hybridrec.evaluation.cold import evaluate_cold
    from hybridrec.pipeline import load_data
    from hybridrec.recommend import Recommender

    if args.data is None and args.test is None:
        raise ConfigError("evaluate needs --data (pointwise) or --train and --test (ranking)")
    if args.test is not None and args.train is None and args.protocol != "cold":
        raise ConfigError("--test needs --train: a user's training items are not candidates")
    if args.candidates is not None and args.protocol != "sampled":
        raise ConfigError("--candidates is for --protocol sampled")
    _check_per_user(args)
    rec = Recommender.load(args.model)
    data_config = config_from_args(DataConfig, args)
    out: dict[str, Any] = {}
    if args.data is not None:
        data, unknown = RecSysDataset.from_frame(
            load_data(args.data, data_config), rec.users, rec.items
        )
        out.update(evaluate_pointwise(rec.model, data))
        out.update(
            rows=unknown.rows,
            rows_with_unknown=unknown.rows_with_unknown,
            unknown_users=unknown.unknown_users,
            unknown_items=unknown.unknown_items,
        )
        if not args.json:
            print(unknown.describe(Path(args.data).name))
            _print_table([(args.model, out)], ["loss", "accuracy", "auc"])
    if args.test is not None:
        # files of positives: a target column is used when present, not required
        test, _ = RecSysDataset.from_frame(
            load_data(args.test, data_config, labels=False), rec.users, rec.items
        )
        if args.protocol == "cold":
            ranking = evaluate_cold(
                rec.model, test.user_idx, test.item_idx, ks=tuple(args.k), seed=args.seed
            )
            out.update(protocol="cold", **ranking)
            if not args.json:
                print(format_metrics(ranking, "cold"))
            args.test = None  # done: no full or sampled ranking follows
    if args.test is not None:
        train, _ = RecSysDataset.from_frame(
            load_data(args.train, data_config, labels=False), rec.users, rec.items
        )
        common = dict(
            model=rec.model,
            train_user_idx=train.user_idx,
            train_item_idx=train.item_idx,
            test_user_idx=test.user_idx,
            test_item_idx=test.item_idx,
            num_items=rec.items.num_embeddings,
            ks=tuple(args.k),
        )
        if args.protocol == "full":
            report = _full_report(rec, common, data_config.user_col)
            ranking = report.metrics
        else:
            candidates = None
            if args.candidates is not None:
                candidates = read_candidates(
                    args.candidates,
                    rec.users,
                    rec.items,
                    data_config.user_col,
                    data_config.item_col,
                )
            ranking = evaluate_sampled(
                **common, candidates=candidates, num_negatives=args.num_negatives, seed=args.seed
            )
        out["protocol"] = args.protocol
        out.update(ranking)
        if not args.json:
            print(format_metrics(ranking, args.protocol))
        if args.protocol == "full":
            out.update(_show_full_report(report, args))
            out.update(_warm_and_cold(rec.model, common, args, quiet=args.json))
    if args.json:
        _print_json(out)
    return 0


def _check_per_user(args: argparse.Namespace) -> None:
    """``--per-user`` needs the full protocol and a writable file of a known format; checked
    before the model is loaded."""
    from hybridrec.evaluation.slices import per_user_format

    if args.per_user is None:
        return
    if args.test is None or args.protocol != "full":
        raise ConfigError("--per-user needs --train and --test with --protocol full")
    per_user_format(args.per_user)
    check_output_file(args.per_user, "--per-user")


def _full_report(rec: Any, common: dict[str, Any], user_col: str) -> Any:
    """The full protocol with beyond-accuracy metrics and slices, from one ranking pass."""
    from hybridrec.evaluation.slices import full_report

    return full_report(
        common["model"], rec.users, common["train_user_idx"], common["train_item_idx"],
        common["test_user_idx"], common["test_item_idx"], common["num_items"], common["ks"],
        user_col=user_col, show_progress=True,
    )  # fmt: skip


def _show_full_report(report: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Print the beyond-accuracy metrics and the slices, write ``--per-user``; return what
    the JSON output adds."""
    from hybridrec.evaluation.report import format_beyond, format_slices

    if args.per_user is not None:
        from hybridrec.evaluation.slices import write_per_user

        write_per_user(report.per_user, args.per_user)
    if not args.json:
        print(format_beyond(report.beyond))
        print(format_slices(report.slices, sorted(set(args.k))))
        if args.per_user is not None:
            print(f"{args.per_user}: metrics of {len(report.per_user):,} users")
    return {**report.beyond, "slices": report.slices}


def _warm_and_cold(
    model: Any, common: dict[str, Any], args: argparse.Namespace, quiet: bool
) -> dict[str, Any]:
    """With test rows on both warm items and cold items (known only by their features),
    the two groups' results separately: warm by the full protocol, cold by the cold one
    (averages over both hide how a model does on new items)."""
    from hybridrec.evaluation import evaluate_full
    from hybridrec.evaluation.cold import evaluate_cold
    from hybridrec.models.featured import FeaturedEmbedding

    table = getattr(model, "item_embedding", None)
    if not isinstance(table, FeaturedEmbedding):
        return {}
    items = common["test_item_idx"]
    cold = (table.has_id[items.long()] == 0) & (items != 0)
    if not bool(cold.any()) or bool(cold.all()):
        return {}
    warm_rows = {**common, "test_user_idx": common["test_user_idx"][~cold],
                 "test_item_idx": items[~cold]}  # fmt: skip
    warm = evaluate_full(**warm_rows)
    cold_metrics = evaluate_cold(model, common["test_user_idx"][cold], items[cold],
                                 ks=common["ks"], seed=args.seed)  # fmt: skip
    if not quiet:
        print(f"{int((~cold).sum()):,} test rows on items trained on, {int(cold.sum()):,} on "
              "items known only by their features:")  # fmt: skip
        print("warm: " + format_metrics(warm, "full"))
        print("cold: " + format_metrics(cold_metrics, "cold"))
    return {"warm": warm, "cold": cold_metrics}


def cmd_recommend(args: argparse.Namespace) -> int:
    from hybridrec.recommend import (
        Recommender,
        output_format,
        read_user_ids,
        write_recommendations,
    )
    from hybridrec.recommend.checks import positive_int

    output_format(args.output)  # a bad suffix or path fails before the model is loaded
    check_output_file(args.output, "--output")
    positive_int(args.k, "--k", name_value=False)  # the flags' names, not the API's
    if args.chunk_users is not None:  # None: sized to the model
        positive_int(args.chunk_users, "--chunk-users", name_value=False)
    if isinstance(args.num_candidates, int):
        positive_int(args.num_candidates, "--two-stage", name_value=False)
    rec = Recommender.load(args.model)
    # the users file names its column like the training data did (--user-col at training)
    trained_col = rec.config.get("settings", {}).get("data", {}).get("user_col", "userId")
    users = rec.users.ids if args.all else read_user_ids(args.users, args.user_col or trained_col)
    rows = write_recommendations(
        rec,
        users,
        args.output,
        k=args.k,
        exclude_seen=not args.include_seen,
        chunk_users=args.chunk_users,
        show_progress=not args.no_progress,
        num_candidates=args.num_candidates,
    )
    print(f"{args.output}: {rows:,} recommendations for {len(users):,} users")
    return 0


def _two_stage(text: str) -> int | str | None:
    """``--two-stage``: ``auto``, ``none`` or a number of candidates."""
    if text in ("auto", "none"):
        return None if text == "none" else text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected auto, none or a number of candidates, got {text!r}"
        ) from None


def cmd_split(args: argparse.Namespace) -> int:
    from hybridrec.data.movielens import read_movielens
    from hybridrec.data.split import split_three_ways, write_split
    from hybridrec.pipeline import load_data

    data_config = config_from_args(DataConfig, args)
    check_output_dir(args.out, "--out")
    if args.movielens:
        frame = read_movielens(args.data, data_config.threshold)
    else:
        frame = load_data(args.data, data_config)
    train, val, test = split_three_ways(
        frame, args.method, test_fraction=args.test_fraction, seed=args.seed
    )
    paths = write_split(
        args.out, train, val, test, user_col=data_config.user_col, item_col=data_config.item_col
    )
    for path, part in zip(paths, (train, val, test), strict=True):
        print(f"{path}: {len(part):,} rows")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from hybridrec.data.movielens import fetch_movielens, read_movielens
    from hybridrec.data.split import split_three_ways, write_interactions_csv, write_split

    out = check_output_dir(args.out or args.name, "--out")
    source = Path(args.data) if args.data else fetch_movielens(args.name, args.cache)
    frame = read_movielens(source, args.min_rating)
    write_interactions_csv(frame, out / "interactions.csv")
    print(f"{out / 'interactions.csv'}: {len(frame):,} positives from {source}")
    train, val, test = split_three_ways(frame, args.split, seed=0)
    for path, part in zip(write_split(out, train, val, test), (train, val, test), strict=True):
        print(f"{path}: {len(part):,} rows")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from hybridrec.data.popularity import popularity_logits
    from hybridrec.data.synthetic import SyntheticConfig, write_synthetic_data
    from hybridrec.evaluation import pointwise_metrics
    from hybridrec.pipeline import train

    out = check_output_dir(args.out, "--out")
    synth = SyntheticConfig(
        num_users=args.users, num_items=args.items, num_positives=args.positives, seed=args.seed
    )
    train_path, val_path = write_synthetic_data(out, synth)
    logger.info(f"wrote synthetic data with {synth.num_groups} planted groups to {out}/")
    result = train(
        train_path,
        val_path,
        out=out / "model",
        model=args.model,
        model_options=_model_options(args),
        data_config=config_from_args(DataConfig, args),
        train_config=config_from_args(TrainConfig, args),
        show_progress=not args.no_progress,
    )
    assert result.val_data is not None
    baseline = pointwise_metrics(
        popularity_logits(result.train_data, result.val_data), result.val_data.target
    )
    kept = result.history.best  # the epoch whose weights were saved
    model_metrics = {"loss": kept.val_loss, "accuracy": kept.val_accuracy, "auc": kept.val_auc}
    if args.json:
        _print_json({"model": model_metrics, "popularity": baseline, **result.summary()})
    else:
        print(f"validation on {len(result.val_data):,} held-out rows of {val_path}:")
        _print_table(
            [(f"{args.model} model", model_metrics), ("item popularity", baseline)],
            ["loss", "accuracy", "auc"],
        )
        print(
            f"kept epoch {kept.epoch} of {len(result.history.epochs)} (best validation loss); "
            f"trained at {result.history.last.samples_per_second:,.0f} samples/s; "
            f"model saved to {out / 'model'}/ (load it with hybridrec.load)"
        )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from hybridrec.artifact import load_artifact
    from hybridrec.runtime import set_num_threads
    from hybridrec.serve import serve

    if args.cache_top < 0:
        raise ConfigError(f"--cache-top must be >= 0, got {args.cache_top}")
    if not 0 <= args.threads <= MAX_THREADS:
        raise ConfigError(
            f"--threads must be in 0..{MAX_THREADS} (0 = PyTorch default), got {args.threads}"
        )
    if not (math.isfinite(args.header_timeout) and 0 < args.header_timeout <= 3600):
        raise ConfigError(f"--header-timeout must be in (0, 3600] s, got {args.header_timeout}")
    for flag, value in (("--max-connections", args.max_connections),
                        ("--max-pending", args.max_pending)):  # fmt: skip
        if not 1 <= value <= 1_000_000:
            raise ConfigError(f"{flag} must be in 1..1000000, got {value}")
    check_port(args.host, args.port)  # before the model is loaded and its cache built
    set_num_threads(args.threads)
    load_artifact(args.model)  # fail here, with a clear error, before the server starts
    serve(
        args.model,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        cache_top=args.cache_top,
        access_log=args.access_log,
        admin_token=args.admin_token,
        models_root=args.models_root,
        header_timeout=args.header_timeout,
        max_connections=args.max_connections,
        max_pending=args.max_pending,
        events=args.events,
        events_sync=args.events_sync.upper(),
    )
    return 0


def check_port(host: str, port: int) -> None:
    """Refuse a port out of range, or one that cannot be listened on now (taken, not an
    address of this machine, privileged), by binding it as uvicorn will and letting go.

    Checked before the model is loaded, so a busy port is a one-line error in a moment
    rather than after seconds of loading (uvicorn would log it and exit with status 1).
    Another process could still take the port in between; uvicorn reports that itself.
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind((host, port))
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host!r} is not an address ({exc.strerror})") from None
    except (OSError, OverflowError, UnicodeError) as exc:
        reason = (
            "the port is in use"
            if getattr(exc, "errno", None) == errno.EADDRINUSE
            else (getattr(exc, "strerror", None) or str(exc))
        )
        raise ConfigError(f"cannot listen on {host}:{port}: {reason}") from None


def _run_config(args: argparse.Namespace) -> dict[str, Any]:
    """The command's options as they took effect, saved with the model for ``info``."""
    from hybridrec.configfile import resolved_options, subparser

    sub = subparser(build_parser(), args.command)
    assert sub is not None
    return {"command": args.command, "cwd": str(Path.cwd()),
            "options": resolved_options(args, sub)}  # fmt: skip


def cmd_info(args: argparse.Namespace) -> int:
    from hybridrec.configfile import model_config_toml

    print(model_config_toml(args.model, build_parser()), end="")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from hybridrec.export import FORMATS, export_model
    from hybridrec.recommend import Recommender

    if args.out is not None:
        check_output_file(args.out, "--out")
    rec = Recommender.load(args.model)
    out = Path(args.out) if args.out else Path(args.model) / f"model{FORMATS[args.format]}"
    check_output_file(out, "--out")
    export_model(rec.model, out, args.format)
    print(f"wrote {out}: {args.format} scorer of (user_idx, item_idx) -> logits")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": cmd_train,
    "update": update_command.run,
    "evaluate": cmd_evaluate,
    "recommend": cmd_recommend,
    "serve": cmd_serve,
    "export": cmd_export,
    "info": cmd_info,
    "demo": cmd_demo,
    "split": cmd_split,
    "data": cmd_data,
    "tune": cmd_tune,
    "report": cmd_report,
}


# ---------------------------------------------------------------- output and entry points


def _print_json(data: dict[str, Any]) -> None:
    print(json.dumps(_finite(data), sort_keys=True))


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as None at any depth (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _print_table(rows: Sequence[tuple[str, dict[str, Any]]], columns: Sequence[str]) -> None:
    width = max(len(name) for name, _ in rows) + 2
    print(" " * width + "".join(f"{c:>20}" for c in columns))
    for name, values in rows:
        cells = "".join(f"{_fmt(values.get(c)):>20}" for c in columns)
        print(f"{name:<{width}}{cells}")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4f}"
    return str(value)


def _show_warning(
    message: Any, category: Any, filename: str, lineno: int, *a: Any, **k: Any
) -> None:
    print(f"warning: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run a parsed command; user errors become a message and exit status 2."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    warnings.showwarning = _show_warning
    try:
        return COMMANDS[args.command](args)
    except HybridRecError as exc:
        return _fail(str(exc))
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        return _fail(f"cannot read or write{where}: {exc.strerror or exc}")
    except (MemoryError, RuntimeError) as exc:
        if not _is_out_of_memory(exc):
            raise
        return _fail(
            "out of memory; lower --batch-size, --embedding-dim, --mlp-layers, --negatives "
            "or --eval-batch-size"
        )
    except KeyboardInterrupt:
        print(f"interrupted; {_interrupted(args)}", file=sys.stderr)
        return 130


#: Failures of the machine or the file system that the user fixes (space, permissions,
#: names), reported in one line rather than as a traceback wherever they surface.
_ENVIRONMENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ENOSPC", "EDQUOT", "EACCES", "EPERM", "EROFS", "EISDIR", "ENOTDIR", "ENAMETOOLONG",
        "EFBIG", "EMFILE", "ENFILE", "EIO", "ENOENT", "EEXIST", "ELOOP", "ETXTBSY", "EXDEV",
    )
    if hasattr(errno, name)
)  # fmt: skip


def _fail(message: str) -> int:
    """Print a user error as one line (a message never spans lines) and return status 2."""
    print("error: " + " ".join(message.split()), file=sys.stderr)
    return 2


def _is_out_of_memory(exc: BaseException) -> bool:
    """Python's MemoryError, or torch's out-of-memory errors (CPU allocator, CUDA, MPS)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return "can't allocate memory" in text or "out of memory" in text.lower()


def _interrupted(args: argparse.Namespace) -> str:
    """What an interrupted command left: training saves its model only at the end."""
    if args.command == "tune":
        return "finished trials are kept in the study's storage; rerun to resume"
    if args.command not in ("train", "demo", "update"):
        return "no output file was written (they appear only when complete)"
    every = getattr(args, "checkpoint_every", 0)
    kept = "a model already there is unchanged"
    if every:
        kept += "; the last checkpoint is kept for --resume"
    return f"no model was saved; {kept}"


def main(argv: Sequence[str] | None = None) -> int:
    """``hybridrec`` console entry point."""
    parser = build_parser()
    try:
        args = parser.parse_args(expand_config(parser, sys.argv[1:] if argv is None else argv))
    except ConfigError as exc:  # a --config file, or a type= parser; argparse exits 2 itself
        return _fail(str(exc))
    return run(args)


def recsys_main(argv: Sequence[str] | None = None) -> int:
    """``python RecSys.py``: the seed's usage, i.e. ``train`` on ./train.csv and ./val.csv."""
    parser = argparse.ArgumentParser(
        prog="RecSys.py",
        description="Train the hybrid recommender on train.csv, validate on val.csv every "
        "epoch, and save the model (same as `hybridrec train`).",
    )
    _train_parser(parser, train="train.csv", val="val.csv", out="model")
    args = parser.parse_args(argv)
    if args.val == "val.csv" and not Path("val.csv").exists():
        args.val = "auto"
        print("note: no val.csv here, holding validation rows out of train.csv", file=sys.stderr)
    args.command = "train"
    return run(args)
