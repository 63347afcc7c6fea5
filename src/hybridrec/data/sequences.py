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
    users = np.asarray(torch.as_tensor(user_idx).cpu(), dtype=np.int64)
    items = np.asarray(torch.as_tensor(item_idx).cpu(), dtype=np.int64)
    ts = None if timestamp is None else np.asarray(torch.as_tensor(timestamp).cpu())
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    out = np.full((num_users, length), UNKNOWN_INDEX, dtype=np.int64)
    if len(users) == 0:
        return torch.from_numpy(out)
    order = chronological_order(users, ts)
    users, items = users[order], items[order]
    counts = np.bincount(users, minlength=num_users)
    ends = np.cumsum(counts)  # one past each user's last sorted row
    from_end = ends[users] - 1 - np.arange(len(users))  # 0 = the user's latest row
    keep = from_end < length
    out[users[keep], length - 1 - from_end[keep]] = items[keep]
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
