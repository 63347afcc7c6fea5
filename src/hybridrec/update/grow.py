"""Growing a trained model, its optimiser state and its seen items for new users and items.

Every existing user and item keeps its index (the encoders are extended, never refitted),
so growing a table is appending rows. Where a new row starts:

- an id table with side features (:class:`~hybridrec.models.featured.FeaturedEmbedding`):
  zeros, so the row is its features alone until training moves it;
- any other embedding or bias table: the mean of the trained rows (row 0, the unknown id,
  left out), the best guess about an entity nothing is known of: it scores items as an
  average user does;
- buffers (feature tokens, ``has_id``, sasrec's histories, popularity counts): zeros, then
  filled by the caller from the feature files and the new interactions.

Adam's state grows with the tables: a new row's first moment starts at zero and its second
moment at the mean of its table's rows, so its first steps have the size the trained rows'
steps have (zero would make them about ``1 / sqrt(1 - beta2)`` ~ 30 times larger).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from hybridrec.data.seen import SeenItems
from hybridrec.errors import ConfigError
from hybridrec.models import capabilities
from hybridrec.models.featured import NOT_ROWS, FeaturedEmbedding


@dataclass(frozen=True)
class Growth:
    """Rows before and after (``IdEncoder.num_embeddings``: the unknown row included)."""

    old_users: int
    old_items: int
    num_users: int
    num_items: int

    def sizes(self, kind: str) -> tuple[int, int]:
        """``(old, new)`` row counts of a ``"users"`` or ``"items"`` table."""
        if kind == "users":
            return self.old_users, self.num_users
        return self.old_items, self.num_items


def row_kind(model: nn.Module, name: str) -> str | None:
    """``"users"``, ``"items"`` or None: what the rows of state entry ``name`` stand for,
    by the model's declared ``row_tables`` (:class:`hybridrec.models.base.RecModel`)."""
    parts = name.split(".")
    if len(parts) > 1 and parts[-1] in NOT_ROWS:  # a featured table's per-token buffers
        return None
    owner = parts[-2] if len(parts) > 1 else parts[0]
    return dict(capabilities(model).row_tables).get(owner)


def grow_model(model: nn.Module, growth: Growth) -> nn.Module:
    """A new model of the same class and options with the grown tables; ``model`` is left
    as it is. New rows start as the module docstring says.

    Raises:
        ConfigError: the model has a per-user or per-item tensor its class does not declare
            in ``row_tables`` (it cannot be grown safely).
    """
    config = replace(model.config, num_users=growth.num_users, num_items=growth.num_items)  # type: ignore[arg-type]
    grown = type(model)(config)
    parameters = dict(model.named_parameters())
    state = {}
    for name, tensor in model.state_dict().items():
        kind = row_kind(model, name)
        if kind is not None:
            old, new = growth.sizes(kind)
            start = _start_rows(model, name, tensor, name in parameters)
            tensor = torch.cat([tensor, start.expand(new - old, *tensor.shape[1:])])
        state[name] = tensor
    try:
        grown.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(
            f"model {type(model).__name__} cannot be updated: it has a per-user or per-item "
            f"table its class does not list in row_tables ({str(exc).splitlines()[-1].strip()})"
        ) from None
    return grown


def _start_rows(model: nn.Module, name: str, tensor: torch.Tensor, parameter: bool) -> torch.Tensor:
    """One row (1, ...) that every new row of ``tensor`` starts as."""
    zero = tensor.new_zeros((1, *tensor.shape[1:]))
    if not parameter or len(tensor) < 2:
        return zero
    owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    if isinstance(owner, FeaturedEmbedding):
        return zero  # the features carry a new row
    return tensor[1:].mean(0, keepdim=True)


def grow_moments(
    moments: dict[str, torch.Tensor], model: nn.Module, growth: Growth
) -> dict[str, torch.Tensor]:
    """Adam's state (:meth:`~hybridrec.training.optim.Optimizers.export_moments`) of
    ``model`` (the model before growing) with rows for the new users and items."""
    out = {}
    for key, tensor in moments.items():
        name, field = key.rsplit(":", 1)
        kind = row_kind(model, name) if field != "step" else None
        if kind is not None:
            old, new = growth.sizes(kind)
            if len(tensor) != old:
                raise ConfigError(
                    f"the saved optimiser state of {name} has {len(tensor)} rows, the model "
                    f"{old}; retrain the model"
                )
            start = tensor[1:].mean(0, keepdim=True) if field == "exp_avg_sq" else None
            if start is None or len(tensor) < 2:
                start = tensor.new_zeros((1, *tensor.shape[1:]))
            tensor = torch.cat([tensor, start.expand(new - old, *tensor.shape[1:])])
        out[key] = tensor
    return out


def grow_seen(
    seen: SeenItems, growth: Growth, user_idx: np.ndarray, item_idx: np.ndarray
) -> SeenItems:
    """``seen`` with the new positive pairs added (indices in the grown encoders, in time
    order): the items recommendations leave out, item counts that add up (what a full
    retrain on the old and the new rows would count), and, when ``seen`` stores recency,
    each pair's recency with the new rows counted as the most recent."""
    old_users = np.repeat(np.arange(seen.num_users), np.diff(seen.indptr))
    newer = None
    if seen.newer is not None:
        per_user = np.bincount(user_idx, minlength=growth.num_users)
        newer = np.concatenate([seen.newer + per_user[old_users], _newer_in_order(user_idx)])
    pairs = SeenItems.from_pairs(
        np.concatenate([old_users, user_idx]),
        np.concatenate([seen.items.astype(np.int64), item_idx]),
        num_users=growth.num_users,
        num_items=growth.num_items,
        newer=newer,
    )
    counts = np.pad(seen.item_counts, (0, growth.num_items - seen.num_items))
    counts += np.bincount(item_idx, minlength=growth.num_items).astype(counts.dtype)
    return SeenItems(pairs.indptr, pairs.items, counts, pairs.newer)


def _newer_in_order(user_idx: np.ndarray) -> np.ndarray:
    """For rows in time order: how many later rows each row's user has."""
    sorter = np.argsort(user_idx, kind="stable")  # each user's rows, still in time order
    sorted_users = user_idx[sorter]
    last = np.searchsorted(sorted_users, sorted_users, side="right") - 1
    later = np.empty(len(user_idx), dtype=np.int64)
    later[sorter] = last - np.arange(len(sorter))
    return later
