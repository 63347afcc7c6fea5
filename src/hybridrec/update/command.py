"""``hybridrec update``: its options and what it prints (registered by :mod:`hybridrec.cli`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from hybridrec.config import MAX_THREADS
from hybridrec.configfile import add_config_option
from hybridrec.errors import ConfigError
from hybridrec.values import parse_int, parse_seed


def add_parser(sub: Any) -> None:
    """The ``update`` subcommand on the CLI's subparsers."""
    p = sub.add_parser(
        "update",
        help="update a trained model with new interactions, users and items (no full retrain)",
        description="Grow a trained model for new users and items and train it on new "
        "interactions (with each touched user's history and a replay sample of the others); "
        "writes a new model to --out, the old one is not modified.",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="the trained model (read only)")
    new = p.add_mutually_exclusive_group(required=True)
    new.add_argument(
        "--train",
        metavar="PATH",
        help="new interactions (CSV/Parquet, the columns the model was trained with)",
    )
    new.add_argument(
        "--events",
        metavar="PATH",
        help="the event log of `hybridrec serve --events`: the events after the model's watermark",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="where the new model goes")
    for name in ("user", "item", "target"):
        p.add_argument(
            f"--{name}-col",
            metavar="COL",
            help=f"{name} column of the new files (default: the one the model was trained with)",
        )
    p.add_argument("--items", metavar="PATH", help="item catalogue: items to know without rows")
    p.add_argument("--user-features", metavar="PATH", help="features of new users")
    p.add_argument("--item-features", metavar="PATH", help="features of new items")
    p.add_argument(
        "--epochs",
        type=parse_int,
        metavar="N",
        help="passes over the update's rows (default: the epochs the parent's training chose; "
        "with --scope all, early stopping on each touched user's latest new positive, held "
        "out, up to that many)",
    )
    p.add_argument(
        "--replay",
        type=float,
        default=None,
        metavar="R",
        help="--scope all: untouched users' rows trained on per row of the touched users' "
        "(default 1.0; 0 = the touched users alone); refused with --scope rows, whose "
        "untouched users are frozen",
    )
    p.add_argument(
        "--scope",
        choices=("rows", "all"),
        default="rows",
        help="rows (default): train only the touched users' and the new items' rows, every "
        "other weight frozen, so other users keep their scores; all: train every weight, "
        "with a replay sample against drift",
    )
    p.add_argument("--seed", type=parse_seed, default=0, help="seed (0)")
    p.add_argument("--lr", type=float, metavar="LR", help="learning rate (default: the parent's)")
    p.add_argument("--threads", type=parse_int, default=1, help="CPU threads for PyTorch (1)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", action="store_true", help="print what was done as one JSON object")
    add_config_option(p)


def run(args: argparse.Namespace) -> int:
    from hybridrec.cli import run_config
    from hybridrec.update import update

    if not 0 <= args.threads <= MAX_THREADS:
        raise ConfigError(f"--threads must be in 0..{MAX_THREADS}, got {args.threads}")
    if args.lr is not None and not args.lr > 0:
        raise ConfigError(f"--lr must be a positive number, got {args.lr}")
    result = update(
        args.model,
        args.train,
        out=args.out,
        events=args.events,
        items=args.items,
        user_features=args.user_features,
        item_features=args.item_features,
        epochs=args.epochs,
        replay=args.replay,
        scope=args.scope,
        seed=args.seed,
        learning_rate=args.lr,
        num_threads=args.threads,
        device=args.device,
        show_progress=not args.no_progress,
        run_config=run_config(args),
        columns={
            f"{name}_col": getattr(args, f"{name}_col")
            for name in ("user", "item", "target")
            if getattr(args, f"{name}_col") is not None
        },
    )
    if args.json:
        print(json.dumps(result.info, sort_keys=True))
        return 0
    done, mark = result.info["update"], result.info["watermark"]
    print(
        f"updated with {done['positives']:,} new positives ({done['new_users']:,} new users, "
        f"{done['new_items']:,} new items), {done['history_rows']:,} history and "
        f"{done['replay_rows']:,} replay rows, {done['epochs']} epoch(s); saved to {args.out}/"
    )
    if mark.get("event_id") is not None:
        print(f"watermark: event {mark['event_id']}")
    return 0
