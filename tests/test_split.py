"""data/split.py: train/val/test splits, hand-computed examples, the tie rule, and the
partition property."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridrec.data.io import ITEM, USER, read_interactions
from hybridrec.data.split import (
    METHODS,
    Split,
    cold_split,
    leave_one_out,
    ratio_split,
    split_three_ways,
    temporal_split,
    write_split,
)
from hybridrec.errors import ConfigError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
INTER = SHARED / "movielens-100k" / "ml-100k.inter"
LOO = SHARED / "movielens-100k-loo"


def make_frame(rows, *, timestamp: bool = True) -> pd.DataFrame:
    """A standard interaction frame from ``(user, item, timestamp[, target])`` tuples."""
    rows = [tuple(r) + (1.0,) * (4 - len(r)) for r in rows]
    users, items, stamps, targets = (
        (list(c) for c in zip(*rows, strict=True)) if rows else ([], [], [], [])
    )
    id_type = object if any(isinstance(u, str) for u in users + items) else np.int64
    frame = pd.DataFrame(
        {
            "user_id": np.array(users, dtype=id_type),
            "item_id": np.array(items, dtype=id_type),
            "target": np.array(targets, dtype=np.float32),
        }
    )
    if timestamp:
        frame["timestamp"] = np.array(stamps, dtype=np.float64)
    return frame


# Three users: user 1 has distinct times, user 2 has two items at its latest time, user 3 one row.
ROWS = [
    (1, 10, 100),  # 0
    (1, 11, 300),  # 1  user 1's latest
    (1, 12, 200),  # 2
    (2, 21, 50),  # 3  tie at 50 with row 4: item 21 > 20, so this is user 2's latest
    (2, 20, 50),  # 4
    (2, 22, 40),  # 5
    (3, 30, 10),  # 6  user 3's only row
]
FRAME = make_frame(ROWS)


def rows_at(positions):
    return [ROWS[p] for p in positions]


def as_rows(frame: pd.DataFrame):
    return [
        (int(u), int(i), int(t))
        for u, i, t in zip(frame["user_id"], frame["item_id"], frame["timestamp"], strict=True)
    ]


def assert_partition(frame: pd.DataFrame, *parts: pd.DataFrame) -> None:
    """The parts hold every input row exactly once: same rows, same index, same dtypes."""
    index = pd.Index([]).append([p.index for p in parts])
    assert not index.has_duplicates, "a row is in two parts"
    together = pd.concat(parts).sort_index()
    pd.testing.assert_frame_equal(together, frame)
    multiset = Counter(frame.itertuples(index=False))
    assert sum((Counter(p.itertuples(index=False)) for p in parts), Counter()) == multiset


# ---------------------------------------------------------------- known outputs


def test_leave_one_out_by_timestamp_known_output():
    split = leave_one_out(FRAME)
    assert isinstance(split, Split)
    assert as_rows(split.test) == rows_at([1, 3])
    assert as_rows(split.train) == rows_at([0, 2, 4, 5, 6])  # user 3 stays in train
    assert split.test.index.tolist() == [1, 3]
    assert_partition(FRAME, *split)


def test_leave_one_out_does_not_modify_its_input():
    before = FRAME.copy()
    leave_one_out(FRAME)
    pd.testing.assert_frame_equal(FRAME, before)


def test_ratio_split_by_timestamp_known_output():
    # floor(0.67 * 3) = 2 latest rows of users 1 and 2; floor(0.67 * 1) = 0 for user 3
    split = ratio_split(FRAME, test_fraction=0.67, by="timestamp")
    assert as_rows(split.test) == rows_at([1, 2, 3, 4])
    assert as_rows(split.train) == rows_at([0, 5, 6])
    # floor(0.5 * 3) = 1: the same rows as leave-one-out
    assert as_rows(ratio_split(FRAME, 0.5, by="timestamp").test) == rows_at([1, 3])
    assert ratio_split(FRAME, 0.0, by="timestamp").test.empty


def test_ratio_split_random_takes_the_floor_of_each_users_share():
    split = ratio_split(FRAME, test_fraction=0.67, by="random", seed=3)
    assert split.test["user_id"].value_counts().sort_index().to_dict() == {1: 2, 2: 2}
    assert_partition(FRAME, *split)


def test_temporal_split_known_output():
    # sorted times: 10 40 50 50 100 200 300; floor(0.3 * 7) = 2 -> cut at 200
    split = temporal_split(FRAME, test_fraction=0.3)
    assert as_rows(split.test) == rows_at([1, 2])
    assert as_rows(split.train) == rows_at([0, 3, 4, 5, 6])


def test_temporal_split_keeps_rows_at_the_cut_time_together():
    # floor(0.6 * 7) = 4 -> cut at the 4th latest time, 50, shared by rows 3 and 4: both go
    split = temporal_split(FRAME, test_fraction=0.6)
    assert as_rows(split.test) == rows_at([0, 1, 2, 3, 4])
    assert as_rows(split.train) == rows_at([5, 6])
    assert temporal_split(FRAME, test_fraction=0.1).test.empty  # floor(0.7) = 0


def test_split_three_ways_applies_the_method_twice():
    train, val, test = split_three_ways(FRAME, "loo")
    assert as_rows(test) == rows_at([1, 3])
    assert as_rows(val) == rows_at([2, 4])  # latest of what is left; 21 gone, so 20 at t=50
    assert as_rows(train) == rows_at([0, 5, 6])
    assert_partition(FRAME, train, val, test)


@pytest.mark.parametrize("method", ["loo", "loo-random"])
def test_leave_one_out_holds_out_positives_of_labelled_data(method):
    """A row labelled 0 is no item the user chose: it stays in train, and each user's
    held-out rows are positives (their latest ones, for loo)."""
    frame = make_frame([(1, 10, 1.0), (1, 11, 2.0), (1, 12, 3.0, 0.0), (1, 13, 0.5),
                        (2, 20, 1.0), (2, 21, 2.0, 0.0), (2, 22, 3.0), (2, 23, 0.5)])  # fmt: skip
    train, val, test = split_three_ways(frame, method)
    assert (test["target"] == 1).all() and (val["target"] == 1).all()
    assert set(train.loc[train["target"] == 0, "item_id"]) == {12, 21}
    assert_partition(frame, train, val, test)
    if method == "loo":
        assert sorted(test["item_id"]) == [11, 22] and sorted(val["item_id"]) == [10, 20]


# ---------------------------------------------------------------- ties and determinism


def test_ties_go_to_the_largest_item_id_by_value_not_by_text():
    frame = make_frame([(1, 9, 5), (1, 10, 5), (1, 2, 1)])
    assert as_rows(leave_one_out(frame).test) == [(1, 10, 5)]  # "9" > "10" as text, 10 > 9


def test_string_ids_tie_by_string_order():
    frame = make_frame([("u", "b", 5), ("u", "a10", 5), ("u", "c", 1)])
    test = leave_one_out(frame).test
    assert test["item_id"].tolist() == ["b"]


def test_identical_rows_tie_by_position_the_later_row_is_the_test_row():
    frame = make_frame([(1, 5, 7, 0.0), (1, 5, 7, 1.0), (1, 4, 1, 1.0)])
    test = leave_one_out(frame).test
    assert test.index.tolist() == [1]
    assert test["target"].tolist() == [1.0]


def test_leave_one_out_does_not_depend_on_row_order():
    shuffled = FRAME.sample(frac=1.0, random_state=1)
    assert sorted(as_rows(leave_one_out(shuffled).test)) == rows_at([1, 3])


def test_random_splits_are_seeded():
    for split in (
        lambda s: leave_one_out(FRAME, by="random", seed=s),
        lambda s: ratio_split(FRAME, 0.5, seed=s),
    ):
        assert split(7).test.index.tolist() == split(7).test.index.tolist()
        assert len({tuple(split(seed).test.index) for seed in range(20)}) > 1


def test_random_leave_one_out_picks_one_row_per_user_and_keeps_single_users():
    test = leave_one_out(FRAME, by="random", seed=0).test
    assert sorted(test["user_id"].tolist()) == [1, 2]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "split, hint",
    [
        (lambda f: leave_one_out(f), "--method loo-random"),
        (lambda f: ratio_split(f, 0.2, by="timestamp"), "--method ratio"),
        (lambda f: temporal_split(f, 0.2), "--method ratio"),
    ],
)
def test_time_splits_without_timestamps_say_what_to_use(split, hint):
    frame = make_frame(ROWS, timestamp=False)
    with pytest.raises(ConfigError, match=rf"no timestamp column; use {hint}"):
        split(frame)


def test_random_methods_need_no_timestamps():
    frame = make_frame(ROWS, timestamp=False)
    for method in ("loo-random", "ratio"):
        assert_partition(frame, *METHODS[method](frame, 0.5, 0))


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_bad_fraction(fraction):
    with pytest.raises(ConfigError, match="--test-fraction"):
        ratio_split(FRAME, fraction)
    with pytest.raises(ConfigError, match="--test-fraction"):
        temporal_split(FRAME, fraction)


def test_unknown_method_and_by():
    with pytest.raises(ConfigError, match="loo-random"):
        split_three_ways(FRAME, "nope")
    with pytest.raises(ConfigError, match="by must be"):
        leave_one_out(FRAME, by="nope")


# ---------------------------------------------------------------- partition property

frames = st.builds(
    lambda rows, text: make_frame(
        [(f"u{u}", f"i{i}", t, y) if text else (u, i, t, y) for u, i, t, y in rows]
    ),
    st.lists(
        st.tuples(
            st.integers(0, 4),
            st.integers(0, 5),
            st.integers(0, 3),
            st.sampled_from([0.0, 1.0]),
        ),
        max_size=25,
    ),
    st.booleans(),
)


@settings(max_examples=40, deadline=None)
@given(
    frame=frames,
    method=st.sampled_from(sorted(METHODS)),
    fraction=st.floats(0.0, 0.9),
    seed=st.integers(0, 2**16),
)
def test_every_method_partitions_the_rows(frame, method, fraction, seed):
    rest, test = METHODS[method](frame, fraction, seed)
    assert_partition(frame, rest, test)
    train, val, test = split_three_ways(frame, method, fraction, seed=seed)
    assert_partition(frame, train, val, test)


@settings(max_examples=40, deadline=None)
@given(frame=frames, method=st.sampled_from(["loo", "loo-random"]), seed=st.integers(0, 99))
def test_loo_holds_out_exactly_one_row_of_each_user_with_several(frame, method, seed):
    _, test = METHODS[method](frame, 0.2, seed)
    counts = frame["user_id"].value_counts()
    assert sorted(test["user_id"].tolist()) == sorted(counts.index[counts >= 2].tolist())


@settings(max_examples=40, deadline=None)
@given(frame=frames, seed=st.integers(0, 99))
def test_loo_test_row_is_a_latest_row_of_its_user(frame, seed):
    _, test = leave_one_out(frame)
    latest = frame.groupby("user_id")["timestamp"].max()
    assert (test["timestamp"].to_numpy() == latest[test["user_id"]].to_numpy()).all()
    shuffled = frame.sample(frac=1.0, random_state=seed)
    assert triples(leave_one_out(shuffled).test) == triples(test)  # row order does not matter


def triples(frame: pd.DataFrame) -> list[tuple]:
    return sorted(frame[["user_id", "item_id", "timestamp"]].itertuples(index=False, name=None))


# ---------------------------------------------------------------- writing


def test_write_split_round_trips_through_read_interactions(tmp_path):
    train, val, test = split_three_ways(FRAME, "loo")
    paths = write_split(tmp_path / "out", train, val, test)
    assert [p.name for p in paths] == ["train.csv", "val.csv", "test.csv"]
    assert paths[0].read_text().splitlines()[:2] == ["userId,itemId,target,timestamp", "1,10,1,100"]
    for part, path in zip((train, val, test), paths, strict=True):
        back = read_interactions(path)
        pd.testing.assert_frame_equal(
            back, part.reset_index(drop=True), check_dtype=True, check_like=False
        )
    assert not list((tmp_path / "out").glob(".*.tmp"))  # no temp files left behind


def test_write_split_restores_column_names_and_omits_missing_timestamp(tmp_path):
    frame = make_frame(ROWS, timestamp=False)
    train, val, test = split_three_ways(frame, "loo-random", seed=0)
    paths = write_split(tmp_path, train, val, test, user_col="uid", item_col="movie")
    assert paths[2].read_text().splitlines()[0] == "uid,movie,target"


# ---------------------------------------------------------------- the benchmark split


@pytest.mark.skipif(
    not (INTER.is_file() and (LOO / "test.csv").is_file()),
    reason=f"MovieLens-100K is not in {SHARED} (it may not be redistributed; see its README)",
)
def test_leave_one_out_reproduces_the_movielens_100k_loo_benchmark():
    from hybridrec.data.movielens import read_atomic_inter

    ratings = read_atomic_inter(INTER)
    split = leave_one_out(ratings)
    expected = pd.read_csv(LOO / "test.csv")
    got = sorted(zip(split.test["user_id"].tolist(), split.test["item_id"].tolist(), strict=True))
    assert got == sorted(zip(expected["userId"].tolist(), expected["itemId"].tolist(), strict=True))
    assert len(split.train) == 99_057

    _, val, _ = split_three_ways(ratings, "loo")
    expected_val = pd.read_csv(LOO / "val" / "test.csv")
    got_val = sorted(zip(val["user_id"].tolist(), val["item_id"].tolist(), strict=True))
    assert got_val == sorted(
        zip(expected_val["userId"].tolist(), expected_val["itemId"].tolist(), strict=True)
    )


@pytest.mark.parametrize("by", ["item", "user"])
def test_cold_split_holds_out_every_row_of_the_chosen_ids(by):
    rng = np.random.default_rng(0)
    users, items = rng.integers(1, 30, 400), rng.integers(1, 50, 400)
    frame = make_frame(
        [(int(u), int(i), t) for u, i, t in zip(users, items, range(400), strict=True)]
    )
    train, test = cold_split(frame, by, test_fraction=0.2, seed=3)
    assert_partition(frame, train, test)
    column = ITEM if by == "item" else USER
    held, kept = set(test[column]), set(train[column])
    assert held and not held & kept  # no held-out id has a training row
    assert len(held) == int(0.2 * frame[column].nunique())
    again, _ = cold_split(frame, by, test_fraction=0.2, seed=3)
    assert again.index.equals(train.index)
    train3, val, test3 = split_three_ways(frame, f"cold-{by}s", test_fraction=0.2)
    assert not set(val[column]) & set(train3[column])
    assert not set(test3[column]) & (set(train3[column]) | set(val[column]))
