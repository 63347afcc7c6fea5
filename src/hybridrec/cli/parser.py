"""The argument parsers of ``hybridrec`` (one function per subcommand, in the order
``--help`` lists them) and of ``python RecSys.py``."""

from __future__ import annotations

import argparse
import functools
from typing import Any

from hybridrec.cli.options import _parse_sizes, add_config_arguments
from hybridrec.config import DataConfig, TrainConfig
from hybridrec.configfile import add_config_option
from hybridrec.data.split import METHODS as SPLIT_METHODS
from hybridrec.features.attach import FeatureConfig
from hybridrec.models import MODELS, models_with
from hybridrec.update import command as update_command
from hybridrec.values import parse_count, parse_int, parse_seed


def build_parser() -> argparse.ArgumentParser:
    """The ``hybridrec`` parser: every subcommand and its flags."""
    parser = argparse.ArgumentParser(
        prog="hybridrec",
        description="Train, evaluate and use hybrid (dot product + MLP) recommenders.",
        allow_abbrev=False,
    )
    # no abbreviated flags: argparse took `--conf F` for --config, whose file went unread
    no_abbrev = functools.partial(argparse.ArgumentParser, allow_abbrev=False)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=no_abbrev
    )
    _train_parser(sub)
    update_command.add_parser(sub)
    _evaluate_parser(sub)
    _recommend_parser(sub)
    _serve_parser(sub)
    _export_parser(sub)
    _info_parser(sub)
    _split_parser(sub)
    _data_parser(sub)
    _demo_parser(sub)
    _tune_parser(sub)
    _report_parser(sub)
    return parser


def cached_parser() -> argparse.ArgumentParser:
    """:func:`build_parser`, built once for each state of the model registry (its help
    texts and choices list the models). Building takes ~10 ms of argparse; a process that
    runs many commands (a test suite, a notebook) pays it once. Parsing never changes the
    parser, and no default is mutable or read from the environment."""
    return _parser_for(tuple(MODELS.items()))


@functools.lru_cache(maxsize=1)
def _parser_for(registry: tuple[Any, ...]) -> argparse.ArgumentParser:
    return build_parser()


def recsys_parser() -> argparse.ArgumentParser:
    """``python RecSys.py``: the training flags, with the seed's files as defaults."""
    parser = argparse.ArgumentParser(
        prog="RecSys.py",
        description="Train the hybrid recommender on train.csv, validate on val.csv every "
        "epoch, and save the model (same as `hybridrec train`).",
        allow_abbrev=False,
    )
    _add_training_arguments(parser, train="train.csv", val="val.csv", out="model")
    return parser


def _add_train_options(p: argparse.ArgumentParser, defaults: dict[str, Any] | None = None) -> None:
    """The options of the data, features, every model and training (train, tune, demo)."""
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


def _add_training_arguments(
    parser: argparse.ArgumentParser, *, train: str | None, val: str | None, out: str
) -> None:
    """The files, the model and its options: what train, tune and RecSys.py share."""
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


def _train_parser(sub: Any) -> None:
    """``hybridrec train``: the training flags and ``--config``."""
    p = sub.add_parser("train", help="train a model on interaction files and save it")
    _add_training_arguments(p, train=None, val=None, out="model")
    add_config_option(p)


def _evaluate_parser(sub: Any) -> None:
    """``hybridrec evaluate``: a saved model on labelled rows and/or held-out positives."""
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
        "--num-negatives", type=parse_int, default=100, help="sampled negatives per test item (100)"
    )
    p.add_argument("--seed", type=parse_seed, default=0, help="seed for sampled negatives (0)")
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


def _recommend_parser(sub: Any) -> None:
    """``hybridrec recommend``: top-k lists of many users to a file."""
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
    p.add_argument("--k", type=parse_int, default=10, help="items per user (default: 10)")
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
        type=parse_int,
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


def _serve_parser(sub: Any) -> None:
    """``hybridrec serve``: the HTTP service and the limits that protect it."""
    p = sub.add_parser("serve", help="serve a model over HTTP (FastAPI + uvicorn)")
    p.add_argument("--model", required=True, metavar="DIR", help="model directory")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=parse_int, default=8000, help="port (8000)")
    p.add_argument(
        "--log-level", default="info", choices=("critical", "error", "warning", "info", "debug")
    )
    p.add_argument(
        "--threads", type=parse_int, default=1, help="PyTorch CPU threads for scoring (default: 1)"
    )
    p.add_argument(
        "--cache-top",
        type=parse_int,
        default=None,
        metavar="N",
        help="rank every known user's top N items at each load, so GET /recommend with "
        "k <= N is a lookup; 0 = score every request (default: as deep as 2M users x items "
        "allow, 100 to 1000; skipped for catalogues over 25M users x items)",
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
        "--fold-in-process",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compute new users' fold-ins (POST /recommend with item_ids) in a child process "
        "with its own copy of the model, so that they do not queue behind the event loop "
        "for the interpreter (default: on; the child is one more process of the model's size)",
    )
    _add_serve_limits(p)
    _add_serve_events(p)


def _add_serve_limits(p: argparse.ArgumentParser) -> None:
    """``serve``'s limits on slow and excess clients, so that they cannot tie the server up."""
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
        type=parse_int,
        default=1000,
        metavar="N",
        help="open connections beyond which requests get a 503 (1000; twice as many are "
        "refused when accepted)",
    )
    p.add_argument(
        "--max-pending",
        type=parse_int,
        default=32,
        metavar="N",
        help="model requests running or waiting beyond which a request gets a 503 (32)",
    )


def _add_serve_events(p: argparse.ArgumentParser) -> None:
    """``serve``'s event log: events applied at once, kept for ``hybridrec update``."""
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


def _export_parser(sub: Any) -> None:
    """``hybridrec export``: a saved model as a TorchScript or ONNX scorer."""
    p = sub.add_parser(
        "export", help="write a model as a TorchScript or ONNX scorer of (user_idx, item_idx)"
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model directory")
    p.add_argument("--format", choices=("torchscript", "onnx"), default=None,
                   help="default: what --out's suffix says (.pt torchscript, .onnx onnx), "
                   "else torchscript")  # fmt: skip
    p.add_argument("--out", metavar="PATH",
                   help="output file (default: DIR/model.pt or DIR/model.onnx)")  # fmt: skip


def _info_parser(sub: Any) -> None:
    """``hybridrec info``: the configuration a model was trained with."""
    p = sub.add_parser("info", help="print the configuration a model was trained with, as a "
                       "--config file")  # fmt: skip
    p.add_argument("--model", required=True, metavar="DIR", help="model directory")


def _split_parser(sub: Any) -> None:
    """``hybridrec split``: one interactions file into train, val and test."""
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
        default=None,
        help="share for ratio, temporal and the cold methods (0.2)",
    )
    p.add_argument("--seed", type=parse_seed, default=0, help="seed for random methods (0)")
    p.add_argument(
        "--movielens",
        action="store_true",
        help="read --data as a MovieLens ratings file (u.data, ratings.dat, ratings.csv, .inter)",
    )
    add_config_arguments(p, DataConfig, "data columns")


def _data_parser(sub: Any) -> None:
    """``hybridrec data``: a MovieLens dataset as train-ready files."""
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


def _demo_parser(sub: Any) -> None:
    """``hybridrec demo``: synthetic data, the training flags (``--model`` hidden)."""
    p = sub.add_parser(
        "demo", help="generate synthetic data with planted structure, train, compare, save"
    )
    p.add_argument(
        "--out",
        default="hybridrec-demo",
        metavar="DIR",
        help="folder for train.csv, val.csv and model/ (default: hybridrec-demo)",
    )
    p.add_argument(
        "--users", type=parse_count, default=2000, help="synthetic users (default: 2000)"
    )
    p.add_argument(
        "--items", type=parse_count, default=1000, help="synthetic items (default: 1000)"
    )
    p.add_argument(
        "--positives",
        type=parse_count,
        default=60_000,
        help="positive interactions to draw before de-duplication (default: 60000)",
    )
    p.add_argument("--model", default="hybrid", choices=sorted(MODELS), help=argparse.SUPPRESS)
    _add_train_options(p)


def _tune_parser(sub: Any) -> None:
    """``hybridrec tune``: the training options (fixed for every trial unless searched)
    and the study's own."""
    p = sub.add_parser(
        "tune", help="search hyperparameters with Optuna; write the best as a --config file"
    )
    _add_training_arguments(p, train=None, val=None, out="tune")
    p._option_string_actions["--out"].help = (
        "folder for best.toml, trials.csv, history.png, importance.png and the default "
        "storage study.db (default: tune)"
    )
    g = p.add_argument_group("search")
    g.add_argument(
        "--trials", type=parse_int, default=20, help="trials this run adds (default: 20)"
    )
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
        type=parse_seed,
        metavar="N",
        help="TPE seed, combined with each trial's number (default: --seed)",
    )
    g.add_argument(
        "--pruner", choices=("median", "none"), default="median", help="(default: median)"
    )
    g.add_argument(
        "--warmup-epochs",
        type=parse_int,
        default=2,
        help="epochs of a trial never pruned (default: 2)",
    )
    g.add_argument(
        "--startup-trials",
        type=parse_int,
        default=3,
        help="trials the study completes before any is pruned (default: 3)",
    )
    add_config_option(p)


def _report_parser(sub: Any) -> None:
    """``hybridrec report``: saved models compared on one split."""
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
