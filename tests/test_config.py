"""config.py: TrainConfig and DataConfig refuse bad values naming the flag, and normalise
the rest."""

from __future__ import annotations

import pytest

from hybridrec import TrainConfig
from hybridrec.config import DataConfig
from hybridrec.errors import ConfigError

# ---------------------------------------------------------------- TrainConfig


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        ({"epochs": 0}, "--epochs"),
        ({"batch_size": 0}, "--batch-size"),
        ({"eval_batch_size": 0}, "--eval-batch-size"),
        ({"learning_rate": 0.0}, "--lr"),
        ({"learning_rate": float("nan")}, "--lr"),
        ({"weight_decay": -1.0}, "--weight-decay"),
        ({"num_threads": -1}, "--threads"),
        ({"seed": -1}, "--seed"),  # a config file or the API: NumPy refuses it later
        ({"batch_size": 2.5}, "--batch-size must be an integer"),  # the API: truncated
        ({"epochs": True}, "--epochs must be an integer"),  # read as 1
        ({"seed": 1.0}, "--seed must be an integer"),  # a float seed: a torch traceback
        ({"ks": (2.5,)}, "--k must be integers"),
        ({"learning_rate": True}, "--lr must be a number"),
    ],
)
def test_train_config_validation(options, flag):
    with pytest.raises(ConfigError, match=flag):
        TrainConfig(**options)


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        ({"loss": "hinge"}, "--loss"),
        ({"loss": "BCE"}, "--loss"),
        ({"negatives": 0}, "--negatives"),
        ({"negatives": -2}, "--negatives"),
        ({"sampling": "zipf"}, "--sampling"),
        ({"patience": 0}, "--patience"),
        ({"ks": ()}, "--k"),
        ({"ks": (10, 0)}, "--k"),
        ({"ks": (-5,)}, "--k"),
    ],
)
def test_train_config_validation_of_ranking_options(options, flag):
    with pytest.raises(ConfigError, match=flag):
        TrainConfig(**options)


def test_train_config_defaults_and_normalisation():
    cfg = TrainConfig(ks=("5", 20))
    assert cfg.ks == (5, 20)
    default = TrainConfig()
    assert (default.loss, default.sampling, default.early_stop) == ("auto", "uniform", "auto")
    assert TrainConfig(early_stop="none").early_stop is None
    assert TrainConfig(early_stop="NDCG@5").early_stop == "ndcg@5"
    assert default.negatives >= 1 and default.patience is None  # None: the model's own


def test_patience_defaults_to_the_models_own():
    """sasrec waits longer before stopping (its validation metric stalls, then rises)."""
    from hybridrec.models import build_model
    from hybridrec.training.loop import patience_of

    sasrec = build_model("sasrec", num_users=3, num_items=5)
    hybrid = build_model("hybrid", num_users=3, num_items=5)
    assert patience_of(sasrec, TrainConfig()) == 6
    assert patience_of(hybrid, TrainConfig()) == 3
    assert patience_of(sasrec, TrainConfig(patience=2)) == 2  # a given value wins


def test_epochs_default_to_the_models_own_and_are_recorded_resolved(tmp_path):
    """sasrec's next-item training gets more passes; the artifact records the number used."""
    import json

    import hybridrec
    from hybridrec.training import with_model_defaults
    from tests.helpers import planted

    assert TrainConfig().epochs is None
    assert with_model_defaults("sasrec", TrainConfig()).epochs == 40
    assert with_model_defaults("hybrid", TrainConfig()).epochs == 20
    assert with_model_defaults("sasrec", TrainConfig(epochs=3)).epochs == 3  # given wins
    train_frame, _ = planted(num_users=12, per_user=4)
    hybridrec.train(
        train_frame, None, out=tmp_path / "m", model="mf",
        train_config=TrainConfig(early_stop="none", epochs=None, batch_size=512),
        model_options={"embedding_dim": 4}, show_progress=False,
    )  # fmt: skip
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["settings"]["train"]["epochs"] == 20


@pytest.mark.parametrize("name", ["foo", "hr", "ndcg@x", "mrr@10", "loss@5", "ndcg@-1", "@10"])
def test_invalid_early_stop_names(name):
    with pytest.raises(ConfigError, match="--early-stop"):
        TrainConfig(early_stop=name)


def test_early_stop_with_a_zero_cut_off_is_rejected():
    with pytest.raises(ConfigError, match="--early-stop"):
        TrainConfig(early_stop="hr@0")


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


@pytest.mark.parametrize("decay", [-0.1, 1.0, 2.0])
def test_decay_outside_zero_one_is_refused(decay):
    with pytest.raises(ConfigError, match="--ema-decay"):
        TrainConfig(ema_decay=decay)


# ---------------------------------------------------------------- DataConfig


def test_data_config_validation():
    with pytest.raises(ConfigError, match="--user-col"):
        DataConfig(user_col="")
    with pytest.raises(ConfigError, match="three different columns"):
        DataConfig(user_col="id", item_col="id")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_refused_by_name(value):
    from hybridrec.models.hybrid import HybridRecSysConfig

    for make, flag in (
        (lambda: TrainConfig(weight_decay=value), "--weight-decay"),
        (lambda: TrainConfig(learning_rate=value), "--lr"),
        (lambda: TrainConfig(catalogue_weight=value), "--catalogue-weight"),
        (lambda: DataConfig(threshold=value), "--threshold"),
        (lambda: HybridRecSysConfig(init_std=value), "--init-std"),
    ):
        with pytest.raises(ConfigError, match=f"{flag} must be a finite number"):
            make()
