"""The validation rows ``train`` holds out of the training data when no ``--val`` is given.

Early stopping needs data the model does not train on, but a user should not have to make
a validation file to get a well-trained model. So ``hybridrec train`` cuts one from the
training data by the rule a careful practitioner would use, picks the number of epochs on
it, and (by default) retrains on every row for that many epochs:

- **positives only, with timestamps**: each user's latest interaction (ties: the largest
  item index), the leave-latest-out rule of the benchmark task and of ``hybridrec split``;
  what comes next is what a recommender is asked to predict;
- **positives only, no timestamps**: one random interaction per user;
- **labelled 0/1 rows**: a random 10% of rows, at most :data:`MAX_LABELLED_ROWS`.

Users with a single positive keep it (holding it out would leave them nothing to learn from).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hybridrec.data.dataset import RecSysDataset

#: Share and cap of labelled rows held out.
LABELLED_SHARE = 0.1
MAX_LABELLED_ROWS = 100_000


@dataclass(frozen=True)
class Holdout:
    """Which rows were held out and by which rule (recorded in the artifact)."""

    rule: str
    train_rows: np.ndarray  # indices of the rows the epoch-choosing run trains on
    val_rows: np.ndarray  # indices of the held-out rows

    def describe(self) -> dict[str, object]:
        return {"rule": self.rule, "held_out_rows": int(len(self.val_rows))}


def holdout(data: RecSysDataset, seed: int = 0) -> Holdout:
    """Split ``data`` (encoded training rows) into an epoch-choosing run's train and val rows.

    Example:
        >>> d = RecSysDataset(torch.tensor([1, 1, 1, 2]), torch.tensor([5, 6, 7, 5]),
        ...                   torch.ones(4), torch.tensor([3.0, 1.0, 2.0, 9.0]))
        >>> h = holdout(d)
        >>> h.rule, h.val_rows.tolist(), h.train_rows.tolist()
        ('latest per user', [0], [1, 2, 3])
    """
    rng = np.random.default_rng(seed)
    target = data.target.numpy()
    n = len(target)
    if (target < 0.5).any():
        take = min(int(round(LABELLED_SHARE * n)), MAX_LABELLED_ROWS)
        val = np.sort(rng.permutation(n)[:take])
        return Holdout(f"random {take / max(n, 1):.0%} of rows", _rest(n, val), val)
    users = data.user_idx.numpy()
    if data.timestamp is not None:
        # last of each user in (user, time, item) order: their latest, ties to the largest item
        order = np.lexsort((data.item_idx.numpy(), data.timestamp.numpy(), users))
        rule = "latest per user"
    else:
        order = np.lexsort((rng.random(n), users))
        rule = "one random interaction per user"
    sorted_users = users[order]
    last = np.ones(n, dtype=bool)
    last[:-1] = sorted_users[1:] != sorted_users[:-1]
    first = np.ones(n, dtype=bool)
    first[1:] = sorted_users[1:] != sorted_users[:-1]
    keep_user = ~(first & last)  # users with at least two rows
    val = np.sort(order[last & keep_user])
    return Holdout(rule, _rest(n, val), val)


def _rest(n: int, val: np.ndarray) -> np.ndarray:
    mask = np.ones(n, dtype=bool)
    mask[val] = False
    return np.flatnonzero(mask)


def subset(data: RecSysDataset, rows: np.ndarray) -> RecSysDataset:
    """The rows ``rows`` of ``data`` as a new dataset."""
    index = torch.from_numpy(rows)
    return RecSysDataset(
        data.user_idx[index],
        data.item_idx[index],
        data.target[index],
        None if data.timestamp is None else data.timestamp[index],
    )
