"""The closed-form new-user fold-in (recommend/fold_in.py): the solve is the one its
docstring writes down, it ranks a planted taste first, it never touches the model, and
the gradient fit is still there."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridrec.data.encoding import IdEncoder
from hybridrec.errors import ConfigError
from hybridrec.models import HybridRecSys, HybridRecSysConfig, MatrixFactorization, MFConfig
from hybridrec.recommend import Recommender
from hybridrec.recommend.fold_in import L2, closed_form_rows, linearise, scores_and_jacobian

NAMES = MatrixFactorization.user_parameters


def _clustered_mf() -> Recommender:
    """20 items in two tastes (items 1-10 along the first axis, 11-20 along the second),
    20 known users, half of each taste, and no biases: a new user who gives items of one
    taste must get the rest of that taste first."""
    torch.manual_seed(0)
    model = MatrixFactorization(MFConfig(num_users=21, num_items=21, embedding_dim=4))
    with torch.no_grad():
        items = model.item_embedding.weight
        items.zero_()
        items[1:11, 0] = 1.0 + 0.05 * torch.arange(10)  # later items a little stronger
        items[11:21, 1] = 1.0 + 0.05 * torch.arange(10)
        items[1:, 2:] = 0.1 * torch.randn(20, 2)
        users = model.user_embedding.weight
        users.zero_()
        users[1:11, 0], users[11:21, 1] = 2.0, 2.0
    ids = np.arange(1, 21)
    return Recommender(model, IdEncoder.fit(ids), IdEncoder.fit(ids), model_name="mf")


def test_the_solve_is_one_newton_step_on_the_softmax_likelihood():
    rec = _clustered_mf()
    model, given = rec.model, np.array([2, 5, 13])
    with torch.no_grad():  # the model is exactly linear in [user row, user bias]
        design = torch.cat([model.item_embedding.weight, torch.ones(21, 1)], 1).double()
        start = torch.cat([model.user_embedding.weight[1:].mean(0), torch.zeros(1)]).double()
        scores = design @ start + model.item_bias.weight[:, 0].double()
    prob = torch.softmax(scores[1:], 0)
    mean = design[1:].T @ prob
    curvature = (design[1:] * prob[:, None]).T @ design[1:] - torch.outer(mean, mean)
    n = len(given)
    step = torch.linalg.solve(
        n * curvature + L2 * torch.eye(5, dtype=torch.float64),
        design[given].sum(0) - n * mean,
    )
    expected = (start + step).float()
    rows = closed_form_rows(model, linearise(model, NAMES, 21), given)
    assert torch.allclose(torch.cat([rows[0][0], rows[1][0]]), expected, atol=1e-5)


@pytest.mark.parametrize("max_items", [1000, 7])  # every item, or a sample of 7
def test_a_new_user_gets_the_rest_of_their_taste_first(max_items):
    rec = _clustered_mf()
    lin = linearise(rec.model, NAMES, 21, max_items=max_items)
    assert lin.every_item == (max_items >= 21)
    for given, taste in (([1, 2, 3], range(1, 11)), ([12, 15], range(11, 21))):
        rows = closed_form_rows(rec.model, lin, rec.items.transform(given))
        logits = rec.row_scorer().score(rows)[0]
        logits[0] = -torch.inf
        logits[rec.items.transform(given)] = -torch.inf
        top = rec.items.inverse_transform(torch.topk(logits, 5).indices.numpy())
        assert set(top) <= set(taste), (given, top)


def test_a_sample_linearises_the_given_items_on_the_spot():
    rec = _clustered_mf()
    full = linearise(rec.model, NAMES, 21)
    pos = torch.tensor([3, 9, 14])
    scores, jacobian = scores_and_jacobian(rec.model, NAMES, full.widths, full.start, pos)
    assert torch.allclose(scores, full.scores[pos]) and torch.allclose(jacobian, full.jacobian[pos])


def test_recommend_for_items_uses_the_closed_form_and_keeps_the_gradient_fit():
    rec = _clustered_mf()
    before = {name: t.clone() for name, t in rec.model.state_dict().items()}
    auto = rec.recommend_for_items([1, 2, 3], k=5)
    closed = rec.recommend_for_items([1, 2, 3], k=5, fit="closed-form")
    gradient = rec.recommend_for_items([1, 2, 3], k=5, fit="gradient")
    assert auto == closed and auto.source == gradient.source == "items"
    assert not np.array_equal(auto.scores, gradient.scores)  # a different fit
    assert set(gradient.item_ids.tolist()) <= set(range(4, 11))
    for name, tensor in rec.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    with pytest.raises(ConfigError, match="fit must be one of"):
        rec.recommend_for_items([1], fit="newton")


def test_row_scorer_scores_rows_as_the_model_scores_its_users():
    torch.manual_seed(1)
    model = HybridRecSys(HybridRecSysConfig(num_users=40, num_items=9, embedding_dim=4,
                                            mlp_layer_sizes=(8,)))  # fmt: skip
    ids = np.arange(1, 40)
    rec = Recommender(model.eval(), IdEncoder.fit(ids), IdEncoder.fit(np.arange(1, 9)))
    users = torch.arange(1, 40)  # more than the scorer's first capacity: it grows
    rows = [model.user_embedding.weight[users].detach()]
    with torch.no_grad():
        expected = model.score_all(users)
    assert torch.allclose(rec.row_scorer().score(rows), expected, atol=1e-6)
    assert torch.allclose(rec.row_scorer().score([rows[0][:2]]), expected[:2], atol=1e-6)


def test_row_scorer_scores_given_items_as_score_all_does():
    torch.manual_seed(2)
    model = HybridRecSys(HybridRecSysConfig(num_users=5, num_items=30, embedding_dim=4,
                                            mlp_layer_sizes=(8,)))  # fmt: skip
    rec = Recommender(model.eval(), IdEncoder.fit(np.arange(1, 5)), IdEncoder.fit(np.arange(1, 30)))
    rows = [torch.randn(20, 4) * 0.3]  # more users than the first capacity
    items = torch.randint(1, 30, (20, 7))
    every = rec.row_scorer().score(rows)
    assert torch.allclose(rec.row_scorer().score_items(rows, items), every.gather(1, items),
                          atol=1e-6)  # fmt: skip
    mf = _clustered_mf()  # no score_groups: the pairwise forward
    mf_rows = [torch.randn(3, 4), torch.randn(3, 1)]
    some = torch.randint(1, 21, (3, 5))
    assert torch.allclose(mf.row_scorer().score_items(mf_rows, some),
                          mf.row_scorer().score(mf_rows).gather(1, some), atol=1e-6)  # fmt: skip


def test_a_large_catalogue_re_ranks_the_linearised_best(monkeypatch):
    """Past twice the candidate depth, only the best items by the linearised scores are
    scored by the model: their logits are the model's own, every other is -inf, a given
    item is never a candidate, and one fold-in and a batch of them agree."""
    from hybridrec.recommend import fold_in

    monkeypatch.setattr(fold_in, "MIN_CANDIDATES", 8)
    torch.manual_seed(3)
    model = HybridRecSys(HybridRecSysConfig(num_users=6, num_items=60, embedding_dim=4,
                                            mlp_layer_sizes=(8,)))  # fmt: skip
    ids = np.arange(1, 60)
    rec = Recommender(model.eval(), IdEncoder.fit(np.arange(1, 6)), IdEncoder.fit(ids))
    assert fold_in.candidate_depth(2, 60) == 8 and fold_in.candidate_depth(2, 16) is None
    assert fold_in.candidate_depth(5, 60) == 20  # 4 k when that is more
    lin, given = rec.linearisation(), np.array([3, 17, 40])
    rows = closed_form_rows(model, lin, given)
    logits = fold_in.fitted_logits(lin, rec.row_scorer(), rows, 2, [given])[0]
    chosen = torch.isfinite(logits)
    assert int(chosen.sum()) == 8 and not chosen[given].any() and not chosen[0]
    every = rec.row_scorer().score(rows)[0]
    assert torch.allclose(logits[chosen], every[chosen], atol=1e-6)
    approx = fold_in.linear_scores(lin, rows)[0]
    approx[0], approx[given] = -torch.inf, -torch.inf
    assert set(torch.nonzero(chosen)[:, 0].tolist()) == set(torch.topk(approx, 8).indices.tolist())
    one = rec.recommend_for_items(ids[given - 1], k=2)
    many = rec.recommend_for_items_many([(ids[given - 1], 2, True), ([5, 6], 3, False)])
    assert one.item_ids.tolist() == many[0].item_ids.tolist()
    assert np.allclose(one.scores, many[0].scores, atol=1e-5)


def test_candidates_never_bring_back_a_given_item(monkeypatch):
    """A user who gave most of the catalogue leaves fewer eligible items than the candidate
    depth: the answer still holds only items they did not give, and all of those."""
    from hybridrec.recommend import fold_in

    monkeypatch.setattr(fold_in, "MIN_CANDIDATES", 8)
    torch.manual_seed(4)
    model = HybridRecSys(HybridRecSysConfig(num_users=4, num_items=40, embedding_dim=4,
                                            mlp_layer_sizes=(8,)))  # fmt: skip
    ids = np.arange(1, 40)
    rec = Recommender(model.eval(), IdEncoder.fit(np.arange(1, 4)), IdEncoder.fit(ids))
    given = ids[:34]  # 5 items left, fewer than the 8 candidates
    out = rec.recommend_for_items(given, k=10)
    assert sorted(out.item_ids.tolist()) == ids[34:].tolist()
    (many,) = rec.recommend_for_items_many([(given, 10, True)])
    assert many.item_ids.tolist() == out.item_ids.tolist()


@pytest.mark.parametrize("name", ["mf", "hybrid", "sasrec", "popularity"])
def test_scores_of_new_users_are_what_their_fold_in_ranks_by(name):
    """score_for_items_many (the service's /score for users known only from events)
    gives each pair the probability recommend_for_items ranks that item with; a user with
    no known item, or a model that folds nobody in, is scored as an unknown user."""
    from hybridrec.models import build_model
    from hybridrec.recommend.cold_start import score_for_items_many

    torch.manual_seed(3)
    model = build_model(name, num_users=6, num_items=30)
    ids = np.arange(1, 30)
    users = IdEncoder.fit(np.arange(1, 6))
    if hasattr(model, "prepare"):  # sasrec reads histories; any will do here
        model.prepare(torch.tensor([1, 1, 2]), torch.tensor([3, 4, 5]), torch.ones(3))
    rec = Recommender(model.eval(), users, IdEncoder.fit(ids), model_name=name)
    histories = [[4, 9, 2], [], [17, 99], [11]]  # 99 unknown; the second user knows nothing
    owner = np.array([0, 0, 1, 2, 3, 3, 0, 2])
    wanted = np.array([5, 6, 7, 8, 12, 13, 14, 2])
    got = score_for_items_many(rec, histories, owner, rec.items.transform(wanted))
    for n, (user, item) in enumerate(zip(owner, wanted, strict=True)):
        history = histories[user]
        if name == "popularity" or not [i for i in history if i in ids]:
            expected = rec.score([12345], [item])[0]  # an unknown user
        else:
            full = rec.recommend_for_items(history, k=len(ids), exclude_seen=False)
            expected = dict(zip(full.item_ids.tolist(), full.scores.tolist(), strict=True))[item]
        assert got[n] == pytest.approx(expected, rel=1e-4), (n, user, item)
