"""``hybridrec evaluate`` and ``report``: how good saved models are on held-out data."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from hybridrec.cli.options import config_from_args
from hybridrec.cli.output import print_json, print_table
from hybridrec.config import DataConfig
from hybridrec.errors import ConfigError, DataError
from hybridrec.evaluation import format_metrics
from hybridrec.files import check_output_file


def cmd_evaluate(args: argparse.Namespace) -> int:
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
        out.update(_pointwise(rec, args, data_config))
    if args.test is not None:
        out.update(_ranking(rec, args, data_config))
    if args.json:
        print_json(out)
    return 0


def _pointwise(rec: Any, args: argparse.Namespace, data_config: DataConfig) -> dict[str, Any]:
    """``--data``: loss, accuracy and AUC, and how many rows the model could not score
    (users or items it does not know), which the metrics leave out."""
    from hybridrec.data.dataset import RecSysDataset
    from hybridrec.evaluation import evaluate_pointwise
    from hybridrec.prepare import load_data

    data, unknown = RecSysDataset.from_frame(
        load_data(args.data, data_config), rec.users, rec.items
    )
    out: dict[str, Any] = {
        **evaluate_pointwise(rec.model, data),
        "rows": unknown.rows,
        "rows_with_unknown": unknown.rows_with_unknown,
        "unknown_users": unknown.unknown_users,
        "unknown_items": unknown.unknown_items,
    }
    if not args.json:
        print(unknown.describe(Path(args.data).name))
        print_table([(args.model, out)], ["loss", "accuracy", "auc"])
        if math.isnan(out["auc"]) and not math.isnan(out["loss"]):
            print("auc: undefined, the scored rows are all of one label (AUC needs 0s and 1s)")
    return out


def _ranking(rec: Any, args: argparse.Namespace, data_config: DataConfig) -> dict[str, Any]:
    """``--test``: the ranking metrics of ``--protocol``; the full protocol adds the
    beyond-accuracy metrics, the slices and the warm and cold items apart."""
    from hybridrec.data.dataset import RecSysDataset
    from hybridrec.evaluation.cold import evaluate_cold
    from hybridrec.prepare import load_data, load_positives

    # files of positives: a target column is used when present (its 0 rows are no test
    # items), not required
    test, _ = RecSysDataset.from_frame(
        load_positives(args.test, data_config, "to rank"), rec.users, rec.items
    )
    if not bool((test.user_idx != 0).any()):  # every metric would be NaN over 0 users
        raise DataError(
            args.test,
            "names no user the model knows",
            column=data_config.user_col,
            expected="held-out rows of users in the model's training data",
        )
    if args.protocol == "cold":  # no training rows: each user's test items among all of them
        ranking = evaluate_cold(
            rec.model, test.user_idx, test.item_idx, ks=tuple(args.k), seed=args.seed
        )
        _check_ranked(ranking, args.test, "their items are unknown to the model")
        if not args.json:
            print(format_metrics(ranking, "cold"))
        return {"protocol": "cold", **ranking}
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
        ranking = _sampled(rec, common, args, data_config)
        _check_ranked(ranking, args.test, "no candidates of theirs are known to the model")
    out = {"protocol": args.protocol, **ranking}
    if not args.json:
        print(format_metrics(ranking, args.protocol))
    if args.protocol == "full":
        out.update(_show_full_report(report, args))
        out.update(_warm_and_cold(rec.model, common, args, quiet=args.json))
    return out


def _check_ranked(ranking: dict[str, Any], test: str, why: str) -> None:
    """Refuse metrics over no user (every one NaN) rather than print them with status 0."""
    if not ranking.get("users"):
        raise DataError(test, f"no test user could be ranked: {why}",
                        expected="test rows the model can rank")  # fmt: skip


def _sampled(
    rec: Any, common: dict[str, Any], args: argparse.Namespace, data_config: DataConfig
) -> dict[str, Any]:
    """The sampled protocol: against the ``--candidates`` file, else sampled negatives."""
    from hybridrec.evaluation import evaluate_sampled, read_candidates

    candidates = None
    if args.candidates is not None:
        candidates = read_candidates(
            args.candidates,
            rec.users,
            rec.items,
            data_config.user_col,
            data_config.item_col,
        )
    return evaluate_sampled(
        **common, candidates=candidates, num_negatives=args.num_negatives, seed=args.seed
    )


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
