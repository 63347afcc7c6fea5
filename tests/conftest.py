"""Shared fixtures: tiny files, a seeded synthetic dataset and a tiny model config."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from hybridrec.config import DataConfig
from hybridrec.data import RecSysDataset
from hybridrec.data.encoding import IdEncoder
from hybridrec.data.io import ITEM, USER
from hybridrec.data.synthetic import SyntheticConfig, planted_groups, write_synthetic_data
from hybridrec.models import HybridRecSysConfig
from hybridrec.prepare import load_data

#: Small enough to train in well under a second, large enough to beat item popularity.
SYNTHETIC = SyntheticConfig(num_users=300, num_items=150, num_positives=6000, seed=0)

#: Model options for ``hybridrec.train`` that keep every test model tiny.
TINY_MODEL = {"embedding_dim": 8, "mlp_layer_sizes": (16, 8), "init_std": 0.05}


@pytest.fixture
def tiny_csv(tmp_path):
    """Factory: ``tiny_csv(data, name="data.csv")`` writes ``data`` and returns the path.

    ``data`` is a dict or DataFrame (written as CSV, or as Parquet when ``name`` ends in
    ``.parquet``) or a ``str`` written verbatim, for malformed files pandas would not produce.
    """

    def write(data, name: str = "data.csv") -> Path:
        path = tmp_path / name
        if isinstance(data, str):
            path.write_text(data)
            return path
        frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
        if path.suffix == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        return path

    return write


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> tuple[Path, Path]:
    """``(train.csv, val.csv)`` of a seeded synthetic dataset, generated once per session."""
    directory = tmp_path_factory.mktemp("synthetic")
    return write_synthetic_data(directory, SYNTHETIC)


@pytest.fixture
def tiny_model_config() -> HybridRecSysConfig:
    return HybridRecSysConfig(num_users=7, num_items=5, embedding_dim=8, mlp_layer_sizes=(16, 8))


@pytest.fixture
def tiny_model_options() -> dict:
    return dict(TINY_MODEL)


@pytest.fixture
def one_thread():
    """Like ``hybridrec.train``'s default: several threads crawl when other work shares the
    cores, and tests that call ``fit`` directly skip the pipeline that sets it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def planted_encoded() -> tuple[RecSysDataset, RecSysDataset, int, int]:
    """Planted-taste positives (48 users, 40 items) with one held-out positive per user,
    encoded: ``(train, val, num_users, num_items)``."""
    train, val = planted_groups(seed=0, num_users=48, num_items=40, per_user=7)
    train, val = load_data(train, DataConfig()), load_data(val, DataConfig())
    users, items = IdEncoder.fit(train[USER].to_numpy()), IdEncoder.fit(train[ITEM].to_numpy())
    train_set, _ = RecSysDataset.from_frame(train, users, items)
    val_set, _ = RecSysDataset.from_frame(val, users, items)
    return train_set, val_set, users.num_embeddings, items.num_embeddings
