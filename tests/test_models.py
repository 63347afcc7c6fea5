"""Contract every registered model must meet, plus config validation and the registry."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest
import torch

from hybridrec.errors import ConfigError
from hybridrec.models import MODELS, HybridRecSys, HybridRecSysConfig, build_model, model_class

NUM_USERS, NUM_ITEMS = 7, 5  # embedding rows, including the unknown row 0
TINY = {"embedding_dim": 8, "mlp_layer_sizes": (16, 8)}


def tiny(name, **extra):
    """A small model ``name``, given only the tiny options its config class knows."""
    torch.manual_seed(0)
    known = {f.name for f in fields(model_class(name).config_class)}
    options = {k: v for k, v in {**TINY, **extra}.items() if k in known}
    return build_model(name, num_users=NUM_USERS, num_items=NUM_ITEMS, **options)


def embeddings(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]


def prepared(model):
    """Give count-based models (no gradient training) some data to count."""
    if hasattr(model, "prepare"):
        gen = torch.Generator().manual_seed(1)
        users = torch.randint(1, NUM_USERS, (40,), generator=gen)
        items = torch.randint(1, NUM_ITEMS, (40,), generator=gen)
        model.prepare(users, items, torch.randint(0, 2, (40,), generator=gen).float())
    return model


def trainable(model):
    return getattr(model, "trainable", True) and any(p.requires_grad for p in model.parameters())


@pytest.fixture(params=sorted(MODELS))
def model_name(request):
    return request.param


def test_forward_shape(model_name):
    model = prepared(tiny(model_name)).eval()
    users = torch.tensor([0, 1, 6, 3])
    items = torch.tensor([4, 0, 2, 2])
    logits = model(users, items)
    assert logits.shape == (4,)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_score_all_matches_forward_for_every_pair(model_name, dropout):
    """score_all is a fast path; it must give exactly what forward gives, pair by pair."""
    model = prepared(tiny(model_name, dropout=dropout)).eval()
    with torch.no_grad():  # large random weights, so every unit and bias matters
        for p in model.parameters():
            p.normal_(0, 0.5)
        for emb in embeddings(model):
            if emb.padding_idx is not None:
                emb.weight[emb.padding_idx].zero_()
    users = torch.arange(NUM_USERS)
    with torch.no_grad():
        all_scores = model.score_all(users)
        assert all_scores.shape == (NUM_USERS, NUM_ITEMS)
        u = users.repeat_interleave(NUM_ITEMS)
        i = torch.arange(NUM_ITEMS).repeat(NUM_USERS)
        pairwise = model(u, i).reshape(NUM_USERS, NUM_ITEMS)
        # a subset of users gives the same rows (no cross-row mixing in score_all)
        subset = model.score_all(torch.tensor([5, 0, 5]))
    assert torch.allclose(all_scores, pairwise, atol=1e-5)
    assert torch.allclose(subset, all_scores[[5, 0, 5]], atol=1e-5)


def test_unknown_index_has_zero_embedding(model_name):
    model = tiny(model_name)
    tables = embeddings(model)
    if not tables:
        pytest.skip(f"{model_name} has no embeddings")
    for emb in tables:
        assert emb.padding_idx == 0  # index 0 is the unknown id
        assert torch.count_nonzero(emb.weight[0]) == 0
    # the id rows are initialised (not left at zero) in at least the main tables
    assert any(torch.count_nonzero(emb.weight[1:]) > 0 for emb in tables)


def test_unknown_embedding_stays_zero_after_training_steps(model_name):
    """padding_idx keeps row 0 out of the gradient, so unknown ids stay neutral."""
    model = tiny(model_name)
    if not trainable(model) or not embeddings(model):
        pytest.skip(f"{model_name} has no trainable embeddings")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        loss = model(torch.tensor([0, 1, 2]), torch.tensor([1, 0, 3])).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for emb in embeddings(model):
        assert torch.count_nonzero(emb.weight[0]) == 0


def test_gradients_flow_to_all_parameters(model_name):
    model = prepared(tiny(model_name)).train()
    if not trainable(model):
        pytest.skip(f"{model_name} is not trained by gradient descent")
    users = torch.tensor([1, 2, 3, 4, 5, 6])
    items = torch.tensor([1, 2, 3, 4, 1, 2])
    target = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(users, items), target)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_config_class_and_defaults(model_name):
    cls = model_class(model_name)
    config = cls.config_class(num_users=3, num_items=4)
    model = cls(config)
    assert model.config is config
    with pytest.raises(ConfigError, match="num_users"):
        cls.config_class(num_users=0, num_items=4)


def test_hybrid_architecture(tiny_model_config):
    """Embeddings of the configured size feed an MLP on [u || i] with the configured widths."""
    model = HybridRecSys(tiny_model_config)
    linears = [m for m in model.mlp.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 16), (16, 8), (8, 1)]
    assert model.user_embedding.weight.shape == (7, 8)
    assert model.item_embedding.weight.shape == (5, 8)
    assert sum(p.numel() for p in model.parameters()) == 7 * 8 + 5 * 8 + 272 + 136 + 9


def test_unknown_pair_has_zero_dot_score():
    """With both embeddings zero only the MLP's constant remains: the same for every unknown."""
    model = tiny("hybrid").eval()
    with torch.no_grad():
        unknown = model(torch.tensor([0, 0]), torch.tensor([0, 0]))
        mlp_only = model.mlp(torch.zeros(1, 16)).squeeze()
    assert torch.allclose(unknown, mlp_only.expand(2))


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        ({"embedding_dim": 0}, "--embedding-dim"),
        ({"dropout": 1.0}, "--dropout"),
        ({"dropout": -0.1}, "--dropout"),
        ({"mlp_layer_sizes": (16, 0)}, "--mlp-layers"),
        ({"init_std": 0.0}, "--init-std"),
        ({"num_users": 0}, "num_users"),
    ],
)
def test_config_validation_names_the_flag(options, flag):
    with pytest.raises(ConfigError, match=flag):
        HybridRecSysConfig(**options)


def test_mlp_layer_sizes_are_normalised_to_int_tuple():
    config = HybridRecSysConfig(mlp_layer_sizes=["8", 4])
    assert config.mlp_layer_sizes == (8, 4)


def test_no_dropout_layer_when_dropout_is_zero():
    model = tiny("hybrid", dropout=0.0)
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    model = tiny("hybrid", dropout=0.2)
    assert sum(isinstance(m, torch.nn.Dropout) for m in model.modules()) == 2


def test_build_model_unknown_name():
    choices = re.escape(", ".join(sorted(MODELS)))
    with pytest.raises(ConfigError, match=rf"unknown model 'nope'; choose one of: {choices}"):
        build_model("nope", num_users=2, num_items=2)


def test_build_model_unknown_option():
    with pytest.raises(ConfigError, match=r"model 'hybrid' has no option\(s\) colour, size"):
        build_model("hybrid", num_users=2, num_items=2, size=3, colour="red")
