"""retrieval.py: two-stage retrieval agrees with exhaustive scoring where it must."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hybridrec.models import build_model
from hybridrec.retrieval import (
    exhaustive_topk,
    item_prior,
    recall_at_k,
    supports_retrieval,
    two_stage_topk,
)


def model(name: str = "hybrid") -> nn.Module:
    torch.manual_seed(0)
    options = {"embedding_dim": 8, "init_std": 0.5}
    if name == "hybrid":
        options["mlp_layer_sizes"] = (16, 8)
    return build_model(name, num_users=20, num_items=200, **options).eval()


@pytest.mark.parametrize("name", ["hybrid", "mf"])
def test_keeping_every_candidate_is_exhaustive(name):
    net = model(name)
    users = torch.arange(1, 20)
    found, scores = two_stage_topk(net, users, k=10, num_candidates=10_000)  # all 199 items
    items, exact = exhaustive_topk(net, users, k=10)
    assert torch.equal(found, items)
    torch.testing.assert_close(scores, exact)


def test_fewer_candidates_can_only_lose_recall_and_never_returns_unknown():
    net = model()
    users = torch.arange(1, 20)
    reference, _ = exhaustive_topk(net, users, k=10)
    recalls = [recall_at_k(two_stage_topk(net, users, 10, n)[0], reference) for n in (10, 50, 199)]
    assert recalls[-1] == 1.0
    assert all(0.0 <= r <= 1.0 for r in recalls)
    assert recalls == sorted(recalls)  # stage 1 keeps a superset as n grows
    found, _ = two_stage_topk(net, users, 10, 10)
    assert not (found == 0).any()


def test_recall_at_k_known_example():
    found = torch.tensor([[1, 2, 3], [4, 5, 6]])
    reference = torch.tensor([[3, 2, 9], [7, 8, 9]])
    assert recall_at_k(found, reference) == pytest.approx(2 / 6)


def test_models_without_embeddings_are_refused():
    net = build_model("popularity", num_users=3, num_items=5)
    with pytest.raises(ValueError, match="no user/item embeddings"):
        two_stage_topk(net, torch.tensor([1]), k=2)


def test_item_prior_recovers_what_the_dot_product_misses():
    """For mf the non-dot part of a score is the item bias plus user and global biases, so
    the prior must rank items exactly like their item biases."""
    net = model("mf")
    with torch.no_grad():
        net.item_bias.weight.copy_(torch.randn(200, 1, generator=torch.Generator().manual_seed(3)))
    prior = item_prior(net)
    assert torch.equal(torch.argsort(prior[1:]), torch.argsort(net.item_bias.weight[1:, 0]))


def test_prior_with_all_candidates_is_still_exhaustive():
    net = model()
    users = torch.arange(1, 20)
    found, _ = two_stage_topk(net, users, 10, 10_000, prior=item_prior(net))
    assert torch.equal(found, exhaustive_topk(net, users, 10)[0])


@pytest.mark.parametrize(
    ("name", "expected"),
    [("hybrid", True), ("mf", True), ("gmf", True), ("neumf", True), ("mlp", False),
     ("popularity", False), ("sasrec", False)],
)  # fmt: skip
def test_supports_retrieval_matches_retrieval_factors(name, expected):
    net = build_model(name, num_users=3, num_items=5)
    assert supports_retrieval(net) is expected
    if not expected:
        with pytest.raises(ValueError, match="no user/item embeddings"):
            two_stage_topk(net, torch.tensor([1]), k=2)
