"""data/io.py: reading and validating interaction files, types kept, every bad input a clear
DataError; and the fast (pyarrow) path at 200k rows, which agrees with the general one."""

from __future__ import annotations

import os
import re

import numpy as np
import pandas as pd
import pytest
import torch

from hybridrec.config import DataConfig
from hybridrec.data import io
from hybridrec.data.dataset import RecSysDataset
from hybridrec.data.encoding import IdEncoder
from hybridrec.data.io import ITEM, USER, interactions_from_frame, read_interactions
from hybridrec.errors import DataError


def at(name, row, column):
    """Regex for the location prefix of a row error: file, row (maybe its line) and column."""
    return rf"{re.escape(name)}, row {row}(?: \(line \d+\))?, column '{column}'"


@pytest.mark.parametrize("name", ["data.csv", "data.parquet"])
def test_integer_ids_are_int64(tiny_csv, name):
    path = tiny_csv({"userId": [1, 3, 1], "itemId": [10, 20, 30], "target": [1, 0, 1]}, name)
    frame = read_interactions(path)
    assert frame["user_id"].dtype == np.int64
    assert frame["item_id"].dtype == np.int64
    assert frame["user_id"].tolist() == [1, 3, 1]
    assert frame["item_id"].tolist() == [10, 20, 30]
    assert frame["target"].dtype == np.float32
    assert frame["target"].tolist() == [1.0, 0.0, 1.0]
    assert frame.attrs["has_target"] is True


@pytest.mark.parametrize("name", ["data.csv", "data.parquet"])
def test_string_ids_stay_strings(tiny_csv, name):
    path = tiny_csv({"userId": ["alice", "bob"], "itemId": ["x1", "y2"], "target": [1, 0]}, name)
    frame = read_interactions(path)
    assert frame["user_id"].tolist() == ["alice", "bob"]
    assert frame["item_id"].tolist() == ["x1", "y2"]
    assert all(isinstance(v, str) for v in frame["user_id"])


@pytest.mark.parametrize("name", ["data.csv", "data.parquet"])
def test_leading_zero_id_stays_a_string(tiny_csv, name):
    """'007' is not the canonical text of an integer, so turning it into 7 would merge ids."""
    path = tiny_csv({"userId": ["007", "7"], "itemId": ["1", "2"], "target": ["1", "0"]}, name)
    frame = read_interactions(path)
    assert frame["user_id"].tolist() == ["007", "7"]
    assert all(isinstance(v, str) for v in frame["user_id"])
    # the item column is all canonical integers, so it becomes int64 independently
    assert frame["item_id"].dtype == np.int64


def test_minus_zero_is_not_the_id_zero(tiny_csv):
    path = tiny_csv("userId,itemId,target\n0,1,1\n-0,2,0\n")
    frame = read_interactions(path)
    assert frame["user_id"].nunique() == 2


def test_mixed_integer_and_text_ids_all_stay_strings(tiny_csv):
    path = tiny_csv("userId,itemId,target\n1,a,1\n2,5,0\n")
    frame = read_interactions(path)
    assert frame["user_id"].tolist() == [1, 2]
    assert frame["item_id"].tolist() == ["a", "5"]


def test_whitespace_around_ids_is_stripped(tiny_csv):
    path = tiny_csv("userId,itemId,target\n 1 ,  b ,1\n")
    frame = read_interactions(path)
    assert frame["user_id"].tolist() == [1]
    assert frame["item_id"].tolist() == ["b"]


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        (["0", "1"], [0.0, 1.0]),
        (["true", "false"], [1.0, 0.0]),
        (["True", "FALSE"], [1.0, 0.0]),
        (["yes", "no"], [1.0, 0.0]),
        (["1.0", "0.0"], [1.0, 0.0]),
    ],
)
def test_target_accepts_binary_spellings(tiny_csv, cells, expected):
    path = tiny_csv(f"userId,itemId,target\n1,2,{cells[0]}\n3,4,{cells[1]}\n")
    assert read_interactions(path)["target"].tolist() == expected


def test_parquet_boolean_target(tiny_csv):
    path = tiny_csv({"userId": [1, 2], "itemId": [3, 4], "target": [True, False]}, "d.parquet")
    assert read_interactions(path)["target"].tolist() == [1.0, 0.0]


@pytest.mark.parametrize("name", ["data.csv", "data.parquet"])
def test_missing_target_column_means_all_positives(tiny_csv, name):
    path = tiny_csv({"userId": [1, 2, 3], "itemId": [4, 5, 6]}, name)
    frame = read_interactions(path)
    assert frame["target"].tolist() == [1.0, 1.0, 1.0]
    assert frame["target"].dtype == np.float32
    assert frame.attrs["has_target"] is False


def test_threshold_turns_ratings_into_labels(tiny_csv):
    path = tiny_csv(
        {"userId": [1, 1, 2, 2, 3], "itemId": [1, 2, 1, 2, 3], "target": [5, 4, 3.5, 1, 4.0]}
    )
    frame = read_interactions(path, DataConfig(threshold=4))
    # target >= threshold is positive: 4 and 4.0 count, 3.5 does not
    assert frame["target"].tolist() == [1.0, 1.0, 0.0, 0.0, 1.0]


def test_without_threshold_ratings_are_rejected(tiny_csv):
    path = tiny_csv({"userId": [1], "itemId": [2], "target": [5]})
    with pytest.raises(DataError, match="--threshold"):
        read_interactions(path)


def test_custom_column_names(tiny_csv):
    path = tiny_csv({"uid": ["a", "b"], "iid": [7, 8], "clicked": ["true", "false"], "x": [0, 0]})
    config = DataConfig(user_col="uid", item_col="iid", target_col="clicked")
    frame = read_interactions(path, config)
    assert list(frame.columns) == ["user_id", "item_id", "target"]
    assert frame["user_id"].tolist() == ["a", "b"]
    assert frame["item_id"].tolist() == [7, 8]
    assert frame["target"].tolist() == [1.0, 0.0]


def test_tsv_is_read_with_tabs(tiny_csv):
    path = tiny_csv("userId\titemId\ttarget\n1\t2\t1\n", "data.tsv")
    assert read_interactions(path)["item_id"].tolist() == [2]


def test_numeric_timestamp_is_kept(tiny_csv):
    path = tiny_csv("userId,itemId,target,timestamp\n1,2,1,1600000000\n1,3,0,1600000060\n")
    assert read_interactions(path)["timestamp"].tolist() == [1600000000.0, 1600000060.0]


def test_date_timestamp_becomes_unix_seconds(tiny_csv):
    path = tiny_csv("userId,itemId,target,timestamp\n1,2,1,2020-01-01\n1,3,0,2020-01-02\n")
    assert read_interactions(path)["timestamp"].tolist() == [1577836800, 1577923200]


def test_iso_dates_in_two_layouts_are_accepted(tiny_csv):
    path = tiny_csv("userId,itemId,target,timestamp\n1,2,1,2020-01-01\n1,3,0,2020-01-02T00:00:00\n")
    assert len(read_interactions(path)["timestamp"]) == 2


def test_dates_of_years_1_and_9999_are_unix_seconds(tiny_csv):
    """Beyond nanoseconds' years 1677-2262, the reader's microseconds still hold them."""
    path = tiny_csv("userId,itemId,target,timestamp\n1,2,1,9999-12-31\n1,3,0,0001-01-01\n")
    assert read_interactions(path)["timestamp"].tolist() == [253402214400.0, -62135596800.0]


@pytest.mark.parametrize("word", ["now", "today"])
def test_words_pandas_reads_as_the_clock_are_not_dates(tiny_csv, word):
    path = tiny_csv(f"userId,itemId,target,timestamp\n1,2,1,2020-01-01\n1,3,0,{word}\n")
    with pytest.raises(DataError, match=at("data.csv", 2, "timestamp") + f".*'{word}'"):
        read_interactions(path)


@pytest.mark.filterwarnings("ignore:Could not infer format:UserWarning")
def test_bad_timestamp_names_row(tiny_csv):
    path = tiny_csv("userId,itemId,target,timestamp\n1,2,1,5\n1,3,0,soon\n")
    with pytest.raises(DataError, match=at("data.csv", 2, "timestamp") + ".*'soon'"):
        read_interactions(path)


# ------------------------------------------------------------------ in-memory frames


def test_interactions_from_frame():
    raw = pd.DataFrame({"userId": [1, 2], "itemId": ["a", "b"], "target": [1, 0]})
    frame = interactions_from_frame(raw)
    assert frame["user_id"].dtype == np.int64
    assert frame["user_id"].tolist() == [1, 2]
    assert frame["item_id"].tolist() == ["a", "b"]
    assert frame["target"].tolist() == [1.0, 0.0]
    assert frame.attrs["has_target"] is True


def test_interactions_from_frame_whole_float_ids_become_int():
    raw = pd.DataFrame({"userId": [1.0, 2.0], "itemId": [3, 4]})
    frame = interactions_from_frame(raw)
    assert frame["user_id"].dtype == np.int64
    assert frame["user_id"].tolist() == [1, 2]
    assert frame.attrs["has_target"] is False


def test_interactions_from_frame_errors_name_the_frame():
    raw = pd.DataFrame({"userId": [1, 2], "itemId": [3, 4], "target": [1, 7]})
    with pytest.raises(DataError, match=at("<DataFrame>", 2, "target")) as info:
        interactions_from_frame(raw)
    assert info.value.row == 2
    assert info.value.column == "target"
    assert "line" not in str(info.value)  # a frame has no file lines


def test_interactions_from_frame_fractional_id():
    raw = pd.DataFrame({"userId": [1.0, 2.5], "itemId": [3, 4]})
    with pytest.raises(DataError, match=at("<DataFrame>", 2, "userId") + ".*not a whole number"):
        interactions_from_frame(raw)


def test_boolean_ids_are_rejected():
    raw = pd.DataFrame({"userId": [True, False], "itemId": [3, 4]})
    with pytest.raises(DataError, match=r"column 'userId'.*booleans"):
        interactions_from_frame(raw)


# ------------------------------------------------------------------ bad files


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        read_interactions(tmp_path / "nope.csv")


def test_directory(tmp_path):
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(DataError, match=r"folder\.csv: .* is a directory"):
        read_interactions(tmp_path / "folder.csv")


@pytest.mark.parametrize("name", ["empty.csv", "empty.parquet"])
def test_empty_file(tiny_csv, name):
    path = tiny_csv("", name)
    assert path.stat().st_size == 0
    with pytest.raises(DataError, match=rf"{re.escape(name)}: the file is empty"):
        read_interactions(path)


def test_blank_line_only_file(tiny_csv):
    path = tiny_csv("\n", "blank.csv")
    with pytest.raises(DataError, match=r"blank\.csv: the file is empty"):
        read_interactions(path)


@pytest.mark.parametrize("name", ["head.csv", "head.parquet"])
def test_header_only(tiny_csv, name):
    path = tiny_csv(pd.DataFrame({"userId": [], "itemId": [], "target": []}), name)
    with pytest.raises(DataError, match=rf"{re.escape(name)}: has (a header but )?no rows"):
        read_interactions(path)


def test_missing_columns_lists_missing_and_found(tiny_csv):
    path = tiny_csv({"user": [1], "itemId": [2], "rating": [1]})
    with pytest.raises(DataError) as info:
        read_interactions(path)
    message = str(info.value)
    assert message.startswith("data.csv: missing column(s) 'userId'")
    assert "found 'user', 'itemId', 'rating'" in message
    assert "--user-col" in message


def test_missing_both_id_columns(tiny_csv):
    path = tiny_csv({"a": [1], "b": [2]})
    with pytest.raises(DataError, match=r"missing column\(s\) 'userId', 'itemId'; found 'a', 'b'"):
        read_interactions(path)


@pytest.mark.parametrize("cell", ["", "   "])
def test_blank_id_names_row_and_column(tiny_csv, cell):
    path = tiny_csv(f"userId,itemId,target\n1,2,1\n3,4,0\n5,{cell},1\n")
    with pytest.raises(DataError, match=at("data.csv", 3, "itemId") + ": blank id") as info:
        read_interactions(path)
    assert info.value.row == 3
    assert info.value.column == "itemId"
    assert info.value.line == 4  # the header is line 1
    assert "line 4" in str(info.value)


def test_short_row_is_reported_not_crashed(tiny_csv):
    path = tiny_csv("userId,itemId,target\n1,2,1\n7\n")
    with pytest.raises(DataError, match=at("data.csv", 2, "itemId")):
        read_interactions(path)


@pytest.mark.parametrize("user_ids", [[1.0, None, 3.0], ["a", None, "c"]])
def test_null_id_in_parquet(tiny_csv, user_ids):
    path = tiny_csv({"userId": user_ids, "itemId": [1, 2, 3], "target": [1, 0, 1]}, "d.parquet")
    with pytest.raises(DataError, match=at("d.parquet", 2, "userId") + ": missing id") as info:
        read_interactions(path)
    assert info.value.row == 2
    assert info.value.line is None  # Parquet has no text lines


def test_target_two_names_row_value_and_threshold(tiny_csv):
    path = tiny_csv("userId,itemId,target\n1,2,1\n1,3,2\n")
    with pytest.raises(
        DataError, match=at("data.csv", 2, "target") + ": target '2' is not 0/1.*--threshold"
    ):
        read_interactions(path)


def test_target_two_in_parquet(tiny_csv):
    path = tiny_csv({"userId": [1, 2], "itemId": [3, 4], "target": [1, 2]}, "d.parquet")
    with pytest.raises(DataError, match=at("d.parquet", 2, "target") + ".*2.*--threshold"):
        read_interactions(path)


def test_parquet_error_shows_the_plain_value(tiny_csv):
    path = tiny_csv({"userId": [1, 2], "itemId": [3, 4], "target": [1, 2]}, "d.parquet")
    with pytest.raises(DataError) as info:
        read_interactions(path)
    assert "np." not in str(info.value)


def test_missing_target_cell(tiny_csv):
    path = tiny_csv("userId,itemId,target\n1,2,1\n1,3,\n")
    with pytest.raises(DataError, match=at("data.csv", 2, "target") + ": missing target"):
        read_interactions(path)


def test_non_numeric_rating_with_threshold(tiny_csv):
    path = tiny_csv("userId,itemId,target\n1,2,4\n1,3,4.5\n1,4,great\n")
    with pytest.raises(
        DataError, match=at("data.csv", 3, "target") + ": target 'great' is not a number"
    ):
        read_interactions(path, DataConfig(threshold=4))


def test_too_many_fields_is_unparseable_csv(tiny_csv):
    path = tiny_csv("userId,itemId,target\n1,2,1\n1,2,1,9\n")
    with pytest.raises(DataError, match=r"data\.csv: cannot be parsed as CSV"):
        read_interactions(path)


def test_binary_garbage_is_unparseable_csv(tmp_path):
    path = tmp_path / "bin.csv"
    path.write_bytes(b"userId,itemId\n\xff\xfe,\x80\n")
    with pytest.raises(DataError, match=r"bin\.csv: cannot be parsed as CSV"):
        read_interactions(path)


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(np.random.default_rng(0).bytes(256))
    with pytest.raises(DataError, match=r"broken\.parquet: cannot be parsed as Parquet"):
        read_interactions(path)


def test_data_error_is_a_value_error(tmp_path):
    """Callers that catch ValueError (the usual pandas habit) still catch bad data."""
    with pytest.raises(ValueError):
        read_interactions(tmp_path / "missing.csv")


@pytest.mark.parametrize(
    "text",
    [
        "userId,itemId,itemId\n1,2,3\n",  # pyarrow's reader
        "userId,itemId,itemId\n1,2,3\n4,5\n",  # a short row: pandas' reader, which renames
    ],
)
def test_repeated_column_names_are_refused(tiny_csv, text):
    """Which of two 'itemId' columns is meant would be a guess (pandas renames one)."""
    path = tiny_csv(text)
    with pytest.raises(DataError, match=r"column name 'itemId' appears twice \(columns 2 and 3\)"):
        read_interactions(path)


def test_utf8_bom_and_quoted_header(tiny_csv, tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes('\ufeff"userId","itemId",target\n"1",2,1\n'.encode())
    frame = read_interactions(path)
    assert frame["user_id"].tolist() == [1]
    assert frame["item_id"].tolist() == [2]


# ---------------------------------------------------------------- at scale: the fast path
# The same encoding as a simple reference, the same tensors from CSV and Parquet, and the
# same frames and errors as the general pandas path. No timing assertions: the timings live
# in benchmarks/bench_load.py.


ROWS = 200_000


@pytest.fixture(scope="module")
def big_files(tmp_path_factory):
    """``(frame, csv path, parquet path)``: 200k rows over sparse integer ids."""
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "userId": rng.integers(1, 20_000, ROWS) * 3,  # gaps between ids
            "itemId": rng.integers(0, 5_000, ROWS) - 100,  # negative ids and 0 too
            "target": rng.integers(0, 2, ROWS),
            "timestamp": rng.integers(789_652_009, 1_427_784_002, ROWS),
        }
    )
    directory = tmp_path_factory.mktemp("scale")
    csv, parquet = directory / "big.csv", directory / "big.parquet"
    frame.to_csv(csv, index=False)
    frame.to_parquet(parquet, index=False)
    return frame, csv, parquet


def encode(path):
    frame = read_interactions(path)
    users = IdEncoder.fit(frame[USER].to_numpy())
    items = IdEncoder.fit(frame[ITEM].to_numpy())
    data, counts = RecSysDataset.from_frame(frame, users, items)
    return frame, users, items, data, counts


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_encoding_matches_sorted_factorize(big_files, kind):
    raw, csv, parquet = big_files
    frame, users, items, data, counts = encode(csv if kind == "csv" else parquet)
    assert frame[USER].dtype == np.int64 and frame[ITEM].dtype == np.int64
    for column, encoder, idx in (
        ("userId", users, data.user_idx),
        ("itemId", items, data.item_idx),
    ):
        codes, uniques = pd.factorize(raw[column], sort=True)
        assert encoder.ids.tolist() == uniques.tolist()
        assert idx.dtype == torch.int64
        assert np.array_equal(idx.numpy(), codes + 1)  # 0 stays the unknown index
    assert np.array_equal(data.target.numpy(), raw["target"].to_numpy(dtype=np.float32))
    assert np.array_equal(frame["timestamp"].to_numpy(), raw["timestamp"].to_numpy(np.float64))
    assert counts.rows == ROWS and counts.rows_with_unknown == 0


def test_csv_and_parquet_give_identical_tensors(big_files):
    _, csv, parquet = big_files
    *_, from_csv, _ = encode(csv)
    *_, from_parquet, _ = encode(parquet)
    for name in ("user_idx", "item_idx", "target"):
        a, b = getattr(from_csv, name), getattr(from_parquet, name)
        assert a.dtype == b.dtype
        assert torch.equal(a, b), name


def test_arrow_csv_reader_gives_pandas_frame(big_files):
    """The pyarrow reader is used for a well-formed file and reads it exactly as pandas."""
    _, csv, _ = big_files
    fast = io._read_csv_arrow(csv, ",")
    assert fast is not None
    slow = pd.read_csv(csv, dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(fast, slow)


def test_fast_and_general_paths_agree_on_large_frames(big_files):
    """Arrow text columns (the CSV fast path) and plain object columns (the general path)
    validate to the same frame."""
    _, csv, _ = big_files
    fast = read_interactions(csv)
    text = pd.read_csv(csv, dtype=object, keep_default_na=False)
    general = interactions_from_frame(text, source=csv)
    pd.testing.assert_frame_equal(fast, general)


@pytest.mark.parametrize(
    ("column", "cell", "message"),
    [
        ("itemId", "", "blank id"),
        ("userId", "   ", "blank id"),
        ("target", "", "missing target"),
        ("target", "2", "target '2' is not 0/1"),
        ("timestamp", "soon", "timestamp 'soon' is neither a number nor a date"),
    ],
)
def test_bad_cell_deep_in_a_large_file_names_its_row(big_files, tmp_path, column, cell, message):
    """Errors keep their exact row and line far past the reader's first block."""
    raw, _, _ = big_files
    text = raw.astype(str)
    row = 150_001  # 1-based data row
    text.loc[row - 1, column] = cell
    path = tmp_path / "bad.csv"
    text.to_csv(path, index=False)
    expected = rf"bad\.csv, row {row} \(line {row + 1}\), column '{column}': {re.escape(message)}"
    with pytest.raises(DataError, match=expected):
        read_interactions(path)


TOKENS = ["1", "2", "10", " 3 ", "007", "-0", "-5", "x", "y z", "", "  ", "nan", "True", "no"]
TARGETS = ["1", "0", "true", "FALSE", " yes", "no ", "1.0", "0.0", "2", "", "nan", "maybe"]
TIMES = ["1600000000", "1.5", "2020-01-01", "-3", "", "soon", "nan", "1e9"]


def outcome(read):
    try:
        frame = read()
    except DataError as exc:
        return "error", str(exc)
    return "ok", frame.to_dict("list"), frame.attrs["has_target"]


@pytest.mark.filterwarnings("ignore:Could not infer format:UserWarning")
@pytest.mark.parametrize("seed", range(40))
def test_fast_path_matches_general_path_on_odd_cells(tmp_path, seed):
    """Random small files of odd cells: the Arrow path (file) and the general path (object
    columns) give the same frame, or the same error for the same row and column."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 6))
    cells = {
        "userId": rng.choice(TOKENS[:9] if seed % 2 else TOKENS, n),
        "itemId": rng.choice(TOKENS[:3] if seed % 3 else TOKENS, n),
        "target": rng.choice(TARGETS[:8] if seed % 4 else TARGETS, n),
        "timestamp": rng.choice(TIMES[:4] if seed % 5 else TIMES, n),
    }
    path = tmp_path / "odd.csv"
    pd.DataFrame(cells).to_csv(path, index=False)
    for config in (DataConfig(), DataConfig(threshold=1)):
        fast = outcome(lambda c=config: read_interactions(path, c))
        text = pd.read_csv(path, dtype=object, keep_default_na=False)
        general = outcome(lambda c=config, t=text: interactions_from_frame(t, c, source=path))
        assert fast == general


def test_quoted_line_breaks_across_reader_blocks(tmp_path):
    """Values with line breaks (a free-text column) are read as pandas reads them, even when
    a value straddles two of pyarrow's 1 MiB blocks."""
    rng = np.random.default_rng(0)
    n = 100_000
    notes = np.where(rng.random(n) < 0.3, 'line one\nline, "two"', "plain")
    frame = pd.DataFrame({"userId": np.arange(n), "itemId": rng.integers(1, 99, n), "note": notes})
    path = tmp_path / "notes.csv"
    frame.to_csv(path, index=False)
    expected = pd.read_csv(path, dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(io.read_table(path), expected)
    assert read_interactions(path)["user_id"].tolist() == list(range(n))


# ---------------------------------------------------------------- typed (Parquet) columns
# Every Parquet column type is either read by the rules of its CSV text or refused with the
# file, row and column named: nothing may be reinterpreted silently (e.g. two float ids
# beyond int64 becoming the same integer, a list id becoming its repr string).


def write_parquet(tmp_path, columns, names=None, name="data.parquet"):
    """A Parquet file of pyarrow ``columns`` (arrays), optionally with repeated ``names``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = names or list(columns)
    arrays = list(columns.values()) if isinstance(columns, dict) else columns
    table = pa.Table.from_arrays([pa.array(a) if isinstance(a, list) else a for a in arrays], names)
    path = tmp_path / name
    pq.write_table(table, path)
    return path


ITEMS = [1, 2, 3]


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([1.0, 1.5, 2.0], r"row 2, column 'userId': id 1\.5 is not a whole number"),
        ([1.0, float("nan"), 2.0], r"row 2, column 'userId': missing id"),
        ([1.0, 2.0, float("inf")], r"row 3, column 'userId': id inf is not a finite number"),
        ([1.0, -float("inf"), 2.0], r"row 2, column 'userId': id -inf is not a finite number"),
        ([1e19, 2e19, 1.0], r"row 1, column 'userId': id 1e\+19 is beyond 2\^53"),
        ([1.0, 2.0**53 + 2, 3.0], r"row 2, column 'userId': id 9007199254740994\.0 is beyond"),
    ],
)
def test_bad_float_ids_name_their_row(tmp_path, ids, message):
    path = write_parquet(tmp_path, {"userId": ids, "itemId": ITEMS})
    with pytest.raises(DataError, match=message):
        read_interactions(path)


def test_whole_float_ids_are_integers(tmp_path):
    path = write_parquet(tmp_path, {"userId": [1.0, -0.0, 2.0**53], "itemId": ITEMS})
    frame = read_interactions(path)
    assert frame["user_id"].dtype == np.int64
    assert frame["user_id"].tolist() == [1, 0, 2**53]


def test_ids_beyond_int64_are_refused_not_wrapped(tmp_path):
    import pyarrow as pa

    ids = pa.array([5, 2**64 - 1, 2**63], type=pa.uint64())
    path = write_parquet(tmp_path, {"userId": ids, "itemId": ITEMS})
    with pytest.raises(
        DataError, match=r"row 2, column 'userId': id 18446744073709551615 is beyond"
    ):
        read_interactions(path)


def test_uint64_ids_within_int64_are_read(tmp_path):
    import pyarrow as pa

    ids = pa.array([5, 2**63 - 1, 0], type=pa.uint64())
    frame = read_interactions(write_parquet(tmp_path, {"userId": ids, "itemId": ITEMS}))
    assert frame["user_id"].tolist() == [5, 2**63 - 1, 0]


def test_python_ints_beyond_int64_in_a_frame_are_refused():
    raw = pd.DataFrame({"userId": pd.Series([1, 2**70], dtype=object), "itemId": [1, 2]})
    with pytest.raises(DataError, match=r"row 2, column 'userId': id 1180591620717411303424"):
        interactions_from_frame(raw)


@pytest.mark.parametrize(
    ("cells", "kind"),
    [
        ([[1], [2], [3]], "list"),
        ([{"a": 1}, {"a": 2}, {"a": 3}], "dict"),
    ],
)
def test_nested_id_columns_are_refused(tmp_path, cells, kind):
    path = write_parquet(tmp_path, {"userId": [1, 2, 3], "itemId": cells})
    with pytest.raises(DataError, match=rf"row 1, column 'itemId': id .* is a {kind}"):
        read_interactions(path)


def test_nested_target_and_timestamp_are_refused(tmp_path):
    path = write_parquet(tmp_path, {"userId": [1, 2, 3], "itemId": ITEMS, "target": [[1]] * 3})
    with pytest.raises(DataError, match=r"row 1, column 'target': target \[1\] is a list"):
        read_interactions(path)
    path = write_parquet(tmp_path, {"userId": [1, 2, 3], "itemId": ITEMS, "timestamp": [[1]] * 3})
    with pytest.raises(DataError, match=r"row 1, column 'timestamp': timestamp \[1\] is a list"):
        read_interactions(path)


def test_an_unused_nested_column_is_ignored(tmp_path):
    path = write_parquet(tmp_path, {"userId": [1, 2, 3], "itemId": ITEMS, "tags": [["a"]] * 3})
    assert read_interactions(path)["user_id"].tolist() == [1, 2, 3]


def test_date_ids_are_refused(tmp_path):
    import datetime

    days = [datetime.date(2020, 1, d) for d in (1, 2, 3)]
    path = write_parquet(tmp_path, {"userId": days, "itemId": ITEMS})
    with pytest.raises(DataError, match=r"row 1, column 'userId': id datetime\.date\(2020, 1, 1\)"):
        read_interactions(path)


def test_repeated_parquet_column_names_are_refused(tmp_path):
    path = write_parquet(tmp_path, [[1, 2], [3, 4], [5, 6]], names=["userId", "itemId", "userId"])
    with pytest.raises(DataError, match=r"column name 'userId' appears twice \(columns 1 and 3\)"):
        read_interactions(path)


def test_repeated_frame_column_names_are_refused():
    raw = pd.DataFrame([[1, 2, 3]], columns=["userId", "itemId", "itemId"])
    with pytest.raises(DataError, match=r"'itemId' appears twice"):
        interactions_from_frame(raw)


def test_dictionary_and_categorical_columns_read_as_their_values(tmp_path):
    import pyarrow as pa

    users = pa.array(["b", "a", "b"]).dictionary_encode()
    items = pa.array([7, 8, 7]).dictionary_encode()
    target = pa.array(["1", "0", "1"]).dictionary_encode()
    path = write_parquet(tmp_path, {"userId": users, "itemId": items, "target": target})
    frame = read_interactions(path)
    assert frame["user_id"].tolist() == ["b", "a", "b"]
    assert frame["item_id"].dtype == np.int64
    assert frame["item_id"].tolist() == [7, 8, 7]
    assert frame["target"].tolist() == [1.0, 0.0, 1.0]
    raw = pd.DataFrame({"userId": pd.Categorical(["x", "y"]), "itemId": pd.Categorical([3, 4])})
    frame = interactions_from_frame(raw)
    assert frame["user_id"].tolist() == ["x", "y"]
    assert frame["item_id"].tolist() == [3, 4]


def test_decimal_and_binary_ids(tmp_path):
    from decimal import Decimal

    path = write_parquet(tmp_path, {"userId": [Decimal(5), Decimal(6)], "itemId": [b"x", b"y"]})
    frame = read_interactions(path)
    assert frame["user_id"].tolist() == [5, 6]
    assert frame["item_id"].tolist() == ["x", "y"]
    path = write_parquet(tmp_path, {"userId": [Decimal("5.5"), Decimal(6)], "itemId": [1, 2]})
    with pytest.raises(DataError, match=r"row 1, column 'userId': id 5\.5 is not a whole number"):
        read_interactions(path)


JAN_1_2020 = 1577836800.0


@pytest.mark.parametrize(
    "stamps",
    [
        ["2020-01-01", "2020-01-02"],
        pd.to_datetime(["2020-01-01", "2020-01-02"]),  # timestamp[ns], naive: taken as UTC
        pd.to_datetime(["2020-01-01 01:00", "2020-01-02 01:00"]).tz_localize("Europe/Paris"),
        [pd.Timestamp("2020-01-01").date(), pd.Timestamp("2020-01-02").date()],  # date32
    ],
)
def test_parquet_timestamps_of_every_kind_are_unix_seconds(tmp_path, stamps):
    """As a CSV's ISO dates: seconds, not the microseconds or nanoseconds of the storage."""
    import pyarrow as pa

    path = write_parquet(
        tmp_path, {"userId": [1, 2], "itemId": [3, 4], "timestamp": pa.array(stamps)}
    )
    assert read_interactions(path)["timestamp"].tolist() == [JAN_1_2020, JAN_1_2020 + 86400]


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("inf", r"row 2 \(line 3\), column 'timestamp': timestamp 'inf' is not finite"),
        ("1e400", r"row 2 \(line 3\), column 'timestamp': timestamp '1e400' is not finite"),
        ("", r"row 2 \(line 3\), column 'timestamp': blank timestamp"),
    ],
)
def test_non_finite_or_blank_timestamps_name_their_row(tiny_csv, cell, message):
    path = tiny_csv(f"userId,itemId,timestamp\n1,2,5\n1,3,{cell}\n")
    with pytest.raises(DataError, match=message):
        read_interactions(path)


def test_numbers_among_dates_are_refused(tiny_csv):
    path = tiny_csv("userId,itemId,timestamp\n1,2,2020-01-01\n1,3,1600000000\n")
    with pytest.raises(DataError, match=r"row 2 \(line 3\).*'1600000000' is a number among dates"):
        read_interactions(path)


def test_parquet_non_finite_timestamp(tmp_path):
    path = write_parquet(tmp_path, {"userId": [1, 2], "itemId": [3, 4], "timestamp": [1.0, np.inf]})
    with pytest.raises(DataError, match=r"row 2, column 'timestamp': timestamp inf is not finite"):
        read_interactions(path)


def test_parquet_durations_are_no_timestamps(tmp_path):
    """A length of time read as seconds since 1970 would order nothing meaningfully."""
    import pyarrow as pa

    stamps = pa.array([1, 2], type=pa.duration("s"))
    path = write_parquet(tmp_path, {"userId": [1, 2], "itemId": [3, 4], "timestamp": stamps})
    with pytest.raises(DataError, match=r"timestamps are durations"):
        read_interactions(path)


def test_parquet_without_columns_or_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({}), tmp_path / "none.parquet")
    with pytest.raises(
        DataError, match=r"missing column\(s\) 'userId', 'itemId'; found no columns"
    ):
        read_interactions(tmp_path / "none.parquet")
    empty = {"userId": pa.array([], pa.int64()), "itemId": pa.array([], pa.int64())}
    path = write_parquet(tmp_path, empty, name="rows.parquet")
    with pytest.raises(DataError, match=r"rows\.parquet: has no rows"):
        read_interactions(path)


# ---------------------------------------------------------------- the target column, asked for


@pytest.mark.parametrize(
    ("config", "why"),
    [
        (
            DataConfig(target_col="label"),
            "missing target column 'label' \\(named by --target-col\\)",
        ),
        (DataConfig(threshold=4), "missing target column 'target' \\(--threshold needs it\\)"),
    ],
)
def test_a_target_column_asked_for_must_exist_in_labelled_files(tiny_csv, config, why):
    """A mistyped --target-col would otherwise train every row as a positive."""
    path = tiny_csv({"userId": [1, 2], "itemId": [3, 4], "rating": [5, 1]})
    with pytest.raises(DataError, match=rf"data\.csv: {why}; found 'userId', 'itemId', 'rating'"):
        read_interactions(path, config)
    # a file of positives (a held-out test set) may lack it
    frame = read_interactions(path, config, labels=False)
    assert frame["target"].tolist() == [1.0, 1.0]
    assert frame.attrs["has_target"] is False


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_a_device_is_not_read(device):
    """/dev/zero would be read forever; /dev/null is not 'an empty file'."""
    with pytest.raises(DataError, match=rf"{device} is a device, not a file"):
        read_interactions(device)


def test_a_pipe_is_refused_not_waited_on(tmp_path):
    """``--train <(zcat train.csv.gz)`` hands over a pipe, which the readers (that look at
    the header first) cannot read twice: a clear error instead of a hang or 'empty'."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=r"is a pipe; write it to a file first"):
        read_interactions(fifo)


def test_an_unclosed_quote_is_an_error_not_the_rest_of_the_file_as_one_id(tmp_path):
    """pyarrow let a stray quote run to the end of the file: 5 of 300 rows trained, the
    rest one item id."""
    rows = [f"{u % 30 + 1},{u % 40 + 1}" for u in range(300)]
    rows[4] = '25,"23'
    path = tmp_path / "t.csv"
    path.write_text("userId,itemId\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match="t.csv: cannot be parsed as CSV: .*EOF inside string"):
        read_interactions(path)
    quoted = tmp_path / "q.csv"  # a real quoted line break is still read (by pandas)
    quoted.write_text('userId,itemId\n1,"a\nb"\n2,c\n')
    assert read_interactions(quoted)[ITEM].tolist() == ["a\nb", "c"]


@pytest.mark.parametrize(
    "text", ["userId,itemId\n5,1,1\n6,3,0\n", "userId,itemId,target\n11,21,1,\n12,22,0,\n"]
)
def test_rows_longer_than_the_header_are_refused_not_shifted(tmp_path, text):
    """pandas took the first field as an index and shifted the columns: users 5 and 6
    trained as items 1 and 3, with exit status 0."""
    path = tmp_path / "x.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=r"x.csv, row 1 \(line 2\): \d fields, more than"):
        read_interactions(path)


def test_line_numbers_count_blank_lines(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("userId,itemId,target\n1,2,1\n\n\n2,3,0\n3,4,5\n")
    with pytest.raises(DataError, match=r"b.csv, row 3 \(line 6\), column 'target'"):
        read_interactions(path)


def test_a_damaged_compressed_file_is_a_data_error_and_tsv_gz_is_tab_separated(tmp_path):
    import gzip

    text = "userId\titemId\n" + "".join(f"{u}\t{u % 7}\n" for u in range(1, 2000))
    (tmp_path / "ok.tsv.gz").write_bytes(gzip.compress(text.encode()))
    assert len(read_interactions(tmp_path / "ok.tsv.gz")) == 1999
    packed = gzip.compress(text.replace("\t", ",").encode())
    (tmp_path / "cut.csv.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataError, match="cut.csv.gz: cannot be read: Compressed file ended"):
        read_interactions(tmp_path / "cut.csv.gz")  # was an EOFError traceback


@pytest.mark.parametrize("name", ["Target", " target", "TARGET "])
def test_a_target_column_named_almost_target_is_an_error_not_all_positives(tmp_path, name):
    """Without a column named exactly 'target' the file is positives-only: its 0 rows
    trained as positives."""
    path = tmp_path / "t.csv"
    pd.DataFrame({"userId": [1, 2], "itemId": [3, 4], name: [1, 0]}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"no column 'target', but .* only in case or spaces"):
        read_interactions(path)
