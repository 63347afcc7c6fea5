"""training/average.py: --ema-decay, the validated and returned weights are a moving average
of the trained ones, averaging never changes the training itself, and it is amortised for
large tables."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from hybridrec import TrainConfig
from hybridrec.models import build_model
from hybridrec.training import average as average_module
from hybridrec.training import fit
from hybridrec.training.average import WeightAverage as _WeightAverage
from hybridrec.training.validation import Validator as _Validator

MODELS = {
    "hybrid": {"embedding_dim": 8, "mlp_layer_sizes": (16, 8), "dropout": 0.2},
    "sasrec": {"hidden_dim": 8, "max_len": 8, "num_heads": 2, "dropout": 0.1},
}


def test_average_follows_the_capped_decay_by_hand():
    p = torch.nn.Parameter(torch.tensor([0.0, 10.0]))
    average = _WeightAverage([p], decay=0.5)
    expected = p.detach().clone()
    for step, value in enumerate([1.0, 2.0, 4.0], 1):
        with torch.no_grad():
            p.fill_(value)
        average.update()
        decay = min(0.5, (1 + step) / (10 + step))  # 0.1818, 0.25, 0.3077, then 0.5
        expected = decay * expected + (1 - decay) * value
    assert torch.allclose(average.average[0], expected)
    assert not torch.allclose(average.average[0], p.detach())


def test_swapped_in_holds_the_average_then_restores_the_weights():
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    average = _WeightAverage([p], decay=0.9)
    with torch.no_grad():
        p.fill_(5.0)
    average.update()
    inside = None
    with average.swapped_in():
        inside = p.detach().clone()
    assert torch.equal(inside, average.average[0])
    assert torch.equal(p.detach(), torch.tensor([5.0, 5.0]))


def test_state_dict_round_trips_and_a_missing_state_restarts():
    p = torch.nn.Parameter(torch.zeros(3))
    average = _WeightAverage([p], decay=0.9)
    with torch.no_grad():
        p.fill_(1.0)
    average.update()
    other = _WeightAverage([p], decay=0.9)
    other.load_state_dict(average.state_dict())
    assert other.steps == 1 and torch.equal(other.average[0], average.average[0])
    other.load_state_dict(None)
    assert other.steps == 0 and torch.equal(other.average[0], p.detach())


def _fit(name, ema_decay, early_stop, data):
    train_set, val_set, num_users, num_items = data
    config = TrainConfig(epochs=3, batch_size=64, ema_decay=ema_decay, early_stop=early_stop)
    torch.manual_seed(config.seed)
    model = build_model(name, num_users=num_users, num_items=num_items, **MODELS[name])
    history = fit(model, train_set, val_set, config, show_progress=False)
    return model, history


@pytest.mark.parametrize("name", ["hybrid", "sasrec"])
def test_averaging_changes_what_is_kept_not_how_it_trains(name, planted_encoded):
    data = planted_encoded
    plain, plain_history = _fit(name, 0.0, None, data)
    averaged, averaged_history = _fit(name, 0.99, None, data)
    # the same steps: validating the average in between must not leak into training
    assert [e.train_loss for e in averaged_history.epochs] == [
        e.train_loss for e in plain_history.epochs
    ]
    # but the returned weights are the average, not the last step's
    differ = [
        not torch.equal(a, b)
        for a, b in zip(plain.parameters(), averaged.parameters(), strict=True)
    ]
    assert any(differ)
    # and validation scored the averaged weights
    assert [_scores(e) for e in averaged_history.epochs] != [
        _scores(e) for e in plain_history.epochs
    ]


def _scores(stats):
    return (stats.val_loss, stats.val_auc, stats.ranking)


def test_a_negligible_decay_is_the_plain_run(planted_encoded):
    data = planted_encoded
    plain, _ = _fit("hybrid", 0.0, None, data)
    averaged, _ = _fit("hybrid", 1e-12, None, data)
    for a, b in zip(plain.parameters(), averaged.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_early_stopping_keeps_the_average_of_its_best_epoch(planted_encoded):
    data = planted_encoded
    model, history = _fit("hybrid", 0.9, "auto", data)
    # scoring the returned model again gives the best epoch's validation figures
    train_set, val_set, _, _ = data
    best = history.epochs[history.best_epoch - 1]
    again = replace(best, val_loss=None, val_accuracy=None, val_auc=None, ranking=None)
    _Validator(model, train_set, val_set, TrainConfig())(again)
    assert again.ranking == pytest.approx(best.ranking)
    assert (again.val_loss, again.val_auc) == pytest.approx((best.val_loss, best.val_auc))


def test_weight_average_is_amortised_for_large_models(monkeypatch):
    monkeypatch.setattr(average_module, "EMA_STEP_ELEMENTS", 10)
    param = nn.Parameter(torch.zeros(25))  # 25 weights: every 3rd step
    average = average_module.WeightAverage([param], decay=0.9)
    assert average.every == 3
    values = []
    for step in range(1, 7):
        with torch.no_grad():
            param.fill_(float(step))
        average.update()
        values.append(average.average[0][0].item())
    assert values[0] == values[1] == 0.0  # nothing until step 3
    d3 = min(0.9, 4 / 13) ** 3
    assert values[2] == pytest.approx((1 - d3) * 3.0)
    d6 = min(0.9, 7 / 16) ** 3
    assert values[5] == pytest.approx(d6 * values[2] + (1 - d6) * 6.0)


def test_the_steps_since_the_last_lerp_count_in_what_is_validated_and_returned():
    """With a lerp every 5th step, a run of 2 steps ended with its initial weights (an
    update of a few rows trained and then kept nothing)."""
    weight = torch.nn.Parameter(torch.zeros(3))
    average = _WeightAverage([weight], decay=0.9, every=5)
    with torch.no_grad():
        for value in (1.0, 2.0):
            weight.fill_(value)
            average.update()
    running = average.average[0].clone()
    assert torch.equal(running, torch.zeros(3))  # no lerp yet: the running average waits
    decay = min(0.9, 3 / 12) ** 2  # two pending steps, the cap at step 2
    expected = torch.full((3,), (1 - decay) * 2.0)
    torch.testing.assert_close(average.current()[0], expected)
    with average.swapped_in():
        torch.testing.assert_close(weight.detach(), expected)
    assert torch.equal(weight.detach(), torch.full((3,), 2.0))  # its own weights after
    average.copy_to_model()
    torch.testing.assert_close(weight.detach(), expected)
    assert torch.equal(average.average[0], running)  # the running average is untouched
