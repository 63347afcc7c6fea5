"""distributed.py (and the objectives' shards by rank): multi-process training, shards, and
real 2-process gloo runs on loopback via torchrun.

The process tests start ``python -m torch.distributed.run --standalone`` (torchrun on a free
local port) and skip when this platform cannot run gloo on loopback.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections import Counter

import pandas as pd
import pytest
import torch
import torch.distributed as dist

import hybridrec
from hybridrec import TrainConfig
from hybridrec.artifact import read_metrics
from hybridrec.config import DataConfig
from hybridrec.data import RecSysDataset
from hybridrec.data.synthetic import planted_groups
from hybridrec.distributed import rank_seed
from hybridrec.objectives import NextItem, Pointwise, shard_order

planted = planted_groups


def _loopback_ok() -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
        return True
    except OSError:
        return False


needs_gloo = pytest.mark.skipif(
    sys.platform == "win32"
    or not dist.is_available()
    or not dist.is_gloo_available()
    or not _loopback_ok(),
    reason="needs torch.distributed with gloo on a loopback interface",
)


def torchrun(*args, cwd, timeout=240):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env_note = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        env={**os.environ, **env_note},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def launch_two(script, *, cwd, timeout=240):
    """What torchrun does, without its launcher process: two ranks with the env:// variables
    on a free loopback port. Returns each rank's ``(returncode, stderr)``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    env.update(WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", OMP_NUM_THREADS="1")
    logs = [cwd / f"rank{r}.log" for r in range(2)]
    procs = []
    for r in range(2):
        with open(logs[r], "w") as log:  # a file, not a pipe: a chatty rank cannot block
            procs.append(
                subprocess.Popen(
                    [sys.executable, script],
                    cwd=cwd,
                    env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            )
    try:
        codes = [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [(code, log.read_text()) for code, log in zip(codes, logs, strict=True)]


# ---------------------------------------------------------------- sharding


@pytest.mark.parametrize(
    ("n", "batch", "world"), [(10, 4, 2), (103, 16, 2), (100, 10, 3), (7, 8, 4), (64, 7, 5)]
)
def test_rank_shards_are_disjoint_and_cover_the_epoch(n, batch, world):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    shards = [shard_order(order, batch, r, world) for r in range(world)]
    steps = {len(sizes) for _, sizes in shards}
    assert len(steps) == 1  # every rank takes the same number of steps (DDP needs that)
    everything = torch.cat([idx for idx, _ in shards])
    assert len(set(everything.tolist())) == len(everything)  # disjoint
    tail = n % batch
    dropped = tail if 0 < tail < world else 0
    assert len(everything) == n - dropped  # covers the epoch (but a tail too small to share)
    # step s of all ranks together is exactly global batch s of one process
    offsets = [0] * world
    for s in range(steps.pop()):
        parts = []
        for r, (idx, sizes) in enumerate(shards):
            assert sizes[s] >= 1
            parts.append(idx[offsets[r] : offsets[r] + sizes[s]])
            offsets[r] += sizes[s]
        assert torch.equal(torch.cat(parts), order[s * batch : s * batch + sum(map(len, parts))])


def test_shard_order_single_process_is_the_order():
    order = torch.randperm(10)
    idx, sizes = shard_order(order, 4)
    assert idx is order and sizes == [4, 4, 2]


def _dataset(frame):
    from hybridrec.data.encoding import IdEncoder
    from hybridrec.data.io import ITEM, USER
    from hybridrec.prepare import load_data

    frame = load_data(frame, DataConfig())
    users, items = IdEncoder.fit(frame[USER].to_numpy()), IdEncoder.fit(frame[ITEM].to_numpy())
    data, _ = RecSysDataset.from_frame(frame, users, items)
    return data, items.num_embeddings


@pytest.mark.parametrize("loss", ["bce", "bpr"])
def test_pointwise_rank_shards_partition_the_sampled_epoch(loss):
    train, _ = planted(num_users=30, per_user=6)
    data, num_items = _dataset(train)
    config = TrainConfig(batch_size=16, negatives=3, loss=loss, device="cpu")
    objective = Pointwise(data, config, torch.device("cpu"), num_items)
    rows = []
    for rank in range(2):
        gen = torch.Generator().manual_seed(5)  # the same shuffle on both ranks
        sampler = torch.Generator().manual_seed(rank_seed(5, rank))
        for b in objective.batches(gen, rank=rank, world=2, sample_generator=sampler):
            rows.append(b)
    users = torch.cat([b.user_idx for b in rows])
    items = torch.cat([b.item_idx for b in rows])
    target = torch.cat([b.target for b in rows])
    assert len(users) == objective.num_samples  # each row of the epoch exactly once
    pairs = sorted(zip(data.user_idx.tolist(), data.item_idx.tolist(), strict=True))
    k = config.negatives
    if loss == "bce":
        positive = target > 0.5
        assert sorted(zip(users[positive].tolist(), items[positive].tolist(), strict=True)) == pairs
        assert int((~positive).sum()) == len(pairs) * k
        negatives = set(zip(users[~positive].tolist(), items[~positive].tolist(), strict=True))
    else:  # each positive k times, with a negative riding in `target`
        assert sorted(zip(users.tolist(), items.tolist(), strict=True)) == sorted(pairs * k)
        negatives = set(zip(users.tolist(), target.long().tolist(), strict=True))
    assert not negatives & set(pairs)  # sampled negatives are never known positives


def test_next_item_rank_shards_partition_the_histories():
    train, _ = planted(num_users=25, per_user=6)
    data, num_items = _dataset(train)
    config = TrainConfig(batch_size=24, device="cpu")
    objective = NextItem(data, config, torch.device("cpu"), num_items, max_len=4)
    seen = []
    for rank in range(2):
        for batch in objective.batches(torch.Generator().manual_seed(1), rank=rank, world=2):
            seen += [tuple(row[row != 0].tolist()) for row in batch]
    expected = Counter(tuple(row[row != 0].tolist()) for row in objective.histories)
    tail = len(objective.histories) % objective.per_batch
    assert Counter(seen) <= expected  # disjoint: no history twice
    assert len(seen) == len(objective.histories) - (tail if tail < 2 else 0)


# ---------------------------------------------------------------- two real processes


@needs_gloo
def test_torchrun_two_processes_train_a_normal_artifact_close_to_one_process(tmp_path):
    train, val = planted(num_users=200, num_items=100, groups=5, per_user=10)
    train.to_csv(tmp_path / "train.csv", index=False)
    val.to_csv(tmp_path / "val.csv", index=False)
    options = ["--epochs", "5", "--batch-size", "256", "--early-stop", "none", "--device", "cpu"]
    done = torchrun(
        "-m",
        "hybridrec",
        "train",
        "--train",
        "train.csv",
        "--val",
        "val.csv",
        "--out",
        "model",
        *options,
        "--no-progress",
        "--json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    printed = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1  # only rank 0 prints its summary
    assert "distributed training: 2 processes, gloo backend" in done.stderr
    assert done.stderr.count("saved the model to") == 1  # only rank 0 logs and saves
    two = json.loads(printed[0])
    assert two["epochs"] == 5
    rec = hybridrec.load(tmp_path / "model")  # a normal artifact
    assert rec.recommend(1, k=5).item_ids is not None
    assert read_metrics(tmp_path / "model")["final"]["val_hr@10"] == two["val_hr@10"]

    one = hybridrec.train(
        train,
        val,
        train_config=TrainConfig(
            epochs=5, batch_size=256, early_stop="none", device="cpu", num_threads=1
        ),
    ).summary()
    # same total batch and data, different random streams: quality must be close
    assert one["val_hr@10"] > 0.5
    assert abs(two["val_hr@10"] - one["val_hr@10"]) <= 0.1


WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch, torch.distributed as dist
    import hybridrec
    from hybridrec import TrainConfig

    dist.init_process_group("gloo")  # our own group: hybridrec.train joins it, keeps it
    rank = dist.get_rank()
    sys.path.insert(0, os.getcwd())
    import pandas as pd
    train = pd.read_csv("train.csv"); val = pd.read_csv("val.csv")
    labelled = pd.read_csv("labelled.csv")
    out = {}

    def same_on_all_ranks(model):
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        every = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
        dist.all_gather(every, flat)
        return all(torch.equal(every[0], x) for x in every)

    base = dict(epochs=2, batch_size=64, device="cpu", early_stop="none")
    runs = {
        "hybrid-bpr": ("hybrid", {"embedding_dim": 8, "mlp_layer_sizes": (8,)}, {"loss": "bpr"},
                       train),
        "sasrec": ("sasrec", {"hidden_dim": 8, "max_len": 6, "num_heads": 2}, {}, train),
        "mf-labelled": ("mf", {"embedding_dim": 8}, {}, labelled),
        "hybrid-sparse": ("hybrid", {"embedding_dim": 8, "mlp_layer_sizes": (8,)},
                          {"sparse_embeddings": "on", "softmax_negatives": 8}, train),
        "popularity": ("popularity", {}, {}, train),
    }
    for name, (model, options, extra, data) in runs.items():
        result = hybridrec.train(data, val, model=model, model_options=options,
                                 train_config=TrainConfig(**base, **extra))
        out[name] = {"epochs": len(result.history.epochs),
                     "synced": same_on_all_ranks(result.recommender.model)
                     if any(True for _ in result.recommender.model.parameters()) else True}

    # no validation file: the holdout's epoch choice (made on rank 0) reaches every rank
    auto = hybridrec.train(train, model="mf", model_options={"embedding_dim": 8},
                           train_config=TrainConfig(epochs=3, batch_size=64, device="cpu"))
    out["holdout"] = {"epochs": len(auto.history.epochs),
                      "synced": same_on_all_ranks(auto.recommender.model)}

    # early stopping is decided on rank 0 and every rank stops at the same epoch
    stop = hybridrec.train(train, val, model="mf", model_options={"embedding_dim": 8},
                           train_config=TrainConfig(epochs=30, batch_size=64, device="cpu",
                                                    learning_rate=0.05, early_stop="hr@10",
                                                    patience=1))
    counts = [None, None]
    dist.all_gather_object(counts, len(stop.history.epochs))
    out["early_stop_epochs"] = counts

    # checkpoint with 2 ranks, then resume to more epochs
    ck = dict(batch_size=64, device="cpu", early_stop="none", checkpoint_every=1)
    hybridrec.train(train, val, out="ckpt", model="mf", model_options={"embedding_dim": 8},
                    train_config=TrainConfig(epochs=1, **ck))
    resumed = hybridrec.train(train, val, out="ckpt", model="mf",
                              model_options={"embedding_dim": 8},
                              train_config=TrainConfig(epochs=3, resume="ckpt", **ck))
    out["resumed_epochs"] = len(resumed.history.epochs)
    out["resumed_synced"] = same_on_all_ranks(resumed.recommender.model)
    if rank == 0:
        with open("result.json", "w") as f:
            json.dump(out, f)
    dist.destroy_process_group()
    """
)


@needs_gloo
def test_ddp_keeps_ranks_in_sync_for_every_objective(tmp_path):
    """BPR (two model calls per step), sasrec (``encode`` outside ``forward``), labelled rows
    and popularity (no parameters) under DDP, sparse tables with the sampled catalogue
    softmax (gloo's sparse all-reduce); rank 0's early-stopping decision and the automatic
    holdout's epoch choice reach all ranks; a 2-rank checkpoint resumes."""
    train, val = planted(num_users=40, num_items=40)
    train.to_csv(tmp_path / "train.csv", index=False)
    val.to_csv(tmp_path / "val.csv", index=False)
    others = train.assign(itemId=(train.itemId + 19) % 40 + 1, target=0)  # another group
    labelled = pd.concat([train.assign(target=1), others], ignore_index=True)
    labelled.drop_duplicates(["userId", "itemId"]).to_csv(tmp_path / "labelled.csv", index=False)
    (tmp_path / "worker.py").write_text(WORKER)
    for code, err in launch_two("worker.py", cwd=tmp_path):
        assert code == 0, err[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    for name in ("hybrid-bpr", "sasrec", "mf-labelled", "hybrid-sparse"):
        assert result[name] == {"epochs": 2, "synced": True}, name
    assert result["holdout"]["synced"] and 1 <= result["holdout"]["epochs"] <= 3
    assert result["popularity"]["epochs"] == 1
    first, second = result["early_stop_epochs"]
    assert first == second < 30
    assert result["resumed_epochs"] == 3 and result["resumed_synced"]
