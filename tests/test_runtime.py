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
