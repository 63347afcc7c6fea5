"""Two-stage retrieval on a 1,000,000-item catalogue: recall of top-10 and speed-up.

A hybrid model (defaults: dim 64, MLP 64-32-16) is trained for one epoch on synthetic
positives with planted groups (20,000 users x 1,000,000 items, ~2M positives, 4 sampled
negatives each, batch 65,536). For a sample of users, the exhaustive top-10 (the full model
on every item) is compared with the two-stage top-10 (exact retrieval of N candidates by the
dot product, alone or plus a per-item prior, then the full model on those) for several N.

    python benchmarks/bench_retrieval.py [--users 64] [--candidates 200,1000,5000]
"""

from __future__ import annotations

import argparse
import platform
import time

import pandas as pd
import torch

import hybridrec
from hybridrec import TrainConfig
from hybridrec.data.synthetic import SyntheticConfig, generate_interactions
from hybridrec.retrieval import exhaustive_topk, item_prior, recall_at_k, two_stage_topk

NUM_USERS, NUM_ITEMS = 20_000, 1_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=64, help="users to time and compare")
    parser.add_argument("--candidates", default="200,1000,5000")
    args = parser.parse_args()
    torch.set_num_threads(1)
    frame = generate_interactions(
        SyntheticConfig(
            num_users=NUM_USERS,
            num_items=NUM_ITEMS,
            num_positives=2_000_000,
            negatives_per_positive=0,
            num_groups=50,
            val_fraction=0.0,
        )
    )[["userId", "itemId"]]
    start = time.perf_counter()
    # Large batches: with a 1M-row item table every Adam step updates all 64M embedding
    # weights (dense gradients), so few steps keep training to a minute or two.
    config = TrainConfig(epochs=1, batch_size=65_536, learning_rate=0.02, negatives=4)
    catalogue = pd.DataFrame({"itemId": range(1, NUM_ITEMS + 1)})  # every item is rankable
    result = hybridrec.train(frame, train_config=config, items=catalogue)
    train_seconds = time.perf_counter() - start
    model = result.recommender.model.eval()
    num_items = model.config.num_items - 1
    users = torch.randperm(model.config.num_users - 1, generator=torch.Generator().manual_seed(0))
    users = users[: args.users] + 1

    def timed(fn):  # noqa: ANN001, ANN202
        start = time.perf_counter()
        out = [fn(u.view(1)) for u in users]  # one user per call, as a service would
        seconds = (time.perf_counter() - start) / len(users)
        return torch.cat([o[0] for o in out]), seconds

    reference, exhaustive_s = timed(lambda u: exhaustive_topk(model, u, 10))
    start = time.perf_counter()
    prior = item_prior(model)  # once per model
    prior_seconds = time.perf_counter() - start
    rows = []
    for n in (int(x) for x in args.candidates.split(",")):
        for name, p in (("dot product", None), ("dot product + item prior", prior)):
            found, seconds = timed(lambda u, n=n, p=p: two_stage_topk(model, u, 10, n, p))
            rows.append((name, n, recall_at_k(found, reference), seconds))

    print(
        f"\nmachine: {platform.machine()}, 1 torch thread, torch {torch.__version__}; catalogue "
        f"{num_items:,} items, {len(result.train_data):,} training positives, trained 1 epoch "
        f"in {train_seconds:.0f} s; {len(users)} users, one per call\n"
    )
    print("| method | candidates | recall of exhaustive top-10 | ms per user | speed-up |")
    print("|---|---|---|---|---|")
    print(
        f"| exhaustive (full model on every item) | {num_items:,} | 1.000 | "
        f"{exhaustive_s * 1e3:.1f} | 1.0x |"
    )
    for name, n, recall, seconds in rows:
        print(
            f"| two-stage: exact {name}, re-rank | {n:,} | {recall:.3f} | "
            f"{seconds * 1e3:.1f} | {exhaustive_s / seconds:.1f}x |"
        )
    print(f"\nitem prior: computed once in {prior_seconds:.1f} s (64 users through score_all)")


if __name__ == "__main__":
    main()
