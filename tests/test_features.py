"""Feature files: kinds, validation, encoding; the featured embedding table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from hybridrec.data.encoding import IdEncoder
from hybridrec.errors import ConfigError, DataError
from hybridrec.features import encode_features, infer_kind, parse_kinds, read_features
from hybridrec.models import build_model
from hybridrec.models.featured import FeaturedEmbedding, table_vectors


def write(tmp_path, text: str, name: str = "items.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


ITEMS = "itemId,genres,year,studio\n1,Action|Comedy,1995,A\n2,Drama,,B\n3,Comedy,1990,A\n"


def test_kinds_are_inferred_by_the_documented_rule(tmp_path):
    data = read_features(write(tmp_path, ITEMS), "itemId")
    kinds = {f.name: f.kind for f in data.table.fields}
    assert kinds == {"genres": "multi", "year": "numeric", "studio": "categorical"}
    assert infer_kind(["1", None, "2.5"], "|") == "numeric"
    assert infer_kind(["a", "b|c"], "|") == "multi"
    assert infer_kind(["1", "x"], "|") == "categorical"


def test_stated_kinds_override_inference(tmp_path):
    data = read_features(write(tmp_path, ITEMS), "itemId", {"year": "categorical"})
    year = next(f for f in data.table.fields if f.name == "year")
    assert year.kind == "categorical" and year.vocab == ["1990", "1995"]


def test_parse_kinds_and_its_errors():
    assert parse_kinds("genres=multi, year=numeric", "--x") == {
        "genres": "multi",
        "year": "numeric",
    }
    for bad in ("genres", "genres=list", "=multi"):
        with pytest.raises(ConfigError, match="column=kind"):
            parse_kinds(bad, "--item-feature-types")


def test_bad_files_name_file_row_and_column(tmp_path):
    with pytest.raises(DataError, match=r"row 2.*itemId|itemId.*row 2") as err:
        read_features(write(tmp_path, "itemId,g\n1,a\n1,b\n"), "itemId")
    assert "repeats" in str(err.value)
    with pytest.raises(DataError, match="not a number"):
        read_features(
            write(tmp_path, "itemId,year\n1,1995\n2,soon\n"), "itemId", {"year": "numeric"}
        )
    with pytest.raises(DataError, match="feature column"):
        read_features(write(tmp_path, "itemId\n1\n"), "itemId")
    with pytest.raises(ConfigError, match="'colour'"):
        read_features(write(tmp_path, ITEMS), "itemId", {"colour": "categorical"})


def test_encoding_follows_the_encoder_rows_and_handles_unknowns(tmp_path):
    data = read_features(write(tmp_path, ITEMS), "itemId")
    encoder = IdEncoder.fit(np.array([3, 1, 7]))  # 7 has no features; 2 is not encoded
    enc = encode_features(data, encoder)
    assert enc.tokens.shape == (4, data.table.width)
    assert not enc.tokens[0].any() and not enc.weights[0].any()  # unknown id: nothing
    row7 = int(encoder.transform([7])[0])
    genres, year, studio = data.table.fields
    # no features: each field's unknown token with weight 1, numbers at the mean (0)
    assert enc.tokens[row7].tolist() == [genres.offset, 0, year.offset, studio.offset]
    assert enc.weights[row7].tolist() == [1.0, 0.0, 1.0, 1.0]
    assert enc.numeric[row7].tolist() == [0.0]
    row1 = int(encoder.transform([1])[0])
    assert enc.weights[row1, :2].tolist() == [0.5, 0.5]  # a field counts once
    assert {genres.vocab[t - genres.offset - 1] for t in enc.tokens[row1, :2].tolist()} == {
        "Action",
        "Comedy",
    }
    # a value never seen when fitting maps to its field's unknown token
    later = data.table.encode({"genres": ["Western"], "studio": ["Z"], "year": [None]},
                              np.array([1]), 2)  # fmt: skip
    assert later.tokens[1].tolist() == [genres.offset, 0, year.offset, studio.offset]


def test_parquet_features_read_like_csv(tmp_path):
    frame = pd.DataFrame({"itemId": [1, 2], "genres": ["a|b", "c"], "year": [1990.0, None]})
    frame.to_parquet(tmp_path / "f.parquet")
    data = read_features(tmp_path / "f.parquet", "itemId")
    assert [f.kind for f in data.table.fields] == ["multi", "numeric"]
    assert data.ids.tolist() == [1, 2]


def featured_model(tmp_path, **options):
    data = read_features(write(tmp_path, ITEMS), "itemId")
    items = IdEncoder.fit(data.ids)
    shape = data.table.shape()
    model = build_model("hybrid", num_users=4, num_items=items.num_embeddings,
                        item_feature_shape=shape, embedding_dim=8, **options)  # fmt: skip
    has_id = torch.tensor([False, True, True, False])  # item 3 never trained
    model.item_embedding.set_features(encode_features(data, items), has_id=has_id)
    return model


def test_featured_table_scores_cold_rows_from_features_alone(tmp_path):
    model = featured_model(tmp_path).eval()
    table = model.item_embedding
    assert isinstance(table, FeaturedEmbedding)
    with torch.no_grad():
        table.weight.normal_()
        cold = table(torch.tensor([3]))
        assert torch.allclose(cold, table.features(torch.tensor([3])))
        warm = table(torch.tensor([1]))
        assert torch.allclose(warm, table.weight[1] + table.features(torch.tensor([1])))
        assert torch.allclose(table_vectors(table)[1:], table(torch.arange(1, 4)))
        all_scores = model.score_all(torch.tensor([1, 2]))
        pairs = model(torch.tensor([1, 1, 1, 1]), torch.arange(4))
    assert torch.allclose(all_scores[0], pairs, atol=1e-6)


def test_id_dropout_only_in_training(tmp_path):
    model = featured_model(tmp_path, id_dropout=0.9)
    table = model.item_embedding
    with torch.no_grad():
        table.weight.normal_()
    idx = torch.ones(2000, dtype=torch.int64)
    torch.manual_seed(0)
    train_rows = table(idx)
    features_only = (train_rows - table.features(idx)).abs().sum(1) < 1e-6
    assert 0.85 < features_only.float().mean() < 0.95
    table.eval()
    assert not ((table(idx) - table.features(idx)).abs().sum(1) < 1e-6).any()


def test_features_and_has_id_are_saved_with_the_weights(tmp_path):
    model = featured_model(tmp_path)
    state = model.state_dict()
    assert {"item_embedding.feature_tokens", "item_embedding.has_id"} <= state.keys()
    again = build_model("hybrid", **{k: v for k, v in vars(model.config).items()})
    again.load_state_dict(state)
    assert torch.equal(again.item_embedding.feature_tokens, model.item_embedding.feature_tokens)


def test_new_user_fold_in_ignores_the_features_of_existing_users(tmp_path):
    from hybridrec.recommend import Recommender

    data = read_features(write(tmp_path, "userId,job\n1,a\n2,b\n"), "userId")
    users, items = IdEncoder.fit(data.ids), IdEncoder.fit(np.arange(1, 30))
    model = build_model("hybrid", num_users=users.num_embeddings, num_items=items.num_embeddings,
                        user_feature_shape=data.table.shape(), embedding_dim=8)  # fmt: skip
    model.user_embedding.set_features(encode_features(data, users))
    recommender = Recommender(model.eval(), users, items, model_name="hybrid")
    before = recommender.recommend_for_items([1, 2, 3], k=5)
    with torch.no_grad():  # another user's features must not leak into the new user's
        model.user_embedding.feature_embedding.weight.normal_(0, 5.0)
    after = recommender.recommend_for_items([1, 2, 3], k=5)
    assert before.source == after.source == "items"
    assert list(before.item_ids) == list(after.item_ids)


def test_dense_and_bag_pooling_agree(tmp_path, monkeypatch):
    import hybridrec.models.featured as featured

    model = featured_model(tmp_path)
    table = model.item_embedding
    with torch.no_grad():
        table.feature_embedding.weight.normal_()
    idx = torch.tensor([3, 1, 1, 2, 0])
    dense = table.features(idx)
    dense.sum().backward()
    grad_dense = table.feature_embedding.weight.grad.clone()
    table.feature_embedding.weight.grad = None
    monkeypatch.setattr(featured, "DENSE_VOCABULARY", 0)
    bag = table.features(idx)
    bag.sum().backward()
    assert torch.allclose(dense, bag, atol=1e-6)
    assert torch.allclose(grad_dense, table.feature_embedding.weight.grad, atol=1e-6)


def test_feature_vectors_are_the_same_on_both_pooling_paths():
    """A lookup as large as the table pools every row at once; a small one pools its
    distinct rows: the same vectors and the same gradients either way."""
    from hybridrec.models.featured import FeaturedEmbedding

    g = torch.Generator().manual_seed(0)
    table = FeaturedEmbedding(6, 4, {"tokens": 5, "width": 2, "numeric": 1}, padding_idx=0)
    table.init_features(0.5)
    table.feature_tokens[1:] = torch.randint(0, 5, (5, 2), generator=g)
    table.feature_weights[1:] = torch.rand(5, 2, generator=g)
    table.feature_numeric[1:] = torch.randn(5, 1, generator=g)
    small = torch.tensor([3, 1])  # 6 rows > 2 x 2 lookups: distinct rows only
    large = torch.tensor([3, 1, 3, 2, 5, 4])  # every row at once
    few = table.features(small)
    few.sum().backward()
    grad_few = table.feature_embedding.weight.grad.clone()
    table.feature_embedding.weight.grad = None
    many = table.features(large)
    assert torch.allclose(many[:2], few, atol=1e-6)
    many[:2].sum().backward()
    assert torch.allclose(table.feature_embedding.weight.grad, grad_few, atol=1e-6)


def test_new_entities_numeric_cells_are_checked_not_dropped(tmp_path):
    """Cells nobody checked at fit time (a request, new items): a numeric field takes a
    finite number near the training values or nothing; anything else is named, where
    read as missing it would silently change the answer (and 1e308 overflowed scores)."""
    table = read_features(write(tmp_path, ITEMS), "itemId").table
    rows = np.array([1])
    fine = table.encode({"year": ["1993"]}, rows, 2, new=True)
    assert fine.numeric[1].abs().sum() > 0
    missing = table.encode({"year": [None]}, rows, 2, new=True)
    assert missing.numeric[1].abs().sum() == 0
    for bad in ("soon", "nan", float("inf"), True, 1e308, 2**70):
        with pytest.raises(ConfigError, match="'year'"):
            table.encode({"year": [bad]}, rows, 2, new=True)
    lax = table.encode({"year": ["soon"]}, rows, 2)  # fitted cells: checked when read
    assert lax.numeric[1].abs().sum() == 0


def test_a_feature_file_named_by_the_other_entitys_id_is_refused(tmp_path):
    """--item-features users.csv: its userId column would be read as item ids."""
    users = write(tmp_path, "userId,age\n1,20\n2,30\n", "users.csv")
    with pytest.raises(DataError, match="swapped") as err:
        read_features(users, "itemId", other_col="userId")
    assert "users.csv" in str(err.value) and "\n" not in str(err.value)
    assert len(read_features(users, "userId", other_col="itemId").ids) == 2


def test_values_too_large_to_standardise_are_named(tmp_path):
    """1e308's square overflows: the feature used to be silently zeroed."""
    path = write(tmp_path, "itemId,year\n1,1e308\n2,-1e308\n3,5\n")
    with pytest.raises(DataError, match="'year'.*too large to standardise"):
        read_features(path, "itemId")


def test_a_column_given_two_kinds_is_refused():
    with pytest.raises(ConfigError, match="'genre' two kinds"):
        parse_kinds("genre=multi,genre=numeric", "--item-feature-types")
    assert parse_kinds("genre=multi,genre=multi", "--x") == {"genre": "multi"}


def test_nested_feature_cells_are_refused_not_read_as_their_repr(tmp_path):
    """A Parquet list column (or a frame of lists) became tokens like "['Action' 'Comedy']"."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"itemId": [1, 2], "genres": [["Action", "Comedy"], ["Drama"]]})
    pq.write_table(table, tmp_path / "items.parquet")
    with pytest.raises(DataError, match=r"row 1, column 'genres'.*is a list"):
        read_features(tmp_path / "items.parquet", "itemId", {"genres": "multi"})
    frame = pd.DataFrame({"itemId": [1, 2], "tags": [{"a": 1}, b"raw"]})
    with pytest.raises(DataError, match="column 'tags'"):
        read_features(frame, "itemId")
