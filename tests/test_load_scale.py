"""The fast (pyarrow, vectorised) loading path on 200k rows: same encoding as a simple
reference, the same tensors from CSV and Parquet, and the same frames and errors as the
general pandas path. No timing assertions: the timings live in benchmarks/bench_load.py."""

from __future__ import annotations

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
