"""training/steps.py: sparse embedding tables (trained by optim.py's lazy Adam), --amp
(autocast) and --compile (torch.compile). They train on the CPU here; CUDA-only modes are
refused clearly and tested only where a GPU is present."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

import hybridrec
from hybridrec import TrainConfig
from hybridrec.data import RecSysDataset
from hybridrec.errors import ConfigError
from hybridrec.models import build_model
from hybridrec.objectives import Pointwise
from hybridrec.training import fit, steps

pytestmark = pytest.mark.usefixtures("one_thread")


CPU = torch.device("cpu")
TINY = {"embedding_dim": 8, "mlp_layer_sizes": (8,)}


# ---------------------------------------------------------------- sparse tables


def _labelled_full_coverage():
    """Every user and every item occurs in the one batch of each epoch."""
    users = torch.tensor([1, 2, 3, 1, 2, 3, 1, 2])
    items = torch.tensor([1, 2, 3, 4, 5, 1, 2, 3])
    target = torch.tensor([1.0, 0, 1, 0, 1, 1, 0, 1])
    return RecSysDataset(users, items, target)


def _fit(sparse: str, data, **kw) -> nn.Module:
    torch.manual_seed(0)
    net = build_model("hybrid", num_users=4, num_items=6, **TINY)
    config = TrainConfig(
        epochs=4, batch_size=64, ema_decay=0.0, early_stop=None, sparse_embeddings=sparse, **kw
    )
    hybridrec.fit(net, data, None, config, show_progress=False)
    return net


def test_sparse_and_dense_tables_train_the_same_model_when_every_row_is_touched():
    """Lazy Adam is Adam when every row has a gradient every step. SparseAdam applies eps
    after the bias correction (Adam before), so they agree to a small share of how far
    training moved the weights, not to the last bit."""
    data = _labelled_full_coverage()
    torch.manual_seed(0)
    start = build_model("hybrid", num_users=4, num_items=6, **TINY).state_dict()
    sparse, dense = _fit("on", data), _fit("off", data)
    for name, a in sparse.state_dict().items():
        b, moved = dense.state_dict()[name], (a - start[name]).norm()
        assert (a - b).norm() <= 0.01 * moved + 1e-7, name
    other = _fit("on", data, learning_rate=0.01)  # a real difference is detected
    assert (other.item_embedding.weight - dense.item_embedding.weight).norm() > 0.1 * (
        dense.item_embedding.weight - start["item_embedding.weight"]
    ).norm()
    assert not sparse.user_embedding.sparse  # switched back after training


def test_lazy_adam_takes_the_steps_of_sparse_adam():
    """LazyAdam is SparseAdam's update by row gathers: the same weights after many steps of
    repeated, overlapping rows (coalesced gradients), up to float rounding."""
    from hybridrec.training.optim import LazyAdam

    torch.manual_seed(0)
    ours, theirs = nn.Embedding(50, 8, sparse=True), nn.Embedding(50, 8, sparse=True)
    theirs.load_state_dict(ours.state_dict())
    start = ours.weight.detach().clone()
    optimisers = {ours: LazyAdam(ours.parameters(), lr=0.01),
                  theirs: torch.optim.SparseAdam(theirs.parameters(), lr=0.01)}  # fmt: skip
    for _ in range(30):
        rows, grad = torch.randint(0, 50, (40,)), torch.randn(40, 8)
        for table, optimiser in optimisers.items():
            optimiser.zero_grad()
            (table(rows) * grad).sum().backward()
            optimiser.step()
    assert torch.allclose(ours.weight, theirs.weight, atol=1e-6)
    assert (ours.weight - start).abs().max() > 0.1  # the steps moved the weights


def test_sparse_tables_leave_untouched_rows_alone():
    data = _labelled_full_coverage()
    torch.manual_seed(0)
    net = build_model("hybrid", num_users=6, num_items=8, **TINY)  # users 4, 5 never seen
    before = net.user_embedding.weight[4:].clone()
    config = TrainConfig(
        epochs=2, batch_size=4, ema_decay=0.0, early_stop=None, sparse_embeddings="on"
    )
    hybridrec.fit(net, data, None, config, show_progress=False)
    assert torch.equal(net.user_embedding.weight[4:], before)


def test_auto_makes_only_large_tables_sparse(monkeypatch):
    monkeypatch.setattr(steps, "SPARSE_MIN_ELEMENTS", 6 * 8)  # users 7 x 8 > 48
    net = build_model("hybrid", num_users=7, num_items=6, **TINY)
    objective = Pointwise(_labelled_full_coverage(), TrainConfig(loss="bce"), CPU, 6)
    tables = steps.sparse_tables(net, objective, TrainConfig(), CPU, world=1)
    assert tables == [net.user_embedding] and net.user_embedding.sparse
    assert not net.item_embedding.sparse


def test_sparse_weight_decay_is_dense_weight_decay_on_touched_rows():
    """Every row touched every step: lazy decay is Adam's L2 decay (to a small share of how
    far training moved); a row never touched does not decay at all."""
    data = _labelled_full_coverage()
    torch.manual_seed(0)
    start = build_model("hybrid", num_users=4, num_items=6, **TINY).state_dict()
    sparse, dense = _fit("on", data, weight_decay=0.05), _fit("off", data, weight_decay=0.05)
    plain = _fit("on", data)
    for name, a in sparse.state_dict().items():
        b, moved = dense.state_dict()[name], (a - start[name]).norm()
        assert (a - b).norm() <= 0.01 * moved + 1e-7, name
    decayed = (sparse.item_embedding.weight - plain.item_embedding.weight).norm()
    assert decayed > 0.05 * (plain.item_embedding.weight - start["item_embedding.weight"]).norm()
    torch.manual_seed(0)
    net = build_model("hybrid", num_users=6, num_items=8, **TINY)  # users 4, 5 never seen
    before = net.user_embedding.weight[4:].clone()
    config = TrainConfig(epochs=2, batch_size=4, ema_decay=0.0, early_stop=None,
                         sparse_embeddings="on", weight_decay=0.1)  # fmt: skip
    hybridrec.fit(net, data, None, config, show_progress=False)
    assert torch.equal(net.user_embedding.weight[4:], before)


# ---------------------------------------------------------------- mixed precision and compile


def data(positives_only: bool = False):
    g = torch.Generator().manual_seed(0)
    users = torch.randint(1, 30, (1500,), generator=g)
    items = torch.randint(1, 20, (1500,), generator=g)
    if positives_only:  # sampled negatives, each positive scored with them as one group
        return RecSysDataset(users[:300], items[:300], torch.ones(300))
    return RecSysDataset(users, items, ((users + items) % 2).float())


def losses(device="cpu", positives_only=False, **options):
    torch.manual_seed(0)
    model = build_model("hybrid", num_users=30, num_items=20, embedding_dim=8, mlp_layer_sizes=(8,))
    config = TrainConfig(epochs=3, batch_size=256, learning_rate=0.05, device=device, **options)
    history = fit(
        model, data(positives_only), None, config, device=torch.device(device), show_progress=False
    )
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32
    return [e.train_loss for e in history.epochs]


def test_bf16_autocast_trains_on_cpu_close_to_fp32():
    full, mixed = losses(), losses(amp="bf16")
    assert mixed != full  # autocast really ran the matmuls in bf16
    assert mixed[-1] < mixed[0]
    assert mixed == pytest.approx(full, abs=0.02)


def test_fp16_amp_needs_cuda_and_bad_modes_are_refused():
    with pytest.raises(ConfigError, match="--amp fp16 is not available on cpu"):
        losses(amp="fp16")
    with pytest.raises(ConfigError, match="--amp must be one of off, bf16, fp16"):
        TrainConfig(amp="int8")


def test_compile_traces_the_training_step(monkeypatch):
    """The whole step (model + loss) goes through torch.compile. The ``aot_eager`` backend
    traces forward and backward like inductor does but skips its C++ code generation, which
    alone takes ~40 s on a busy 2-core machine."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    assert losses(compile=True) == pytest.approx(losses(), rel=1e-5)


def test_compile_with_sampled_negatives_and_a_sampled_softmax(monkeypatch):
    """Positives-only data: grouped scoring and a sampled catalogue softmax (4 draws of 19
    items) under torch.compile, whose dynamic shapes once made the draw count symbolic."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    options = {"positives_only": True, "softmax_negatives": 4}
    compiled = losses(compile=True, **options)
    assert compiled == pytest.approx(losses(**options), rel=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_on_cuda(amp):
    mixed = losses(device="cuda", amp=amp)
    assert mixed[-1] < mixed[0]
