"""data/movielens.py: MovieLens readers (implicit positives, clear errors) and the
offline-safe download cache.

No test touches the network: downloads are replaced by fakes, or read ``file://`` URLs.
"""

from __future__ import annotations

import re
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybridrec.data import movielens
from hybridrec.data.io import read_interactions
from hybridrec.data.movielens import (
    DATASETS,
    fetch_movielens,
    read_atomic_inter,
    read_ml100k_udata,
    read_movielens,
    read_ratings_csv,
    read_ratings_dat,
    write_interactions_csv,
)
from hybridrec.errors import DataError, HybridRecError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
INTER = SHARED / "movielens-100k" / "ml-100k.inter"

UDATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n"
DAT = "1::1193::5::978300760\n1::661::3::978302109\n2::1357::4.5::978298709\n"
CSV = "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n7,10,5,9\n"
INTER_TEXT = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n"
)


def expected(users, items, stamps=None) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "user_id": np.array(users, dtype=np.int64),
            "item_id": np.array(items, dtype=np.int64),
            "target": np.ones(len(users), dtype=np.float32),
        }
    )
    if stamps is not None:
        frame["timestamp"] = np.array(stamps, dtype=np.float64)
    return frame


@pytest.fixture
def write(tmp_path):
    """``write(name, text)`` -> path of a file holding ``text``."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return _write


def at(name, row, column=None):
    """Regex for the location prefix of a DataError: file, row (and line), maybe the column."""
    where = rf"{re.escape(name)}, row {row}(?: \(line \d+\))?"
    return where + (rf", column '{re.escape(column)}'" if column else "")


# ---------------------------------------------------------------- readers


def test_read_ml100k_udata(write):
    frame = read_ml100k_udata(write("u.data", UDATA))
    pd.testing.assert_frame_equal(
        frame, expected([196, 186, 22], [242, 302, 377], [881250949, 891717742, 878887116])
    )
    assert frame.attrs["has_target"] is False


def test_read_ratings_dat(write):
    frame = read_ratings_dat(write("ratings.dat", DAT))
    pd.testing.assert_frame_equal(
        frame, expected([1, 1, 2], [1193, 661, 1357], [978300760, 978302109, 978298709])
    )


def test_read_ratings_csv(write):
    frame = read_ratings_csv(write("ratings.csv", CSV))
    pd.testing.assert_frame_equal(
        frame, expected([1, 1, 7], [31, 1029, 10], [1260759144, 1260759179, 9])
    )


def test_read_atomic_inter(write):
    frame = read_atomic_inter(write("ml.inter", INTER_TEXT))
    pd.testing.assert_frame_equal(
        frame, expected([196, 186, 22], [242, 302, 377], [881250949, 891717742, 878887116])
    )


def test_read_atomic_inter_without_timestamp_and_with_text_tokens(write):
    path = write("x.inter", "item_id:token\tuser_id:token\n a \t007\nb\t7\n")
    frame = read_atomic_inter(path)
    assert list(frame.columns) == ["user_id", "item_id", "target"]
    assert frame["user_id"].tolist() == ["007", "7"]  # tokens, not merged into 7
    assert frame["item_id"].tolist() == ["a", "b"]


@pytest.mark.parametrize(
    "name, text, reader",
    [
        ("u.data", UDATA, read_ml100k_udata),
        ("u1.base", UDATA, read_ml100k_udata),
        ("ratings.dat", DAT, read_ratings_dat),
        ("ratings.csv", CSV, read_ratings_csv),
        ("ml-100k.inter", INTER_TEXT, read_atomic_inter),
    ],
)
def test_read_movielens_dispatches_on_the_file_name(write, name, text, reader):
    path = write(name, text)
    pd.testing.assert_frame_equal(read_movielens(path), reader(path))


def test_read_movielens_lists_the_supported_forms(write):
    with pytest.raises(
        DataError, match=r"ratings\.txt.*u\.data.*ratings\.dat.*ratings\.csv.*inter"
    ):
        read_movielens(write("ratings.txt", UDATA))


@pytest.mark.parametrize(
    "name, text, threshold, kept",
    [
        ("u.data", UDATA, 3, [242, 302]),  # ratings 3, 3, 1
        ("ratings.dat", DAT, 4.5, [1193, 1357]),  # ratings 5, 3, 4.5
        ("ratings.csv", CSV, 3, [1029, 10]),  # ratings 2.5, 3.0, 5
        ("ratings.csv", CSV, 2.5, [31, 1029, 10]),  # the threshold itself is kept
        ("ml.inter", INTER_TEXT, 3, [242, 302]),
    ],
)
def test_min_rating_keeps_only_high_ratings(write, name, text, threshold, kept):
    frame = read_movielens(write(name, text), min_rating=threshold)
    assert frame["item_id"].tolist() == kept
    assert (frame["target"] == 1).all()  # dropped, not turned into negatives
    assert frame.index.tolist() == list(range(len(kept)))
    assert len(read_movielens(write(name, text))) == 3  # by default every rating is kept


def test_min_rating_that_keeps_nothing_is_an_error(write):
    with pytest.raises(DataError, match=r"no rating is >= 6"):
        read_ml100k_udata(write("u.data", UDATA), min_rating=6)


def test_min_rating_needs_a_rating_column(write):
    path = write("x.inter", "user_id:token\titem_id:token\n1\t2\n")
    with pytest.raises(DataError, match="needs a rating column"):
        read_atomic_inter(path, min_rating=4)


# ---------------------------------------------------------------- bad files


@pytest.mark.parametrize(
    "name, text, location, message",
    [
        ("u.data", "1\t2\t3\t4\n1\tx\t3\t4\n", at("u.data", 2, "item"), "id 'x' is not an integer"),
        ("u.data", "1\t2\t3\t4\n1\t2\t3\n", at("u.data", 2, "timestamp"), "missing timestamp"),
        ("u.data", "1\t2\t3\t4\n1\t2\t3\t4\t5\n", at("u.data", 2), "has 5 fields, not 4"),
        ("u.data", "1\t2\tgood\t4\n", at("u.data", 1, "rating"), "rating 'good' is not a number"),
        ("ratings.dat", "1::2::3::4\n1:2::3::4\n", at("ratings.dat", 2), "unexpected '2'"),
        ("ratings.dat", "1::2::3::4\n1::2::3\n", at("ratings.dat", 2, "timestamp"), "missing"),
        ("ratings.dat", "1,2,3,4\n", at("ratings.dat", 1), "the first row has 1 fields, not 7"),
        (
            "ratings.csv",
            "userId,movieId,rating,timestamp\n1,2,3,4\n1,2,,4\n",
            at("ratings.csv", 2, "rating"),
            "missing rating",
        ),
        (
            "ratings.csv",
            "userId,movieId,rating,timestamp\n1,2,3,4,5\n",
            at("ratings.csv", 1),
            "has more fields than the header",
        ),
        (
            "x.inter",
            "user_id:token\titem_id:token\trating:float\n1\t2\t3\n\t2\t3\n",
            at("x.inter", 2, "user_id:token"),
            "missing id",
        ),
    ],
)
def test_bad_rows_name_file_row_and_column(write, name, text, location, message):
    with pytest.raises(DataError, match=location + ": " + re.escape(message)):
        read_movielens(write(name, text))


def test_bad_row_reports_its_file_line(write):
    path = write("ratings.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n1,2,x,4\n")
    with pytest.raises(DataError) as info:
        read_ratings_csv(path)
    assert (info.value.row, info.value.line, info.value.column) == (2, 3, "rating")


def test_csv_without_movielens_columns(write):
    path = write("ratings.csv", "userId,itemId,target\n1,2,1\n")
    with pytest.raises(DataError, match=r"missing column\(s\) 'movieId', 'rating', 'timestamp'"):
        read_ratings_csv(path)


def test_inter_without_ids(write):
    with pytest.raises(DataError, match=r"missing column\(s\) 'item_id'.*found 'user_id:token'"):
        read_atomic_inter(write("x.inter", "user_id:token\trating:float\n1\t2\n"))


@pytest.mark.parametrize(
    "reader", [read_ml100k_udata, read_ratings_dat, read_ratings_csv, read_atomic_inter]
)
def test_missing_and_empty_files(tmp_path, write, reader):
    with pytest.raises(DataError, match="file not found"):
        reader(tmp_path / "nope")
    with pytest.raises(DataError, match="empty"):
        reader(write("empty", ""))
    with pytest.raises(DataError, match="is a directory"):
        reader(tmp_path)


def test_header_without_rows(write):
    with pytest.raises(DataError, match="ratings.csv: has no ratings"):
        read_ratings_csv(write("ratings.csv", "userId,movieId,rating,timestamp\n"))


def test_infinite_rating(write):
    with pytest.raises(DataError, match=at("u.data", 1, "rating") + ": rating inf is not finite"):
        read_ml100k_udata(write("u.data", "1\t2\tinf\t4\n"))


def test_binary_file_is_a_data_error(tmp_path):
    path = tmp_path / "u.data"
    path.write_bytes(b"\xff\xfe\x00\x81\x82\n" * 3)
    with pytest.raises(DataError, match="u.data: is not a text file"):
        read_ml100k_udata(path)


def test_an_id_beyond_int64_is_named_not_a_traceback(write):
    """pandas' int64 parser raised OverflowError, which the text re-read did not catch."""
    with pytest.raises(DataError, match=r"row 2 \(line 2\), column 'user'"):
        read_ml100k_udata(write("u.data", "1\t2\t5\t8\n123456789012345678901\t3\t4\t9\n"))


# ---------------------------------------------------------------- writing


def test_write_interactions_csv_is_train_ready(tmp_path, write):
    frame = read_ratings_dat(write("ratings.dat", DAT))
    path = write_interactions_csv(frame, tmp_path / "out" / "ratings.csv")
    lines = path.read_text().splitlines()
    assert lines[:2] == ["userId,itemId,target,timestamp", "1,1193,1,978300760"]
    back = read_interactions(path)
    pd.testing.assert_frame_equal(back, frame)


def test_written_timestamps_beyond_int64_keep_their_value(tmp_path):
    """Whole seconds are written as integers, but 1e19 cast to int64 became INT64_MIN."""
    frame = pd.DataFrame(
        {"user_id": [1, 1], "item_id": [2, 3], "target": [1.0, 1.0], "timestamp": [1e19, 2.0]}
    )
    path = write_interactions_csv(frame, tmp_path / "ratings.csv")
    assert read_interactions(path)["timestamp"].tolist() == [1e19, 2.0]


# ---------------------------------------------------------------- download and cache


def make_zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path


@pytest.fixture
def no_download(monkeypatch):
    """Fail the test if anything tries to download; record what would have been fetched."""
    calls = []

    def refuse(url, dest, timeout):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(movielens, "_download", refuse)
    return calls


def test_fetch_offline_explains_how_to_use_a_local_copy(tmp_path, no_download):
    with pytest.raises(HybridRecError) as info:
        fetch_movielens("movielens-100k", cache_dir=tmp_path)
    text = str(info.value)
    first = text.splitlines()[0]
    assert re.search(r"download", first) and "Temporary failure in name resolution" in first
    assert "license" in text and "local" in text and "--data" in text
    assert str(tmp_path / "movielens-100k.zip") in text  # where to put the zip by hand
    assert no_download == [DATASETS["movielens-100k"][0]]
    assert not any(tmp_path.iterdir())  # nothing half-written left behind


def test_fetch_uses_a_zip_already_in_the_cache(tmp_path, no_download):
    make_zip(tmp_path / "movielens-100k.zip", {"ml-100k/u.data": UDATA, "ml-100k/u.item": "x"})
    path = fetch_movielens("movielens-100k", cache_dir=tmp_path)
    assert path == tmp_path / "movielens-100k" / "u.data"
    assert path.read_text() == UDATA
    assert sorted(p.name for p in path.parent.iterdir()) == ["u.data"]  # only the ratings
    assert len(read_movielens(path)) == 3
    (tmp_path / "movielens-100k.zip").unlink()
    assert fetch_movielens("movielens-100k", cache_dir=tmp_path) == path  # extracted copy reused
    assert no_download == []


def test_fetch_downloads_once_then_reuses_the_cache(tmp_path, monkeypatch):
    calls = []

    def fake_download(url, dest, timeout):
        calls.append((url, timeout))
        make_zip(dest, {"ml-1m/ratings.dat": DAT, "ml-1m/movies.dat": "1::Toy Story::x\n"})

    monkeypatch.setattr(movielens, "_download", fake_download)
    monkeypatch.setenv("HYBRIDREC_DATA", str(tmp_path / "cache"))
    first = fetch_movielens("movielens-1m", timeout=5)
    second = fetch_movielens("movielens-1m")
    assert first == second == tmp_path / "cache" / "movielens-1m" / "ratings.dat"
    assert calls == [(DATASETS["movielens-1m"][0], 5)]
    assert read_movielens(first)["item_id"].tolist() == [1193, 661, 1357]


def test_download_writes_atomically_from_a_url(tmp_path):
    source = make_zip(tmp_path / "src.zip", {"ml-100k/u.data": UDATA})
    dest = tmp_path / "cache" / "movielens-100k.zip"
    movielens._download(source.as_uri(), dest, timeout=5)  # file:// needs no network
    assert dest.read_bytes() == source.read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]  # no temp file left
    with pytest.raises(urllib.error.URLError):
        movielens._download((tmp_path / "absent.zip").as_uri(), tmp_path / "y.zip", timeout=5)
    assert not (tmp_path / "y.zip").exists()


def test_fetch_rejects_a_zip_that_is_not_movielens(tmp_path, no_download):
    make_zip(tmp_path / "movielens-100k.zip", {"other/file.txt": "x"})
    with pytest.raises(HybridRecError, match="has no ml-100k/u.data"):
        fetch_movielens("movielens-100k", cache_dir=tmp_path)
    (tmp_path / "movielens-100k.zip").write_text("<html>not a zip</html>")
    with pytest.raises(HybridRecError, match="not a readable zip.*delete it"):
        fetch_movielens("movielens-100k", cache_dir=tmp_path)


def test_fetch_unknown_name_lists_the_known_ones(tmp_path, no_download):
    with pytest.raises(HybridRecError, match="movielens-100k, movielens-1m"):
        fetch_movielens("movielens-20m", cache_dir=tmp_path)


# ---------------------------------------------------------------- the real file


@pytest.mark.skipif(
    not INTER.is_file(),
    reason=f"MovieLens-100K is not in {SHARED} (it may not be redistributed; see its README)",
)
def test_movielens_100k_inter_has_the_published_counts():
    frame = read_movielens(INTER)
    assert len(frame) == 100_000
    assert frame["user_id"].nunique() == 943
    assert frame["item_id"].nunique() == 1682
    assert frame["user_id"].dtype == np.int64 and frame["item_id"].dtype == np.int64
    assert frame["timestamp"].dtype == np.float64 and (frame["target"] == 1).all()


def test_ratings_header_with_spaces_or_a_bom_reads_by_position(write):
    """A header "userId, movieId" was a KeyError traceback, and a byte-order mark made
    'userId' missing."""
    for text in (
        "userId, movieId, rating, timestamp\n1,2,4.0,100\n2,3,5.0,101\n",
        "\ufeffuserId,movieId,rating,timestamp\n1,2,4.0,100\n2,3,5.0,101\n",
    ):
        frame = read_ratings_csv(write("ratings.csv", text))
        assert frame["user_id"].tolist() == [1, 2] and frame["item_id"].tolist() == [2, 3]


def test_every_row_one_field_longer_than_the_header_is_refused(write):
    """pandas 3 gives such a file a RangeIndex-like implicit index, so the columns were
    shifted silently (users read from the item column)."""
    text = "userId,movieId,rating,timestamp\n1,8,38,5.0,1001\n2,5,24,5.0,1002\n"
    with pytest.raises(DataError, match=r"row 1 \(line 2\).*more fields than the header"):
        read_ratings_csv(write("ratings.csv", text))
