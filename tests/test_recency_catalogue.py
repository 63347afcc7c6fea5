"""Recency-weighted positives (``--recency-half-life``) and the catalogue softmax on the dot
product (``--catalogue-weight``): the weights, where they reach the loss, and that they help
where they should."""

from __future__ import annotations

import pytest

from hybridrec import TrainConfig
from hybridrec.errors import ConfigError

# ---------------------------------------------------------------- the weights


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        ({"recency_half_life": -1}, "--recency-half-life"),
        ({"recency_floor": 0}, "--recency-floor"),
        ({"recency_floor": 1.5}, "--recency-floor"),
        ({"catalogue_weight": -0.1}, "--catalogue-weight"),
    ],
)
def test_config_validation_names_the_flag(options, flag):
    with pytest.raises(ConfigError, match=flag):
        TrainConfig(**options)
