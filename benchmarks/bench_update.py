"""Update vs full retrain on the shared ML-100K leave-latest-out task (issue 16).

``train.csv`` is ordered by timestamp; a model is trained with the defaults on the first
90% and then updated (``hybridrec.update``, defaults) with the last 10%; a full default
retrain on all of ``train.csv`` is the reference. Both are scored on the test split
(sampled: the test item against the fixed 100 negatives; full: against every item not in
train), and the items that first appear in the last 10% are checked: known to the updated
model, and how many of them reach some user's top 10. ``--split val`` uses the val split
(``val/``) for choosing settings; ``test`` is for the record.

    python benchmarks/bench_update.py [--split val|test] [--seeds 0,1,2] [--model hybrid]
        [--scope rows|all] [--replay R] [--epochs N] [--fraction 0.1]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import hybridrec
from hybridrec import TrainConfig
from hybridrec.evaluation import evaluate_full, evaluate_sampled, read_candidates
from hybridrec.update import update

LOO = Path(__file__).resolve().parents[2] / "shared" / "data" / "movielens-100k-loo"


def scores(rec: hybridrec.Recommender, train: pd.DataFrame, directory: Path) -> dict[str, float]:
    """Sampled and full HR@10/NDCG@10 of ``rec`` on ``directory``'s test split, with
    ``train`` (all of train.csv) as the seen items."""
    tu, ti = _encoded(rec, train)
    su, si = _encoded(rec, pd.read_csv(directory / "test.csv"))
    n = rec.items.num_embeddings
    full = evaluate_full(rec.model, tu, ti, su, si, n, ks=(10,))
    cands = read_candidates(directory / "test_negatives.csv", rec.users, rec.items)
    sampled = evaluate_sampled(rec.model, tu, ti, su, si, n, ks=(10,), candidates=cands)
    return {
        "sampled hr@10": sampled["hr@10"],
        "sampled ndcg@10": sampled["ndcg@10"],
        "full hr@10": full["hr@10"],
    }


def _encoded(rec: hybridrec.Recommender, frame: pd.DataFrame) -> tuple[torch.Tensor, ...]:
    return (
        torch.from_numpy(rec.users.transform(frame["userId"].to_numpy())),
        torch.from_numpy(rec.items.transform(frame["itemId"].to_numpy())),
    )


def new_items_reached(rec: hybridrec.Recommender, new_items: np.ndarray) -> tuple[int, int]:
    """(new items the model knows, new items in at least one user's top 10)."""
    known = int((rec.items.transform(new_items) != 0).sum())
    lists = rec.recommend_many(rec.users.ids, k=10)
    shown = {x for r in lists for x in r.item_ids.tolist()}
    return known, len(shown & set(new_items.tolist()))


class _Factors(torch.nn.Module):
    """ALS factors as a model hybridrec's evaluation can score (index 0: unknown, zeros)."""

    def __init__(self, users: np.ndarray, items: np.ndarray) -> None:
        super().__init__()
        self.users, self.items = torch.from_numpy(users), torch.from_numpy(items)

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return (self.users[user_idx] * self.items[item_idx]).sum(-1)

    def score_all(self, user_idx: torch.Tensor) -> torch.Tensor:
        return self.users[user_idx] @ self.items.T


def implicit_comparison(data: pd.DataFrame, cut: int, directory: Path, seed: int) -> dict:
    """The same comparison for implicit's ALS: full fit vs fit on the first part and
    ``partial_fit_users``/``partial_fit_items`` with the rest (factor tables grown with zero
    rows first; then users, items, users again: new users need the new items' factors and
    the other way round)."""
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares

    from hybridrec.data.encoding import IdEncoder

    old, new = data.iloc[:cut], data.iloc[cut:]
    old_users, old_items = IdEncoder.fit(old["userId"]), IdEncoder.fit(old["itemId"])
    users = old_users.extended(new["userId"].to_numpy())
    items = old_items.extended(new["itemId"].to_numpy())

    def matrix(frame: pd.DataFrame, rows: int, cols: int) -> sp.csr_matrix:
        u, i = (
            users.transform(frame["userId"].to_numpy()),
            items.transform(frame["itemId"].to_numpy()),
        )
        return sp.csr_matrix((np.ones(len(u), dtype=np.float32), (u, i)), shape=(rows, cols))

    def als() -> AlternatingLeastSquares:
        return AlternatingLeastSquares(factors=64, iterations=15, regularization=0.05,
                                       random_state=seed, num_threads=1)  # fmt: skip

    def evaluate(model: AlternatingLeastSquares) -> dict[str, float]:
        net = _Factors(
            _padded(model.user_factors, users.num_embeddings),
            _padded(model.item_factors, items.num_embeddings),
        )
        rec = hybridrec.Recommender(net, users, items)
        return scores(rec, data, directory)

    everything = matrix(data, users.num_embeddings, items.num_embeddings)
    start = time.perf_counter()
    full = als()
    full.fit(everything, show_progress=False)
    retrain_s = time.perf_counter() - start
    parent = als()
    # fitted on the old ids only: partial_fit grows the factors for the new ones
    parent.fit(matrix(old, old_users.num_embeddings, old_items.num_embeddings), show_progress=False)
    parent_scores = evaluate(parent)
    start = time.perf_counter()
    touched_users = np.unique(users.transform(new["userId"].to_numpy()))
    touched_items = np.unique(items.transform(new["itemId"].to_numpy()))
    by_item = everything.T.tocsr()
    # the factor tables grow first (zeros), so no solve reads a row that does not exist
    parent.user_factors = _padded(parent.user_factors, users.num_embeddings)
    parent.item_factors = _padded(parent.item_factors, items.num_embeddings)
    try:
        parent.partial_fit_users(touched_users, everything[touched_users])
        parent.partial_fit_items(touched_items, by_item[touched_items])
        parent.partial_fit_users(touched_users, everything[touched_users])
    except ValueError as exc:  # implicit's solver can fail on a row ("posv failed")
        print(f"implicit partial_fit failed: {exc}", file=sys.stderr)
        return {"implicit ALS retrain": {**evaluate(full), "seconds": retrain_s}}
    update_s = time.perf_counter() - start
    return {
        "implicit ALS parent (90%)": {**parent_scores, "seconds": math.nan},
        "implicit ALS retrain": {**evaluate(full), "seconds": retrain_s},
        "implicit ALS partial_fit": {**evaluate(parent), "seconds": update_s},
    }


def _padded(factors: np.ndarray, rows: int) -> np.ndarray:
    out = np.zeros((rows, factors.shape[1]), dtype=np.float32)
    out[: len(factors)] = factors[:rows]
    out[0] = 0.0
    return out


def one_seed(args: argparse.Namespace, seed: int, work: Path) -> dict[str, Any]:
    directory = LOO if args.split == "test" else LOO / "val"
    data = pd.read_csv(directory / "train.csv").sort_values("timestamp", kind="stable")
    cut = int(len(data) * (1 - args.fraction))
    data.iloc[:cut].to_csv(work / "old.csv", index=False)
    data.iloc[cut:].to_csv(work / "new.csv", index=False)
    new_items = np.setdiff1d(data.iloc[cut:]["itemId"].unique(), data.iloc[:cut]["itemId"])
    config = TrainConfig(seed=seed)
    start = time.perf_counter()
    full = hybridrec.train(directory / "train.csv", model=args.model, train_config=config)
    retrain_s = time.perf_counter() - start
    parent = hybridrec.train(
        work / "old.csv", out=work / "old", model=args.model, train_config=config
    ).recommender
    start = time.perf_counter()
    updated = update(work / "old", work / "new.csv", out=work / "new", seed=seed,
                     replay=args.replay, epochs=args.epochs, scope=args.scope)  # fmt: skip
    update_s = time.perf_counter() - start
    out = {
        "parent (90%)": {**scores(parent, data, directory), "seconds": math.nan},
        "retrain": {**scores(full.recommender, data, directory), "seconds": retrain_s},
        "update": {**scores(updated.recommender, data, directory), "seconds": update_s},
        "new items": new_items_reached(updated.recommender, new_items) + (len(new_items),),
        "update info": updated.info["update"],
    }
    if _has_implicit():
        out.update(implicit_comparison(data, cut, directory, seed))
    print(f"seed {seed}: {out}", file=sys.stderr, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--model", default="hybrid")
    parser.add_argument("--replay", type=float, default=None)
    parser.add_argument("--scope", default="rows")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--fraction", type=float, default=0.1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            work = Path(tmp) / str(seed)
            work.mkdir()
            runs.append(one_seed(args, seed, work))
    print(f"\n{args.model}, {args.split} split, last {args.fraction:.0%} by time, "
          f"scope {args.scope}, replay {args.replay}, seeds {args.seeds} (mean)")  # fmt: skip
    metrics = ("sampled hr@10", "sampled ndcg@10", "full hr@10", "seconds")
    print("| run | " + " | ".join(metrics) + " |")
    print("|---" * (len(metrics) + 1) + "|")
    for name in [n for n in runs[0] if isinstance(runs[0][n], dict) and "seconds" in runs[0][n]]:
        means = [statistics.mean(r[name][m] for r in runs) for m in metrics]
        print(
            f"| {name} | "
            + " | ".join(f"{v:.4f}" if v < 1 else f"{v:.1f}" for v in means).replace("nan", "-")
            + " |"
        )
    ratio = statistics.mean(r["update"]["seconds"] / r["retrain"]["seconds"] for r in runs)
    gaps = {m: statistics.mean(r["update"][m] - r["retrain"][m] for r in runs) for m in metrics[:3]}
    print("update - retrain: " + ", ".join(f"{m} {v:+.4f}" for m, v in gaps.items()))
    print(f"update time / retrain time: {ratio:.2f}")
    for r, seed in zip(runs, args.seeds.split(","), strict=True):
        known, shown, total = r["new items"]
        print(f"seed {seed}: new items known {known}/{total}, in someone's top 10: {shown}")
    if not _has_implicit():
        print("implicit is not installed: its partial_fit comparison is skipped")


def _has_implicit() -> bool:
    try:
        import implicit  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
