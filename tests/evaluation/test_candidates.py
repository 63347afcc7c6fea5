"""evaluation/candidates.py: read_candidates reads negative-candidate files, wide or long,
CSV or Parquet, with errors that name the row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hybridrec.data.encoding import IdEncoder
from hybridrec.errors import DataError
from hybridrec.evaluation import read_candidates

ML100K = Path(__file__).resolve().parents[3] / "shared" / "data" / "movielens-100k-loo"


INT_USERS = IdEncoder.fit([1, 2, 3])
INT_ITEMS = IdEncoder.fit([10, 20, 30, 40])


def test_read_candidates_wide(tiny_csv):
    path = tiny_csv("userId,neg_1,neg_2,neg_3\n1,10,20,30\n3, 40 ,99,10\n", "negs.csv")
    users, items = read_candidates(path, INT_USERS, INT_ITEMS)
    assert users.tolist() == [1, 1, 1, 3, 3, 3]
    assert items.tolist() == [1, 2, 3, 4, 0, 1]  # 99 is unknown -> 0
    assert users.dtype == items.dtype == torch.int64


def test_read_candidates_long_and_string_ids(tiny_csv):
    path = tiny_csv({"user": ["u1", "u2", "zz"], "item": ["b", "a", "b"]}, "cands.csv")
    users, items = read_candidates(
        path, IdEncoder.fit(["u1", "u2"]), IdEncoder.fit(["a", "b"]), "user", "item"
    )
    assert users.tolist() == [1, 2, 0] and items.tolist() == [2, 1, 2]


def test_read_candidates_long_parquet(tiny_csv):
    frame = pd.DataFrame({"userId": [2, 1], "itemId": [40, 10]})
    users, items = read_candidates(tiny_csv(frame, "c.parquet"), INT_USERS, INT_ITEMS)
    assert users.tolist() == [2, 1] and items.tolist() == [4, 1]


def test_read_candidates_noncanonical_ids_stay_strings(tiny_csv):
    # "010" is not the integer 10, exactly as in read_interactions.
    path = tiny_csv("userId,neg_1,neg_2\n1,010,20\n", "negs.csv")
    _, items = read_candidates(path, INT_USERS, INT_ITEMS)
    assert items.tolist()[0] == 0


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("user,neg_1\n1,10\n", r"missing user column 'userId'"),
        ("userId,neg_1,neg_2\n1,10,20\n2,30,\n", r"row 2 \(line 3\), column 'neg_2'.*blank"),
        ("userId,itemId\n1,10\n ,20\n", r"row 2 \(line 3\), column 'userId'.*blank id"),
        ("userId,itemId,neg_1\n1,10,20\n", r"ambiguous"),
        ("userId\n1\n", r"only the user column"),
        ("userId,neg_1\n", r"no rows"),
    ],
)
def test_read_candidates_errors(tiny_csv, text, match):
    with pytest.raises(DataError, match=match):
        read_candidates(tiny_csv(text, "negs.csv"), INT_USERS, INT_ITEMS)


def test_read_candidates_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv.*file not found"):
        read_candidates(tmp_path / "nope.csv", INT_USERS, INT_ITEMS)


@pytest.mark.skipif(not ML100K.exists(), reason="../shared/data not present")
def test_read_candidates_movielens_100k_loo():
    train = pd.read_csv(ML100K / "train.csv", dtype=str)
    users = IdEncoder.fit(train["userId"].astype("int64"))
    items = IdEncoder.fit(train["itemId"].astype("int64"))
    user_idx, item_idx = read_candidates(ML100K / "test_negatives.csv", users, items)
    assert len(user_idx) == len(item_idx) == 943 * 100
    assert torch.unique(user_idx).tolist() == list(range(1, 944))
    assert torch.bincount(user_idx).tolist()[1:] == [100] * 943


def test_a_bad_wide_cell_is_named_by_its_own_row_and_column(tmp_path):
    """The cells are parsed as one stacked column: its error named row 6, column 'neg_1'
    for the cell at row 2, column 'neg_3'."""
    path = tmp_path / "cand.parquet"
    frame = pd.DataFrame(
        {"userId": [1, 2, 3], "neg_1": [1.0, 2, 3], "neg_2": [4.0, 5, 6], "neg_3": [7.0, 8.5, 9]}
    )
    frame.to_parquet(path)
    encoder = IdEncoder.fit(np.arange(1, 10))
    with pytest.raises(DataError, match=r"cand.parquet, row 2, column 'neg_3': id 8.5"):
        read_candidates(path, encoder, encoder)
