"""Side features: cold-start items, cold-start users, and what features do to warm data.

Three tasks, each trained with ``hybridrec.train`` and its defaults (the automatic holdout
chooses the epochs; nothing tuned on the test split):

- ``cold-items`` (default): ``../shared/data/movielens-100k-cold/``. Train on the warm
  items' interactions with ``items.csv`` (genres, year) and ``users.csv`` (age, gender,
  occupation) as features; for each user with a positive among the held-out cold items,
  rank all of that split's cold items (``evaluate --protocol cold``): Recall@20, NDCG@20,
  per-user AUC (ties half). ``--split val`` for choosing settings, ``test`` for the record.
- ``cold-users``: the same files' interactions (train+val+test) split with
  ``cold_split(by="user")``; held-out users are known only by ``users.csv``; each is
  ranked over the whole catalogue against popularity.
- ``warm``: the fixed ML-100K leave-latest-out task (``movielens-100k-loo``) with and
  without the same feature files: sampled and full HR@10, and seconds per epoch.

    python benchmarks/bench_cold.py [--task cold-items|cold-users|warm] [--split val|test]
        [--seeds 0,1,2] [--option key=value ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import hybridrec
from hybridrec import TrainConfig
from hybridrec.config import DataConfig
from hybridrec.data.dataset import RecSysDataset
from hybridrec.data.split import cold_split
from hybridrec.evaluation import evaluate_full, evaluate_sampled, read_candidates
from hybridrec.evaluation.cold import evaluate_cold
from hybridrec.prepare import load_data

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
COLD = SHARED / "movielens-100k-cold"
LOO = SHARED / "movielens-100k-loo"


def parse_options(pairs: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``key=value`` pairs split into model options and TrainConfig fields."""
    train_fields = set(TrainConfig.__dataclass_fields__)
    model, train = {}, {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        value: Any = text
        for kind in (int, float):
            try:
                value = kind(text)
                break
            except ValueError:
                continue
        (train if key in train_fields else model)[key] = value
    return model, train


def positives(frame: pd.DataFrame, rec: hybridrec.Recommender) -> RecSysDataset:
    data, _ = RecSysDataset.from_frame(load_data(frame, DataConfig(), labels=False),
                                       rec.users, rec.items)  # fmt: skip
    return data


def cold_items(split: str, seed: int, model_opts: dict, train_opts: dict) -> dict[str, float]:
    start = time.perf_counter()
    result = hybridrec.train(
        str(COLD / "train.csv"),
        item_features=str(COLD / "items.csv"),
        user_features=str(COLD / "users.csv"),
        model_options=model_opts,
        train_config=TrainConfig(seed=seed, **train_opts),
    )
    seconds = time.perf_counter() - start
    rec = result.recommender
    test = positives(pd.read_csv(COLD / f"{split}.csv"), rec)
    out = evaluate_cold(rec.model, test.user_idx, test.item_idx, ks=[20])
    return {"recall@20": out["recall@20"], "ndcg@20": out["ndcg@20"], "auc": out["auc"],
            "epochs": len(result.history.epochs), "seconds": seconds}  # fmt: skip


def cold_users(split: str, seed: int, model_opts: dict, train_opts: dict) -> dict[str, float]:
    frames = [pd.read_csv(COLD / f) for f in ("train.csv", "val.csv", "test.csv")]
    frame = load_data(pd.concat(frames, ignore_index=True), DataConfig())
    rest, test = cold_split(frame, "user", 0.2, seed=0)
    train, val = cold_split(rest, "user", 0.125, seed=1)
    held = val if split == "val" else test
    raw = lambda f: f.rename(columns={"user_id": "userId", "item_id": "itemId"})  # noqa: E731
    result = hybridrec.train(
        raw(train)[["userId", "itemId", "timestamp"]],
        user_features=str(COLD / "users.csv"),
        item_features=str(COLD / "items.csv"),
        model_options=model_opts,
        train_config=TrainConfig(seed=seed, **train_opts),
    )
    rec = result.recommender
    data = positives(raw(held)[["userId", "itemId"]], rec)
    # a cold user has no training rows: the full protocol over every item
    empty = torch.zeros(0, dtype=torch.int64)
    metrics = evaluate_full(rec.model, empty, empty, data.user_idx, data.item_idx,
                            num_items=rec.items.num_embeddings, ks=[20])  # fmt: skip
    out = {"features ndcg@20": metrics["ndcg@20"], "features recall@20": metrics["recall@20"],
           "users": metrics["users"]}  # fmt: skip
    # popularity: count training positives
    counts = np.bincount(rec.items.transform(raw(train)["itemId"].to_numpy()),
                         minlength=rec.items.num_embeddings).astype(float)  # fmt: skip
    counts[0] = -1
    out.update(_popularity(counts, data))
    return out


def _popularity(counts: np.ndarray, data: RecSysDataset) -> dict[str, float]:
    class Popular(torch.nn.Module):
        def forward(self, u, i):
            return torch.as_tensor(counts, dtype=torch.float32)[i]

        def score_all(self, u):
            return torch.as_tensor(counts, dtype=torch.float32).expand(len(u), -1)

    empty = torch.zeros(0, dtype=torch.int64)
    m = evaluate_full(Popular(), empty, empty, data.user_idx, data.item_idx,
                      num_items=len(counts), ks=[20])  # fmt: skip
    return {"popularity ndcg@20": m["ndcg@20"], "popularity recall@20": m["recall@20"]}


def warm(split: str, seed: int, model_opts: dict, train_opts: dict) -> dict[str, float]:
    directory = LOO if split == "test" else LOO / "val"
    out = {}
    for name, (users, items) in {
        "no features": (None, None),
        "features": (str(COLD / "users.csv"), str(COLD / "items.csv")),
    }.items():
        result = hybridrec.train(
            str(directory / "train.csv"), items=str(LOO / "items.csv"),
            user_features=users, item_features=items, model_options=model_opts,
            train_config=TrainConfig(seed=seed, **train_opts),
        )  # fmt: skip
        rec = result.recommender
        train = positives(pd.read_csv(directory / "train.csv"), rec)
        test = positives(pd.read_csv(directory / "test.csv"), rec)
        common = dict(model=rec.model, train_user_idx=train.user_idx,
                      train_item_idx=train.item_idx, test_user_idx=test.user_idx,
                      test_item_idx=test.item_idx, num_items=rec.items.num_embeddings,
                      ks=[10])  # fmt: skip
        full = evaluate_full(**common)
        out[f"{name} full hr@10"] = full["hr@10"]
        negatives = directory / "test_negatives.csv"
        if negatives.exists():
            cands = read_candidates(negatives, rec.users, rec.items)
            out[f"{name} sampled hr@10"] = evaluate_sampled(**common, candidates=cands)["hr@10"]
        epochs = result.history.epochs
        out[f"{name} s/epoch"] = statistics.mean(e.seconds for e in epochs)
    return out


TASKS = {"cold-items": cold_items, "cold-users": cold_users, "warm": warm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="cold-items")
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model_opts, train_opts = parse_options(args.option)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        row = TASKS[args.task](args.split, seed, model_opts, train_opts)
        rows.append(row)
        print(f"seed {seed}: " + "  ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
    mean = {k: statistics.mean(r[k] for r in rows) for k in rows[0]}
    print(f"{args.task} {args.split} {args.option or 'defaults'} mean of {len(rows)}: "
          + "  ".join(f"{k} {v:.4f}" for k, v in mean.items()))  # fmt: skip


if __name__ == "__main__":
    main()
