"""data/encoding.py: IdEncoder, raw ids <-> dense indices 1..n, with 0 reserved for unknown
ids."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridrec.data.encoding import UNKNOWN_INDEX, IdEncoder


def test_known_output_strings():
    enc = IdEncoder.fit(["b", "a", "c", "b"])
    assert len(enc) == 3
    assert enc.num_embeddings == 4  # + the unknown row 0
    assert enc.ids.tolist() == ["a", "b", "c"]
    assert enc.transform(["a", "b", "c", "zzz"]).tolist() == [1, 2, 3, 0]


def test_known_output_integers_sorted_numerically():
    enc = IdEncoder.fit([10, 2, 33, 2])
    assert enc.ids.tolist() == [2, 10, 33]  # numeric order, not text order ("10" < "2")
    out = enc.transform([33, 2, 10, 5])
    assert out.dtype == np.int64
    assert out.tolist() == [3, 1, 2, 0]


def test_unknown_ids_map_to_zero():
    enc = IdEncoder.fit([1, 2, 3])
    assert UNKNOWN_INDEX == 0
    assert enc.transform([4, -1, 0]).tolist() == [0, 0, 0]
    # ids are matched in the encoder's own type: text that is exactly an integer finds the
    # integer id (a val file with one non-integer id is read as text), other text is unknown
    assert enc.transform(["1", "2", "007", "x"]).tolist() == [1, 2, 0, 0]
    assert IdEncoder.fit(["1"]).transform([1]).tolist() == [1]
    assert IdEncoder.fit(["007"]).transform([7]).tolist() == [0]


def test_transform_empty_and_2d():
    enc = IdEncoder.fit(["a", "b"])
    empty = enc.transform([])
    assert empty.dtype == np.int64 and empty.shape == (0,)
    assert enc.transform(np.array([["a", "b"], ["b", "x"]], dtype=object)).tolist() == [1, 2, 2, 0]


@pytest.mark.parametrize("ids", [["u3", "u1", "u2"], [30, 10, 20]])
def test_inverse_of_transform_is_identity(ids):
    enc = IdEncoder.fit(ids)
    assert enc.inverse_transform(enc.transform(ids)).tolist() == ids


def test_inverse_of_zero_raises():
    enc = IdEncoder.fit(["a", "b"])
    with pytest.raises(ValueError, match="0 is the unknown id"):
        enc.inverse_transform([1, 0])
    with pytest.raises(ValueError, match=r"1\.\.2"):
        enc.inverse_transform([3])


@pytest.mark.parametrize("ids", [["b", "a", "007"], [5, -3, 2**40], []])
def test_to_dict_round_trip_through_json(ids):
    enc = IdEncoder.fit(ids)
    data = json.loads(json.dumps(enc.to_dict()))
    back = IdEncoder.from_dict(data)
    assert back == enc
    assert back.ids.tolist() == enc.ids.tolist()
    assert back.transform(ids).tolist() == enc.transform(ids).tolist()


def test_to_dict_kinds():
    assert IdEncoder.fit(["x"]).to_dict() == {"kind": "str", "ids": ["x"]}
    assert IdEncoder.fit([7]).to_dict() == {"kind": "int", "ids": [7]}
    with pytest.raises(ValueError, match="unknown id kind"):
        IdEncoder.from_dict({"kind": "float", "ids": [1.5]})


def test_duplicate_ids_rejected_by_constructor():
    with pytest.raises(ValueError, match="unique"):
        IdEncoder(np.array([1, 1]))


def test_deterministic_regardless_of_input_order():
    ids = ["d", "a", "c", "b", "a"]
    rng = np.random.default_rng(0)
    reference = IdEncoder.fit(ids)
    for _ in range(5):
        shuffled = list(rng.permutation(ids))
        enc = IdEncoder.fit(shuffled)
        assert enc == reference
        assert enc.transform(["a", "b", "c", "d"]).tolist() == [1, 2, 3, 4]


def test_fit_accepts_series_and_arrays():
    import pandas as pd

    from_series = IdEncoder.fit(pd.Series(["b", "a"], dtype="str"))
    from_array = IdEncoder.fit(np.array(["b", "a"], dtype=object))
    assert from_series == from_array == IdEncoder.fit(["a", "b"])


INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@settings(max_examples=60, deadline=None)
@given(
    data=st.one_of(
        st.tuples(st.lists(INT64, max_size=30), st.lists(INT64, max_size=10)),
        st.tuples(
            st.lists(st.text(max_size=6), max_size=30), st.lists(st.text(max_size=6), max_size=10)
        ),
    )
)
def test_encoder_is_a_bijection_onto_1_to_n(data):
    """Seen ids map one-to-one onto 1..n; unseen ids all map to 0; inverse undoes transform."""
    seen, others = data
    enc = IdEncoder.fit(seen)
    distinct = sorted(set(seen))
    n = len(distinct)
    assert len(enc) == n

    codes = enc.transform(distinct)
    assert sorted(codes.tolist()) == list(range(1, n + 1))  # onto 1..n, no collisions
    assert codes.tolist() == list(range(1, n + 1))  # and in sorted id order
    assert enc.inverse_transform(enc.transform(seen)).tolist() == list(seen)

    unseen = [x for x in others if x not in set(seen)]
    assert enc.transform(unseen).tolist() == [0] * len(unseen)


def test_ids_beyond_int64_are_unknown_not_an_overflow():
    encoder = IdEncoder.fit(np.array([1, 2, np.iinfo(np.int64).max, np.iinfo(np.int64).min]))
    big = [2**63, 2**64 - 1, -(2**63) - 1, 2**70]
    assert encoder.transform(big).tolist() == [0, 0, 0, 0]
    assert encoder.transform(np.array([2**63, 2**64 - 1], dtype=np.uint64)).tolist() == [0, 0]
    two = int(encoder.transform([2])[0])
    as_text = ["9223372036854775808", "-9223372036854775809", "2"]
    assert encoder.transform(as_text).tolist() == [0, 0, two]
    assert encoder.transform([2**63, 2]).tolist() == [0, two]  # not the placeholder int64 min


@settings(max_examples=60, deadline=None)
@given(
    data=st.one_of(
        st.tuples(st.lists(INT64, min_size=1, max_size=30), st.lists(INT64, max_size=30)),
        st.tuples(
            st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=30),
            st.lists(st.text(min_size=1, max_size=6), max_size=30),
        ),
    )
)
def test_extending_an_encoder_never_moves_an_existing_id(data):
    """What ``update`` relies on: every id keeps its index, new ids come after, each once.
    (A trained model always knows some id, so the encoder being extended is never empty.)"""
    old_ids, more = data
    enc = IdEncoder.fit(old_ids)
    grown = enc.extended(more)
    known = sorted(set(old_ids))
    assert grown.transform(known).tolist() == enc.transform(known).tolist()
    fresh = [x for x in dict.fromkeys(more) if x not in set(old_ids)]
    assert grown.transform(fresh).tolist() == list(range(len(enc) + 1, len(enc) + 1 + len(fresh)))
    assert len(grown) == len(enc) + len(fresh)


@settings(max_examples=300, deadline=None)
@given(
    known=st.one_of(
        st.lists(st.integers(-(2**62), 2**62), max_size=30, unique=True),
        st.lists(st.text(max_size=4), max_size=30, unique=True),
    ),
    asked=st.lists(
        st.one_of(
            st.integers(-(2**62), 2**62),
            st.integers(-3, 40),
            st.text(max_size=4),
            st.sampled_from(["1", "007", " 3", "-0", "", "nan"]),
        ),
        max_size=12,
    ),
    use_known=st.lists(st.integers(0, 29), max_size=6),
)
def test_small_lookups_answer_as_the_hash_table(known, asked, use_known):
    """A few ids (a service request) are found by binary search, many by pandas' hash
    table: the two agree on every id, known, unknown or of the other kind."""
    enc = IdEncoder.fit(known) if known else IdEncoder(np.array([], dtype=np.int64))
    queries = asked + [known[i] for i in use_known if i < len(known)]
    for values in (queries, [q for q in queries if isinstance(q, int)]):
        expected = _transform_with_hash_table(IdEncoder(enc.ids), values)
        assert enc.transform(values).tolist() == expected.tolist(), values


def _transform_with_hash_table(enc, values):
    import hybridrec.data.encoding as encoding

    saved = encoding.SMALL_LOOKUP
    encoding.SMALL_LOOKUP = -1
    try:
        return enc.transform(values)
    finally:
        encoding.SMALL_LOOKUP = saved


def test_text_lookups_of_integer_ids_agree_in_small_and_large_batches():
    """A request's few ids take a pure-Python path (pandas' string methods cost ~0.5 ms
    each call, which blocked the service's event loop for a batch of unknown users); its
    answers must be the vectorised path's."""
    from hybridrec.data.encoding import SMALL_LOOKUP

    enc = IdEncoder.fit(np.array([-5, 0, 7, 42, 10**17]))
    odd = [" 42", "42 ", "042", "-0", "-5", "0", "7.0", "1e1", "x", "", str(10**17),
           str(2**63), "\u0664\u0662", 42, None]  # fmt: skip
    values = np.array(odd, dtype=object)
    large = enc.transform(np.resize(values, SMALL_LOOKUP + len(odd)))[: len(odd)]
    assert enc.transform(values).tolist() == large.tolist()
    assert large.tolist()[:7] == [4, 4, 0, 0, 1, 2, 0]


def test_text_ids_find_their_id_when_written_with_spaces():
    enc = IdEncoder.fit(["u1", "u2"])
    assert enc.transform([" u1", "u2 ", "u3", " ", "u1"]).tolist() == [1, 2, 0, 0, 1]
    big = np.array([" u2"] * 1000, dtype=object)
    assert set(enc.transform(big).tolist()) == {2}


def test_whole_floats_are_the_integer_ids_they_equal():
    """An id column that became float (a merge, a NaN) scored every row as unknown."""
    import pandas as pd

    enc = IdEncoder.fit([1, 2, 3])
    assert enc.transform(np.array([1.0, 3.0])).tolist() == [1, 3]
    assert enc.transform(pd.Series([2.0, np.nan, 1.5, 3.0])).tolist() == [2, 0, 0, 3]
    assert IdEncoder.fit(np.array([2.0, 1.0])).ids.tolist() == [1, 2]


def test_integers_find_text_ids_whatever_else_the_list_holds():
    enc = IdEncoder.fit(["a", "42", "7"])  # sorted: "42", "7", "a"
    assert enc.transform([42, "a"]).tolist() == enc.transform(["42", "a"]).tolist() == [1, 3]
