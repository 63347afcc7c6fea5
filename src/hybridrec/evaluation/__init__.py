"""Evaluation: every way hybridrec measures a model, in one package.

- :mod:`~hybridrec.evaluation.metrics`: the metric maths (accuracy, AUC, ranking metrics
  from ranks);
- :mod:`~hybridrec.evaluation.protocols`: the full and sampled ranking protocols;
- :mod:`~hybridrec.evaluation.pointwise`: loss, accuracy and AUC on labelled rows;
- :mod:`~hybridrec.evaluation.candidates`: reading negative-candidate files;
- :mod:`~hybridrec.evaluation.report`: terminal formatting.
"""

from hybridrec.evaluation.candidates import read_candidates
from hybridrec.evaluation.metrics import RANKING_METRICS, accuracy, auc, metrics_from_ranks
from hybridrec.evaluation.pointwise import evaluate_pointwise, pointwise_metrics, predict_logits
from hybridrec.evaluation.protocols import evaluate_full, evaluate_sampled
from hybridrec.evaluation.report import format_metrics

__all__ = [
    "RANKING_METRICS",
    "accuracy",
    "auc",
    "evaluate_full",
    "evaluate_pointwise",
    "evaluate_sampled",
    "format_metrics",
    "metrics_from_ranks",
    "pointwise_metrics",
    "predict_logits",
    "read_candidates",
]
