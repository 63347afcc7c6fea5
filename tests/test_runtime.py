"""runtime.py: device names are checked, with the flag in the message."""

from __future__ import annotations

import pytest
import torch

from hybridrec.errors import ConfigError


def test_unknown_device_name():
    from hybridrec.runtime import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="--device 'toaster'"):
        resolve_device("toaster")


def test_fit_trains_where_the_config_says():
    """An explicit ``TrainConfig(device=...)`` is used by ``fit`` (it was once ignored, so
    a benchmark meant for a GPU trained on the CPU); ``"auto"`` keeps the model's device."""
    from hybridrec import TrainConfig, fit
    from hybridrec.data.dataset import RecSysDataset
    from hybridrec.models import build_model, model_device
    from hybridrec.training.loop import training_device

    model = build_model("mf", num_users=4, num_items=5)
    assert training_device(model, TrainConfig(device="auto")) == torch.device("cpu")
    assert training_device(model, TrainConfig(device="cpu")) == torch.device("cpu")
    data = RecSysDataset(torch.tensor([1, 2, 3]), torch.tensor([1, 2, 3]), torch.ones(3))
    if torch.cuda.is_available():
        fit(model, data, None, TrainConfig(epochs=1, device="cuda"), show_progress=False)
        assert model_device(model).type == "cuda"
    else:  # asked for a GPU that is not there: the config was read, not ignored
        with pytest.raises(ConfigError, match="--device cuda"):
            fit(model, data, None, TrainConfig(epochs=1, device="cuda"), show_progress=False)
