"""evaluation/report.py: format_metrics, the terminal table of either protocol."""

from __future__ import annotations

import torch

from hybridrec.evaluation import format_metrics, metrics_from_ranks
from tests.helpers import t


def test_format_metrics_full_and_sampled():
    metrics = metrics_from_ranks(
        torch.tensor([[0.0], [4.0]]), torch.zeros(2, 1), t([1, 1]), t([9, 9]), [5, 10]
    )
    full = format_metrics({**metrics, "unknown_test_items": 2.0}, "full")
    assert full.startswith("full ranking (all items not in train), 2 users:")
    assert "HR@5 1.0000" in full and "NDCG@10" in full and "MRR 0.6000" in full
    assert "2 test rows with an unknown item counted as misses" in full
    sampled = format_metrics({**metrics, "negatives": 100.0, "queries": 2.0}, "sampled")
    assert sampled.splitlines()[0] == "sampled (test item vs 100 negatives), 2 users:"
    assert len(sampled.splitlines()) == 4
