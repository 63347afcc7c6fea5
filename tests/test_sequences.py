"""data/sequences.py: packed histories (pack_histories, history_windows, append_items) and
the recency weights (interactions_newer, recency_weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridrec.data.sequences import (
    append_items,
    history_windows,
    interactions_newer,
    pack_histories,
    recency_weights,
)

# ---------------------------------------------------------------- packing histories


def test_pack_orders_by_time_then_file_order_and_left_pads():
    users = [2, 1, 2, 1, 2, 1]
    items = [10, 11, 12, 13, 14, 15]
    times = [5.0, 3.0, 1.0, 3.0, 5.0, 1.0]  # ties keep file order
    packed = pack_histories(users, items, num_users=4, length=4, timestamp=times)
    assert packed.tolist() == [
        [0, 0, 0, 0],  # the unknown user
        [0, 15, 11, 13],
        [0, 12, 10, 14],
        [0, 0, 0, 0],  # a user without rows
    ]


def test_pack_without_timestamps_uses_file_order_and_keeps_the_latest():
    packed = pack_histories([1, 1, 1, 1, 1], [5, 4, 3, 2, 1], num_users=2, length=3)
    assert packed[1].tolist() == [3, 2, 1]


def test_pack_matches_a_per_user_loop_on_random_data():
    rng = np.random.default_rng(0)
    users = rng.integers(1, 30, 2000)
    items = rng.integers(1, 100, 2000)
    times = rng.integers(0, 50, 2000).astype(float)
    packed = pack_histories(users, items, 30, 7, times)
    for u in range(30):
        rows = sorted((times[j], j) for j in np.flatnonzero(users == u))
        expected = [items[j] for _, j in rows][-7:]
        assert packed[u].tolist() == [0] * (7 - len(expected)) + expected


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(1, 9)), min_size=0, max_size=60),
    st.integers(2, 6),
)
def test_history_windows_cover_every_next_item_once_in_order(rows, length):
    """Each window read left to right is a stretch of the user's chronological history;
    every item but a user's first is the next item of exactly one position; the newest
    window is what pack_histories keeps."""
    users = np.array([u for u, _ in rows], dtype=np.int64)
    items = np.array([i for _, i in rows], dtype=np.int64)
    windows = history_windows(users, items, length)
    packed = pack_histories(users, items, 5, length)
    seen = 0
    for u in range(5):
        history = items[users == u].tolist()
        if len(history) < 2:
            continue
        # this user's windows are the next block of rows, newest first
        count = -(-(len(history) - 1) // (length - 1))
        mine = windows[seen : seen + count].tolist()
        seen += count
        assert mine[0] == packed[u].tolist()
        targets = []
        for k, window in enumerate(mine):
            real = [i for i in window if i != 0]
            assert len(real) >= 2 and window[: length - len(real)] == [0] * (length - len(real))
            end = len(history) - k * (length - 1)
            assert real == history[max(0, end - length) : end]
            targets = real[1:] + targets
        assert targets == history[1:]
    assert seen == len(windows)


def test_append_items_skips_padding_and_keeps_the_length():
    histories = torch.tensor([[0, 1, 2], [3, 4, 5]])
    extra = torch.tensor([[0, 7], [8, 9]])
    assert append_items(histories, extra).tolist() == [[1, 2, 7], [5, 8, 9]]


# ---------------------------------------------------------------- recency weights


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4)), min_size=0, max_size=40),
)
def test_interactions_newer_counts_strictly_later_rows_of_the_same_user(rows):
    users = np.array([u for u, _ in rows], dtype=np.int64)
    times = np.array([t for _, t in rows], dtype=np.float64)
    expected = [int(((users == u) & (times > t)).sum()) for u, t in rows]
    assert interactions_newer(users, times).tolist() == expected


def test_recency_weights_by_hand():
    # user 1: times 1, 2, 2, 3 -> 3, 1, 1, 0 newer rows; user 2: one row -> 0 newer
    users = torch.tensor([1, 1, 1, 1, 2])
    times = torch.tensor([1.0, 2.0, 2.0, 3.0, 7.0])
    raw = torch.tensor([0.125, 0.5, 0.5, 1.0, 1.0])  # 0.5 ** (newer / 1)
    w = recency_weights(users, times, half_life=1.0, floor=0.01)
    assert torch.allclose(w, raw / raw.mean())
    assert w.mean().item() == pytest.approx(1.0)
    floored = recency_weights(users, times, half_life=1.0, floor=0.4)
    expected = raw.clamp(min=0.4)
    assert torch.allclose(floored, expected / expected.mean())


def test_recency_weights_ignore_file_order():
    users = torch.tensor([1, 2, 1, 1, 2])
    times = torch.tensor([3.0, 1.0, 1.0, 2.0, 5.0])
    w = recency_weights(users, times, 2.0, 0.05)
    perm = torch.tensor([4, 2, 0, 3, 1])
    assert torch.allclose(recency_weights(users[perm], times[perm], 2.0, 0.05), w[perm])
