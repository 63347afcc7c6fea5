"""Large batches on large data: do they rank as well per epoch, and how much faster is one?

No real dataset of MovieLens-20M's size ships with this project, so this uses planted
low-rank data of ML-20M's catalogue: 40,000 users x 26,744 items, each user's positives
drawn without replacement from ``softmax(beta * <u, v> + log popularity)`` over the catalogue
(rank-16 Gaussian factors, Zipf popularity, log-normal activity of mean 75, ~2.9M
positives, so a sampled epoch is ~27M samples: the 8,192 tier of
``hybridrec.training.scale``). One random positive per user is held out and ranked against
every item by ``fit``'s own validation (a fixed sample of users, full ranking) after every
epoch. Each run is one ``fit`` with the hybrid defaults except the options given.

    python benchmarks/bench_large_batch.py [--epochs 3] [RUN ...]

A RUN is ``default`` or comma-separated ``option=value`` pairs of ``TrainConfig``, e.g.
``batch_size=2048,learning_rate=0.005`` (the small-data defaults) or
``batch_size=8192,learning_rate=0.01`` (what the defaults choose here).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import replace

import numpy as np
import torch

from hybridrec import TrainConfig, fit
from hybridrec.data.dataset import RecSysDataset
from hybridrec.models import build_model
from hybridrec.training.scale import with_data_defaults


def planted(
    num_users: int = 40_000,
    num_items: int = 26_744,
    mean_activity: float = 75.0,
    rank: int = 16,
    beta: float = 2.0,
    seed: int = 0,
) -> tuple[RecSysDataset, RecSysDataset]:
    """``(train, held out)`` positives; ids are their own indices (1-based)."""
    rng = np.random.default_rng(seed)
    users = rng.normal(size=(num_users, rank)).astype(np.float32) / rank**0.25
    items = rng.normal(size=(num_items, rank)).astype(np.float32) / rank**0.25
    log_popularity = -np.log(np.arange(1, num_items + 1))[rng.permutation(num_items)]
    activity = rng.lognormal(np.log(mean_activity) - 0.5, 1.0, num_users).astype(int)
    activity = np.clip(activity, 3, num_items // 4)
    user_ids, item_ids = [], []
    for start in range(0, num_users, 500):  # Gumbel top-k: draws without replacement
        end = min(num_users, start + 500)
        logits = beta * users[start:end] @ items.T + log_popularity.astype(np.float32)
        with np.errstate(divide="ignore"):  # a uniform draw of exactly 0: never chosen
            gumbel = -np.log(-np.log(rng.random(logits.shape, dtype=np.float32)))
        order = np.argsort(-(logits + gumbel), axis=1)
        for row in range(end - start):
            count = activity[start + row]
            user_ids.append(np.full(count, start + row + 1))
            item_ids.append(order[row, :count] + 1)
    u, i = np.concatenate(user_ids), np.concatenate(item_ids)
    shuffle = rng.permutation(len(u))
    u, i = u[shuffle], i[shuffle]
    held = np.zeros(len(u), dtype=bool)
    held[np.unique(u, return_index=True)[1]] = True  # one random positive per user

    def rows(mask: np.ndarray) -> RecSysDataset:
        n = int(mask.sum())
        return RecSysDataset(torch.from_numpy(u[mask]), torch.from_numpy(i[mask]), torch.ones(n))

    return rows(~held), rows(held)


def parse_run(text: str) -> dict[str, float | int | str]:
    if text == "default":
        return {}
    pairs = dict(part.split("=", 1) for part in text.split(","))
    return {k: _value(v) for k, v in pairs.items()}


def _value(text: str) -> float | int | str:
    if text.isdigit():
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text  # e.g. device=cuda


def cached_planted(path: str | None) -> tuple[RecSysDataset, RecSysDataset]:
    """:func:`planted`, read from ``path`` when it exists and written there otherwise: the
    draw takes a minute or two of one core, which a GPU session should not spend."""
    if path and os.path.exists(path):
        with np.load(path) as f:
            return tuple(  # type: ignore[return-value]
                RecSysDataset(torch.from_numpy(f[f"{k}_u"]), torch.from_numpy(f[f"{k}_i"]),
                              torch.ones(len(f[f"{k}_u"])))
                for k in ("train", "held")
            )  # fmt: skip
    train, held = planted()
    if path:
        np.savez_compressed(
            path, train_u=train.user_idx.numpy(), train_i=train.item_idx.numpy(),
            held_u=held.user_idx.numpy(), held_i=held.item_idx.numpy(),
        )  # fmt: skip
    return train, held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "runs", nargs="*", default=["batch_size=2048,learning_rate=0.005", "default"]
    )
    parser.add_argument("--cache", help="a .npz file to read the planted data from or write it to")
    args = parser.parse_args()
    torch.set_num_threads(1)
    train, held = cached_planted(args.cache)
    num_users, num_items = int(train.user_idx.max()), 26_744
    where = platform.processor() or platform.machine()
    if torch.cuda.is_available():
        where += f", {torch.cuda.get_device_name(0)}"
    print(f"# {where}, torch {torch.__version__}, 1 thread")
    print(f"# planted data: {len(train):,} training positives, {len(held):,} held out")
    print("| run | epoch | batch | lr | seconds | samples/s | HR@10 | NDCG@10 | users |")
    print("|---|---|---|---|---|---|---|---|---|")
    for text in args.runs:
        config = replace(
            TrainConfig(epochs=args.epochs, early_stop="none", device="cpu"), **parse_run(text)
        )
        torch.manual_seed(config.seed)
        model = build_model("hybrid", num_users=num_users + 1, num_items=num_items + 1)
        chosen = with_data_defaults("hybrid", train, config)  # what fit will train with

        def show(stats, _history, text=text, chosen=chosen) -> None:  # noqa: ANN001
            r = stats.ranking or {}
            print(
                f"| {text} | {stats.epoch} | {chosen.batch_size} | {chosen.learning_rate:.4g} | "
                f"{stats.seconds:.0f} | {stats.samples_per_second:,.0f} | "
                f"{r.get('hr@10', float('nan')):.4f} | {r.get('ndcg@10', float('nan')):.4f} | "
                f"{r.get('users', 0):,.0f} |",
                flush=True,
            )

        start = time.perf_counter()
        fit(model, train, held, config, show_progress=False, on_epoch_end=show)
        print(f"# {text}: {time.perf_counter() - start:.0f} s in all", flush=True)


if __name__ == "__main__":
    main()
