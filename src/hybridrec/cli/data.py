"""``hybridrec split``, ``data`` and ``demo``: interaction files to train on, split from
one's own, downloaded (MovieLens) or synthetic (the demo, which also trains on them)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from hybridrec.cli.options import config_from_args, model_options
from hybridrec.cli.output import print_json, print_table
from hybridrec.config import DataConfig, TrainConfig
from hybridrec.errors import ConfigError
from hybridrec.files import check_output_dir

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger("hybridrec")


def cmd_split(args: argparse.Namespace) -> int:
    from hybridrec.data.movielens import read_movielens
    from hybridrec.data.split import split_three_ways, write_split
    from hybridrec.prepare import load_data

    data_config = config_from_args(DataConfig, args)
    check_output_dir(args.out, "--out", model_ok=False)
    if args.test_fraction is not None and args.method in ("loo", "loo-random"):
        raise ConfigError(
            f"--test-fraction does not apply to --method {args.method}, which holds out one "
            "interaction per user; use --method ratio or temporal for a share"
        )
    if args.movielens:
        frame = read_movielens(args.data, threshold=data_config.threshold)  # labels, as any file
    else:
        frame = load_data(args.data, data_config)
    train, val, test = split_three_ways(
        frame,
        args.method,
        test_fraction=0.2 if args.test_fraction is None else args.test_fraction,
        seed=args.seed,
    )
    _check_test_rows(
        test, frame, f"--method {args.method}",
        "every user has one interaction, or --test-fraction rounds to nothing",
        "raise --test-fraction or use more data",
    )  # fmt: skip
    paths = write_split(
        args.out, train, val, test, user_col=data_config.user_col, item_col=data_config.item_col
    )
    for path, part in zip(paths, (train, val, test), strict=True):
        print(f"{path}: {len(part):,} rows")
    default = DataConfig()
    if (data_config.target_col, data_config.threshold) != (default.target_col, None):
        print(
            "note: the files hold 0/1 labels in a column named 'target'; train on them "
            "without --target-col and --threshold",
            file=sys.stderr,
        )
    return 0


def _check_test_rows(
    test: pd.DataFrame, frame: pd.DataFrame, method: str, why: str, advice: str = "use more data"
) -> None:
    """Refuse a split that held out nothing for test, rather than write an empty file."""
    if len(test) == 0:
        raise ConfigError(
            f"{method} held out no row for test from {len(frame):,} rows ({why}); {advice}"
        )


def cmd_data(args: argparse.Namespace) -> int:
    from hybridrec.data.movielens import fetch_movielens, read_movielens
    from hybridrec.data.split import split_three_ways, write_interactions_csv, write_split

    out = check_output_dir(args.out or args.name, "--out", model_ok=False)
    source = Path(args.data) if args.data else fetch_movielens(args.name, args.cache)
    frame = read_movielens(source, args.min_rating)
    try:  # split first: nothing is written when the split is refused
        train, val, test = split_three_ways(frame, args.split, seed=0)
    except ConfigError as error:  # the split's advice names `split`'s option, --method
        raise ConfigError(str(error).replace("--method ", "--split ")) from None
    _check_test_rows(test, frame, f"--split {args.split}", "every user has one interaction")
    write_interactions_csv(frame, out / "interactions.csv")
    print(f"{out / 'interactions.csv'}: {len(frame):,} positives from {source}")
    for path, part in zip(write_split(out, train, val, test), (train, val, test), strict=True):
        print(f"{path}: {len(part):,} rows")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from hybridrec.cli.training import run_config
    from hybridrec.data.popularity import popularity_logits
    from hybridrec.data.synthetic import SyntheticConfig, write_synthetic_data
    from hybridrec.evaluation import pointwise_metrics
    from hybridrec.pipeline import check_model_options, train

    out = check_output_dir(args.out, "--out")
    synth = SyntheticConfig(
        num_users=args.users, num_items=args.items, num_positives=args.positives, seed=args.seed
    )
    # every option checked before the data is written (over files of the user's own)
    options, data_config = model_options(args), config_from_args(DataConfig, args)
    train_config = config_from_args(TrainConfig, args)
    check_model_options(args.model, options)
    check_output_dir(out / "model", "--out")
    train_path, val_path = write_synthetic_data(out, synth)
    logger.info(f"wrote synthetic data with {synth.num_groups} planted groups to {out}/")
    result = train(
        train_path,
        val_path,
        out=out / "model",
        model=args.model,
        model_options=options,
        data_config=data_config,
        train_config=train_config,
        show_progress=not args.no_progress,
        run_config=run_config(args),  # `info` prints the demo command's options
    )
    assert result.val_data is not None
    baseline = pointwise_metrics(
        popularity_logits(result.train_data, result.val_data), result.val_data.target
    )
    kept = result.history.best  # the epoch whose weights were saved
    model_metrics = {"loss": kept.val_loss, "accuracy": kept.val_accuracy, "auc": kept.val_auc}
    if args.json:
        print_json({"model": model_metrics, "popularity": baseline, **result.summary()})
    else:
        print(f"validation on {len(result.val_data):,} held-out rows of {val_path}:")
        print_table(
            [(f"{args.model} model", model_metrics), ("item popularity", baseline)],
            ["loss", "accuracy", "auc"],
        )
        print(
            f"kept epoch {kept.epoch} of {len(result.history.epochs)} (best validation loss); "
            f"trained at {result.history.last.samples_per_second:,.0f} samples/s; "
            f"model saved to {out / 'model'}/ (load it with hybridrec.load)"
        )
    return 0
