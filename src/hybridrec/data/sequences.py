"""Users' interaction histories as one padded tensor, built once and vectorised.

Sequence models read a user as the ordered list of items they interacted with. Rather than a
Python list per user, all histories are packed into a ``(num_users, length)`` index tensor,
**left-padded** with 0 (the unknown item) so that every user's most recent item sits in the
last column: the model's state for "what comes next" is then always ``[:, -1]``.
"""

from __future__ import annotations

import numpy as np
import torch

from hybridrec.data.encoding import UNKNOWN_INDEX


def chronological_order(user_idx: np.ndarray, timestamp: np.ndarray | None = None) -> np.ndarray:
    """Row positions sorted by user, then time, then position in the file.

    Without timestamps, the file order of each user's rows is their order. Equal timestamps
    keep file order too (a stable sort), so the result is deterministic.
    """
    positions = np.arange(len(user_idx))
    if timestamp is None:
        return np.argsort(user_idx, kind="stable")
    return np.lexsort((positions, timestamp, user_idx))


def _in_time_order(
    user_idx: torch.Tensor | np.ndarray,
    item_idx: torch.Tensor | np.ndarray,
    timestamp: torch.Tensor | np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(users, items)`` as int64 arrays, sorted by :func:`chronological_order`."""
    users = np.asarray(torch.as_tensor(user_idx).cpu(), dtype=np.int64)
    items = np.asarray(torch.as_tensor(item_idx).cpu(), dtype=np.int64)
    ts = None if timestamp is None else np.asarray(torch.as_tensor(timestamp).cpu())
    order = chronological_order(users, ts)
    return users[order], items[order]


def pack_histories(
    user_idx: torch.Tensor | np.ndarray,
    item_idx: torch.Tensor | np.ndarray,
    num_users: int,
    length: int,
    timestamp: torch.Tensor | np.ndarray | None = None,
) -> torch.Tensor:
    """Each user's latest ``length`` items in order, as a ``(num_users, length)`` int64 tensor.

    Row ``u`` holds user ``u``'s items oldest to newest, right-aligned and left-padded with 0;
    users without rows (including the unknown user 0) are all padding. Longer histories keep
    their most recent ``length`` items.

    Example:
        >>> pack_histories([1, 1, 2, 1], [5, 6, 7, 8], num_users=3, length=2)
        tensor([[0, 0],
                [6, 8],
                [0, 7]])
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    out = np.full((num_users, length), UNKNOWN_INDEX, dtype=np.int64)
    users, items = _in_time_order(user_idx, item_idx, timestamp)
    if len(users) == 0:
        return torch.from_numpy(out)
    counts = np.bincount(users, minlength=num_users)
    ends = np.cumsum(counts)  # one past each user's last sorted row
    from_end = ends[users] - 1 - np.arange(len(users))  # 0 = the user's latest row
    keep = from_end < length
    out[users[keep], length - 1 - from_end[keep]] = items[keep]
    return torch.from_numpy(out)


def history_windows(
    user_idx: torch.Tensor | np.ndarray,
    item_idx: torch.Tensor | np.ndarray,
    length: int,
    timestamp: torch.Tensor | np.ndarray | None = None,
) -> torch.Tensor:
    """Each user's *whole* history cut into windows of ``length`` items, as ``(W, length)``.

    :func:`pack_histories` keeps a user's latest ``length`` items; a sequence model trained
    on those alone never learns from the older part of a long history (on MovieLens-100K,
    14% of the rows). Here the latest window is the same and older windows reach back, one
    after another, overlapping by one item, so that every item but a user's first is the
    *next item* of exactly one position. Windows are right-aligned and left-padded with 0
    like :func:`pack_histories`; only windows with at least two items (one prediction) are
    returned, newest first for each user, users in index order.

    Example:
        >>> history_windows([1, 1, 1, 1, 2, 2], [5, 6, 7, 8, 3, 4], length=3)
        tensor([[6, 7, 8],
                [0, 5, 6],
                [0, 3, 4]])
    """
    if length < 2:
        raise ValueError(f"length must be >= 2, got {length}")
    users, items = _in_time_order(user_idx, item_idx, timestamp)
    counts = np.bincount(users)
    stride = length - 1
    windows = np.where(counts > 1, -(-(counts - 1) // stride), 0)  # ceil((n - 1) / stride)
    first = np.cumsum(windows) - windows  # each user's first (newest) window row
    out = np.full((int(windows.sum()), length), UNKNOWN_INDEX, dtype=np.int64)
    from_end = np.cumsum(counts)[users] - 1 - np.arange(len(users))  # 0 = the latest row
    window = from_end // stride
    own = window < windows[users]  # a user's first item may only open the window after it
    out[first[users[own]] + window[own], stride - (from_end[own] % stride)] = items[own]
    # the item a window starts from is also the last one of the next-older window
    opens = (from_end % stride == 0) & (from_end > 0) & (window <= windows[users])
    out[first[users[opens]] + window[opens] - 1, 0] = items[opens]
    return torch.from_numpy(out)


def append_items(histories: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """``histories`` (B, L) with ``items`` (B, n) appended on the right, still length ``L``.

    Used to extend a known history by items given at request time; padding (0) in ``items``
    is skipped, so rows may add different numbers of items.
    """
    joined = torch.cat([histories, items], dim=1)
    # stable sort moves padding to the left while keeping the order of the real items
    order = torch.argsort((joined != UNKNOWN_INDEX).to(torch.int8), dim=1, stable=True)
    return joined.gather(1, order)[:, -histories.shape[1] :]


def interactions_newer(user_idx: np.ndarray, timestamp: np.ndarray) -> np.ndarray:
    """(N,) for each row, how many of the same user's rows have a strictly later timestamp.

    Rows at the same time get the same count, so file order never matters.

    Example:
        >>> interactions_newer(np.array([1, 1, 1, 2]), np.array([5.0, 9.0, 5.0, 1.0])).tolist()
        [1, 0, 1, 0]
    """
    n = len(user_idx)
    # 32-bit positions where they fit: at 20M rows each temporary is 80 MB, not 160 MB
    index = np.int32 if n < 2**31 else np.int64
    order = np.lexsort((timestamp, user_idx)).astype(index)
    new_user = _starts(user_idx[order])
    new_run = new_user | _starts(timestamp[order])  # a run: one user's rows at one time
    # last sorted position of every user block and of every run, looked up per row
    block_end = (np.r_[np.flatnonzero(new_user)[1:], n] - 1).astype(index)
    newer = block_end[np.cumsum(new_user, dtype=index) - 1]
    del block_end, new_user
    run_end = (np.r_[np.flatnonzero(new_run)[1:], n] - 1).astype(index)
    newer -= run_end[np.cumsum(new_run, dtype=index) - 1]
    del run_end, new_run
    out = np.empty(n, dtype=np.int64)
    out[order] = newer
    return out


def _starts(sorted_values: np.ndarray) -> np.ndarray:
    """Boolean mask of the positions where a run of equal values begins."""
    starts = np.ones(len(sorted_values), dtype=bool)
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=starts[1:])
    return starts


def recency_weights(
    user_idx: torch.Tensor, timestamp: torch.Tensor, half_life: float, floor: float
) -> torch.Tensor:
    """(N,) float32 training weights that favour each user's recent interactions.

    A row with ``a`` newer interactions of the same user weighs ``max(0.5 ** (a /
    half_life), floor)``; weights are then scaled to mean 1, so the loss keeps its scale
    and the learning rate its meaning. Why: what a user does next resembles what they did
    last far more than what they did long ago (the whole gain of sequence models on
    leave-latest-out tasks), and an order-blind model can still be told to fit the recent
    past best. Histories much shorter than ``half_life`` are weighted almost uniformly.

    Example:
        >>> w = recency_weights(torch.tensor([1, 1, 1]), torch.tensor([1.0, 2.0, 3.0]), 1.0, 0.3)
        >>> [round(x, 3) for x in (w / w.max()).tolist()]
        [0.3, 0.5, 1.0]
    """
    newer = interactions_newer(user_idx.cpu().numpy(), timestamp.cpu().numpy())
    weight = np.divide(newer, half_life, dtype=np.float64)  # in place from here: one array
    del newer
    np.power(0.5, weight, out=weight)
    np.maximum(weight, floor, out=weight)
    if len(weight):
        weight /= weight.mean()
    return torch.from_numpy(weight.astype(np.float32)).to(user_idx.device)
