"""--amp (autocast) and --compile (torch.compile): they train, on the CPU here; CUDA-only
modes are refused clearly elsewhere and tested only where a GPU is present."""

from __future__ import annotations

import functools

import pytest
import torch

from hybridrec import TrainConfig
from hybridrec.cli import build_parser, config_from_args
from hybridrec.data import RecSysDataset
from hybridrec.errors import ConfigError
from hybridrec.models import build_model
from hybridrec.training import fit

pytestmark = pytest.mark.usefixtures("one_thread")


def data():
    g = torch.Generator().manual_seed(0)
    users = torch.randint(1, 30, (1500,), generator=g)
    items = torch.randint(1, 20, (1500,), generator=g)
    return RecSysDataset(users, items, ((users + items) % 2).float())


def losses(device="cpu", **options):
    torch.manual_seed(0)
    model = build_model("hybrid", num_users=30, num_items=20, embedding_dim=8, mlp_layer_sizes=(8,))
    config = TrainConfig(epochs=3, batch_size=256, learning_rate=0.05, device=device, **options)
    history = fit(model, data(), None, config, device=torch.device(device), show_progress=False)
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_on_cuda(amp):
    mixed = losses(device="cuda", amp=amp)
    assert mixed[-1] < mixed[0]


def test_cli_flags_reach_the_config():
    args = build_parser().parse_args(
        ["train", "--train", "t.csv", "--amp", "bf16", "--compile", "--checkpoint-every", "2"]
    )
    config = config_from_args(TrainConfig, args)
    assert (config.amp, config.compile, config.checkpoint_every) == ("bf16", True, 2)
    default = config_from_args(TrainConfig, build_parser().parse_args(["train", "--train", "t"]))
    assert (default.amp, default.compile, default.checkpoint_every) == ("off", False, 0)
