"""Negative sampling for positives-only (implicit) data: vectorised, seeded, fresh per call.

A sampled negative is an item the user has no known positive with. Candidates are drawn for
all rows at once and only the collisions are redrawn, so the cost is a few tensor operations
per epoch rather than a Python loop per sample.
"""

from __future__ import annotations

from typing import Literal

import torch

Distribution = Literal["uniform", "popularity"]

#: Random redraw rounds before the last collisions are drawn from each user's explicit
#: complement (only users who interacted with almost every item get that far).
MAX_ROUNDS = 20


class NegativeSampler:
    """Draws items each user has not interacted with.

    Args:
        user_idx: (N,) users of the known positives.
        item_idx: (N,) items of the known positives.
        num_items: embedding rows of the item table (index 0, unknown, is never drawn).
        distribution: ``uniform`` over items, or ``popularity`` (proportional to the number of
            positives, plus one so unseen items keep a chance).

    Example:
        >>> s = NegativeSampler(torch.tensor([1, 1]), torch.tensor([1, 2]), num_items=5)
        >>> neg = s.sample(torch.tensor([1, 1, 1]), 2, torch.Generator().manual_seed(0))
        >>> neg.shape, bool(((neg == 3) | (neg == 4)).all())
        (torch.Size([3, 2]), True)
    """

    def __init__(
        self,
        user_idx: torch.Tensor,
        item_idx: torch.Tensor,
        num_items: int,
        distribution: Distribution = "uniform",
    ) -> None:
        if num_items < 2:
            raise ValueError("negative sampling needs at least one known item")
        self.num_items = num_items
        self.distribution = distribution
        keys = user_idx.to(torch.int64).cpu() * num_items + item_idx.to(torch.int64).cpu()
        self._positive_keys = torch.unique(keys)  # sorted
        if distribution == "popularity":
            counts = torch.bincount(item_idx.cpu(), minlength=num_items).double() + 1.0
            counts[0] = 0.0  # never draw the unknown item
            self._weights: torch.Tensor | None = counts / counts.sum()
        elif distribution == "uniform":
            self._weights = None
        else:
            raise ValueError(
                f"distribution must be 'uniform' or 'popularity', got {distribution!r}"
            )

    def saturated_users(self) -> torch.Tensor:
        """User indices whose positives cover every item: no negative exists for them."""
        users = self._positive_keys // self.num_items
        counts = torch.bincount(users) if len(users) else torch.zeros(0, dtype=torch.int64)
        return torch.nonzero(counts >= self.num_items - 1).flatten()

    def _draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self._weights is None:
            return torch.randint(1, self.num_items, (n,), generator=generator)
        return torch.multinomial(self._weights, n, replacement=True, generator=generator)

    def is_positive(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Boolean mask: is ``(user_idx[k], item_idx[k])`` a known positive?"""
        keys = user_idx * self.num_items + item_idx
        pos = torch.searchsorted(self._positive_keys, keys)
        pos = pos.clamp(max=len(self._positive_keys) - 1)
        return self._positive_keys[pos] == keys

    def items_of(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every positive of each of ``users`` as ``(position in users, item)`` pairs: one
        binary search per user into the sorted keys, then their runs of keys, no loop."""
        users = users.cpu()
        bounds = torch.stack([users, users + 1]) * self.num_items
        start, end = torch.searchsorted(self._positive_keys, bounds)
        lengths = end - start
        owner = torch.repeat_interleave(torch.arange(len(users)), lengths)
        # key positions: a run from each user's start, laid end to end
        shift = torch.repeat_interleave(start - (torch.cumsum(lengths, 0) - lengths), lengths)
        keys = self._positive_keys[torch.arange(len(owner)) + shift]
        return owner, keys.remainder_(self.num_items)

    def sample(self, user_idx: torch.Tensor, num: int, generator: torch.Generator) -> torch.Tensor:
        """(len(user_idx), num) negative items for each user, drawn with replacement."""
        users = user_idx.cpu().repeat_interleave(num)
        items = self._draw(len(users), generator)
        todo = torch.nonzero(self.is_positive(users, items)).squeeze(-1)
        for _ in range(MAX_ROUNDS):
            if len(todo) == 0:
                break
            items[todo] = self._draw(len(todo), generator)
            todo = todo[self.is_positive(users[todo], items[todo])]
        if len(todo):  # users with almost every item as a positive: draw from what is left
            items[todo] = self._draw_exactly(users[todo], generator)
        return items.view(len(user_idx), num)

    def _draw_exactly(self, users: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One negative per row from the explicit complement of each user's positives.

        Only reached for the few rows that kept colliding, so a loop over their users is fine.
        """
        out = torch.empty_like(users)
        all_items = torch.arange(1, self.num_items)
        for user in torch.unique(users).tolist():
            rows = torch.nonzero(users == user).squeeze(-1)
            _, known = self.items_of(torch.tensor([user]))
            free = all_items[~torch.isin(all_items, known)]
            if len(free) == 0:
                raise ValueError(f"user index {user} has every item as a positive: no negatives")
            out[rows] = free[torch.randint(len(free), (len(rows),), generator=generator)]
        return out
