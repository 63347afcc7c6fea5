"""models/ (the registry, RecModel's declarations and every registered model): the contract
each model must meet, untrained and trained, config validation, the registry, and a model
registered from outside going through every path."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient

import hybridrec
import hybridrec.models.layers
import hybridrec.recommend
from hybridrec import TrainConfig
from hybridrec.cli import main
from hybridrec.data import IdEncoder, RecSysDataset
from hybridrec.errors import ConfigError
from hybridrec.evaluation import evaluate_full
from hybridrec.export import export_model
from hybridrec.models import (
    MODELS,
    HybridRecSys,
    HybridRecSysConfig,
    RecModel,
    build_model,
    capabilities,
    model_class,
    models_with,
    register_model,
)
from hybridrec.prepare import load_data
from hybridrec.serve import create_app
from tests.helpers import full_ranking, planted, train

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


@pytest.mark.parametrize("budget", [None, 1])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_score_all_matches_forward_for_every_pair(model_name, dropout, budget, monkeypatch):
    """score_all is a fast path; it must give exactly what forward gives, pair by pair,
    also when the all-pairs MLP runs in chunks of one user (``budget=1``)."""
    if budget is not None:
        monkeypatch.setattr(hybridrec.models.layers, "PAIR_BUDGET", budget)
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


@pytest.mark.parametrize(
    "name", [n for n in sorted(MODELS) if hasattr(model_class(n), "score_groups")]
)
def test_score_groups_matches_forward_on_the_repeated_users(name):
    """score_groups is training's fast path for a positive and its negatives: the same
    logits as forward on every (user, item) pair of each group, with gradients alike."""
    model = prepared(tiny(name, dropout=0.0))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    users = torch.tensor([1, 6, 3, 1])
    items = torch.tensor([[4, 0, 2], [2, 2, 1], [3, 4, 1], [1, 2, 3]])
    grouped = model.score_groups(users, items)
    flat = model(users.repeat_interleave(3), items.reshape(-1)).view(4, 3)
    assert grouped.shape == (4, 3)
    assert torch.allclose(grouped, flat, atol=1e-5)
    users_table = dict(model.named_parameters())[capabilities(name).user_parameters[0]]
    (g1,) = torch.autograd.grad(grouped.square().sum(), users_table)
    (g2,) = torch.autograd.grad(flat.square().sum(), users_table)
    assert torch.allclose(g1, g2, atol=1e-4) and g1.abs().sum() > 0


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


# ---------------------------------------------------------------- capabilities and registration


def test_capabilities_of_the_built_in_models():
    """What each model declares, as the callers see it (a known-output table)."""
    table = {
        name: (c.retrieval, c.similar_items, c.sequences, c.reads_training_data, c.objective,
               c.default_loss, c.trainable, bool(c.user_parameters))
        for name in MODELS
        for c in [capabilities(name)]
    }  # fmt: skip
    assert table == {
        "hybrid": (True, True, False, False, "pointwise", "bce", True, True),
        "mf": (True, True, False, False, "pointwise", "bce", True, True),
        "gmf": (True, True, False, False, "pointwise", "bce", True, True),
        "mlp": (False, False, False, False, "pointwise", "bce", True, True),
        "neumf": (True, True, False, False, "pointwise", "bce", True, True),
        "popularity": (False, False, False, True, "pointwise", "bce", False, False),
        "sasrec": (False, True, True, True, "next_item", "ce", True, False),
    }
    assert models_with(retrieval=True) == ("hybrid", "mf", "gmf", "neumf")
    assert models_with(objective="next_item", sequences=True) == ("sasrec",)
    for name, cls in MODELS.items():  # by name, class or model: one answer
        assert capabilities(cls) is capabilities(name) is capabilities(tiny(name))
        assert capabilities(name).config_class is cls.config_class


def test_declared_capabilities_match_the_model(model_name):
    """A declaration says what the model has: the structure callers once probed for."""
    model = tiny(model_name)
    declared = capabilities(model)
    tables = {name for name, m in model.named_children() if isinstance(m, torch.nn.Embedding)}
    assert declared.retrieval == ({"user_embedding", "item_embedding"} <= tables)
    assert declared.similar_items == ("item_embedding" in tables)
    assert declared.sequences == hasattr(model, "score_sequences")
    assert declared.reads_training_data == hasattr(model, "prepare")
    assert declared.trainable == any(p.requires_grad for p in model.parameters())


def test_a_plain_module_has_the_default_capabilities():
    plain = capabilities(torch.nn.Linear(2, 1))
    assert plain == capabilities(RecModel)
    assert (plain.retrieval, plain.objective, plain.default_loss, plain.trainable) == (
        False, "pointwise", "bce", True,
    )  # fmt: skip
    assert plain.config_class is None and plain.user_parameters == ()


def test_models_with_an_unknown_capability():
    with pytest.raises(TypeError, match="no capability called colour"):
        models_with(colour="red")


@dataclass
class ToyConfig:
    """Hyper-parameters of :class:`ToyDot` (sizes come from the data)."""

    num_users: int = field(default=1, metadata={"cli": False})
    num_items: int = field(default=1, metadata={"cli": False})
    embedding_dim: int = 8


class ToyDot(RecModel):
    """logit = <u, i>: a model written outside hybridrec, declaring what it can do."""

    config_class = ToyConfig
    user_parameters = ("user_embedding.weight",)
    retrieval = True
    similar_items = True

    def __init__(self, config: ToyConfig) -> None:
        super().__init__(config)
        self.user_embedding = torch.nn.Embedding(config.num_users, config.embedding_dim, 0)
        self.item_embedding = torch.nn.Embedding(config.num_items, config.embedding_dim, 0)
        with torch.no_grad():  # small start; row 0 (unknown) stays zero
            self.user_embedding.weight.mul_(0.1)
            self.item_embedding.weight.mul_(0.1)

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return (self.user_embedding(user_idx) * self.item_embedding(item_idx)).sum(-1)  # (B,)

    def score_all(self, user_idx: torch.Tensor) -> torch.Tensor:
        return self.user_embedding(user_idx) @ self.item_embedding.weight.T  # (B, I)


@pytest.fixture
def toy():
    """``toy`` registered for one test, through the public registration function."""
    register_model("toy", ToyDot)
    try:
        yield "toy"
    finally:
        del MODELS["toy"]


@pytest.fixture
def planted_files(tmp_path):
    """Positives-only train/val/test CSVs: 40 users in 4 taste groups of 10 items; each
    likes 7 items of their group, one held out for val and one for test."""
    rng = np.random.default_rng(0)
    parts = {"train": [], "val": [], "test": []}
    for user in range(1, 41):
        liked = (user % 4) * 10 + rng.choice(10, 7, replace=False) + 1
        parts["train"] += [(user, int(i)) for i in liked[:-2]]
        parts["val"].append((user, int(liked[-2])))
        parts["test"].append((user, int(liked[-1])))
    paths = {}
    for name, records in parts.items():
        paths[name] = tmp_path / f"{name}.csv"
        pd.DataFrame(records, columns=["userId", "itemId"]).to_csv(paths[name], index=False)
    return paths


def test_a_model_registered_outside_goes_through_every_path(toy, planted_files, tmp_path, capsys):
    """One class and one registration line: train, evaluate, recommend, serve and export
    take the model with no edit anywhere else, asking it only what it declares."""
    out = tmp_path / "model"
    config = TrainConfig(epochs=8, batch_size=64, learning_rate=0.05, device="cpu")
    result = hybridrec.train(
        planted_files["train"], planted_files["val"], out=out, model=toy,
        model_options={"embedding_dim": 8}, train_config=config,
    )  # fmt: skip
    assert len(result.history.epochs) >= 1
    rec = hybridrec.load(out)
    assert type(rec.model) is ToyDot and rec.model_name == toy
    assert toy in models_with(retrieval=True) and toy in hybridrec.recommend.TWO_STAGE_MODELS

    # evaluate: the CLI's full protocol on the saved model, against evaluate_full directly
    argv = [
        "evaluate", "--model", out, "--train", planted_files["train"],
        "--test", planted_files["test"], "--protocol", "full", "--k", "10", "--json",
    ]  # fmt: skip
    assert main([str(a) for a in argv]) == 0
    metrics = json.loads(capsys.readouterr().out)
    data = hybridrec.DataConfig()
    train, _ = RecSysDataset.from_frame(
        load_data(planted_files["train"], data), rec.users, rec.items
    )
    test, _ = RecSysDataset.from_frame(load_data(planted_files["test"], data), rec.users, rec.items)
    reference = evaluate_full(
        rec.model, train.user_idx, train.item_idx, test.user_idx, test.item_idx,
        num_items=rec.items.num_embeddings, ks=(10,),
    )  # fmt: skip
    assert metrics["hr@10"] == reference["hr@10"] and metrics["ndcg@10"] == reference["ndcg@10"]
    assert metrics["hr@10"] > 10 / 34  # it learned the groups: better than a random ranking

    # recommend: exhaustive, two-stage (retrieval), fold-in (user_parameters), similar items
    user = rec.users.ids[0]
    top = rec.recommend(user, k=5)
    assert top.source == "model" and len(top.item_ids) == 5
    two_stage = rec.recommend(user, k=5, num_candidates=len(rec.items))
    assert two_stage.item_ids.tolist() == top.item_ids.tolist()
    np.testing.assert_allclose(two_stage.scores, top.scores, rtol=0, atol=1e-6)
    new_user = rec.recommend_for_items(list(rec.items.ids[:3]), k=5)
    assert new_user.source == "items"
    similar = rec.similar_items(rec.items.ids[0], k=3)
    assert similar.source == "similar" and rec.items.ids[0] not in similar.item_ids

    # serve: the HTTP answers are the Recommender's
    with TestClient(create_app(rec)) as client:
        assert client.get("/health").json() == {"status": "ok", "model": toy}
        body = client.get(f"/recommend/{user}", params={"k": 5}).json()
        assert [x["item_id"] for x in body["items"]] == [int(i) for i in top.item_ids]
        assert body["source"] == "model"
        r = client.post("/recommend", json={"item_ids": [int(i) for i in rec.items.ids[:3]]})
        assert r.status_code == 200 and r.json()["source"] == "items"

    # export: the TorchScript scorer gives the model's logits
    path = export_model(rec.model, tmp_path / "toy.pt", "torchscript")
    users, items = torch.tensor([1, 2, 0, 5]), torch.tensor([3, 1, 2, 0])
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(path))(users, items), rec.model(users, items))


def test_help_and_messages_list_a_registered_model(toy, capsys):
    """Lists of the models that can do something are asked of the registry when needed."""
    helps = {}
    for command in ("train", "recommend"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        helps[command] = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        assert "hybrid, mf, gmf, neumf, toy" in helps[command], command
    assert "--model {gmf,hybrid,mf,mlp,neumf,popularity,sasrec,toy}" in helps["train"]
    rec = hybridrec.Recommender(tiny("mlp"), *(IdEncoder.fit(np.arange(1, n)) for n in (7, 5)))
    with pytest.raises(ConfigError, match="needs one of hybrid, mf, gmf, neumf, toy: leave"):
        rec.recommend(1, k=2, num_candidates=3)


def test_register_model_refusals(toy):
    with pytest.raises(ConfigError, match="a model called 'toy' is already registered"):
        register_model(toy, ToyDot)
    with pytest.raises(ConfigError, match="model 'lin' must be a subclass of RecModel"):
        register_model("lin", torch.nn.Linear)
    with pytest.raises(ConfigError, match="NoConfig.config_class must be a dataclass"):
        register_model("none", type("NoConfig", (RecModel,), {}))
    assert "lin" not in MODELS and "none" not in MODELS


# ---------------------------------------------------------------- the contract, trained and saved


@pytest.fixture(scope="module")
def trained_models(tmp_path_factory):
    """Every registered model trained for one epoch on positives-only data and saved."""
    root = tmp_path_factory.mktemp("models")
    train_frame, val_frame = planted(seed=3)
    results = {}
    for name in MODELS:
        results[name] = train(train_frame, val_frame, model=name, out=root / name)
    return results


@pytest.mark.parametrize(
    "name",
    list(MODELS),
)
def test_saved_model_reloads_with_identical_scores(trained_models, name):
    result = trained_models[name]
    loaded = hybridrec.load(result.out)
    assert loaded.model_name == name
    users = result.train_data.user_idx
    raw_users = result.recommender.users.inverse_transform(users.numpy())
    raw_items = result.recommender.items.inverse_transform(result.train_data.item_idx.numpy())
    before = result.recommender.score(raw_users, raw_items)
    after = loaded.score(raw_users, raw_items)
    assert np.array_equal(before, after)


@pytest.mark.parametrize("name", list(MODELS))
def test_reloaded_model_gives_identical_logits(trained_models, name):
    result = trained_models[name]
    loaded = hybridrec.load(result.out)
    assert type(loaded.model) is MODELS[name]
    users = torch.arange(1, result.recommender.users.num_embeddings)
    with torch.no_grad():
        assert torch.equal(result.recommender.model.score_all(users), loaded.model.score_all(users))
    state, reloaded = result.recommender.model.state_dict(), loaded.model.state_dict()
    assert state.keys() == reloaded.keys()
    assert all(torch.equal(state[k], reloaded[k]) for k in state)
    assert loaded.items == result.recommender.items and loaded.users == result.recommender.users


@pytest.mark.parametrize("name", list(MODELS))
def test_score_all_equals_forward_on_every_pair(trained_models, name):
    model = trained_models[name].recommender.model
    num_users, num_items = model.config.num_users, model.config.num_items
    users = torch.arange(num_users)
    with torch.no_grad():
        table = model.score_all(users)
        grid_u = users.repeat_interleave(num_items)
        grid_i = torch.arange(num_items).repeat(num_users)
        pairs = model(grid_u, grid_i).reshape(num_users, num_items)
    assert table.shape == (num_users, num_items)
    torch.testing.assert_close(table, pairs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_validation_ranking_matches_the_saved_model(trained_models, name):
    result = trained_models[name]
    loaded = hybridrec.load(result.out)
    recomputed = full_ranking(result, model=loaded.model)
    assert recomputed["hr@10"] == result.history.best.ranking["hr@10"]
    assert recomputed["ndcg@10"] == result.history.best.ranking["ndcg@10"]


@pytest.mark.parametrize(
    ("model", "options", "flag"),
    [
        ("sasrec", {"num_blocks": 100_000_000}, "--num-blocks"),
        ("hybrid", {"mlp_layer_sizes": (8,) * 65}, "--mlp-layers"),
        ("neumf", {"mlp_layer_sizes": (8,) * 65}, "--mlp-layers"),
    ],
)
def test_absurd_depths_are_refused_before_building(model, options, flag):
    from hybridrec.errors import ConfigError

    with pytest.raises(ConfigError, match=flag):
        build_model(model, num_users=3, num_items=3, **options)
