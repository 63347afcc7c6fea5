"""HTTP service under load: requests/s and latency percentiles at 1, 16 and 64 clients.

Starts the real server (``hybridrec serve``: one uvicorn worker, 1 torch thread, the default
top-100 cache) on 127.0.0.1 with a model trained on MovieLens-100K
(../shared/data/movielens-100k-loo/train.csv, default settings), checks that its answers
equal the in-process Recommender's, then drives it with `wrk` (Debian package `wrk`; a C
load generator, so the client costs little of the 2 cores) for a bounded time per level:

- ``GET /recommend/{user}?k=10`` over all 943 users, round robin;
- ``POST /recommend`` with a batch of 100 users, k=10.

    python benchmarks/bench_serve.py [--seconds 20] [--levels 1,16,64] [--model DIR]
        [--cache-top N]

``--model`` serves an existing artifact instead of training one; ``--cache-top 0`` serves
without the cache (every request scored by the model). Each row also reports the server's
CPU time per request (from /proc), which other load on the machine affects far less than
latency. Every run is bounded (``--seconds`` per level) and only talks to the loopback
address.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "movielens-100k-loo"

# wrk Lua: round-robin over user ids for GET, fixed batch body for POST; print p50/p95/p99
# and error counts as one JSON line at the end.
LUA = """
local users = {%(users)s}
local i = 0
local mode = "%(mode)s"
local body = '%(body)s'
request = function()
  if mode == "get" then
    i = i %% #users + 1
    return wrk.format("GET", "/recommend/" .. users[i] .. "?k=10")
  end
  return wrk.format("POST", "/recommend", {["Content-Type"] = "application/json"}, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %%d, "seconds": %%f, "p50_ms": %%f, "p95_ms": %%f, "p99_ms": %%f, '
    .. '"non2xx": %%d, "socket_errors": %%d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_model(directory: Path) -> None:
    import hybridrec

    hybridrec.train(DATA / "train.csv", out=directory, items=DATA / "items.csv")


def wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("server did not become ready")


def check_answers(url: str, model: Path, users: list[int]) -> None:
    """The served JSON equals the in-process Recommender's (a few users, both paths)."""
    import hybridrec

    rec = hybridrec.load(model)
    for user in users[:20]:
        with urllib.request.urlopen(f"{url}/recommend/{user}?k=10", timeout=10) as r:
            got = json.load(r)
        want = rec.recommend(user, k=10)
        items = [
            {"item_id": i, "score": s}
            for i, s in zip(want.item_ids.tolist(), want.scores.tolist(), strict=True)
        ]
        if got != {"user_id": user, "items": items, "source": "model", "unknown_items": []}:
            raise SystemExit(f"the server's answer for user {user} differs from recommend()")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(url: str, lua: str, clients: int, seconds: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(lua)
    threads = min(clients, 2)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{clients}",
            f"-d{seconds}s",
            "--timeout",
            "5s",
            "-s",
            f.name,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(f.name)
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--levels", default="1,16,64")
    parser.add_argument("--model", type=Path, help="serve this artifact (default: train one)")
    parser.add_argument("--cache-top", type=int, default=100, help="hybridrec serve --cache-top")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("needs wrk: apt-get install wrk")
    if not (DATA / "train.csv").is_file():
        sys.exit(f"no benchmark data at {DATA}")
    work = Path(tempfile.mkdtemp(prefix="hybridrec-serve-"))
    model = args.model
    if model is None:
        model = work / "model"
        train_model(model)
    users = sorted(
        set(int(line.split(",")[0]) for line in (DATA / "test.csv").read_text().split()[1:])
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    load = os.getloadavg()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hybridrec",
            "serve",
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--cache-top",
            str(args.cache_top),
        ],
        env=env,
    )
    try:
        wait_ready(url)
        check_answers(url, model, users)
        rows = []
        batch = json.dumps({"user_ids": users[:100], "k": 10})
        for name, mode in (
            ("GET /recommend/{user} k=10", "get"),
            ("POST /recommend 100 users", "post"),
        ):
            lua = LUA % {"users": ",".join(map(str, users)), "mode": mode, "body": batch}
            for clients in (int(c) for c in args.levels.split(",")):
                before = cpu_seconds(server.pid)
                r = run_wrk(url, lua, clients, args.seconds)
                after = cpu_seconds(server.pid)
                if before is not None and after is not None and r["requests"]:
                    r["cpu_us"] = (after - before) / r["requests"] * 1e6
                rows.append((name, clients, r))
                print(name, clients, r, file=sys.stderr, flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    cache = f"top-{args.cache_top} cache" if args.cache_top else "no cache"
    print(
        f"\nmachine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f} at the start; server: 1 uvicorn worker, 1 torch thread, {cache}; "
        f"model: hybrid (defaults) on MovieLens-100K; {args.seconds} s per row\n"
    )
    print("| endpoint | clients | requests/s | p50 ms | p95 ms | p99 ms | errors | CPU µs/req |")
    print("|---|---|---|---|---|---|---|---|")
    for name, clients, r in rows:
        errors = r["non2xx"] + r["socket_errors"]
        cpu = f"{r['cpu_us']:,.0f}" if "cpu_us" in r else "-"
        print(
            f"| {name} | {clients} | {r['requests'] / r['seconds']:,.0f} | {r['p50_ms']:.2f} | "
            f"{r['p95_ms']:.2f} | {r['p99_ms']:.2f} | {errors} | {cpu} |"
        )


if __name__ == "__main__":
    main()
