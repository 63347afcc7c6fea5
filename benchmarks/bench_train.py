"""Training throughput: the seed's naive data path vs hybridrec's default path, in one run.

Data: synthetic interactions with planted structure in MovieLens-1M's shape (6,040 users x
3,706 items), 1,000,000 training rows plus 100,000 validation rows. Model: HybridRecSys with
embedding dim 32 and MLP 64-32-16 for both paths. Both train the same number of epochs, and
the validation AUC after each epoch is shown, so speed is never bought with quality.

    python benchmarks/bench_train.py [--epochs 3] [--contention]

``--contention`` adds rows measured while another process keeps one core busy, which is
what decides the default thread count on a 2-core machine.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from hybridrec import HybridRecSys, HybridRecSysConfig, RecSysDataset, TrainConfig, fit
from hybridrec.data.encoding import IdEncoder
from hybridrec.data.synthetic import SyntheticConfig, generate_interactions
from hybridrec.evaluation import evaluate_pointwise
from hybridrec.training.scale import with_data_defaults

NUM_USERS, NUM_ITEMS, NUM_TRAIN, NUM_VAL = 6040, 3706, 1_000_000, 100_000


@dataclass
class Row:
    path: str
    threads: int
    batch_size: int
    lr: float
    samples_per_second: float
    val_auc: list[float]
    contention: bool = False


def make_data(seed: int = 0) -> tuple[RecSysDataset, RecSysDataset, int, int]:
    cfg = SyntheticConfig(
        num_users=NUM_USERS, num_items=NUM_ITEMS, num_positives=1_200_000, num_groups=16, seed=seed
    )
    frame = generate_interactions(cfg)
    if len(frame) < NUM_TRAIN + NUM_VAL:
        raise SystemExit(f"generator gave only {len(frame)} rows; raise num_positives")
    train, val = frame.iloc[:NUM_TRAIN], frame.iloc[NUM_TRAIN : NUM_TRAIN + NUM_VAL]
    users, items = IdEncoder.fit(train["userId"]), IdEncoder.fit(train["itemId"])

    def encode(f):  # noqa: ANN001, ANN202
        return RecSysDataset(
            torch.from_numpy(users.transform(f["userId"])),
            torch.from_numpy(items.transform(f["itemId"])),
            torch.tensor(f["target"].to_numpy(), dtype=torch.float32),
        )

    return encode(train), encode(val), users.num_embeddings, items.num_embeddings


def model_config(num_users: int, num_items: int) -> HybridRecSysConfig:
    return HybridRecSysConfig(
        num_users=num_users, num_items=num_items, embedding_dim=32, mlp_layer_sizes=(64, 32, 16)
    )


class SeedDataset(Dataset):
    """The seed's design: one Python call and three small tensors per sample."""

    def __init__(self, data: RecSysDataset) -> None:
        self.users = data.user_idx.numpy()
        self.items = data.item_idx.numpy()
        self.targets = data.target.numpy()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):  # noqa: ANN204
        return (
            torch.tensor(self.users[i], dtype=torch.long),
            torch.tensor(self.items[i], dtype=torch.long),
            torch.tensor(self.targets[i], dtype=torch.float32),
        )


def run_naive(train, val, nu, ni, epochs, threads, lr=1e-3) -> Row:  # noqa: ANN001
    """Per-sample Dataset + default collate, batch 256, Adam, BCEWithLogits: the seed's loop."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = HybridRecSys(model_config(nu, ni))
    loader = DataLoader(SeedDataset(train), batch_size=256, shuffle=True)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    speeds, aucs = [], []
    for _ in range(epochs):
        model.train()
        start = time.perf_counter()
        for u, i, t in loader:
            opt.zero_grad()
            loss = loss_fn(model(u, i), t)
            loss.backward()
            opt.step()
        speeds.append(len(train) / (time.perf_counter() - start))
        aucs.append(evaluate_pointwise(model, val)["auc"])
    return Row(
        "seed (per-sample Dataset + DataLoader)", threads, 256, lr, float(np.mean(speeds)), aucs
    )


def run_default(train, val, nu, ni, epochs, threads, contention=False, ema=None) -> Row:  # noqa: ANN001
    """hybridrec.fit with its defaults (batch size, learning rate, fused Adam, no DataLoader);
    ``ema`` overrides ``--ema-decay`` (to show what the default weight average costs)."""
    config = TrainConfig(epochs=epochs, num_threads=threads)
    if ema is not None:
        config = TrainConfig(epochs=epochs, num_threads=threads, ema_decay=ema)
    torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    model = HybridRecSys(model_config(nu, ni))
    chosen = with_data_defaults(model, train, config)  # the batch and rate fit trains with
    history = fit(model, train, val, config, show_progress=False)
    # The first epoch includes one-off warm-up (allocator, kernels); report the steady state.
    speeds = [e.samples_per_second for e in history.epochs[1:]] or [history.last.samples_per_second]
    return Row(
        "hybridrec default (fit)" if ema is None else f"hybridrec default, --ema-decay {ema:g}",
        threads,
        chosen.batch,
        chosen.lr,
        float(np.mean(speeds)),
        [e.val_auc for e in history.epochs],
        contention,
    )


def _spin(stop) -> None:  # noqa: ANN001
    while not stop.is_set():
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--contention", action="store_true", help="also measure with a busy core")
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()

    train, val, nu, ni = make_data()
    rows: list[Row] = []
    for threads in (1, 2):
        rows.append(run_default(train, val, nu, ni, args.epochs, threads))
    rows.append(run_default(train, val, nu, ni, args.epochs, 1, ema=0.0))
    if not args.skip_naive:
        rows.append(run_naive(train, val, nu, ni, args.epochs, threads=2))
        rows.append(run_naive(train, val, nu, ni, args.epochs, threads=1))
    if args.contention:
        stop = mp.Event()
        spinner = mp.Process(target=_spin, args=(stop,))
        spinner.start()
        try:
            for threads in (1, 2):
                rows.append(run_default(train, val, nu, ni, args.epochs, threads, contention=True))
        finally:
            stop.set()
            spinner.join()

    naive = [r for r in rows if r.path.startswith("seed") and not r.contention]
    best_naive = max((r.samples_per_second for r in naive), default=float("nan"))
    print(
        f"\nmachine: {platform.processor() or platform.machine()}, {mp.cpu_count()} cores; "
        f"torch {torch.__version__}; data: {len(train):,} train / {len(val):,} val rows, "
        f"{nu - 1} users x {ni - 1} items; model: dim 32, MLP 64-32-16; {args.epochs} epochs\n"
    )
    head = "| path | threads | busy core | batch | lr | samples/s | vs best seed | "
    head += " | ".join(f"val AUC ep{e + 1}" for e in range(args.epochs)) + " |"
    print(head)
    print("|" + "---|" * (6 + args.epochs + 1))
    for r in rows:
        aucs = " | ".join(f"{a:.4f}" for a in r.val_auc)
        print(
            f"| {r.path} | {r.threads} | {'yes' if r.contention else 'no'} | {r.batch_size} | "
            f"{r.lr:g} | {r.samples_per_second:,.0f} | {r.samples_per_second / best_naive:.1f}x | "
            f"{aucs} |"
        )


if __name__ == "__main__":
    main()
