"""Multi-process CPU training: throughput and quality, 1 vs 2 processes at equal total batch.

Each run is the real command line, ``torchrun --standalone --nproc_per_node N -m hybridrec
train ...`` with one PyTorch thread per process; the per-epoch figures come from the model's
``metrics.json``. samples/s counts the samples of all ranks per second of training (the
epoch's validation, done by rank 0 alone, is not in it); the first epoch (warm-up) is left
out of the means. Quality: full-ranking HR@10 / NDCG@10 of one held-out positive per user
after the last epoch (no early stopping), averaged over seeds.

Data: synthetic positives with planted groups (``hybridrec.data.synthetic``), de-duplicated,
one random positive per user held out for validation. Model: hybrid, the CLI defaults
(embedding 64, MLP 64-32-16, batch 2048 in total, Adam lr 0.005, 8 negatives).

    python benchmarks/bench_distributed.py [--epochs 6] [--seeds 0,1,2] [--procs 1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hybridrec.data.synthetic import SyntheticConfig, generate_interactions


def make_data(directory: Path, users: int, items: int, positives: int) -> tuple[int, int]:
    frame = generate_interactions(
        SyntheticConfig(num_users=users, num_items=items, num_positives=positives, seed=0)
    )
    frame = frame[frame["target"] == 1].drop_duplicates(["userId", "itemId"])
    rng = np.random.default_rng(0)
    frame = frame.iloc[rng.permutation(len(frame))]
    held = frame.groupby("userId").head(1)
    counts = frame["userId"].map(frame["userId"].value_counts())
    held = held[counts.loc[held.index] >= 2]  # keep at least one training row per user
    train = frame.drop(held.index)
    train[["userId", "itemId"]].to_csv(directory / "train.csv", index=False)
    held[["userId", "itemId"]].to_csv(directory / "val.csv", index=False)
    return len(train), len(held)


def run(directory: Path, procs: int, seed: int, epochs: int, batch: int) -> dict:
    out = directory / f"model-{procs}-{seed}"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={procs}",
        "-m",
        "hybridrec",
        "train",
        "--train",
        str(directory / "train.csv"),
        "--val",
        str(directory / "val.csv"),
        "--out",
        str(out),
        "--epochs",
        str(epochs),
        "--batch-size",
        str(batch),
        "--seed",
        str(seed),
        "--threads",
        "1",
        "--early-stop",
        "none",
        "--device",
        "cpu",
        "--no-progress",
        "--json",
    ]
    start = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"run failed ({' '.join(command)}):\n{done.stderr[-3000:]}")
    history = json.loads((out / "metrics.json").read_text())["history"]
    steady = history[1:] or history
    return {
        "procs": procs,
        "seed": seed,
        "samples_per_second": statistics.mean(e["samples_per_second"] for e in steady),
        "seconds_per_epoch": statistics.mean(e["seconds"] for e in steady),
        "hr": history[-1]["ranking"]["hr@10"],
        "ndcg": history[-1]["ranking"]["ndcg@10"],
        "wall": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--procs", default="1,2")
    parser.add_argument("--batch-size", type=int, default=2048, help="total over all processes")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=1500)
    parser.add_argument("--positives", type=int, default=120_000)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    procs = [int(p) for p in args.procs.split(",")]

    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        directory = Path(tmp)
        num_train, num_val = make_data(directory, args.users, args.items, args.positives)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        rows = [run(directory, n, s, args.epochs, args.batch_size) for s in seeds for n in procs]
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    print(
        f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"torch {torch.__version__}; load average (1 min) {load:.2f} before, "
        f"{load_after:.2f} after\ndata: {num_train:,} training positives (x9 samples/epoch "
        f"with 8 negatives), {num_val:,} validation users, {args.users} users x {args.items} "
        f"items; hybrid defaults; total batch {args.batch_size}; {args.epochs} epochs; "
        f"seeds {args.seeds}\n"
    )
    print("| processes | per-process batch | samples/s | s/epoch | HR@10 | NDCG@10 | runs |")
    print("|---|---|---|---|---|---|---|")
    summary = {}
    for n in procs:
        mine = [r for r in rows if r["procs"] == n]
        sps = statistics.mean(r["samples_per_second"] for r in mine)
        spe = statistics.mean(r["seconds_per_epoch"] for r in mine)
        hr = [r["hr"] for r in mine]
        ndcg = statistics.mean(r["ndcg"] for r in mine)
        summary[n] = (sps, statistics.mean(hr))
        per_seed = " / ".join(f"{h:.4f}" for h in hr)
        print(
            f"| {n} | {args.batch_size // n} | {sps:,.0f} | {spe:.2f} | "
            f"{statistics.mean(hr):.4f} ({per_seed}) | {ndcg:.4f} | {len(mine)} |"
        )
    if 1 in summary:
        for n in procs:
            if n != 1:
                speedup = summary[n][0] / summary[1][0]
                diff = summary[n][1] - summary[1][1]
                print(
                    f"\n{n} processes vs 1: {speedup:.2f}x samples/s; HR@10 difference "
                    f"{diff:+.4f} (target: within 0.01)"
                )


if __name__ == "__main__":
    main()
