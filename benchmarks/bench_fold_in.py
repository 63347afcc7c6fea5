"""New-user fold-in quality: the closed form against the Adam fit, on MovieLens-100K.

Each test user of the leave-latest-out task becomes a new user described by their training
items (all of them, or a seeded random 5-20: the service benchmark's requests) and ranks the
whole catalogue minus those items with ``Recommender.recommend_for_items``; HR@10 of their
held-out item, for ``fit="gradient"`` (50 Adam steps) and ``fit="closed-form"``, beside the
user's own trained vector (the ceiling). Also counts the users only one method hits (the
paired comparison) and the time per new user.

    python benchmarks/bench_fold_in.py [--split test|val] [--models mf,hybrid] [--models-dir DIR]

``--split val`` uses ``val/train.csv`` and ``val/test.csv`` (where the method was chosen).
Models are trained with default settings (``hybridrec.train(train.csv, items=items.csv,
model=NAME)``) unless ``--models-dir`` holds ``NAME-SPLIT`` model directories.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import hybridrec

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "movielens-100k-loo"


def cases(base: Path, few: bool) -> list[tuple[int, int, list[int]]]:
    """``(user, held-out item, given items)`` for every test user with training items."""
    train = pd.read_csv(base / "train.csv")
    if "target" in train:
        train = train[train["target"] == 1]
    history = train.groupby("userId")["itemId"].apply(list)
    rng = np.random.default_rng(0)
    test = pd.read_csv(base / "test.csv")
    out = []
    for user, item in zip(test["userId"], test["itemId"], strict=True):
        given = history.get(user, [])
        if few and given:
            count = min(int(rng.integers(5, 21)), len(given))
            given = [int(i) for i in rng.choice(given, count, replace=False)]
        if given:
            out.append((int(user), int(item), list(given)))
    return out


def hits(rec: hybridrec.Recommender, rows: list, fit: str) -> tuple[np.ndarray, float]:
    """Per user, whether the held-out item is in the top 10; ms per new user."""
    found, started = [], time.perf_counter()
    with torch.inference_mode():
        for user, item, given in rows:
            if fit == "known":
                top = rec.recommend(user, k=10, exclude_seen=True).item_ids
            else:
                top = rec.recommend_for_items(given, k=10, fit=fit).item_ids
            found.append(item in set(top.tolist()))
    return np.array(found), (time.perf_counter() - started) / len(rows) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=["test", "val"], default="test")
    parser.add_argument("--models", default="mf,hybrid")
    parser.add_argument("--models-dir", type=Path)
    args = parser.parse_args()
    if not (DATA / "train.csv").is_file():
        sys.exit(f"no benchmark data at {DATA}")
    torch.set_num_threads(1)
    base = DATA if args.split == "test" else DATA / "val"
    work = Path(tempfile.mkdtemp(prefix="hybridrec-fold-in-"))
    print("| model | items given | known | Adam | closed form | only Adam / only closed form "
          "| ms per user, Adam / closed form |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        directory = (args.models_dir or work) / f"{name}-{args.split}"
        if not directory.is_dir():
            hybridrec.train(base / "train.csv", out=directory, items=DATA / "items.csv", model=name)
        rec = hybridrec.load(directory)
        rec.prepare_fold_in()
        for few in (False, True):
            rows = cases(base, few)
            known = "-" if few else f"{hits(rec, rows, 'known')[0].mean():.3f}"
            adam, adam_ms = hits(rec, rows, "gradient")
            closed, closed_ms = hits(rec, rows, "closed-form")
            print(
                f"| {name} | {'5-20' if few else 'all'} | {known} | {adam.mean():.3f} | "
                f"{closed.mean():.3f} | {int((adam & ~closed).sum())} / "
                f"{int((closed & ~adam).sum())} | {adam_ms:.1f} / {closed_ms:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
