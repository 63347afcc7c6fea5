"""How an update trains: on its rows (:mod:`hybridrec.update.rows`), by default with every
weight frozen except the rows of the users it touches and of the new items
(:class:`RowsOnly`); a model that only counts adds the new counts instead."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from hybridrec.config import TrainConfig
from hybridrec.data.dataset import RecSysDataset
from hybridrec.models import capabilities
from hybridrec.models.featured import FeaturedEmbedding
from hybridrec.runtime import resolve_device
from hybridrec.training import History, fit
from hybridrec.update.grow import Growth
from hybridrec.update.rows import NewRows, UpdateRows


def mark_trained(model: torch.nn.Module, rows: UpdateRows) -> np.ndarray:
    """Rows with interactions in the update use their id part from now on (call it only
    when the update trains: an untrained id row is zero). Returns the items that had no id
    part before (known by their features alone): their id rows must train too."""
    data = rows.data
    cold = np.zeros(0, dtype=np.int64)
    for name, idx in (("user_embedding", data.user_idx), ("item_embedding", data.item_idx)):
        table = getattr(model, name, None)
        if isinstance(table, FeaturedEmbedding):
            touched = idx.unique()
            if name == "item_embedding":
                cold = touched[table.has_id[touched] == 0].cpu().numpy()
            table.has_id[touched] = 1.0
    return cold


def store_histories(model: torch.nn.Module, data: RecSysDataset, kept: torch.Tensor) -> None:
    """A sequence model's stored histories with the update's rows: the users in ``data``
    get theirs from it (their stored history and new items, in order), the others keep
    theirs from ``kept`` (the parent's, grown). Run after training as well: training stores
    only its own rows' users, and its rows may lack each user's held-out latest item."""
    model.prepare(data.user_idx, data.item_idx, data.target, data.timestamp)  # type: ignore[operator]
    touched = torch.zeros(len(kept), dtype=torch.bool)
    touched[data.user_idx.unique()] = True
    model.histories[~touched] = kept[~touched].to(model.histories.device)  # type: ignore[index]


def train_update(
    model: torch.nn.Module,
    rows: UpdateRows,
    new: NewRows,
    val: RecSysDataset | None,
    config: TrainConfig,
    moments: dict[str, torch.Tensor],
    show_progress: bool,
    growth: Growth,
    scope: str,
    cold_items: np.ndarray | None = None,
) -> History:
    """Fit on the update's rows; a model that only counts (popularity) adds the counts of
    the new positives to its own. A sequence model's stored histories are those of the
    rows trained on afterwards: the caller restores them with :func:`store_histories`."""
    declared = capabilities(model)
    if not declared.trainable:
        before = {k: v.clone() for k, v in model.state_dict().items()}
        counted = RecSysDataset(
            torch.from_numpy(new.user_idx), torch.from_numpy(new.item_idx),
            torch.ones(len(new.user_idx)),
        )  # fmt: skip
        fit(model, counted, None, config, device=torch.device("cpu"), show_progress=False)
        for name, counts in before.items():  # prepare() counted the new positives alone
            if torch.is_floating_point(counts):
                model.get_buffer(name).add_(counts)
        return History()
    device = resolve_device(config.device)
    # dropout and id dropout draw from torch's global generator: seeded as training seeds
    # it, so the same update command gives the same model
    torch.manual_seed(config.seed)
    frozen = RowsOnly(model, new, growth, moments, cold_items) if scope == "rows" else None
    if val is not None:  # stop at the best epoch on the held-out latest positives
        config = replace(config, early_stop="auto")
    try:
        history = fit(model, rows.data, val, config, device=device,
                      show_progress=show_progress, moments=moments)  # fmt: skip
    finally:
        if frozen is not None:
            frozen.release(moments)
    return history


class RowsOnly:
    """Train only the rows of the users the update touches and of the new items (and of
    items known by their features alone until the update's rows); the rest
    of the model cannot drift. Other parameters are frozen; a gradient hook zeroes the
    other rows of the row tables, their Adam momentum is cleared (it would move them with
    a zero gradient), and :meth:`release` puts them back exactly (weight decay moves them
    too) and keeps the frozen parameters' optimiser state in ``moments``."""

    def __init__(
        self,
        model: torch.nn.Module,
        new: NewRows,
        growth: Growth,
        moments: dict[str, torch.Tensor],
        cold_items: np.ndarray | None = None,
    ) -> None:
        from hybridrec.update.grow import row_kind

        allowed = {
            "users": torch.zeros(growth.num_users, dtype=torch.bool),
            "items": torch.zeros(growth.num_items, dtype=torch.bool),
        }
        allowed["users"][torch.from_numpy(np.unique(new.user_idx))] = True
        allowed["items"][growth.old_items :] = True
        if cold_items is not None:  # known by features alone until now: their id rows learn
            allowed["items"][torch.from_numpy(cold_items)] = True
        self.model, self.saved = model, dict(moments)
        self.rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.hooks = []
        for name, param in model.named_parameters():
            kind = row_kind(model, name)
            if kind is None:
                param.requires_grad_(False)
                continue
            mask = allowed[kind]
            self.rows[name] = (mask, param.detach().clone())
            self.hooks.append(param.register_hook(lambda g, m=mask: masked_rows(g, m)))
            if f"{name}:exp_avg" in moments:
                moments[f"{name}:exp_avg"] = moments[f"{name}:exp_avg"] * mask.unsqueeze(-1)

    def release(self, moments: dict[str, torch.Tensor]) -> None:
        for hook in self.hooks:
            hook.remove()
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, (mask, before) in self.rows.items():
                param = params[name]
                param[~mask.to(param.device)] = before[~mask].to(param.device)
        for param in params.values():
            param.requires_grad_(True)
        moments.update({k: v for k, v in self.saved.items() if k not in moments})


def masked_rows(grad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``grad`` with the rows outside ``mask`` zero (sparse gradients lose them)."""
    mask = mask.to(grad.device)
    if grad.is_sparse:
        grad = grad.coalesce()
        keep = mask[grad.indices()[0]]
        return torch.sparse_coo_tensor(
            grad.indices()[:, keep], grad.values()[keep], grad.shape, device=grad.device
        )
    return grad * mask.to(grad.dtype).unsqueeze(-1)
