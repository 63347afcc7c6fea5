"""training/scale.py: the default batch size and learning rate follow the epoch's size, and
options the user gives are kept."""

from __future__ import annotations

import math

import pytest
import torch

import hybridrec
from hybridrec import TrainConfig
from hybridrec.data import RecSysDataset
from hybridrec.data.synthetic import SyntheticConfig, write_synthetic_data
from hybridrec.models import build_model
from hybridrec.training import fit
from hybridrec.training.scale import default_batch_size, epoch_samples, with_data_defaults


def positives(n: int = 100) -> RecSysDataset:
    return RecSysDataset(torch.arange(n) % 7 + 1, torch.arange(n) % 5 + 1, torch.ones(n))


def test_small_epochs_keep_the_tuned_defaults():
    config = with_data_defaults("hybrid", positives(), TrainConfig())
    assert (config.batch_size, config.learning_rate) == (2048, 0.005)


@pytest.mark.parametrize(
    ("negatives", "batch"),
    [(39_998, 2048), (39_999, 4096), (159_998, 4096), (159_999, 8192)],
)
def test_large_epochs_take_larger_batches_and_a_square_root_learning_rate(negatives, batch):
    """100 positives with k negatives each are 100 (k + 1) samples: the tiers start at
    4M and 16M samples."""
    config = with_data_defaults("hybrid", positives(), TrainConfig(negatives=negatives))
    assert config.batch_size == batch
    assert config.learning_rate == pytest.approx(0.005 * math.sqrt(batch / 2048))


def test_what_the_user_gives_is_kept():
    big = TrainConfig(negatives=200_000)
    given = with_data_defaults(
        "hybrid", positives(), TrainConfig(negatives=200_000, batch_size=512)
    )
    assert (given.batch_size, given.learning_rate) == (512, 0.005)  # the rate is not scaled
    rate = with_data_defaults(
        "hybrid", positives(), TrainConfig(negatives=200_000, learning_rate=0.001)
    )
    assert (rate.batch_size, rate.learning_rate) == (8192, 0.001)
    assert with_data_defaults("hybrid", positives(), big).batch_size == 8192


def test_epoch_samples_by_objective():
    labelled = RecSysDataset(
        torch.tensor([1, 2, 3]), torch.tensor([1, 2, 1]), torch.tensor([1.0, 0.0, 1.0])
    )
    assert epoch_samples("hybrid", labelled, TrainConfig()) == 3  # rows as they are
    assert epoch_samples("hybrid", positives(), TrainConfig()) == 900  # 8 negatives each
    assert epoch_samples("hybrid", positives(), TrainConfig(loss="bpr")) == 800  # pairs
    assert epoch_samples("hybrid", positives(), TrainConfig(loss="ce")) is None
    assert epoch_samples("sasrec", positives(), TrainConfig()) is None
    assert default_batch_size(None) == 2048


def test_fit_trains_with_the_resolved_config(monkeypatch):
    """A bare ``fit`` (the Python API) applies the rule too: with the tiers lowered, its
    objective and optimiser get the scaled batch and rate."""
    from hybridrec.training import loop, scale

    monkeypatch.setattr(scale, "BATCH_TIERS", ((1000, 4096),))
    built = []
    real = loop.make_objective
    monkeypatch.setattr(
        loop, "make_objective", lambda m, t, c, d: built.append(c) or real(m, t, c, d)
    )
    model = build_model("hybrid", num_users=8, num_items=20, embedding_dim=4, mlp_layer_sizes=(4,))
    fit(model, positives(), None, TrainConfig(epochs=1), show_progress=False)  # 900 samples
    fit(model, positives(200), None, TrainConfig(epochs=1), show_progress=False)  # 1,800
    assert [(c.batch_size, c.learning_rate) for c in built] == [
        (2048, 0.005),
        (4096, pytest.approx(0.005 * math.sqrt(2))),
    ]


def test_the_artifact_records_the_batch_and_rate_it_trained_with(tmp_path):
    train_csv, val_csv = write_synthetic_data(
        tmp_path, SyntheticConfig(num_users=30, num_items=20, num_positives=300)
    )
    result = hybridrec.train(
        train_csv, val_csv, out=tmp_path / "m",
        model_options={"embedding_dim": 4, "mlp_layer_sizes": (4,)},
        train_config=TrainConfig(epochs=1),
    )  # fmt: skip
    recorded = result.recommender.config["settings"]["train"]
    assert (recorded["batch_size"], recorded["learning_rate"]) == (2048, 0.005)
