"""--amp (autocast) and --compile (torch.compile): they train, on the CPU here; CUDA-only
modes are refused clearly elsewhere and tested only where a GPU is present."""

from __future__ import annotations

from hybridrec import TrainConfig
from hybridrec.cli import build_parser, config_from_args


def test_cli_flags_reach_the_config():
    args = build_parser().parse_args(
        ["train", "--train", "t.csv", "--amp", "bf16", "--compile", "--checkpoint-every", "2"]
    )
    config = config_from_args(TrainConfig, args)
    assert (config.amp, config.compile, config.checkpoint_every) == ("bf16", True, 2)
    default = config_from_args(TrainConfig, build_parser().parse_args(["train", "--train", "t"]))
    assert (default.amp, default.compile, default.checkpoint_every) == ("off", False, 0)
