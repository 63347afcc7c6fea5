"""training/history.py: EpochStats.metric, the value early stopping and reports read."""

from __future__ import annotations

from hybridrec.training import EpochStats


def test_epoch_metric_prefers_ranking_except_pointwise_auc():
    stats = EpochStats(1, 0.5, 0.5, 1.0, 1.0, val_loss=0.4, val_accuracy=0.8, val_auc=0.6)
    stats.ranking = {"auc": 0.9, "hr@10": 0.3}
    assert stats.metric("auc") == 0.6  # the pointwise AUC when there is one
    assert stats.metric("hr@10") == 0.3
    assert stats.metric("loss") == 0.4 and stats.metric("accuracy") == 0.8
    assert stats.metric("ndcg@10") is None
    stats.val_auc = None
    assert stats.metric("auc") == 0.9
