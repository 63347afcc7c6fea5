"""data/dataset.py: RecSysDataset, its DataLoader interface, unknown-id counting and batch
iteration."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from hybridrec.data import (
    Batch,
    IdEncoder,
    RecSysDataset,
    UnknownCounts,
    collate_batch,
    iterate_batches,
)
from hybridrec.data.io import interactions_from_frame


def make_dataset(n=10):
    users = torch.arange(n)
    items = torch.arange(100, 100 + n)
    target = (torch.arange(n) % 2).float()
    return RecSysDataset(users, items, target)


def test_len_and_getitem():
    ds = RecSysDataset(torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6]), torch.tensor([1, 0, 1]))
    assert len(ds) == 3
    u, i, t = ds[1]
    assert (u.item(), i.item(), t.item()) == (2, 5, 0.0)
    # columns are normalised to int64 indices and float32 targets
    assert ds.user_idx.dtype == torch.int64
    assert ds.item_idx.dtype == torch.int64
    assert ds.target.dtype == torch.float32


def test_getitems_gathers_a_batch():
    ds = make_dataset()
    samples = ds.__getitems__([7, 2, 2])
    assert len(samples) == 3 and [int(x) for x in samples[1]] == [2, 102, 0]
    batch = collate_batch(samples)  # the gathered columns, no per-sample work
    assert isinstance(batch, Batch)
    assert batch.user_idx.tolist() == [7, 2, 2]
    assert batch.item_idx.tolist() == [107, 102, 102]
    assert batch.target.tolist() == [1.0, 0.0, 0.0]


def test_mismatched_column_lengths_rejected():
    with pytest.raises(ValueError, match="column lengths differ"):
        RecSysDataset(torch.tensor([1, 2]), torch.tensor([1]), torch.tensor([1.0, 0.0]))


def test_dataloader_with_collate_batch():
    ds = make_dataset(10)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_batch)
    batches = list(loader)
    assert [len(b.target) for b in batches] == [4, 4, 2]
    for b in batches:
        assert isinstance(b, Batch)
        assert b.user_idx.dtype == torch.int64 and b.item_idx.dtype == torch.int64
        assert b.target.dtype == torch.float32
    assert torch.cat([b.user_idx for b in batches]).tolist() == list(range(10))
    assert torch.cat([b.item_idx for b in batches]).tolist() == list(range(100, 110))


def test_from_frame_counts_unknown_ids():
    train = interactions_from_frame(
        pd.DataFrame({"userId": ["a", "b", "c"], "itemId": [1, 2, 3], "target": [1, 0, 1]})
    )
    users, items = IdEncoder.fit(train["user_id"]), IdEncoder.fit(train["item_id"])
    val = interactions_from_frame(
        pd.DataFrame(
            {
                "userId": ["a", "x", "x", "y", "b", "c"],
                "itemId": [1, 2, 9, 9, 8, 3],
                "target": [1, 0, 1, 0, 1, 0],
            }
        )
    )
    ds, counts = RecSysDataset.from_frame(val, users, items)
    assert counts == UnknownCounts(rows=6, rows_with_unknown=4, unknown_users=2, unknown_items=2)
    assert ds.user_idx.tolist() == [1, 0, 0, 0, 2, 3]
    assert ds.item_idx.tolist() == [1, 2, 0, 0, 0, 3]
    assert ds.target.tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert counts.describe("val.csv") == (
        "val.csv: 4 of 6 rows with 2 unknown users and 2 unknown items (scored as unknown)"
    )


def test_describe_all_known():
    counts = UnknownCounts(rows=12, rows_with_unknown=0, unknown_users=0, unknown_items=0)
    assert counts.describe("val.csv") == "val.csv: 12 rows, all ids known"


def test_iterate_batches_in_order_covers_all_rows():
    ds = make_dataset(10)
    batches = list(iterate_batches(ds, 3))
    assert [len(b.target) for b in batches] == [3, 3, 3, 1]
    assert torch.cat([b.user_idx for b in batches]).tolist() == list(range(10))
    assert torch.cat([b.item_idx for b in batches]).tolist() == list(range(100, 110))


def test_iterate_batches_shuffle_is_a_reproducible_permutation():
    ds = make_dataset(50)

    def order(seed):
        gen = torch.Generator().manual_seed(seed)
        batches = list(iterate_batches(ds, 8, shuffle=True, generator=gen))
        users = torch.cat([b.user_idx for b in batches])
        items = torch.cat([b.item_idx for b in batches])
        targets = torch.cat([b.target for b in batches])
        # rows stay intact: the item and target of each row travel with its user
        assert (items == users + 100).all()
        assert (targets == (users % 2).float()).all()
        return users.tolist()

    first = order(123)
    assert sorted(first) == list(range(50))
    assert first != list(range(50))
    assert order(123) == first
    assert order(124) != first


def test_iterate_batches_new_permutation_per_call():
    """One generator across epochs: each call (epoch) draws a fresh order."""
    ds = make_dataset(50)
    gen = torch.Generator().manual_seed(0)
    epoch1 = torch.cat([b.user_idx for b in iterate_batches(ds, 50, shuffle=True, generator=gen)])
    epoch2 = torch.cat([b.user_idx for b in iterate_batches(ds, 50, shuffle=True, generator=gen)])
    assert epoch1.tolist() != epoch2.tolist()


def test_iterate_batches_empty():
    ds = RecSysDataset(torch.zeros(0), torch.zeros(0), torch.zeros(0))
    assert list(iterate_batches(ds, 4)) == []


def test_the_seeds_plain_dataloader_yields_users_items_targets():
    """The seed's DataLoader(dataset, batch_size=...) with torch's default collate: the
    batched __getitems__ still reads as a list of samples (it crashed inside torch)."""
    ds = RecSysDataset(torch.tensor([1, 2, 3]), torch.tensor([3, 1, 2]), torch.tensor([1.0, 0, 1]))
    (u, i, t), (u2, i2, t2) = list(torch.utils.data.DataLoader(ds, batch_size=2))
    assert u.tolist() == [1, 2] and i.tolist() == [3, 1] and t.tolist() == [1.0, 0.0]
    assert u2.tolist() == [3] and i2.tolist() == [2] and t2.tolist() == [1.0]
