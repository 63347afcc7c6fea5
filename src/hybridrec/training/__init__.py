"""Training: :func:`fit` and the parts of a run, one concern per module.

- :mod:`~hybridrec.training.loop`: :func:`fit`, the epochs and their steps;
- :mod:`~hybridrec.training.history`: what a run reports (:class:`EpochStats`, :class:`History`);
- :mod:`~hybridrec.training.validation`: bounded validation and early stopping;
- :mod:`~hybridrec.training.optim`: fused Adam and lazy (row-wise) Adam;
- :mod:`~hybridrec.training.average`: the weight average;
- :mod:`~hybridrec.training.steps`: sparse tables, DDP, ``torch.compile``, mixed precision;
- :mod:`~hybridrec.training.state`: the run's state, saved to and resumed from checkpoints.

The package is ``training`` rather than ``train`` because ``hybridrec.train`` is the
pipeline function (read files, train, save); a module of the same name would hide it.
"""

from hybridrec.training.history import EpochStats, History
from hybridrec.training.loop import fit, with_model_defaults
from hybridrec.training.validation import resolve_early_stop

__all__ = ["EpochStats", "History", "fit", "resolve_early_stop", "with_model_defaults"]
