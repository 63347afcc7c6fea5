"""Event ingestion: POST /events throughput and latency, and GET /recommend beside an event log.

Three parts, each bounded:

1. **The log alone** (in this process, no HTTP): 16 threads each writing batches of 100
   events through :class:`hybridrec.events.EventLog` for ``--log-seconds``, with
   ``synchronous=FULL`` (the default: an fsync of the WAL per group commit, safe against
   power loss) and ``NORMAL`` (safe against a crash of the process only): events/s and the
   per-batch commit latency.
2. **POST /events** on the real server (``hybridrec serve --events LOG``: one uvicorn worker,
   1 torch thread, default limits and top-100 cache, model: hybrid defaults on
   MovieLens-100K) on 127.0.0.1: ``--clients`` clients, each on one keep-alive connection,
   posting batches of 100 events (known users and items, numeric timestamps) for
   ``--seconds``: closed loop (each sends its next batch when the last is answered: the
   most the server takes), then paced at ``--rate`` events/s in all (latency counted from
   when a batch was due); once with ``--events-sync full`` (the default) and once with
   ``normal``, each on a fresh log. Committed events/s counts acknowledged events only;
   afterwards the log must hold exactly the acknowledged events (checked).
3. **GET /recommend/{user}?k=10** at ``--clients`` clients over every known user, with the
   ``full`` log from part 2 (every user now has events since the model's watermark, so every answer
   is the cached list filtered by the user's new items).

Errors are any non-200 answer or a broken connection. The client is the asyncio one of
``bench_serve_mixed.py`` (prepared requests, uvloop when installed).

    python benchmarks/bench_events.py [--seconds 20] [--clients 16] [--model DIR]
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
import threading
import time
from pathlib import Path

from bench_serve import DATA, free_port, train_model, wait_ready
from bench_serve_mixed import http, known_ids, percentile

from hybridrec.events import Event, EventLog, read_events

BATCH = 100


def bench_log(directory: Path, synchronous: str, seconds: float, threads: int) -> dict:
    """Part 1: events/s and per-batch latency of the log itself."""
    log = EventLog(directory / f"log-{synchronous}.db", synchronous=synchronous)
    rng = random.Random(0)
    batch = [Event(rng.randrange(1, 944), rng.randrange(1, 1683), 1.0, 8.8e8) for _ in range(BATCH)]
    times: list[float] = []
    deadline = time.perf_counter() + seconds

    def writer() -> None:
        mine = []
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            log.write(batch)
            mine.append(time.perf_counter() - started)
        times.extend(mine)

    started = time.perf_counter()
    workers = [threading.Thread(target=writer) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    log.close()
    return {"events": len(times) * BATCH, "seconds": elapsed, "times": times, "errors": 0}


def event_requests(users: list[int], items: list[int], seed: int, n: int = 400) -> list[bytes]:
    """Prepared POST /events requests of BATCH events each."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        events = [
            {
                "user": rng.choice(users),
                "item": rng.choice(items),
                "timestamp": 893_000_000 + rng.randrange(10**6),
            }
            for _ in range(BATCH)
        ]
        out.append(http("POST", "/events", json.dumps({"events": events}).encode()))
    return out


async def client(
    port: int, pool: list[bytes], deadline: float, rng: random.Random, out: dict, interval: float
):
    """Closed loop (``interval`` 0: the next request as soon as the answer is in), or paced:
    one request every ``interval`` s, its latency counted from when it was due (a late
    server is charged for the wait it caused)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    due = time.perf_counter() + rng.random() * interval
    while time.perf_counter() < deadline:
        request = rng.choice(pool)
        if interval:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            started, due = due, due + interval
        else:
            started = time.perf_counter()
        try:
            status, body = await exchange_body(reader, writer, request)
        except (OSError, asyncio.IncompleteReadError):
            out["errors"] += 1
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            continue
        out["times"].append(time.perf_counter() - started)
        if status != 200:
            out["errors"] += 1
        elif body.startswith(b'{"accepted":'):
            out["events"] += json.loads(body)["accepted"]
    writer.close()


async def exchange_body(reader, writer, request: bytes) -> tuple[int, bytes]:
    """One request; its status and body (``exchange`` of bench_serve_mixed discards it)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return int(head.split(b" ", 2)[1]), await reader.readexactly(length)


async def run_clients(
    port: int, pool: list[bytes], seconds: float, clients: int, rate: float = 0.0
) -> dict:
    """``clients`` clients for ``seconds``; ``rate``: requests/s of them all (0: closed loop)."""
    out = {"times": [], "errors": 0, "events": 0}
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    rngs = [random.Random(c) for c in range(clients)]
    interval = clients / rate if rate else 0.0
    await asyncio.gather(
        *(client(port, pool, deadline, rngs[c], out, interval) for c in range(clients))
    )
    out["seconds"] = time.perf_counter() - started
    return out


def start_server(model: Path, port: int, log: Path, sync: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "hybridrec", "serve", "--model", str(model), "--port",
               str(port), "--log-level", "warning", "--events", str(log),
               "--events-sync", sync]  # fmt: skip
    return subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"})


def bench_server(model: Path, work: Path, sync: str, args: argparse.Namespace) -> list[tuple]:
    """Parts 2 and 3 against a server whose log has ``--events-sync sync``."""
    users, items = known_ids()
    log = work / f"events-{sync}.db"
    port = free_port()
    server = start_server(model, port, log, sync)
    rows = []
    try:
        wait_ready(f"http://127.0.0.1:{port}")
        posts = event_requests(users, items, seed=0)
        warm = asyncio.run(run_clients(port, posts, 2, args.clients))  # warm-up
        r = asyncio.run(run_clients(port, posts, args.seconds, args.clients))
        rows.append((f"server {sync}, closed loop", "POST /events 100", r))
        rate = args.rate / BATCH
        paced = asyncio.run(run_clients(port, posts, args.seconds, args.clients, rate))
        rows.append((f"server {sync}, paced {args.rate:,.0f} ev/s", "POST /events 100", paced))
        acked = warm["events"] + r["events"] + paced["events"]
        if sync == "full":
            gets = [http("GET", f"/recommend/{u}") for u in users]
            asyncio.run(run_clients(port, gets, 2, args.clients))  # warm-up
            g = asyncio.run(run_clients(port, gets, args.seconds, args.clients))
            check = asyncio.run(check_filtered(port, users[:50]))
            rows.append((f"server {sync}, every user with events ({check})", "GET k=10", g))
    finally:
        server.terminate()
        server.wait(timeout=30)
    frame, last = read_events(log)
    if len(frame) != acked or last != acked:
        sys.exit(f"the log holds {len(frame):,} events, {acked:,} were acknowledged")
    print(f"{sync}: the log holds {len(frame):,} events, ids 1..{last:,}: every one "
          "acknowledged (warm-up included)", file=sys.stderr)  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--log-seconds", type=float, default=5)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--rate", type=float, default=25_000, help="events/s of the paced POST rows (25,000)"
    )
    parser.add_argument("--model", type=Path, help="serve this artifact (default: train one)")
    args = parser.parse_args()
    if not (DATA / "train.csv").is_file():
        sys.exit(f"no benchmark data at {DATA}")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    work = Path(tempfile.mkdtemp(prefix="hybridrec-events-"))
    rows = []
    load = os.getloadavg()
    try:
        for sync in ("FULL", "NORMAL"):
            r = bench_log(work, sync, args.log_seconds, args.clients)
            rows.append((f"log alone, synchronous={sync}", "write 100", r))
        model = args.model or work / "model"
        if args.model is None:
            train_model(model)
        for sync in ("full", "normal"):
            rows += bench_server(model, work, sync, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nmachine: {os.cpu_count()} cores ({platform.machine()}), no GPU, load average "
        f"{load[0]:.2f} at the start; server: 1 uvicorn worker, 1 torch thread, default limits "
        f"and top-100 cache; model: hybrid (defaults) on MovieLens-100K; {args.clients} clients "
        f"(threads for the log alone), {args.seconds:g} s per server row, {args.log_seconds:g} s "
        f"per log row; client: asyncio in the same machine; after each server's rows its log "
        f"held exactly the acknowledged events\n"
    )
    print("| what | request | requests | req/s | committed events/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for what, kind, r in rows:
        times, seconds = r["times"], r["seconds"]
        p50, p99 = (percentile(times, 50), percentile(times, 99)) if times else (0.0, 0.0)
        events = f"{r['events'] / seconds:,.0f}" if r["events"] else "-"
        print(
            f"| {what} | {kind} | {len(times):,} | {len(times) / seconds:,.0f} | {events} | "
            f"{p50:.2f} | {p99:.2f} | {r['errors']} |"
        )


async def check_filtered(port: int, users: list[int]) -> str:
    """How the GET answers of some users were made (their ``source``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sources: dict[str, int] = {}
    for u in users:
        _, body = await exchange_body(reader, writer, http("GET", f"/recommend/{u}"))
        source = json.loads(body)["source"]
        sources[source] = sources.get(source, 0) + 1
    writer.close()
    return ", ".join(f"{n} of {len(users)} source={s}" for s, n in sources.items())


if __name__ == "__main__":
    main()
