"""Training cost against catalogue and table size: is the default cost per sample flat?

Equal interactions (``--positives``, default 1,000,000 positives, no timestamps) and equal
model (``hybrid`` defaults: dim 64, MLP 64-32-16, 8 negatives, catalogue softmax, weight
average), on synthetic power-law data of three shapes:

- MovieLens-1M's 6,040 users x 3,706 items,
- MovieLens-20M's 138,493 users x 26,744 items,
- 138,493 users x 1,000,000 items.

Each row trains one default epoch with ``fit`` (no validation) and reports samples/s and the
ratio to the ML-1M row, so only the table and catalogue sizes differ between rows. Extra
rows with ``--variants`` switch single defaults off to show what each costs.

    python benchmarks/bench_scale.py [--positives 1000000] [--shapes ml1m,ml20m,1m]
        [--variants] [--epochs 1] [--device cpu]

``--device cuda`` times the same defaults on a GPU (the CPU figures use one thread).

``--write-parquet PATH --positives 20000000 --shapes ml20m`` instead writes the data (with
timestamps) for timing the whole ``hybridrec train`` command on it.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from hybridrec import TrainConfig, fit
from hybridrec.data.dataset import RecSysDataset
from hybridrec.models import build_model

SHAPES = {"ml1m": (6_040, 3_706), "ml20m": (138_493, 26_744), "1m": (138_493, 1_000_000)}


def power_law_positives(
    num_users: int, num_items: int, num_positives: int, seed: int = 0, skew: float = 1.0
) -> pd.DataFrame:
    """``userId, itemId, timestamp`` positives: Zipf item popularity (exponent ``skew``),
    log-normal user activity, duplicates dropped, random timestamps."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, num_items + 1) ** skew
    popularity = np.cumsum(popularity[rng.permutation(num_items)])
    activity = np.cumsum(rng.lognormal(0.0, 1.0, num_users))
    keys = np.empty(0, dtype=np.int64)
    while len(keys) < num_positives:  # popular pairs repeat: draw until enough distinct
        draws = int((num_positives - len(keys)) * 1.3) + 1000
        users = np.searchsorted(activity, rng.random(draws) * activity[-1], side="right")
        items = np.searchsorted(popularity, rng.random(draws) * popularity[-1], side="right")
        users, items = np.minimum(users, num_users - 1), np.minimum(items, num_items - 1)
        keys = np.union1d(keys, users.astype(np.int64) * num_items + items)
    keys = keys[rng.permutation(len(keys))[:num_positives]]
    return pd.DataFrame(
        {
            "userId": keys // num_items + 1,
            "itemId": keys % num_items + 1,
            "timestamp": rng.integers(0, 1_000_000_000, len(keys)),
        }
    )


def encoded(frame: pd.DataFrame, num_users: int, num_items: int) -> RecSysDataset:
    """Ids are already 1..N: they are their own indices (0 stays unknown)."""
    return RecSysDataset(
        torch.from_numpy(frame["userId"].to_numpy()),
        torch.from_numpy(frame["itemId"].to_numpy()),
        torch.ones(len(frame)),
    )


def check_trained_on(model: torch.nn.Module, device: str) -> None:
    """Stop if the model trained anywhere but ``device``: session 11's "GPU" figures were
    the host CPU's, because ``fit`` then ignored ``TrainConfig.device``."""
    trained_on = next(model.parameters()).device
    if device != "auto" and trained_on.type != torch.device(device).type:
        raise SystemExit(f"asked for {device}, but the model trained on {trained_on}")


def run(shape: str, positives: int, config: TrainConfig) -> dict[str, float]:
    num_users, num_items = SHAPES[shape]
    data = encoded(power_law_positives(num_users, num_items, positives), num_users, num_items)
    torch.manual_seed(0)
    model = build_model("hybrid", num_users=num_users + 1, num_items=num_items + 1)
    start = time.perf_counter()
    history = fit(model, data, None, config, show_progress=False)
    check_trained_on(model, config.device)
    return {
        "samples_per_second": history.last.samples_per_second,
        "seconds": time.perf_counter() - start,
        "loss": history.last.train_loss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positives", type=int, default=1_000_000)
    parser.add_argument("--shapes", default="ml1m,ml20m,1m")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--variants", action="store_true")
    parser.add_argument("--write-parquet", default=None)
    parser.add_argument("--device", default="cpu", help="cpu (one thread) or cuda")
    args = parser.parse_args()
    shapes = args.shapes.split(",")
    if args.write_parquet:
        frame = power_law_positives(*SHAPES[shapes[0]], args.positives)
        frame.to_parquet(args.write_parquet, index=False)
        print(f"wrote {len(frame):,} positives of shape {shapes[0]} to {args.write_parquet}")
        return
    torch.set_num_threads(1)
    base = TrainConfig(epochs=args.epochs, early_stop="none", device=args.device)
    variants = {"defaults": base}
    if args.variants:
        variants["dense tables"] = replace(base, sparse_embeddings="off")
        variants["no catalogue term"] = replace(base, catalogue_weight=0.0)
        variants["no weight average"] = replace(base, ema_decay=0.0)
    where = (
        torch.cuda.get_device_name(0)
        if args.device.startswith("cuda")
        else f"{platform.processor() or platform.machine()}, 1 thread"
    )
    print(f"# {where}, torch {torch.__version__}")
    print(f"# {args.positives:,} positives per shape, hybrid defaults, {args.epochs} epoch(s)")
    print(f"{'shape':>7} {'users':>8} {'items':>10} {'variant':>18} {'samples/s':>11} "
          f"{'vs ml1m':>8} {'epoch s':>8} {'peak RSS GB':>12}")  # fmt: skip
    reference: dict[str, float] = {}
    for name, config in variants.items():
        for shape in shapes:
            result = run(shape, args.positives, config)
            speed = result["samples_per_second"]
            reference.setdefault(name, speed)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            users, items = SHAPES[shape]
            print(
                f"{shape:>7} {users:>8,} {items:>10,} {name:>18} {speed:>11,.0f} "
                f"{speed / reference[name]:>8.2f} {result['seconds']:>8.1f} {rss:>12.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
