"""The optimisers of a training run: fused Adam on dense parameters, lazy Adam on tables.

A step of dense Adam costs every weight of every embedding table, whatever the batch
touched; at MovieLens-20M's shape that is most of the step. Lazy Adam (TensorFlow's
``LazyAdam``, PyTorch's ``SparseAdam``, the row-wise optimisers of TorchRec/FBGEMM) updates
the moments and weights of the touched rows only. :class:`LazyAdam` computes what
``torch.optim.SparseAdam`` computes, with row gathers and scatters instead of sparse-tensor
arithmetic: ``SparseAdam`` builds and adds three sparse tensors per table and step, which
cost several times the update itself (measured: 3.8 ms against 0.9 ms a step at
MovieLens-20M's shape, docs/benchmarks.md).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from hybridrec.config import TrainConfig


class LazyAdam(torch.optim.Optimizer):
    """Adam on the rows of sparse gradients (``nn.Embedding(sparse=True)``).

    Same update as ``torch.optim.SparseAdam`` (moments of untouched rows do not decay;
    ``eps`` is added after the bias correction of the second moment) and the same state
    names, so checkpoints written with ``SparseAdam`` load. ``weight_decay`` adds the L2
    gradient of the touched rows only (``weight_decay * row``), the usual regulariser of
    sparsely trained embeddings: a row is pulled towards zero as often as it is used,
    where dense Adam would pull every row every step.

    Example:
        >>> table = nn.Embedding(10, 4, sparse=True)
        >>> opt = LazyAdam(table.parameters(), lr=0.1)
        >>> before = table.weight.detach().clone()
        >>> table(torch.tensor([1, 1, 3])).sum().backward()
        >>> opt.step()
        >>> sorted(set(torch.nonzero(table.weight != before)[:, 0].tolist()))
        [1, 3]
    """

    def __init__(
        self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8, weight_decay: float = 0.0,
    ) -> None:  # fmt: skip
        if not lr > 0:
            raise ValueError(f"invalid learning rate {lr}")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if not grad.is_sparse:
                    raise RuntimeError("LazyAdam takes sparse gradients; use Adam for dense ones")
                grad = grad.coalesce()  # one row per index: the update is not linear
                rows, values = grad.indices()[0], grad.values()
                if rows.numel() == 0:
                    continue
                decay = group.get("weight_decay", 0.0)  # absent in SparseAdam checkpoints
                if decay:
                    values = values.add(param.index_select(0, rows), alpha=decay)
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                state["step"] += 1
                step = state["step"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                mean = exp_avg.index_select(0, rows).lerp_(values, 1 - beta1)
                square = exp_avg_sq.index_select(0, rows).mul_(beta2)
                square.addcmul_(values, values, value=1 - beta2)
                exp_avg.index_copy_(0, rows, mean)
                exp_avg_sq.index_copy_(0, rows, square)
                step_size = group["lr"] * math.sqrt(1 - beta2**step) / (1 - beta1**step)
                update = mean.div_(square.sqrt_().add_(group["eps"])).mul_(-step_size)
                param.index_add_(0, rows, update)


class Optimizers:
    """Adam for the run: fused Adam on dense parameters, :class:`LazyAdam` on sparse tables.

    One object with ``zero_grad``/``step``/``state_dict`` so the loop, checkpoints and the
    loss scaler see a single optimiser whichever mix the run has.
    """

    def __init__(
        self,
        params: list[nn.Parameter],
        tables: list[nn.Embedding],
        config: TrainConfig,
        device: torch.device,
    ) -> None:
        sparse_ids = {id(t.weight) for t in tables}
        dense = [p for p in params if id(p) not in sparse_ids]
        sparse = [p for p in params if id(p) in sparse_ids]
        self.optimizers: list[torch.optim.Optimizer] = []
        if dense:
            self.optimizers.append(
                torch.optim.Adam(
                    dense,
                    lr=config.lr,
                    weight_decay=config.weight_decay or 0.0,
                    **fast_adam_options(device),
                )
            )
        if sparse:
            self.optimizers.append(
                LazyAdam(sparse, lr=config.lr, weight_decay=config.weight_decay or 0.0)
            )

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, scaler: torch.amp.GradScaler | None = None) -> None:
        for optimizer in self.optimizers:
            if scaler is None:
                optimizer.step()
            else:
                scaler.step(optimizer)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        states = state["optimizers"]
        if len(states) != len(self.optimizers):
            raise ValueError(
                "the checkpoint's optimiser has another mix of sparse and dense parameters "
                "(resume with the same --sparse-embeddings)"
            )
        for optimizer, one in zip(self.optimizers, states, strict=True):
            optimizer.load_state_dict(one)

    def export_moments(self, names: dict[int, str]) -> dict[str, torch.Tensor]:
        """Adam's state of every parameter that has one, keyed ``"<parameter name>:<field>"``
        (``exp_avg``, ``exp_avg_sq``, ``step``) with ``names`` mapping ``id(param)`` to its
        name: a flat dict of tensors, saved beside the weights so ``hybridrec update``
        continues the optimisation instead of restarting it (fresh moments make the first
        steps of an update as large as the first steps of training)."""
        out: dict[str, torch.Tensor] = {}
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                for param in group["params"]:
                    state = optimizer.state.get(param)
                    if not state or id(param) not in names:
                        continue
                    name = names[id(param)]
                    out[f"{name}:exp_avg"] = state["exp_avg"].detach().cpu()
                    out[f"{name}:exp_avg_sq"] = state["exp_avg_sq"].detach().cpu()
                    out[f"{name}:step"] = torch.tensor(float(state["step"]))
        return out

    def import_moments(self, names: dict[int, str], moments: dict[str, torch.Tensor]) -> int:
        """Start from :meth:`export_moments`' state (parameters it lacks start fresh);
        returns how many parameters took a state. The moments must have the parameters'
        shapes (``hybridrec.update`` grows them with the tables)."""
        loaded = 0
        for optimizer in self.optimizers:
            lazy = isinstance(optimizer, LazyAdam)
            for group in optimizer.param_groups:
                for param in group["params"]:
                    name = names.get(id(param))
                    if name is None or f"{name}:exp_avg" not in moments:
                        continue
                    avg, avg_sq = moments[f"{name}:exp_avg"], moments[f"{name}:exp_avg_sq"]
                    if avg.shape != param.shape or avg_sq.shape != param.shape:
                        raise ValueError(
                            f"the saved optimiser state of {name} has shape {tuple(avg.shape)}, "
                            f"the parameter {tuple(param.shape)}"
                        )
                    step = float(moments[f"{name}:step"])
                    optimizer.state[param] = {
                        "step": int(step)
                        if lazy
                        else torch.tensor(step, dtype=torch.float32, device=param.device),
                        "exp_avg": avg.to(param.device, param.dtype).clone(),
                        "exp_avg_sq": avg_sq.to(param.device, param.dtype).clone(),
                    }
                    loaded += 1
        return loaded


def fast_adam_options(device: torch.device) -> dict[str, bool]:
    """Fused Adam (one kernel for all parameters) where PyTorch supports it on ``device``."""
    if device.type in {"cpu", "cuda"}:
        return {"fused": True}
    return {}
