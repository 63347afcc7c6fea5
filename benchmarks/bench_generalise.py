"""Do the library defaults carry over to other leave-latest-out tasks? hybrid against ALS.

The defaults were chosen on one task (../shared/data/movielens-100k-loo/val). This script
builds other tasks of the same kind from a MovieLens ratings file, each with the NCF
protocol of that task (every user's latest interaction held out, ties by the largest item
id; 100 negatives per user drawn uniformly from the items they never rated, seed 0; a
``val/`` split made by the same rule from the training rows, seed 1), and scores:

- ``hybrid`` with the library defaults unchanged, its epochs chosen on ``val/`` (early
  stopping on full NDCG@10) and then retrained on the whole training split; the mean over
  ``--seeds``;
- implicit's ALS (64 factors, 15 iterations) with regularisation and alpha chosen on
  ``val/`` for each protocol separately (by full and by sampled NDCG@10), when the
  ``implicit`` package is installed (``pip install implicit``; it is not a dependency of
  hybridrec). ALS is also run on the shared task itself when it is there, to compare this
  grid with the tuned reference figures of ``../shared/data/README.md``.

    python benchmarks/bench_generalise.py [--inter .../ml-100k.inter] [--seeds 0,1,2]
        [--defaults]

``--defaults`` trains hybrid as ``hybridrec train --train train.csv`` does (the automatic
holdout instead of the val/ search) and reports each run's fit time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quality  # noqa: E402  (the same train/score procedure as the main table)

from hybridrec import TrainConfig  # noqa: E402
from hybridrec.data.io import ITEM, TIMESTAMP, USER  # noqa: E402
from hybridrec.data.movielens import read_movielens  # noqa: E402
from hybridrec.data.split import leave_one_out, write_interactions_csv  # noqa: E402

DEFAULT_INTER = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "movielens-100k" / "ml-100k.inter"
)


def write_task(frame: pd.DataFrame, directory: Path, items: np.ndarray, seed: int) -> None:
    """train.csv, test.csv, test_negatives.csv (wide) and items.csv, as in the shared task."""
    train, test = leave_one_out(frame)
    directory.mkdir(parents=True, exist_ok=True)
    write_interactions_csv(train, directory / "train.csv")
    pd.DataFrame({"userId": test[USER], "itemId": test[ITEM]}).to_csv(
        directory / "test.csv", index=False
    )
    pd.DataFrame({"itemId": items}).to_csv(directory / "items.csv", index=False)
    rng = np.random.default_rng(seed)
    rated = frame.groupby(USER)[ITEM].agg(set)
    rows = []
    for user in np.sort(test[USER].unique()):
        pool = np.setdiff1d(items, np.fromiter(rated[user], dtype=items.dtype))
        rows.append([user, *rng.choice(pool, 100, replace=False)])
    columns = ["userId", *(f"neg_{j}" for j in range(1, 101))]
    pd.DataFrame(rows, columns=columns).to_csv(directory / "test_negatives.csv", index=False)
    if seed == 0:  # the val/ split: the same rule on the training rows alone
        write_task(train, directory / "val", items, seed=1)


class Factors(nn.Module):
    """Fixed user/item factor tables (ALS's), scored as hybridrec scores a model."""

    def __init__(self, users: np.ndarray, items: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("users", torch.from_numpy(users).float())
        self.register_buffer("items", torch.from_numpy(items).float())

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return (self.users[user_idx] * self.items[item_idx]).sum(-1)

    def score_all(self, user_idx: torch.Tensor) -> torch.Tensor:
        return self.users[user_idx] @ self.items.T


def als_scores(directory: Path, regularization: float, alpha: float):
    """Fit ALS on directory/train.csv; (full, sampled) metrics on directory/test.csv."""
    import scipy.sparse as sp
    from implicit.als import AlternatingLeastSquares

    from hybridrec.evaluation import evaluate_full, evaluate_sampled

    train = pd.read_csv(directory / "train.csv")
    test = pd.read_csv(directory / "test.csv")
    negatives = pd.read_csv(directory / "test_negatives.csv")
    items = pd.read_csv(directory / "items.csv")["itemId"].to_numpy()
    user_ids = np.sort(train["userId"].unique())
    u_of = {u: k + 1 for k, u in enumerate(user_ids)}  # index 0 = unknown, as in hybridrec
    i_of = {i: k + 1 for k, i in enumerate(np.sort(items))}
    tu = train["userId"].map(u_of).to_numpy()
    ti = train["itemId"].map(i_of).to_numpy()
    matrix = sp.csr_matrix(
        (np.full(len(tu), alpha, dtype=np.float32), (tu, ti)),
        shape=(len(user_ids) + 1, len(items) + 1),
    )
    model = AlternatingLeastSquares(
        factors=64, regularization=regularization, iterations=15, random_state=0
    )
    model.fit(matrix, show_progress=False)
    net = Factors(np.asarray(model.user_factors), np.asarray(model.item_factors))
    test_u = torch.tensor(test["userId"].map(u_of).to_numpy())
    test_i = torch.tensor(test["itemId"].map(lambda i: i_of.get(i, 0)).to_numpy())
    cand_u = torch.tensor(np.repeat(negatives["userId"].map(u_of).to_numpy(), 100))
    cand_i = torch.tensor(
        np.vectorize(i_of.get)(negatives.iloc[:, 1:].to_numpy()).reshape(-1).astype(np.int64)
    )
    train_u, train_i = torch.tensor(tu), torch.tensor(ti)
    num_items = len(items) + 1
    full = evaluate_full(net, train_u, train_i, test_u, test_i, num_items)
    sampled = evaluate_sampled(
        net, train_u, train_i, test_u, test_i, num_items, candidates=(cand_u, cand_i)
    )
    return full, sampled


def run_als(directory: Path) -> tuple[dict, dict, str]:
    """ALS with its best val/ setting for each protocol (a generous peer): the full-ranking
    figures from the setting with the best val full NDCG@10, the sampled ones from the
    setting with the best val sampled NDCG@10."""
    scored = []
    for regularization in (0.01, 0.1, 1.0, 10.0, 30.0):
        for alpha in (1.0, 5.0, 20.0, 40.0):
            full, sampled = als_scores(directory / "val", regularization, alpha)
            scored.append((full["ndcg@10"], sampled["ndcg@10"], regularization, alpha))
    for_full = max(scored, key=lambda row: row[0])[2:]
    for_sampled = max(scored, key=lambda row: row[1])[2:]
    full, _ = als_scores(directory, *for_full)
    _, sampled = als_scores(directory, *for_sampled)
    how = f"reg {for_full[0]}, alpha {for_full[1]} (full); reg {for_sampled[0]}, alpha "
    return full, sampled, how + f"{for_sampled[1]} (sampled), chosen on val"


def run_hybrid(directory: Path, max_epochs: int, seeds: list[int]) -> tuple[dict, dict, str]:
    """hybrid with the library defaults, the mean over ``seeds`` of the bench_quality
    procedure (epochs chosen on val/, retrained on train, test scored once)."""
    fulls, sampleds, chosen = [], [], []
    for seed in seeds:
        base = TrainConfig(seed=seed)
        tune = replace(base, epochs=max_epochs, early_stop="ndcg@10", patience=5)
        _, _, tuned, _ = bench_quality.run_split(directory / "val", "hybrid", {}, tune)
        epochs = tuned.history.best.epoch or 1
        final = replace(base, epochs=epochs, early_stop=None)
        full, sampled, _, _ = bench_quality.run_split(directory, "hybrid", {}, final)
        fulls.append(full)
        sampleds.append(sampled)
        chosen.append(str(epochs))
    return _mean(fulls), _mean(sampleds), f"defaults, epochs {'/'.join(chosen)} (val)"


def run_hybrid_defaults(directory: Path, seeds: list[int]) -> tuple[dict, dict, str]:
    """hybrid exactly as ``hybridrec train --train train.csv`` runs it: no val/ search, the
    automatic holdout chooses the epochs and the model is retrained on all of train.csv;
    the mean over ``seeds`` and each run's fit time (both trainings)."""
    fulls, sampleds, notes = [], [], []
    for seed in seeds:
        full, sampled, result, seconds = bench_quality.run_split(
            directory, "hybrid", {}, TrainConfig(seed=seed), auto=True
        )
        fulls.append(full)
        sampleds.append(sampled)
        chosen = result.holdout["best_epoch"] if result.holdout else len(result.history.epochs)
        notes.append(f"{chosen} ep, {seconds:.0f} s")
    return _mean(fulls), _mean(sampleds), "defaults, no val file: " + "; ".join(notes)


def _mean(rows: list[dict]) -> dict:
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inter", type=Path, default=DEFAULT_INTER)
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--seeds", default="0,1,2", help="hybrid seeds (metrics averaged)")
    parser.add_argument(
        "--defaults",
        action="store_true",
        help="hybrid as `hybridrec train` runs it: automatic holdout, no val/ epoch search",
    )
    args = parser.parse_args()
    if not args.inter.is_file():
        sys.exit(f"no ratings file at {args.inter} (MovieLens is not shipped; see README)")
    torch.set_num_threads(1)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    ratings = read_movielens(args.inter)
    tasks = {
        "ML-100K, ratings >= 4 as positives": read_movielens(args.inter, min_rating=4),
        "ML-100K, users with >= 50 ratings": ratings[
            ratings.groupby(USER)[ITEM].transform("size") >= 50
        ],
        "ML-100K, first 4 months only": ratings[
            ratings[TIMESTAMP] < ratings[TIMESTAMP].min() + 120 * 86400
        ],
    }
    try:
        import implicit  # noqa: F401

        have_als = True
    except ImportError:
        have_als = False
        print("implicit is not installed: ALS rows skipped (pip install implicit)", file=sys.stderr)
    rows = []
    if have_als and (bench_quality.DEFAULT_DATA / "val" / "train.csv").is_file():
        full, sampled, how = run_als(bench_quality.DEFAULT_DATA)
        rows.append(("shared task (calibration of the ALS grid)", "943 users", "implicit ALS",
                     sampled, full, how))  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for number, (name, frame) in enumerate(tasks.items()):
            directory = Path(tmp) / f"task{number}"
            frame = frame.reset_index(drop=True)
            items = np.sort(frame[ITEM].unique())
            write_task(frame, directory, items, seed=0)
            users = frame[USER].nunique()
            shape = f"{users} users, {len(items)} items, {len(frame)} positives"
            start = time.perf_counter()
            if args.defaults:
                full, sampled, how = run_hybrid_defaults(directory, seeds)
            else:
                full, sampled, how = run_hybrid(directory, args.max_epochs, seeds)
            rows.append((name, shape, f"hybridrec hybrid (mean of {len(seeds)} seeds)",
                         sampled, full, how))  # fmt: skip
            print(f"{name}: hybrid done in {time.perf_counter() - start:.0f}s", file=sys.stderr)
            if have_als:
                full, sampled, how = run_als(directory)
                rows.append((name, shape, "implicit ALS (64 factors)", sampled, full, how))
    print("\n| task | size | method | HR@10 sampled | NDCG@10 sampled | HR@10 full | "
          "NDCG@10 full | settings |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, shape, method, sampled, full, how in rows:
        print(
            f"| {name} | {shape} | {method} | {sampled['hr@10']:.4f} | {sampled['ndcg@10']:.4f} "
            f"| {full['hr@10']:.4f} | {full['ndcg@10']:.4f} | {how} |"
        )


if __name__ == "__main__":
    main()
