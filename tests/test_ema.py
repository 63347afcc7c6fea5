"""--ema-decay: the validated and returned weights are a moving average of the trained ones,
and averaging never changes the training itself."""

from __future__ import annotations

import pytest

from hybridrec import TrainConfig
from hybridrec.errors import ConfigError


@pytest.mark.parametrize("decay", [-0.1, 1.0, 2.0])
def test_decay_outside_zero_one_is_refused(decay):
    with pytest.raises(ConfigError, match="--ema-decay"):
        TrainConfig(ema_decay=decay)
