"""How SASRec's cost grows with the history length it reads (``--max-len``).

Trains sasrec for a few epochs on the MovieLens-100K leave-latest-out train split at several
maximum sequence lengths and reports time per epoch, training samples/s (predicted
positions), the time to rank every item for all 943 users, and val HR@10/NDCG@10 (full
ranking) after those epochs. Attention is quadratic in the length, but most ML-100K
histories are shorter than 200 items and batches are trimmed to their longest history.

    python benchmarks/bench_sequence.py [--lengths 25,50,100,200] [--epochs 5]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

import hybridrec
from hybridrec import TrainConfig
from hybridrec.evaluation import evaluate_full

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "movielens-100k-loo"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--lengths", default="25,50,100,200")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    directory = args.data / "val"
    if not (directory / "train.csv").is_file():
        sys.exit(f"no benchmark data at {directory} (MovieLens is not shipped; see README)")
    torch.set_num_threads(1)
    rows = []
    for length in (int(x) for x in args.lengths.split(",")):
        config = TrainConfig(
            epochs=args.epochs, loss="ce", learning_rate=5e-3, early_stop="none", device="cpu"
        )
        start = time.perf_counter()
        result = hybridrec.train(
            directory / "train.csv",
            model="sasrec",
            model_options={"max_len": length},
            train_config=config,
            items=directory / "items.csv",
        )
        train_seconds = time.perf_counter() - start
        rec = result.recommender
        test = hybridrec.read_interactions(directory / "test.csv")
        users = torch.from_numpy(rec.users.transform(test["user_id"].to_numpy()))
        items = torch.from_numpy(rec.items.transform(test["item_id"].to_numpy()))
        train = result.train_data
        start = time.perf_counter()
        metrics = evaluate_full(
            rec.model, train.user_idx, train.item_idx, users, items, rec.items.num_embeddings
        )
        rank_seconds = time.perf_counter() - start
        epochs = result.history.epochs
        per_epoch = sum(e.seconds for e in epochs) / len(epochs)
        speed = sum(e.samples_per_second for e in epochs) / len(epochs)
        rows.append((length, per_epoch, speed, rank_seconds, metrics, train_seconds))
        hidden, blocks = rec.model.config.hidden_dim, rec.model.config.num_blocks
        print(f"max_len {length}: {per_epoch:.2f} s/epoch", file=sys.stderr, flush=True)
    print(
        f"\nmachine: {platform.machine()}, torch {torch.__version__}, 1 thread; "
        f"data: {directory}; {args.epochs} epochs, loss ce, hidden {hidden}, {blocks} blocks\n"
    )
    print(
        "| max_len | s/epoch | samples/s | rank all users (s) | val HR@10 full | val NDCG@10 full |"
    )
    print("|---|---|---|---|---|---|")
    for length, per_epoch, speed, rank_seconds, metrics, _ in rows:
        print(
            f"| {length} | {per_epoch:.2f} | {speed:,.0f} | {rank_seconds:.2f} "
            f"| {metrics['hr@10']:.4f} | {metrics['ndcg@10']:.4f} |"
        )


if __name__ == "__main__":
    main()
