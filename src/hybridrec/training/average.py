"""An exponential moving average of the weights, at a cost bounded per training step."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch

#: Weights the average lerps per training step, at most: a larger model updates its
#: average every ``ceil(size / EMA_STEP_ELEMENTS)`` steps (with the decay raised to that
#: power), so the average costs a bounded amount per step whatever the table sizes.
EMA_STEP_ELEMENTS = 1 << 16


class WeightAverage:
    """Exponential moving average of the trainable weights (``--ema-decay``).

    The last step's weights carry the noise of the last few batches; an average over the
    recent steps is a smoother estimate of the same optimum, so it is what gets validated,
    kept by early stopping and returned. Early on the decay is capped at
    ``(1 + t) / (10 + t)`` so the average is not dominated by the random initialisation.

    A lerp touches every weight, so for large embedding tables it would cost more than the
    (sparse) step itself. The average is therefore updated every ``every`` steps with the
    decay raised to the power ``every``: the same horizon (``1 / (1 - decay)`` steps) at
    ``1 / every`` of the cost (every 3rd step on MovieLens-100K, 5th at MovieLens-1M's
    shape).
    """

    def __init__(self, params: list[torch.Tensor], decay: float, every: int | None = None) -> None:
        # detached views share the parameters' storage: built once, not per step
        self.params, self.decay, self.steps = [p.detach() for p in params], decay, 0
        self.average = [p.clone() for p in self.params]
        size = sum(p.numel() for p in self.params)
        self.every = every or max(1, math.ceil(size / EMA_STEP_ELEMENTS))

    def _decay(self, steps: int) -> float:
        """The decay of ``steps`` steps ending now (capped early on, see the class)."""
        return min(self.decay, (1 + self.steps) / (10 + self.steps)) ** steps

    @torch.no_grad()
    def update(self) -> None:
        """One step of the average: a single fused lerp over all weights every ``every``
        steps."""
        self.steps += 1
        if self.steps % self.every:
            return
        torch._foreach_lerp_(self.average, self.params, 1.0 - self._decay(self.every))

    @torch.no_grad()
    def current(self) -> list[torch.Tensor]:
        """The average with the steps since its last lerp folded in, without changing the
        running average: what is validated and returned. A run of fewer than ``every``
        steps (a short update) would otherwise end with its initial weights."""
        pending = self.steps % self.every
        if not pending:
            return self.average
        return list(torch._foreach_lerp(self.average, self.params, 1.0 - self._decay(pending)))

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own after it."""
        own = [p.clone() for p in self.params]
        self.copy_to_model()
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, own)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "average": [a.clone() for a in self.average]}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore a checkpoint's average; one without (written with --ema-decay 0) restarts
        the average from the restored weights."""
        if state is None:
            self.steps, self.average = 0, [p.clone() for p in self.params]
            return
        if len(state["average"]) != len(self.average):
            raise ValueError("the checkpoint's weight average has another number of tensors")
        torch._foreach_copy_(self.average, [a.to(self.average[0].device) for a in state["average"]])
        self.steps = int(state["steps"])

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """Put :meth:`current` into the model's weights."""
        torch._foreach_copy_(self.params, self.current())
