"""data/holdout.py: the validation rows train holds out when no --val is given."""

from __future__ import annotations

import torch

from hybridrec.data.dataset import RecSysDataset
from hybridrec.data.holdout import holdout
from tests.helpers import holdout_frame


def test_holdout_is_each_users_latest_and_spares_single_interaction_users():
    frame = holdout_frame()
    users = torch.tensor(frame["userId"].to_numpy())
    data = RecSysDataset(
        users,
        torch.tensor(frame["itemId"].to_numpy()),
        torch.ones(len(frame)),
        torch.tensor(frame["timestamp"].to_numpy(), dtype=torch.float64),
    )
    split = holdout(data)
    assert split.rule == "latest per user" and len(split.val_rows) == 30
    latest = frame.iloc[:-1].groupby("userId")["timestamp"].idxmax().sort_values().to_numpy()
    assert split.val_rows.tolist() == latest.tolist()
    assert len(frame) - 1 not in split.val_rows  # user 99 keeps their only row
    assert sorted([*split.val_rows, *split.train_rows]) == list(range(len(frame)))


def test_labelled_holdout_is_a_random_share_of_rows():
    n = 200
    data = RecSysDataset(
        torch.randint(1, 9, (n,)), torch.randint(1, 9, (n,)), (torch.arange(n) % 2).float()
    )
    split = holdout(data, seed=3)
    assert len(split.val_rows) == 20 and not set(split.val_rows) & set(split.train_rows)
