"""HTTP service under a mixed load, then the same with two clients sending the largest requests.

Starts the real server (``hybridrec serve``: one uvicorn worker, 1 torch thread, the default
limits and top-k cache) on 127.0.0.1 with a model trained on MovieLens-100K
(../shared/data/movielens-100k-loo/train.csv, default settings), then drives it from this
process with 16 closed-loop clients, each on one keep-alive connection, each request drawn
at random:

- 80% ``GET /recommend/{known user}`` (k=10: cached),
- 10% ``POST /recommend`` with ``item_ids`` of 5-20 known items (a new user's fold-in),
- 10% ``GET /recommend/{known user}?k=200`` (deeper than a top-100 cache: the model with
  ``--server-args "--cache-top 100"``; the default cache of a model this small is 1,000
  deep, so a lookup).

Phase 2 repeats this while 2 more clients send, in turn, the largest requests the limits
allow: 100 users x k=1000 (``MAX_RESULTS``), 20,000 score pairs (``MAX_SCORE_PAIRS``) and a
fold-in from 10,000 item ids at k=1000. A 503 (the model queue is full) counts as an error.

The client is a minimal asyncio HTTP/1.1 client (uvloop when installed; requests are
prepared bytes), so it costs the shared 2 cores little; latencies are per request, from
writing it to reading the whole answer.

    python benchmarks/bench_serve_mixed.py [--seconds 20] [--clients 16] [--model DIR]
        [--server-args "--cache-top 100"]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench_serve import DATA, free_port, train_model, wait_ready

from hybridrec.serve.schemas import MAX_SCORE_PAIRS

MIX = (("cached GET k=10", 0.8), ("POST item_ids 5-20", 0.1), ("GET k=200", 0.1))


def http(method: str, path: str, body: bytes = b"") -> bytes:
    """A prepared HTTP/1.1 keep-alive request."""
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\n"
    if method == "POST":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def mixed_requests(users: list[int], items: list[int], seed: int) -> dict[str, list[bytes]]:
    """A pool of prepared requests per kind, drawn from the known users and items."""
    rng = random.Random(seed)
    fold = [
        http(
            "POST",
            "/recommend",
            json.dumps({"item_ids": rng.sample(items, rng.randint(5, 20))}).encode(),
        )
        for _ in range(500)
    ]
    return {
        MIX[0][0]: [http("GET", f"/recommend/{u}") for u in users],
        MIX[1][0]: fold,
        MIX[2][0]: [http("GET", f"/recommend/{u}?k=200") for u in users],
    }


def heavy_requests(users: list[int], items: list[int]) -> list[bytes]:
    """The largest requests the service's limits allow, one of each shape."""
    pairs = [
        {"user_id": users[i % len(users)], "item_id": items[i % len(items)]}
        for i in range(MAX_SCORE_PAIRS)
    ]
    fold = [items[i % len(items)] for i in range(10_000)]
    return [
        http("POST", "/recommend", json.dumps({"user_ids": users[:100], "k": 1000}).encode()),
        http("POST", "/score", json.dumps({"pairs": pairs}).encode()),
        http("POST", "/recommend", json.dumps({"item_ids": fold, "k": 1000}).encode()),
    ]


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    """Send one request, read its whole answer; the status code."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


async def client(
    port: int, pick, deadline: float, stats: dict[str, list], errors: dict[str, int]
) -> None:
    """One closed-loop client on a keep-alive connection (reconnecting if it is closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    while time.perf_counter() < deadline:
        kind, request = pick()
        started = time.perf_counter()
        try:
            status = await exchange(reader, writer, request)
        except (OSError, asyncio.IncompleteReadError):
            errors[kind] += 1
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            continue
        stats[kind].append(time.perf_counter() - started)
        if status != 200:
            errors[kind] += 1
    writer.close()


async def run_phase(port: int, seconds: float, clients: int, pools, heavy: list[bytes], seed: int):
    stats: dict[str, list] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    rng = random.Random(seed)
    kinds, weights = [k for k, _ in MIX], [w for _, w in MIX]

    def mixed():
        kind = rng.choices(kinds, weights)[0]
        return kind, rng.choice(pools[kind])

    turn = iter(range(10**9))

    def largest():
        return "largest requests", heavy[next(turn) % len(heavy)]

    deadline = time.perf_counter() + seconds
    tasks = [client(port, mixed, deadline, stats, errors) for _ in range(clients)]
    tasks += [client(port, largest, deadline, stats, errors) for _ in range(2 if heavy else 0)]
    await asyncio.gather(*tasks)
    return stats, errors


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000


def start_server(model: Path, port: int, extra: list[str]) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "hybridrec",
        "serve",
        "--model",
        str(model),
        "--port",
        str(port),
        "--log-level",
        "warning",
        *extra,
    ]
    return subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"})


def known_ids() -> tuple[list[int], list[int]]:
    users = sorted(
        {int(line.split(",")[0]) for line in (DATA / "test.csv").read_text().split()[1:]}
    )
    items = sorted(
        {int(line.split(",")[1]) for line in (DATA / "train.csv").read_text().split()[1:]}
    )
    return users, items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--model", type=Path, help="serve this artifact (default: train one)")
    parser.add_argument("--server-args", default="", help="more options for hybridrec serve")
    args = parser.parse_args()
    if not (DATA / "train.csv").is_file():
        sys.exit(f"no benchmark data at {DATA}")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    work = Path(tempfile.mkdtemp(prefix="hybridrec-mixed-"))
    model = args.model or work / "model"
    if args.model is None:
        train_model(model)
    users, items = known_ids()
    pools, heavy = mixed_requests(users, items, seed=0), heavy_requests(users, items)
    port = free_port()
    load = os.getloadavg()
    server = start_server(model, port, args.server_args.split())
    rows = []
    try:
        wait_ready(f"http://127.0.0.1:{port}")
        asyncio.run(run_phase(port, 2, args.clients, pools, [], seed=9))  # warm-up
        for phase, big in (("mixed", []), ("mixed + 2 largest", heavy)):
            stats, errors = asyncio.run(
                run_phase(port, args.seconds, args.clients, pools, big, seed=1)
            )
            for kind in [k for k, _ in MIX] + (["largest requests"] if big else []):
                rows.append((phase, kind, stats[kind], errors[kind]))
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nmachine: {os.cpu_count()} cores ({platform.machine()}), no GPU, load average "
        f"{load[0]:.2f} at the start; server: 1 uvicorn worker, 1 torch thread, default limits "
        f"{args.server_args or '(default cache)'}; model: hybrid (defaults) on MovieLens-100K; "
        f"{args.clients} clients, "
        f"{args.seconds:g} s per phase; client: asyncio in the same machine\n"
    )
    print("| phase | request | requests | req/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for phase, kind, times, errs in rows:
        n = len(times)
        p50, p99 = (percentile(times, 50), percentile(times, 99)) if times else (0.0, 0.0)
        rate = n / args.seconds
        print(f"| {phase} | {kind} | {n:,} | {rate:,.0f} | {p50:.2f} | {p99:.2f} | {errs} |")


if __name__ == "__main__":
    main()
