"""hybridrec.objectives: what an epoch's batches are (Pointwise with negative sampling, the
catalogue Softmax) and their loss, with recency weights and the catalogue term."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

import hybridrec
from hybridrec import TrainConfig
from hybridrec.data import Batch, RecSysDataset
from hybridrec.data.sequences import recency_weights
from hybridrec.models import MODELS, build_model
from hybridrec.objectives import Pointwise, Softmax, catalogue_loss, make_objective
from hybridrec.objectives import pointwise as pointwise_module
from tests.helpers import TINY, config, full_ranking, keys, planted, planted_labelled, train

CPU = torch.device("cpu")


# ---------------------------------------------------------------- positives-only training


@pytest.fixture
def epoch_rows(monkeypatch):
    """Records every training batch ``fit`` draws: a list (one entry per epoch) of
    ``(user_idx, item_idx, target)`` tensors concatenated over the epoch's batches."""
    epochs = []

    def recording(original):
        def batches(self, *args, **kwargs):
            parts = []
            epochs.append(parts)
            for batch in original(self, *args, **kwargs):
                parts.append(tuple(t.clone() for t in batch[:3]))
                yield batch

        return batches

    for cls in (Pointwise, Softmax):
        monkeypatch.setattr(cls, "batches", recording(cls.batches))

    def rows():
        return [tuple(torch.cat(col) for col in zip(*parts, strict=True)) for parts in epochs]

    return rows


@pytest.mark.parametrize(("loss", "negatives"), [("bce", 3), ("bpr", 2)])
def test_positives_only_epochs_sample_fresh_negatives(epoch_rows, loss, negatives):
    train_frame, _ = planted(seed=1)
    result = train(train_frame, loss=loss, negatives=negatives, epochs=2, batch_size=50)
    data = result.train_data
    positives = len(data)
    assert bool((data.target == 1).all())  # no target column: all positives
    known = keys(data.user_idx, data.item_idx)
    epochs = epoch_rows()
    assert len(epochs) == 2
    drawn = []
    for stats, (users, items, target) in zip(result.history.epochs, epochs, strict=True):
        if loss == "bce":
            assert len(users) == positives * (negatives + 1)
            pos, neg = target == 1, target == 0
            assert bool((pos | neg).all())
            assert int(pos.sum()) == positives
            # the positive rows are exactly the training rows, once each
            assert Counter(zip(users[pos].tolist(), items[pos].tolist(), strict=True)) == Counter(
                zip(data.user_idx.tolist(), data.item_idx.tolist(), strict=True)
            )
            neg_users, neg_items = users[neg], items[neg]
        else:  # (user, positive, negative) triples; the negative rides in `target`
            assert len(users) == positives * negatives
            # each training positive appears once per negative
            pairs = Counter(zip(data.user_idx.tolist(), data.item_idx.tolist(), strict=True))
            assert Counter(zip(users.tolist(), items.tolist(), strict=True)) == Counter(
                {pair: count * negatives for pair, count in pairs.items()}
            )
            neg_users, neg_items = users, target.long()
            assert torch.equal(neg_items.float(), target)  # item ids, exactly representable
        assert not (keys(neg_users, neg_items) & known)
        assert bool((neg_items >= 1).all())
        assert Counter(neg_users.tolist()) == Counter(
            {u: c * negatives for u, c in Counter(data.user_idx.tolist()).items()}
        )
        # what the epoch reports it trained on is what it trained on
        assert stats.samples_per_second * stats.seconds == pytest.approx(len(users), rel=1e-9)
        drawn.append(sorted(zip(neg_users.tolist(), neg_items.tolist(), strict=True)))
    assert drawn[0] != drawn[1]  # fresh negatives every epoch


def test_labelled_data_trains_on_its_rows_without_sampling(epoch_rows, monkeypatch):
    def no_sampler(*a, **k):
        raise AssertionError("labelled data must not be negative-sampled")

    monkeypatch.setattr(pointwise_module, "NegativeSampler", no_sampler)
    train_frame, _ = planted_labelled()
    result = train(train_frame, epochs=2, negatives=4)
    data = result.train_data
    assert bool((data.target == 0).any())
    expected = Counter(
        zip(data.user_idx.tolist(), data.item_idx.tolist(), data.target.tolist(), strict=True)
    )
    for stats, (users, items, target) in zip(result.history.epochs, epoch_rows(), strict=True):
        assert len(users) == len(train_frame)
        assert (
            Counter(zip(users.tolist(), items.tolist(), target.tolist(), strict=True)) == expected
        )
        assert stats.samples_per_second * stats.seconds == pytest.approx(len(users), rel=1e-9)


def test_bpr_on_labelled_data_pairs_only_the_positives(epoch_rows):
    train_frame, _ = planted_labelled()
    result = train(train_frame, loss="bpr", negatives=2)
    data = result.train_data
    positives = int((data.target == 1).sum())
    ((users, items, target),) = epoch_rows()
    assert len(users) == 2 * positives
    positive_pairs = keys(data.user_idx[data.target == 1], data.item_idx[data.target == 1])
    assert keys(users, items) == positive_pairs
    assert not (keys(users, target.long()) & positive_pairs)


def test_sampling_option_reaches_the_sampler(monkeypatch):
    built = []
    original = pointwise_module.NegativeSampler

    def recording(user_idx, item_idx, num_items, distribution="uniform"):
        built.append(distribution)
        return original(user_idx, item_idx, num_items, distribution)

    monkeypatch.setattr(pointwise_module, "NegativeSampler", recording)
    train_frame, _ = planted()
    train(train_frame, sampling="popularity")
    train(train_frame, sampling="uniform")
    assert built == ["popularity", "uniform"]


def test_catalogue_only_items_are_drawn_as_negatives(epoch_rows):
    train_frame, _ = planted(seed=2)
    catalogue = pd.DataFrame({"itemId": [0, *range(1, 41), 999]})  # 0 and 999: never trained
    result = train(train_frame, items=catalogue, negatives=8, epochs=1)
    ((users, items, target),) = epoch_rows()
    drawn = set(items[target == 0].tolist())
    low, high = result.recommender.items.transform([0, 999]).tolist()
    assert low in drawn  # index 1: inside the training range, drawn
    assert high in drawn  # index 42: after every training item


@pytest.mark.parametrize("loss", ["bce", "bpr", "ce"])
def test_positives_only_training_learns_the_planted_groups(loss):
    """Each user likes items of their own group only, so a model that learned the groups puts
    the held-out item among the user's 5 unseen in-group items: HR@10 = 1. Random ranking of
    the 34 candidates gives 10/34; popularity cannot see the groups."""
    train_frame, val_frame = planted(seed=0)
    result = train(train_frame, val_frame, loss=loss, epochs=20, negatives=4)
    hr = result.history.best.ranking["hr@10"]  # early stopping (auto) keeps the best epoch
    assert hr == full_ranking(result)["hr@10"]

    num_items = 40
    per_user = train_frame.groupby("userId").size()
    candidates = num_items - per_user  # the user's training items are excluded
    p_random = float((10 / candidates).mean())
    users = len(per_user)
    margin = 4 * math.sqrt(p_random * (1 - p_random) / users)  # 4 binomial std of a mean
    popularity = train(train_frame, val_frame, model="popularity").history.last.ranking["hr@10"]
    assert hr > p_random + margin
    assert hr > popularity + margin


@pytest.mark.parametrize("name", sorted(set(MODELS) - {"sasrec"}))
def test_softmax_loss_trains_every_pointwise_model(name):
    """--loss ce: each positive against every item through score_all; one row per positive."""
    train_frame, val_frame = planted(seed=1)
    result = train(train_frame, val_frame, model=name, loss="ce", epochs=2, early_stop="none")
    stats = result.history.epochs
    if name != "popularity":  # nothing to learn
        assert all(math.isfinite(e.train_loss) for e in stats)
        assert stats[1].train_loss < stats[0].train_loss
        assert stats[0].samples_per_second * stats[0].seconds == pytest.approx(len(train_frame))


def test_softmax_rank_shards_partition_the_positives():
    from hybridrec.objectives import Softmax

    train_frame, _ = planted(num_users=30, per_user=6)
    data = hybridrec.train(train_frame, train_config=config(epochs=1)).train_data
    objective = Softmax(data, TrainConfig(batch_size=16, loss="ce"), torch.device("cpu"))
    seen = []
    for rank in range(2):
        gen = torch.Generator().manual_seed(3)
        seen += [b for b in objective.batches(gen, rank=rank, world=2)]
    pairs = sorted(
        (u, i) for b in seen for u, i in zip(b.user_idx.tolist(), b.item_idx.tolist(), strict=True)
    )
    assert pairs == sorted(zip(data.user_idx.tolist(), data.item_idx.tolist(), strict=True))


# ---------------------------------------------------------------- large catalogues: sampled


def test_catalogue_term_is_sampled_above_the_threshold():
    data = RecSysDataset(
        torch.tensor([1, 1, 2, 3]), torch.tensor([1, 2, 3, 4]), torch.ones(4), None
    )
    small = Pointwise(data, TrainConfig(loss="bce"), CPU, 50, catalogue_weight=0.3)
    big = Pointwise(data, TrainConfig(loss="bce", softmax_negatives=8), CPU, 50, 0.3)
    assert small.softmax.exact and not big.softmax.exact


def test_sampled_epochs_are_generated_in_bounded_batches():
    n = 5000
    data = RecSysDataset(
        torch.randint(1, 100, (n,)), torch.randint(1, 300, (n,)), torch.ones(n), None
    )
    config = TrainConfig(batch_size=90, negatives=8, loss="bce")
    objective = Pointwise(data, config, CPU, num_items=300)
    batches = list(objective.batches(torch.Generator().manual_seed(0)))
    assert len(batches) == objective.num_batches
    assert max(len(b.user_idx) for b in batches) == 90  # 10 positives + their 80 negatives
    assert sum(len(b.user_idx) for b in batches) == objective.num_samples


# ---------------------------------------------------------------- where the weights reach the loss


def positives(with_time: bool = True) -> RecSysDataset:
    users = torch.tensor([1, 1, 1, 2, 2, 3])
    items = torch.tensor([1, 2, 3, 2, 4, 5])
    times = torch.tensor([1.0, 2.0, 3.0, 1.0, 2.0, 1.0]) if with_time else None
    return RecSysDataset(users, items, torch.ones(6), times)


def model(name: str = "hybrid"):
    options = {"mf": {"embedding_dim": 8}, "popularity": {}}.get(name, TINY)
    if name == "sasrec":
        options = {"hidden_dim": 8, "max_len": 4}
    return build_model(name, num_users=4, num_items=6, **options)


@pytest.mark.parametrize("loss", ["bce", "bpr"])
def test_each_sampled_row_carries_its_positives_weight(loss):
    data = positives()
    config = TrainConfig(loss=loss, negatives=3, batch_size=100, recency_half_life=1.0)
    objective = Pointwise(data, config, CPU, num_items=6)
    expected = dict(
        zip(
            zip(data.user_idx.tolist(), data.item_idx.tolist(), strict=True),
            recency_weights(data.user_idx, data.timestamp, 1.0, config.recency_floor).tolist(),
            strict=True,
        )
    )
    (batch,) = list(objective.batches(torch.Generator().manual_seed(0)))
    assert batch.weight is not None and len(batch.weight) == len(batch.user_idx)
    if loss == "bce":
        pos = batch.target == 1
        for u, i, w in zip(
            batch.user_idx[pos], batch.item_idx[pos], batch.weight[pos], strict=True
        ):
            assert w.item() == pytest.approx(expected[(u.item(), i.item())])
        # each positive's 3 negatives weigh what it weighs: per user, the weights of the
        # negatives are the user's positive weights, 3 times each
        for user in data.user_idx.unique().tolist():
            mine = (batch.user_idx == user) & ~pos
            got = sorted(batch.weight[mine].tolist())
            want = sorted(w for (u, _), w in expected.items() if u == user for _ in range(3))
            assert got == pytest.approx(want)
    else:  # every row is (user, positive, negative): the positive's weight
        for u, i, w in zip(batch.user_idx, batch.item_idx, batch.weight, strict=True):
            assert w.item() == pytest.approx(expected[(u.item(), i.item())])


def test_distributed_shards_carry_the_same_weights():
    data = positives()
    config = TrainConfig(loss="bce", negatives=2, batch_size=6, recency_half_life=1.0)
    objective = Pointwise(data, config, CPU, num_items=6)
    weight_of = dict(
        zip(
            zip(data.user_idx.tolist(), data.item_idx.tolist(), strict=True),
            objective.weights.tolist(),
            strict=True,
        )
    )
    for rank in range(2):
        gen = torch.Generator().manual_seed(1)
        for batch in objective.batches(gen, rank=rank, world=2):
            for u, i, t, w in zip(*batch[:4], strict=True):
                if t == 1:
                    assert w.item() == pytest.approx(weight_of[(u.item(), i.item())])


@pytest.mark.parametrize(
    "config",
    [
        TrainConfig(loss="bce", recency_half_life=0),  # off
        TrainConfig(loss="bpr", recency_half_life=0),
    ],
)
def test_weights_off_gives_unweighted_batches(config):
    objective = Pointwise(positives(), config, CPU, num_items=6)
    assert all(b.weight is None for b in objective.batches(torch.Generator().manual_seed(0)))


def test_no_timestamps_no_weights_and_softmax_weighted():
    objective = Pointwise(positives(with_time=False), TrainConfig(loss="bce"), CPU, num_items=6)
    assert objective.weights is None
    softmax = Softmax(positives(), TrainConfig(loss="ce", recency_half_life=1.0), CPU)
    (batch,) = list(softmax.batches(torch.Generator().manual_seed(0)))
    assert batch.weight is not None and batch.weight.mean().item() == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["hybrid", "mf", "gmf", "mlp", "neumf"])
def test_a_sampled_batch_scored_by_groups_gives_the_flat_loss(name):
    """Pointwise hands a sampled batch to ``score_groups`` (one user row per positive) when
    the model has it; the loss must be what scoring every row gives."""
    torch.manual_seed(0)
    net = model(name)
    config = TrainConfig(negatives=2, batch_size=9, recency_half_life=1.0)
    objective = make_objective(net, positives(), config, CPU)
    batch = next(iter(objective.batches(torch.Generator().manual_seed(0))))
    assert batch.groups == 3 and len(batch.user_idx) == 9
    grouped, hits, n = objective.step(net, batch)
    flat, flat_hits, _ = objective.step(net, batch._replace(groups=0))
    assert n == 9 and int(hits) == int(flat_hits)
    assert grouped.item() == pytest.approx(flat.item(), rel=1e-5)


@pytest.mark.parametrize("known", ["include", "exclude"])
def test_weighted_step_is_the_weighted_mean_plus_the_catalogue_term(known):
    """The catalogue term is a softmax over every item; with ``--known-negatives exclude``
    (the default) a user's other training items are left out of their row's softmax."""
    torch.manual_seed(0)
    net = model("hybrid")
    data = positives()  # user 1: items 1, 2, 3; user 2: items 2, 4
    config = TrainConfig(catalogue_weight=0.5, known_negatives=known)
    objective = make_objective(net, data, config, CPU)
    assert objective.catalogue_weight == 0.5
    batch = Batch(
        torch.tensor([1, 1, 2, 3]),
        torch.tensor([1, 4, 2, 1]),
        torch.tensor([1.0, 0.0, 1.0, 0.0]),
        torch.tensor([2.0, 0.5, 1.0, 0.5]),
    )
    loss, _, n = objective.step(net, batch)
    logits = net(batch.user_idx, batch.item_idx)
    bce = F.binary_cross_entropy_with_logits(logits, batch.target, reduction="none")
    dots = net.user_embedding.weight @ net.item_embedding.weight.T
    dots[:, 0] = -torch.inf
    plain = F.cross_entropy(dots[[1, 2]], torch.tensor([1, 2]), reduction="none")
    if known == "exclude":
        dots[1, [2, 3]] = -torch.inf  # user 1's other items, for its positive item 1
        dots[2, 4] = -torch.inf  # user 2's, for its positive item 2
    ce = F.cross_entropy(dots[[1, 2]], torch.tensor([1, 2]), reduction="none")
    expected = (bce * batch.weight).mean() + 0.5 * (ce * torch.tensor([2.0, 1.0])).mean()
    assert n == 4
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert catalogue_loss(net, torch.tensor([1, 2]), torch.tensor([1, 2]), None).item() == (
        pytest.approx(plain.mean().item(), rel=1e-5)
    )


@pytest.mark.parametrize("known", ["include", "exclude"])
def test_pointwise_softmax_leaves_a_users_other_items_out(known):
    """``--loss ce`` of a pointwise model: with ``--known-negatives exclude`` a row's softmax
    is over every item but its user's other training items; ``include`` keeps them."""
    torch.manual_seed(0)
    net = model("mf")
    config = TrainConfig(loss="ce", recency_half_life=0.0, known_negatives=known)
    softmax = Softmax(positives(), config, CPU)
    batch = Batch(torch.tensor([1, 2, 1]), torch.tensor([2, 4, 3]), torch.ones(3), None)
    loss, _, n = softmax.step(net, batch)
    scores = net.score_all(batch.user_idx).detach()
    scores[:, 0] = -torch.inf
    if known == "exclude":  # user 1: items 1, 2, 3; user 2: items 2, 4
        scores[0, [1, 3]] = -torch.inf
        scores[1, 2] = -torch.inf
        scores[2, [1, 2]] = -torch.inf
    expected = F.cross_entropy(scores, batch.item_idx)
    assert n == 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()  # a left-out item takes no gradient through its row's softmax
    assert torch.isfinite(net.item_embedding.weight.grad).all()


def test_a_sampled_catalogue_term_does_not_look_up_users_histories(monkeypatch):
    """Above --softmax-negatives the catalogue term keeps its cost flat: the users' known
    items (as many as their histories) are not searched among the drawn candidates."""
    from hybridrec.data.sampling import NegativeSampler

    def refuse(self, users):
        raise AssertionError("items_of called on the sampled path")

    monkeypatch.setattr(NegativeSampler, "items_of", refuse)
    torch.manual_seed(0)
    net = model("hybrid")
    config = TrainConfig(catalogue_weight=0.5, softmax_negatives=2, negatives=1, batch_size=4)
    objective = make_objective(net, positives(), config, CPU)
    assert not objective.softmax.exact
    loss, _, _ = objective.step(net, next(iter(objective.batches(torch.Generator()))))
    assert torch.isfinite(loss)


def test_items_of_lists_each_users_positives():
    from hybridrec.data.sampling import NegativeSampler

    data = positives()
    sampler = NegativeSampler(data.user_idx, data.item_idx, num_items=6)
    owner, items = sampler.items_of(torch.tensor([2, 3, 1, 0]))
    pairs = sorted(zip(owner.tolist(), items.tolist(), strict=True))
    assert pairs == [(0, 2), (0, 4), (1, 5), (2, 1), (2, 2), (2, 3)]  # user 0 has none


@pytest.mark.parametrize("name", sorted(set(MODELS) - {"sasrec"}))
def test_catalogue_term_only_for_models_with_a_dot_product(name):
    objective = make_objective(model(name), positives(), TrainConfig(), CPU)
    has_dot = name in ("hybrid", "mf", "gmf", "neumf")
    assert (objective.catalogue_weight > 0) == has_dot


def test_labelled_rows_are_not_weighted_or_given_the_catalogue_term():
    data = RecSysDataset(
        torch.tensor([1, 1, 2]),
        torch.tensor([1, 2, 3]),
        torch.tensor([1.0, 0.0, 1.0]),
        torch.tensor([1.0, 2.0, 3.0]),
    )
    net = model("hybrid")
    objective = make_objective(net, data, TrainConfig(), CPU)
    (batch,) = list(objective.batches(torch.Generator().manual_seed(0)))
    assert batch.weight is None
    loss, _, _ = objective.step(net, batch)
    plain = F.binary_cross_entropy_with_logits(net(batch.user_idx, batch.item_idx), batch.target)
    assert loss.item() == pytest.approx(plain.item(), rel=1e-6)


# ---------------------------------------------------------------- recency weighting: that it helps


def drifting_tastes(seed: int, num_users: int = 60, per_group: int = 20, groups: int = 3):
    """Every user first likes 8 items of one group, then (later timestamps) 8 of another,
    and the held-out next item is from the later group. An order-blind model without
    recency weighting splits its top 10 between both groups; with it, it favours the later."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for user in range(1, num_users + 1):
        old, new = rng.choice(groups, 2, replace=False)
        old_items = old * per_group + rng.choice(per_group, 8, replace=False) + 1
        new_items = new * per_group + rng.choice(per_group, 9, replace=False) + 1
        train += [(user, int(i), t) for t, i in enumerate(old_items)]
        train += [(user, int(i), 10 + t) for t, i in enumerate(new_items[:-1])]
        val.append((user, int(new_items[-1])))
    return (
        pd.DataFrame(train, columns=["userId", "itemId", "timestamp"]),
        pd.DataFrame(val, columns=["userId", "itemId"]),
    )


def val_hr(train_frame, val_frame, **overrides) -> float:
    config = TrainConfig(epochs=15, batch_size=256, learning_rate=0.02, device="cpu", **overrides)
    result = hybridrec.train(
        train_frame, val_frame, model="hybrid", model_options=TINY, train_config=config
    )
    return result.history.best.ranking["hr@10"]


def test_recency_weighting_follows_drifting_tastes():
    train_frame, val_frame = drifting_tastes(seed=0)
    plain = val_hr(train_frame, val_frame, recency_half_life=0, catalogue_weight=0)
    recent = val_hr(train_frame, val_frame, recency_half_life=3, catalogue_weight=0)
    # 60 users: a difference of 0.15 is more than 2 standard errors of either
    assert recent >= plain + 0.15


def test_a_user_with_every_item_is_a_clear_error_before_training():
    from hybridrec.errors import ConfigError

    data = RecSysDataset(torch.tensor([1, 1, 2]), torch.tensor([1, 2, 1]), torch.ones(3))
    with pytest.raises(ConfigError, match="interacted with every one of the 2 items"):
        Pointwise(data, TrainConfig(loss="bce"), torch.device("cpu"), num_items=3)
    Pointwise(data, TrainConfig(loss="bce"), torch.device("cpu"), num_items=4)  # one left
