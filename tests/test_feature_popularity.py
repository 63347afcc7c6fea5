"""features/popularity.py: a cold item's popularity predicted from its features, on the
model's score scale, added to id-less items only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import hybridrec
from hybridrec.config import TrainConfig
from hybridrec.features.popularity import RIDGE, _Design, _ridge, fit_feature_popularity
from hybridrec.models.featured import FeaturedEmbedding, item_popularity
from hybridrec.models.hybrid import HybridRecSys, HybridRecSysConfig


def popular_by_kind(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, list[int]]:
    """Items of kind "hit" are chosen 10x as often as "niche" ones, by every user alike;
    the last 10 items of each kind are cold (no interactions)."""
    rng = np.random.default_rng(seed)
    kinds = ["hit" if i % 2 else "niche" for i in range(1, 81)]
    items = pd.DataFrame({"itemId": np.arange(1, 81), "kind": kinds})
    cold = list(range(61, 81))
    weights = np.array([10.0 if k == "hit" else 1.0 for k in kinds[:60]])
    rows = []
    for user in range(1, 101):
        for item in rng.choice(np.arange(1, 61), size=8, replace=False, p=weights / weights.sum()):
            rows.append((user, int(item)))
    return pd.DataFrame(rows, columns=["userId", "itemId"]), items, cold


def trained(frame: pd.DataFrame, items: pd.DataFrame, epochs: int, model: str = "hybrid"):
    """A tiny model of ``model`` trained on ``frame`` with ``items`` as item features."""
    options = {"embedding_dim": 8} | ({"mlp_layer_sizes": (8,)} if model == "hybrid" else {})
    return hybridrec.train(
        frame, None, model=model, item_features=items, model_options=options,
        train_config=TrainConfig(epochs=epochs, batch_size=256, seed=0),
    ).recommender  # fmt: skip


def test_cold_items_of_a_popular_kind_rank_first():
    frame, items, cold = popular_by_kind()
    rec = trained(frame, items, epochs=5)
    fitted = rec.config["settings"]["feature_popularity"]
    assert fitted["warm_items"] >= 50 and fitted["slope"] > 0 and fitted["r2"] > 0.5
    scores = rec.score([1] * len(cold), cold)
    hits = [s for s, i in zip(scores, cold, strict=True) if i % 2]
    niches = [s for s, i in zip(scores, cold, strict=True) if not i % 2]
    assert min(hits) > max(niches)
    table = rec.model.item_embedding
    term = table.feature_popularity()
    warm = torch.tensor(rec.items.transform(frame.itemId.unique()))
    assert torch.all(term[warm] == 0) and term[0] == 0  # warm and unknown items: nothing
    cold_idx = rec.items.transform(np.array(cold))
    hit_terms = term[cold_idx[0::2]]  # odd ids (61, 63, ...) are hits
    niche_terms = term[cold_idx[1::2]]
    assert hit_terms.min() > 0 > niche_terms.max()  # centred on the average warm item


def test_ridge_by_conjugate_gradients_is_the_closed_form():
    """The design matrix is never built; its solution is the dense ridge solution."""
    g = torch.Generator().manual_seed(0)
    n = 200
    table = FeaturedEmbedding(n + 1, 2, {"tokens": 6, "width": 3, "numeric": 2}, padding_idx=0)
    # distinct tokens in a row (a field's tokens are), 0 = an empty slot
    table.feature_tokens[1:] = torch.stack([torch.randperm(6, generator=g)[:3] for _ in range(n)])
    table.feature_weights[1:] = (table.feature_tokens[1:] > 0).float() / 3  # pooled weights
    table.feature_numeric[1:] = torch.randn(n, 2, generator=g)
    rows = torch.arange(1, n + 1)
    design = _Design(table, rows)
    target = torch.randn(n, generator=g, dtype=torch.float64) + 2.0
    fitted = _ridge(design, target)
    dense = torch.zeros(n, 6, dtype=torch.float64)
    dense.scatter_(1, table.feature_tokens[1:], 1.0)  # presence, not the pooled weights
    dense[:, 0] = 0.0  # the padding token is no feature
    dense = torch.cat([dense, table.feature_numeric[1:].double(), torch.ones(n, 1)], 1)
    closed = torch.linalg.solve(dense.T @ dense + RIDGE * torch.eye(9), dense.T @ target)
    closed[0] = 0.0
    assert torch.allclose(fitted, closed, atol=1e-6)


def test_the_term_is_off_in_training_and_zero_before_it_is_fitted():
    shape = {"tokens": 3, "width": 1, "numeric": 0}
    config = HybridRecSysConfig(num_users=3, num_items=5, embedding_dim=4, item_feature_shape=shape)
    model = HybridRecSys(config)
    table = model.item_embedding
    table.has_id[3:] = 0
    table.feature_tokens[3:, 0] = torch.tensor([1, 2])
    table.feature_weights[3:, 0] = 1.0
    table.popularity_tokens[1:] = torch.tensor([2.0, -1.0])
    model.eval()
    assert table.feature_popularity(torch.tensor([3, 4, 1])).tolist() == [2.0, -1.0, 0.0]
    base = model(torch.tensor([1, 1]), torch.tensor([3, 4]))
    with torch.no_grad():
        table.popularity_tokens.zero_()
    diff = base - model(torch.tensor([1, 1]), torch.tensor([3, 4]))
    assert diff.tolist() == pytest.approx([2.0, -1.0], abs=1e-5)
    with torch.no_grad():
        table.popularity_tokens[1:] = torch.tensor([2.0, -1.0])
    model.train()
    assert item_popularity(table, torch.tensor([3])) is None  # not part of the training loss


def test_a_model_saved_before_the_term_existed_still_loads():
    shape = {"tokens": 3, "width": 1, "numeric": 0}
    config = HybridRecSysConfig(num_users=3, num_items=5, embedding_dim=4, item_feature_shape=shape)
    state = HybridRecSys(config).state_dict()
    old = {k: v for k, v in state.items() if ".popularity_" not in k}
    model = HybridRecSys(config)
    model.load_state_dict(old)  # strict: the missing buffers come back as zeros
    assert float(model.item_embedding.popularity_tokens.abs().sum()) == 0.0


def test_no_item_features_no_fit():
    model = HybridRecSys(HybridRecSysConfig(num_users=3, num_items=5, embedding_dim=4))
    assert fit_feature_popularity(model, torch.tensor([0, 1, 1, 0, 0])) is None


@pytest.mark.parametrize("model_name", ["mf"])
def test_other_feature_models_get_the_term(model_name):
    frame, items, cold = popular_by_kind(1)
    rec = trained(frame, items, epochs=5, model=model_name)
    assert rec.config["settings"]["feature_popularity"]["slope"] > 0
    scores = rec.score([1] * len(cold), cold)
    hits = np.mean([s for s, i in zip(scores, cold, strict=True) if i % 2])
    niches = np.mean([s for s, i in zip(scores, cold, strict=True) if not i % 2])
    assert hits > niches


def test_an_exported_model_scores_cold_items_as_the_model_does(tmp_path):
    """Export traces the features and the popularity term with the batch size free."""
    from hybridrec.export import export_model

    frame, items, cold = popular_by_kind()
    rec = trained(frame, items, epochs=2)
    scorer = torch.jit.load(str(export_model(rec.model, tmp_path / "m.pt")))
    users = torch.tensor(rec.users.transform([1] * len(cold)))
    cold_idx = torch.tensor(rec.items.transform(cold))
    with torch.no_grad():
        expected = rec.model(users, cold_idx)
    assert float(rec.model.item_embedding.feature_popularity(cold_idx).abs().max()) > 0
    assert torch.allclose(scorer(users, cold_idx), expected, atol=1e-5)
