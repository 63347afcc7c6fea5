"""Loading and encoding large interaction files: time and peak memory up to 20M rows.

Data: synthetic interactions in MovieLens-20M's shape, 138,000 users x 27,000 items (integer
ids, log-normal user activity, Zipf-like item popularity), columns ``userId, itemId, target``
(all 1) and, unless ``--no-timestamp``, an integer ``timestamp``. Each size is written once
into a temporary directory as CSV and as Parquet; writing is not timed.

Each measurement runs in a fresh Python process doing what ``hybridrec train`` does before
its first epoch (``pipeline.train``): ``read_interactions``, ``IdEncoder.fit`` of users and
items, ``RecSysDataset.from_frame`` and the ``SeenItems`` of the training positives. The
process reports the seconds of that work (imports excluded, shown separately) and its peak
resident memory (``getrusage(RUSAGE_SELF).ru_maxrss``, which includes the ~0.4 GB that
importing torch/pandas/pyarrow costs; the RSS after imports is shown too).

    python benchmarks/bench_load.py [--sizes 1M,5M,20M] [--formats csv,parquet] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NUM_USERS, NUM_ITEMS = 138_000, 27_000
SIZES = {"1M": 1_000_000, "5M": 5_000_000, "20M": 20_000_000}


def write_data(directory: Path, rows: int, timestamp: bool, seed: int = 0) -> dict[str, Path]:
    """Write ``rows`` synthetic interactions as ``data.csv`` and ``data.parquet``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    activity = rng.lognormal(0.0, 1.0, NUM_USERS)
    user_cum = np.cumsum(activity / activity.sum())
    popularity = 1.0 / np.arange(1, NUM_ITEMS + 1) ** 0.9
    item_cum = np.cumsum(popularity[rng.permutation(NUM_ITEMS)] / popularity.sum())
    paths = {"csv": directory / "data.csv", "parquet": directory / "data.parquet"}
    columns = ["userId", "itemId", "target"] + (["timestamp"] if timestamp else [])
    schema = pa.schema([(c, pa.int64() if c != "target" else pa.int8()) for c in columns])
    chunk = 2_000_000
    with (
        pacsv.CSVWriter(
            paths["csv"], schema, write_options=pacsv.WriteOptions(quoting_header="none")
        ) as csv_out,
        pq.ParquetWriter(paths["parquet"], schema) as pq_out,
    ):
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            users = np.minimum(np.searchsorted(user_cum, rng.random(n)), NUM_USERS - 1) + 1
            items = np.minimum(np.searchsorted(item_cum, rng.random(n)), NUM_ITEMS - 1) + 1
            data = [users, items, np.ones(n, dtype=np.int8)]
            if timestamp:
                data.append(rng.integers(789_652_009, 1_427_784_002, n))
            table = pa.Table.from_arrays([pa.array(a) for a in data], schema=schema)
            csv_out.write_table(table)
            pq_out.write_table(table)
    return paths


def child(path: str) -> None:
    """One measurement (runs in its own process): print a JSON line of timings and memory."""
    import resource

    start = time.perf_counter()
    import numpy as np

    from hybridrec.artifact import SeenItems
    from hybridrec.config import DataConfig
    from hybridrec.data.dataset import RecSysDataset
    from hybridrec.data.encoding import IdEncoder
    from hybridrec.data.io import ITEM, USER, read_interactions

    imports = time.perf_counter() - start
    rss_after_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB

    t0 = time.perf_counter()
    frame = read_interactions(path, DataConfig())
    t1 = time.perf_counter()
    peak_read = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    users = IdEncoder.fit(frame[USER].to_numpy())
    items = IdEncoder.fit(frame[ITEM].to_numpy())
    t2 = time.perf_counter()
    data, _ = RecSysDataset.from_frame(frame, users, items)
    t3 = time.perf_counter()
    peak_ready = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    positive = data.target > 0.5
    SeenItems.from_pairs(
        data.user_idx[positive].numpy(),
        data.item_idx[positive].numpy(),
        num_users=users.num_embeddings,
        num_items=items.num_embeddings,
    )
    t4 = time.perf_counter()
    assert len(data) == len(frame) and int(np.asarray(data.user_idx.min())) >= 1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result = {
        "rows": len(data),
        "users": len(users),
        "items": len(items),
        "imports_s": imports,
        "read_s": t1 - t0,
        "fit_s": t2 - t1,
        "encode_s": t3 - t2,
        "seen_s": t4 - t3,
        "total_s": t4 - t0,
        "rss_imports_gib": rss_after_imports,
        "peak_read_gib": peak_read,
        "peak_ready_gib": peak_ready,
        "peak_rss_gib": peak,
        "dtypes": [str(data.user_idx.dtype), str(data.item_idx.dtype), str(data.target.dtype)],
    }
    print(json.dumps(result))


def measure(path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1M,5M,20M", help="comma-separated, from 1M,5M,20M")
    parser.add_argument("--formats", default="csv,parquet")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell; the best is kept")
    parser.add_argument("--no-timestamp", action="store_true", help="files without timestamps")
    parser.add_argument("--dir", help="directory for the generated files (default: a temp dir)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return

    formats = args.formats.split(",")
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for size in args.sizes.split(","):
            directory = Path(tmp) / size
            directory.mkdir()
            start = time.perf_counter()
            paths = write_data(directory, SIZES[size], not args.no_timestamp)
            mib = {f: paths[f].stat().st_size / 2**20 for f in formats}
            print(
                f"{size}: wrote "
                + ", ".join(f"{f} {mib[f]:,.0f} MiB" for f in formats)
                + f" in {time.perf_counter() - start:.1f} s",
                file=sys.stderr,
            )
            for fmt in formats:
                runs = [measure(paths[fmt]) for _ in range(args.repeat)]
                best = min(runs, key=lambda r: r["total_s"])
                for key in ("peak_read_gib", "peak_ready_gib", "peak_rss_gib"):
                    best[key] = max(r[key] for r in runs)  # memory: the worst run
                rows.append((size, fmt, mib[fmt], best))
                print(f"  {fmt}: {json.dumps(best)}", file=sys.stderr)

    print(
        f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"1-min load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} "
        f"(other processes share the machine); shape {NUM_USERS:,} users x {NUM_ITEMS:,} "
        f"items; timestamp column: {'no' if args.no_timestamp else 'yes'}\n"
    )
    print(
        "| rows | format | file MiB | read s | fit s | encode s | **ready s** | **peak RSS GiB** "
        "| + SeenItems s | peak RSS with SeenItems GiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for _size, fmt, size_mib, r in rows:
        ready = r["read_s"] + r["fit_s"] + r["encode_s"]
        print(
            f"| {r['rows']:,} | {fmt} | {size_mib:,.0f} | {r['read_s']:.2f} | {r['fit_s']:.2f} "
            f"| {r['encode_s']:.2f} | **{ready:.2f}** | **{r['peak_ready_gib']:.2f}** "
            f"| {r['seen_s']:.2f} | {r['peak_rss_gib']:.2f} |"
        )


if __name__ == "__main__":
    main()
