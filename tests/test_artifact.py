"""artifact.py: saved model directories reload exactly, and every kind of damage is an
ArtifactError."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import hybridrec
from hybridrec import TrainConfig
from hybridrec.artifact import FORMAT_VERSION
from hybridrec.errors import ArtifactError, ConfigError


@pytest.fixture(scope="module")
def trained(synthetic_data, tmp_path_factory):
    """A tiny model trained once and saved; tests copy the directory before damaging it."""
    out = tmp_path_factory.mktemp("artifact") / "model"
    train_csv, val_csv = synthetic_data
    config = TrainConfig(epochs=1, batch_size=256, learning_rate=1e-2, device="cpu", seed=0)
    result = hybridrec.train(
        train_csv,
        val_csv,
        out=out,
        model_options={"embedding_dim": 8, "mlp_layer_sizes": (16, 8)},
        train_config=config,
    )
    return result, out


@pytest.fixture
def model_dir(trained, tmp_path):
    """A private copy of the saved model directory."""
    copy = tmp_path / "model"
    shutil.copytree(trained[1], copy)
    return copy


def pairs(recommender):
    """Known ids, unknown users, unknown items and a fully unknown pair."""
    users = recommender.users.ids[:20].tolist() + [10**9, 10**9, -5]
    items = recommender.items.ids[:20].tolist() + [recommender.items.ids[0], 10**9, 10**9]
    return users, items


def test_files_written(trained):
    _, out = trained
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "id_maps.json",
        "metrics.json",
        "optimizer.pt",
        "seen.npz",
        "training_curves.png",
        "weights.pt",
    ]


def test_reload_scores_bit_for_bit(trained):
    result, out = trained
    original = result.recommender
    loaded = hybridrec.load(out)
    users, items = pairs(original)
    expected = original.score(users, items)
    got = loaded.score(users, items)
    assert np.array_equal(got, expected)
    assert loaded.users == original.users and loaded.items == original.items
    assert not loaded.model.training


def test_score_returns_float32_probabilities(trained):
    result, _ = trained
    users, items = pairs(result.recommender)
    scores = result.recommender.score(users, items)
    assert scores.dtype == np.float32
    assert scores.shape == (len(users),)
    assert ((scores > 0) & (scores < 1)).all()


def test_score_is_sigmoid_of_the_model_logits(trained):
    rec = trained[0].recommender
    users, items = pairs(rec)
    u = torch.as_tensor(rec.users.transform(users))
    i = torch.as_tensor(rec.items.transform(items))
    assert (u[-3:] == 0).tolist() == [True, True, True]  # the unknown users map to index 0
    with torch.no_grad():
        expected = torch.sigmoid(rec.model(u, i)).numpy()
    np.testing.assert_allclose(rec.score(users, items), expected, rtol=0, atol=1e-7)


def test_unknown_ids_get_a_neutral_shared_score(trained):
    """Every fully unknown pair has zero embeddings, hence one and the same score."""
    rec = trained[0].recommender
    scores = rec.score([10**9, -5, 424242], [10**9, -7, 0])
    assert scores[0] == scores[1] == scores[2]


def test_score_rejects_length_mismatch(trained):
    rec = trained[0].recommender
    with pytest.raises(ValueError, match="as many item ids as user ids"):
        rec.score([1, 2], [1])


def test_score_in_small_batches_matches(trained):
    rec = hybridrec.load(trained[1])
    users, items = pairs(rec)
    full = rec.score(users, items)
    rec.batch_size = 4
    assert np.array_equal(rec.score(users, items), full)


def test_config_json_contents(trained):
    _, out = trained
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "hybridrec-model"
    assert config["format_version"] == FORMAT_VERSION
    assert config["model"] == "hybrid"
    assert config["model_config"]["embedding_dim"] == 8
    assert config["model_config"]["mlp_layer_sizes"] == [16, 8]
    assert config["settings"]["train"]["batch_size"] == 256
    assert set(config["sha256"]) == {
        "weights.pt",
        "id_maps.json",
        "metrics.json",
        "seen.npz",
        "optimizer.pt",
    }


def test_loaded_recommender_exposes_metrics(trained):
    rec = hybridrec.load(trained[1])
    assert rec.metrics["final"]["epochs"] == 1
    assert rec.config["directory"] == str(trained[1])


def test_resave_round_trip(trained, tmp_path):
    rec = hybridrec.load(trained[1])
    rec.save(tmp_path / "again")
    users, items = pairs(rec)
    assert np.array_equal(
        hybridrec.load(tmp_path / "again").score(users, items), rec.score(users, items)
    )


def test_a_loaded_model_saved_elsewhere_keeps_its_metrics_and_optimiser_state(model_dir, tmp_path):
    """A copy saved with `load(d).save(d2)` had empty metrics and no optimizer.pt, so an
    update of the copy restarted Adam; a grown model (other shapes) saves none."""
    from hybridrec.artifact import load_moments

    rec = hybridrec.load(model_dir)
    rec.save(tmp_path / "copy")
    copy = hybridrec.load(tmp_path / "copy")
    assert copy.metrics == rec.metrics and copy.metrics["final"]["epochs"] == 1
    saved, kept = load_moments(model_dir), load_moments(tmp_path / "copy")
    assert saved and kept and saved.keys() == kept.keys()
    assert all(torch.equal(saved[k], kept[k]) for k in saved)
    rec.model.user_embedding = torch.nn.Embedding(999, 8)  # as if grown: shapes differ
    rec.save(tmp_path / "grown")
    assert load_moments(tmp_path / "grown") is None


# ------------------------------------------------------------------ damaged artifacts


def test_missing_directory(tmp_path):
    with pytest.raises(ArtifactError, match="no model directory at .*nothing-here"):
        hybridrec.load(tmp_path / "nothing-here")


def test_directory_without_config(model_dir):
    (model_dir / "config.json").unlink()
    with pytest.raises(ArtifactError, match="is not a hybridrec model: it has no config.json"):
        hybridrec.load(model_dir)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", ""])
def test_damaged_config(model_dir, text):
    (model_dir / "config.json").write_text(text)
    with pytest.raises(ArtifactError, match=r"config\.json is damaged"):
        hybridrec.load(model_dir)


@pytest.mark.parametrize("settings", ["x", {"data": "x"}, {"train": [1]}])
def test_settings_that_are_not_objects_are_a_damaged_config(model_dir, settings):
    """config.json's settings are not checksummed: a string there loaded, then `info` and
    `recommend` crashed with an AttributeError traceback."""
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "settings": settings}))
    with pytest.raises(ArtifactError, match=r"config\.json is damaged \(its settings"):
        hybridrec.load(model_dir)


def test_config_of_something_else(model_dir):
    (model_dir / "config.json").write_text(json.dumps({"format": "other", "format_version": 1}))
    with pytest.raises(ArtifactError, match="is not a hybridrec model config"):
        hybridrec.load(model_dir)


def test_truncated_weights(model_dir):
    weights = model_dir / "weights.pt"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match=r"weights\.pt is truncated .*checksum mismatch"):
        hybridrec.load(model_dir)


def test_missing_weights(model_dir):
    (model_dir / "weights.pt").unlink()
    with pytest.raises(ArtifactError, match=r"weights\.pt is missing"):
        hybridrec.load(model_dir)


def test_edited_id_maps_detected(model_dir):
    path = model_dir / "id_maps.json"
    maps = json.loads(path.read_text())
    maps["users"]["ids"].reverse()  # still valid JSON, but a different mapping
    path.write_text(json.dumps(maps))
    with pytest.raises(ArtifactError, match=r"id_maps\.json .*checksum mismatch"):
        hybridrec.load(model_dir)


def edit_config(model_dir, change):
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


def test_format_version_from_the_future(model_dir):
    edit_config(model_dir, lambda c: c.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(
        ArtifactError, match=rf"saved in format {FORMAT_VERSION + 1}, newer.*upgrade"
    ):
        hybridrec.load(model_dir)


def test_weights_that_do_not_fit(model_dir):
    """The config describes a bigger model than the weights were saved from."""
    edit_config(model_dir, lambda c: c["model_config"].update(embedding_dim=16))
    with pytest.raises(ArtifactError, match=r"weights\.pt does not fit the model"):
        hybridrec.load(model_dir)


def test_unknown_model_name(model_dir):
    edit_config(model_dir, lambda c: c.update(model="transformer"))
    with pytest.raises(ArtifactError, match="cannot build.*unknown model 'transformer'"):
        hybridrec.load(model_dir)


def test_bad_model_config(model_dir):
    edit_config(model_dir, lambda c: c["model_config"].update(embedding_dim=0))
    with pytest.raises(ArtifactError, match="cannot build.*--embedding-dim"):
        hybridrec.load(model_dir)


def test_no_checksums(model_dir):
    edit_config(model_dir, lambda c: c.update(sha256={}))
    with pytest.raises(ArtifactError, match=r"lists no weights\.pt/id_maps\.json"):
        hybridrec.load(model_dir)


def test_sha256_not_an_object(model_dir):
    edit_config(model_dir, lambda c: c.update(sha256=None))
    with pytest.raises(ArtifactError):
        hybridrec.load(model_dir)


def test_saved_files_respect_the_umask(trained, tmp_path):
    """Another account may need to read a model (a service user): files get the mode open()
    would give them under the umask, not the 0600 of a temporary file."""
    import os

    previous = os.umask(0o027)
    try:
        trained[0].recommender.save(tmp_path / "model")
    finally:
        os.umask(previous)
    for path in (tmp_path / "model").iterdir():
        assert path.stat().st_mode & 0o777 == 0o640, path.name


@pytest.mark.parametrize("name", ["../outside.json", "/etc/hostname", "notes.txt"])
def test_loader_reads_only_the_artifact_files(model_dir, name):
    config = json.loads((model_dir / "config.json").read_text())
    config["sha256"][name] = "0" * 64
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="not part of a model") as info:
        hybridrec.load(model_dir)
    assert "\n" not in str(info.value)


def test_non_finite_weights_are_refused(trained, tmp_path):
    """A model whose weights hold NaN (a tampered or broken file with a matching checksum)
    would recommend arbitrary or empty lists: loading (and so a service reload) refuses it."""
    rec = hybridrec.load(trained[1])
    with torch.no_grad():
        rec.model.item_embedding.weight[3, 1] = float("nan")
    rec.save(tmp_path / "nan")
    with pytest.raises(ArtifactError, match="NaN or infinite weights") as info:
        hybridrec.load(tmp_path / "nan")
    assert "item_embedding" in str(info.value) and "\n" not in str(info.value)


def test_finite_weights_whose_scores_overflow_are_refused(trained, tmp_path):
    """Weights scaled by 1e30 pass the finiteness check but every score overflows, so
    every served list would be empty: loading refuses them too."""
    rec = hybridrec.load(trained[1])
    with torch.no_grad():
        for weight in rec.model.parameters():
            weight.mul_(1e30)
    rec.save(tmp_path / "huge")
    with pytest.raises(ArtifactError, match="too large to compute with") as info:
        hybridrec.load(tmp_path / "huge")
    assert "\n" not in str(info.value)


def test_save_refuses_what_would_move_or_replace_a_users_files(trained, tmp_path, monkeypatch):
    """save(".") moved the working directory's files into a staging folder; a folder whose
    config.json is someone else's lost it. The CLI's --out checks now guard the API too."""
    rec = hybridrec.load(trained[1])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "config.json").write_text('{"app": 1}')
    refused = [("", "empty path"), (".", "current directory"),
               ("theirs", "not a hybridrec model"), ("notes.txt", "is a file")]  # fmt: skip
    for target, fragment in refused:
        with pytest.raises(ConfigError, match=fragment):
            rec.save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "theirs"]
    assert (tmp_path / "theirs" / "config.json").read_text() == '{"app": 1}'
    rec.save("model")
    rec.save("model")  # over a model: replaced
    assert hybridrec.load("model").model_name == rec.model_name
