"""Ranking quality on the fixed MovieLens-100K leave-latest-out task, both protocols.

Task (see ../shared/data/README.md): all ratings are positives; each user's latest
interaction is the test item; 100 fixed negatives per user; ``val/`` is the same rule applied
to train.csv, for choosing hyper-parameters and epochs. Every model here has its number of
epochs chosen on ``val/`` (early stopping on val NDCG@10, full ranking), then is retrained on
the whole train.csv for that many epochs and scored once on the test split.

``--defaults`` measures what a user gets with no validation file instead: one
``hybridrec.train(train.csv)`` call with every default (the automatic holdout chooses the
epochs on each user's latest train interaction, then retrains on all of train.csv), scored
once on the test split. ``items.csv`` is passed as the catalogue so that the full protocol
ranks every item of the task.

    python benchmarks/bench_quality.py [--models hybrid,mf,...] [--data DIR] [--seeds 0]
        [--defaults]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

import hybridrec
from hybridrec import TrainConfig
from hybridrec.evaluation import evaluate_full, evaluate_sampled, read_candidates

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "movielens-100k-loo"

#: Per-model settings that differ from the library defaults; chosen on val/ (see
#: docs/benchmarks.md for the search). An empty dict means the library defaults.
SETTINGS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "popularity": ({}, {}),
    "mf": ({}, {}),
    "gmf": ({}, {}),
    "mlp": ({"mlp_layer_sizes": (128, 64, 32)}, {}),
    "neumf": ({"mlp_layer_sizes": (128, 64)}, {}),  # 64-dim GMF + 64+64 MLP, as RecBole's row
    "hybrid": ({}, {}),
    # softmax over the catalogue instead of sampled negatives; the best of mf/gmf/hybrid
    # with --loss ce on val/ (see docs/benchmarks.md)
    "mf+ce": ({"embedding_dim": 128}, {"loss": "ce", "batch_size": 512, "learning_rate": 1e-3}),
    # sequence-aware (issue 6): its defaults (loss auto = ce, hidden 96, max_len 200,
    # dropout 0.5) are the val/ choice
    "sasrec": ({}, {}),
}


def run_split(
    directory: Path,
    model: str,
    options: dict[str, Any],
    config: TrainConfig,
    ks: tuple[int, ...] = (10,),
    auto: bool = False,
) -> tuple[dict[str, float], dict[str, float], hybridrec.TrainResult, float]:
    """Train on directory/train.csv and score directory/test.csv under both protocols
    (``auto``: validation held out of train.csv by the library's default)."""
    start = time.perf_counter()
    val = directory / "test.csv" if config.early_stop else None
    if auto:
        val = "auto"
    result = hybridrec.train(
        directory / "train.csv",
        val,
        model=model,
        model_options=options,
        train_config=config,
        items=directory / "items.csv",
    )
    seconds = time.perf_counter() - start
    rec = result.recommender
    train, test = result.train_data, _read_test(directory / "test.csv", rec)
    num_items = rec.items.num_embeddings
    full = evaluate_full(rec.model, train.user_idx, train.item_idx, *test, num_items, ks=ks)
    candidates = read_candidates(directory / "test_negatives.csv", rec.users, rec.items)
    sampled = evaluate_sampled(
        rec.model, train.user_idx, train.item_idx, *test, num_items, ks=ks, candidates=candidates
    )
    return full, sampled, result, seconds


def _read_test(path: Path, rec: hybridrec.Recommender) -> tuple[torch.Tensor, torch.Tensor]:
    frame = hybridrec.read_interactions(path)
    return (
        torch.from_numpy(rec.users.transform(frame["user_id"].to_numpy())),
        torch.from_numpy(rec.items.transform(frame["item_id"].to_numpy())),
    )


def _report(name: str, seed: int, epochs: int, sampled: dict, full: dict, seconds: float) -> None:
    print(
        f"{name} seed {seed}: epochs {epochs} | sampled HR@10 {sampled['hr@10']:.4f} "
        f"NDCG@10 {sampled['ndcg@10']:.4f} | full HR@10 {full['hr@10']:.4f} "
        f"NDCG@10 {full['ndcg@10']:.4f} | {seconds:.1f}s",
        file=sys.stderr,
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--models", default=",".join(SETTINGS))
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds; metrics averaged")
    parser.add_argument(
        "--defaults", action="store_true", help="no val/ search: the library's automatic holdout"
    )
    args = parser.parse_args()
    if not (args.data / "train.csv").is_file():
        sys.exit(f"no benchmark data at {args.data} (MovieLens is not shipped; see README)")
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for name in args.models.split(","):
        options, overrides = SETTINGS[name]
        model = name.split("+")[0]  # "mf+ce": the mf model with other settings
        per_seed = []
        for seed in seeds:
            base = replace(TrainConfig(seed=seed), **overrides)
            if args.defaults:
                full, sampled, result, seconds = run_split(
                    args.data, model, options, base, auto=True
                )
                epochs = (result.holdout or {}).get("best_epoch", len(result.history.epochs))
                speed = result.history.last.samples_per_second
                per_seed.append((full, sampled, epochs, seconds, speed))
                _report(name, seed, epochs, sampled, full, seconds)
                continue
            # 1) choose the number of epochs on val/ with early stopping
            tune = replace(base, epochs=args.max_epochs, early_stop="ndcg@10", patience=5)
            _, _, tuned, _ = run_split(args.data / "val", model, options, tune)
            epochs = tuned.history.best.epoch or 1
            # 2) retrain on the full train split for that many epochs; score the test split
            # (early stopping off: run_split must not see the test split as validation data)
            final = replace(base, epochs=max(epochs, 1), early_stop=None)
            full, sampled, result, seconds = run_split(args.data, model, options, final)
            speed = result.history.last.samples_per_second
            per_seed.append((full, sampled, epochs, seconds, speed))
            _report(name, seed, epochs, sampled, full, seconds)
        rows.append((name, options, overrides, per_seed))

    print(
        f"\nmachine: {platform.machine()}, torch {torch.__version__}, 1 thread; "
        f"data: {args.data.name}; seeds {seeds} (mean)\n"
    )
    print(
        "| model | HR@10 sampled | NDCG@10 sampled | HR@10 full | NDCG@10 full | Recall@10 full "
        "| epochs (val) | train s | samples/s | settings |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, options, overrides, per_seed in rows:
        full = {
            k: statistics.mean(r[0][k] for r in per_seed) for k in ("hr@10", "ndcg@10", "recall@10")
        }
        sampled = {k: statistics.mean(r[1][k] for r in per_seed) for k in ("hr@10", "ndcg@10")}
        epochs, seconds, speed = (statistics.mean(r[i] for r in per_seed) for i in (2, 3, 4))
        settings = ", ".join(f"{k}={v}" for k, v in {**options, **overrides}.items()) or "defaults"
        print(
            f"| {name} | {sampled['hr@10']:.4f} | {sampled['ndcg@10']:.4f} | {full['hr@10']:.4f}"
            f" | {full['ndcg@10']:.4f} | {full['recall@10']:.4f} | {epochs:.1f} | {seconds:.1f}"
            f" | {speed:,.0f} | {settings} |"
        )


if __name__ == "__main__":
    main()
