"""hybridrec update: grown encoders and tables, carried optimiser state, lineage, every model."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

import hybridrec
from hybridrec import TrainConfig
from hybridrec.artifact import load_moments
from hybridrec.cli import main
from hybridrec.data.synthetic import planted_groups
from hybridrec.errors import ConfigError
from hybridrec.models import MODELS
from hybridrec.update import update
from hybridrec.update.grow import Growth, grow_model, grow_moments
from tests.helpers import OPTIONS, config


def _split() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Planted groups: users 1-40 in the old data; new rows of 4 old users, 2 new users
    (41, 42) and 2 new items (101: group 0, 102: group 1)."""
    train, _ = planted_groups(seed=0, num_users=40, num_items=40, per_user=7)
    new = pd.DataFrame(
        {
            "userId": [4, 4, 8, 5, 41, 41, 41, 42, 42, 42],
            "itemId": [101, 2, 101, 102, 1, 2, 101, 11, 12, 102],
        }
    )
    return train, new


def _trained(tmp_path, model="hybrid", epochs=3, **overrides):
    train, new = _split()
    out = tmp_path / "old"
    hybridrec.train(
        train, None, out=out, model=model, model_options=OPTIONS[model],
        train_config=config(epochs=epochs, **overrides),
    )  # fmt: skip
    return out, new


def _snapshot(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_update_extends_keeps_the_old_model_and_records_lineage(tmp_path):
    old, new = _trained(tmp_path)
    before = _snapshot(old)
    parent = hybridrec.load(old)
    result = update(old, new, out=tmp_path / "new", epochs=2)
    assert _snapshot(old) == before  # OLD is never modified
    rec = hybridrec.load(tmp_path / "new")
    # every old id keeps its index; new ones are appended
    assert rec.users.ids[: len(parent.users)].tolist() == parent.users.ids.tolist()
    assert rec.items.ids[: len(parent.items)].tolist() == parent.items.ids.tolist()
    assert set(rec.users.ids[len(parent.users) :].tolist()) == {41, 42}
    assert set(rec.items.ids[len(parent.items) :].tolist()) == {101, 102}
    # new positives are seen (excluded) and counted
    seen_41 = rec.items.inverse_transform(rec.seen.of(int(rec.users.transform([41])[0])))
    assert set(seen_41.tolist()) == {1, 2, 101}
    counts = rec.seen.item_counts[rec.items.transform([101, 1])]
    assert (
        counts[0] == 3 and counts[1] == parent.seen.item_counts[parent.items.transform([1])[0]] + 1
    )
    settings = rec.config["settings"]
    assert settings["update"]["parent"] == str(old)
    assert settings["update"]["new_users"] == 2 and settings["update"]["new_items"] == 2
    assert settings["update"]["positives"] == len(new)
    assert settings["watermark"]["rows"] == len(new)
    assert result.info["update"]["touched_users"] == 5
    # the new item can be recommended, and scores are finite
    scores = rec.score([1, 41], [101, 102])
    assert np.isfinite(scores).all()
    assert 101 not in rec.recommend(41, k=5).item_ids.tolist()  # seen: left out


def test_new_user_learns_their_group_from_the_update(tmp_path):
    old, new = _trained(tmp_path, epochs=8)
    update(old, new, out=tmp_path / "new", epochs=8)
    rec = hybridrec.load(tmp_path / "new")
    # user 41 took items 1, 2 (group 0: items 1-10), user 42 items 11, 12 (group 1)
    top_41 = rec.recommend(41, k=5).item_ids
    top_42 = rec.recommend(42, k=5).item_ids
    assert np.mean([1 <= i <= 10 for i in top_41]) >= 0.6
    assert np.mean([11 <= i <= 20 for i in top_42]) >= 0.6


@pytest.mark.parametrize("scope", ["rows", "all"])
def test_optimiser_state_is_saved_and_carried_over(tmp_path, scope):
    old, new = _trained(tmp_path, epochs=2)
    moments = load_moments(old)
    assert moments is not None
    steps = {k: float(v) for k, v in moments.items() if k.endswith(":step")}
    assert steps and all(s > 0 for s in steps.values())
    update(old, new, out=tmp_path / "new", epochs=1, scope=scope)
    after = load_moments(tmp_path / "new")
    rec = hybridrec.load(tmp_path / "new")
    assert set(after) == set(moments)  # frozen weights keep their state too
    for key, step in steps.items():  # continued, not restarted
        if scope == "all" or key.startswith(("user_embedding.", "item_embedding.")):
            assert float(after[key]) > step, key
        else:
            assert float(after[key]) == step, key
    name = "user_embedding.weight"
    assert after[f"{name}:exp_avg"].shape == rec.model.user_embedding.weight.shape


def test_grown_rows_start_from_the_mean_and_old_rows_stay():
    model = hybridrec.models.build_model("mf", num_users=4, num_items=5, embedding_dim=3)
    growth = Growth(4, 5, 6, 8)
    grown = grow_model(model, growth)
    old = model.item_embedding.weight.detach()
    new = grown.item_embedding.weight.detach()
    assert torch.equal(new[:5], old)
    assert torch.allclose(new[5:], old[1:].mean(0).expand(3, -1))
    assert grown.user_bias.weight.shape == (6, 1)
    moments = {
        "item_embedding.weight:exp_avg": torch.ones(5, 3),
        "item_embedding.weight:exp_avg_sq": torch.arange(15.0).reshape(5, 3),
        "item_embedding.weight:step": torch.tensor(7.0),
    }
    out = grow_moments(moments, model, growth)
    assert out["item_embedding.weight:exp_avg"][5:].abs().sum() == 0
    expected_sq = torch.arange(15.0).reshape(5, 3)[1:].mean(0)
    assert torch.allclose(out["item_embedding.weight:exp_avg_sq"][7], expected_sq)
    assert float(out["item_embedding.weight:step"]) == 7.0


def test_a_model_with_an_undeclared_row_table_is_refused():
    model = hybridrec.models.build_model("mf", num_users=4, num_items=5, embedding_dim=3)
    model.register_buffer("user_votes", torch.zeros(4))  # one row per user, not declared
    with pytest.raises(ConfigError, match="row_tables"):
        grow_model(model, Growth(4, 5, 6, 5))


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_registered_model_updates(tmp_path, model):
    old, new = _trained(tmp_path, model=model, epochs=1)
    update(old, new, out=tmp_path / "new", epochs=1)
    rec = hybridrec.load(tmp_path / "new")
    assert rec.recommend(42, k=3).source != "popularity" or model == "popularity"
    assert len(rec.recommend(1, k=3).item_ids) == 3


def test_popularity_counts_add_up_to_a_retrain(tmp_path):
    old, new = _trained(tmp_path, model="popularity", epochs=1)
    update(old, new, out=tmp_path / "new")
    train, _ = _split()
    full = hybridrec.train(pd.concat([train, new]), None, model="popularity",
                           train_config=config())  # fmt: skip
    rec = hybridrec.load(tmp_path / "new")
    ids = full.recommender.items.ids
    ours = rec.model.item_counts[rec.items.transform(ids)]
    theirs = full.recommender.model.item_counts[full.recommender.items.transform(ids)]
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("epochs", [1, None, 0])
def test_sasrec_histories_grow_and_untouched_ones_stay(tmp_path, epochs):
    """Also when the epochs are chosen on each user's held-out latest item (None: that
    item was left out of the stored history for good) and with --epochs 0 (no history
    grew at all)."""
    old, new = _trained(tmp_path, model="sasrec", epochs=1)
    parent = hybridrec.load(old)
    update(old, new, out=tmp_path / "new", epochs=epochs, replay=1.0, scope="all")
    rec = hybridrec.load(tmp_path / "new")

    def history(r, user):
        row = r.model.histories[int(r.users.transform([user])[0])]
        return r.items.inverse_transform(row[row != 0].numpy()).tolist()

    assert history(rec, 4) == (history(parent, 4) + [101, 2])[-8:]  # max_len 8
    assert history(rec, 41) == [1, 2, 101]
    for user in (1, 2, 3, 6, 7):
        assert history(rec, user) == history(parent, user)


def test_update_options_and_inputs_are_checked(tmp_path):
    old, new = _trained(tmp_path, epochs=1)
    with pytest.raises(ConfigError, match="leaves the old one"):
        update(old, new, out=old)
    with pytest.raises(ConfigError, match="one"):
        update(old, None, out=tmp_path / "x")
    with pytest.raises(ConfigError, match="no positive"):
        update(old, new.assign(target=0), out=tmp_path / "x")
    with pytest.raises(ConfigError, match="replay"):
        update(old, new, out=tmp_path / "x", replay=float("nan"), scope="all")
    with pytest.raises(ConfigError, match="needs --scope all"):  # it would change nothing
        update(old, new, out=tmp_path / "x", replay=2.0)
    with pytest.raises(ConfigError, match="column 'userId': the model's ids are integers"):
        update(old, new.assign(userId=["u"] * len(new)), out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_cli_update(tmp_path, capsys):
    old, new = _trained(tmp_path, epochs=1)
    new_csv = tmp_path / "new.csv"
    new.to_csv(new_csv, index=False)
    args = ["--out", str(tmp_path / "new"), "--epochs", "1", "--json", "--no-progress"]
    code = main(["update", "--model", str(old), "--train", str(new_csv), *args])
    assert code == 0
    info = json.loads(capsys.readouterr().out)
    assert info["update"]["new_items"] == 2
    assert (tmp_path / "new" / "config.json").is_file()
    bad = tmp_path / "bad.csv"
    bad.write_text("userId,itemId\n1,\n")
    code = main(["update", "--model", str(old), "--train", str(bad), "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and "bad.csv" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()
    code = main(["update", "--model", str(tmp_path / "none"), "--train", str(new_csv),
                 "--out", str(tmp_path / "c")])  # fmt: skip
    assert code == 2


def test_new_items_start_from_their_features(tmp_path):
    train, new = _split()
    genres = ["a", "b", "c", "d"]
    items = pd.DataFrame(
        {"itemId": range(1, 41), "genre": [genres[(i - 1) // 10] for i in range(1, 41)]}
    )
    out = tmp_path / "old"
    hybridrec.train(train, None, out=out, model="hybrid", model_options=OPTIONS["hybrid"],
                    train_config=config(epochs=2), item_features=items)  # fmt: skip
    # the id column found by name, as training finds it, not by position
    new_items = pd.DataFrame({"genre": ["a", "b", "zzz"], "itemId": [101, 102, 103]})
    update(out, new, out=tmp_path / "new", epochs=0, item_features=new_items)
    rec = hybridrec.load(tmp_path / "new")
    table = rec.model.item_embedding
    row_101, row_1 = (int(rec.items.transform([i])[0]) for i in (101, 1))
    assert torch.equal(table.feature_tokens[row_101], table.feature_tokens[row_1])  # genre a
    row_103 = int(rec.items.transform([103])[0])
    assert table.has_id[row_103] == 0  # no interactions: its features alone
    # --epochs 0 trains no id row, so 101 keeps being scored by its features (it was marked
    # as trained, with a zero id row: one interaction sank it below the cold items)
    assert table.has_id[row_101] == 0
    fitted = rec.config["settings"]["feature_popularity"]
    parent = hybridrec.load(out).config["settings"]["feature_popularity"]
    assert fitted["warm_items"] == parent["warm_items"]


def test_an_item_known_by_features_alone_trains_its_id_row_once_it_has_rows(tmp_path):
    """Items 41-44 are in the feature file only (cold). An update whose rows name item 41
    trains its id row (it stayed frozen at zero under --scope rows while being marked as
    trained, which ranked it far below where its features had put it)."""
    train, _ = _split()
    genres = ["a", "b", "c", "d"]
    items = pd.DataFrame({"itemId": range(1, 45), "genre": [genres[i % 4] for i in range(44)]})
    out = tmp_path / "old"
    hybridrec.train(train, None, out=out, model="hybrid", model_options=OPTIONS["hybrid"],
                    train_config=config(epochs=2), item_features=items)  # fmt: skip
    parent = hybridrec.load(out)
    row = int(parent.items.transform([41])[0])
    assert parent.model.item_embedding.has_id[row] == 0
    new = pd.DataFrame({"userId": [3, 5, 7], "itemId": [41, 41, 41]})
    update(out, new, out=tmp_path / "new", epochs=2)
    table = hybridrec.load(tmp_path / "new").model.item_embedding
    before = parent.model.item_embedding.weight.detach()
    assert table.has_id[row] == 1 and not torch.equal(table.weight[row].detach(), before[row])
    untouched = int(parent.items.transform([42])[0])  # still cold, its row as it was
    assert table.has_id[untouched] == 0
    assert torch.equal(table.weight[untouched].detach(), before[untouched])
    assert table.feature_popularity(torch.tensor([row]))[0] == 0  # warm now: no prior


def test_update_from_the_event_log_moves_the_watermark(tmp_path, caplog):
    from hybridrec.events import Event, EventLog

    old, new = _trained(tmp_path, epochs=1)
    log = EventLog(tmp_path / "events.db")
    log.write([Event(int(u), int(i), 1.0, 1e9 + n) for n, (u, i) in enumerate(new.to_numpy())])
    log.write([Event(41, 3, 0.0, None)])  # a non-positive event: counted, not learned
    log.close()
    with caplog.at_level(logging.WARNING, logger="hybridrec"):
        result = update(old, events=tmp_path / "events.db", out=tmp_path / "new", epochs=1)
    # said plainly: an update does not learn from labelled negatives
    assert "1 rows are labelled negative" in caplog.text and "full retrain" in caplog.text
    assert result.info["watermark"]["event_id"] == len(new) + 1
    assert result.info["update"]["positives"] == len(new)
    assert result.info["update"]["data"].startswith("events:")
    rec = hybridrec.load(tmp_path / "new")
    assert set(rec.items.ids[-2:].tolist()) == {101, 102}
    with pytest.raises(ConfigError, match="no events after"):  # all consumed
        update(tmp_path / "new", events=tmp_path / "events.db", out=tmp_path / "newer")
    log = EventLog(tmp_path / "events.db")
    log.write([Event(43, 1), Event(43, 2)])
    log.close()
    code = main(["update", "--model", str(tmp_path / "new"), "--events",
                 str(tmp_path / "events.db"), "--out", str(tmp_path / "newer"), "--json",
                 "--epochs", "1"])  # fmt: skip
    assert code == 0
    newer = hybridrec.load(tmp_path / "newer")
    assert newer.config["settings"]["watermark"]["event_id"] == len(new) + 3
    assert 43 in newer.users.ids.tolist()


def test_info_of_an_updated_model_gives_its_update_command(tmp_path, capsys):
    old, new = _trained(tmp_path, epochs=1)
    new_csv = tmp_path / "new.csv"
    new.to_csv(new_csv, index=False)
    (tmp_path / "u.toml").write_text(
        f'train = "{new_csv}"\nepochs = 1\nreplay = 0.5\nscope = "all"\n'
    )
    args = ["--model", str(old), "--config", str(tmp_path / "u.toml"), "--out"]
    assert main(["update", *args, str(tmp_path / "new"), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["info", "--model", str(tmp_path / "new")]) == 0
    shown = capsys.readouterr().out
    assert "hybridrec update --config" in shown and "replay = 0.5" in shown
    assert hybridrec.load(tmp_path / "new").config["settings"]["update"]["replay_rows"] >= 0


def test_rows_scope_leaves_untouched_users_scores_alone(tmp_path):
    old, new = _trained(tmp_path, epochs=2)
    parent = hybridrec.load(old)
    update(old, new, out=tmp_path / "new", epochs=2, scope="rows")
    rec = hybridrec.load(tmp_path / "new")
    items = parent.items.ids.tolist()
    for user in (1, 2, 3):  # not in the new rows
        assert np.allclose(rec.score([user] * len(items), items),
                           parent.score([user] * len(items), items), atol=1e-6)  # fmt: skip
    assert not np.allclose(
        rec.score([4] * len(items), items), parent.score([4] * len(items), items)
    )


def test_new_files_may_name_their_columns(tmp_path, capsys):
    old, new = _trained(tmp_path, epochs=1)
    renamed = tmp_path / "renamed.csv"
    new.rename(columns={"userId": "u", "itemId": "i"}).to_csv(renamed, index=False)
    args = ["update", "--model", str(old), "--train", str(renamed), "--epochs", "1"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "--user-col" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "b"), "--user-col", "u", "--item-col", "i"]) == 0
    rec = hybridrec.load(tmp_path / "b")
    assert rec.config["settings"]["data"]["user_col"] == "userId"  # the model's own columns
    assert 41 in rec.users.ids.tolist()


def test_every_training_run_starts_adam_afresh(monkeypatch):
    """The refit after the automatic holdout must not start from the holdout run's Adam
    state (one shared dict once carried it over and cost the refit quality)."""
    import hybridrec.pipeline as pipeline

    seen = []
    real_fit = pipeline.fit

    def spy(*args, moments=None, **kwargs):
        seen.append(dict(moments or {}))
        return real_fit(*args, moments=moments, **kwargs)

    monkeypatch.setattr(pipeline, "fit", spy)
    train, _ = _split()
    hybridrec.train(train, model_options=OPTIONS["hybrid"], train_config=config(epochs=2))
    assert len(seen) == 2  # the holdout run and the refit
    assert seen == [{}, {}]


def test_seen_items_keep_each_pairs_latest_recency_capped():
    from hybridrec.data.seen import NEWER_CAP, SeenItems

    seen = SeenItems.from_pairs(
        [1, 1, 2, 1, 2], [3, 2, 3, 3, 1], num_users=3, num_items=4, newer=[4, 7, 0, 1, 900]
    )  # fmt: skip
    assert seen.of(1).tolist() == [2, 3] and seen.newer_of(1).tolist() == [7, 1]
    assert seen.newer_of(2).tolist() == [NEWER_CAP, 0]  # item 1 (capped), item 3
    back = SeenItems.from_bytes(seen.to_bytes(), num_users=3, num_items=4)
    assert back.newer.tolist() == seen.newer.tolist()
    plain = SeenItems.from_pairs([1, 1], [2, 2], num_users=3, num_items=4)
    assert plain.newer is None
    assert SeenItems.from_bytes(plain.to_bytes(), num_users=3, num_items=4).newer is None


def test_update_orders_old_rows_by_their_stored_recency(tmp_path):
    """With timestamps, training stores each positive's recency; an update gives the old
    rows that order (oldest first, the new rows after them) and the grown store counts the
    new rows as the most recent, so the recency weights are those of a retrain."""
    from hybridrec.update.rows import NewRows, seen_ages, seen_histories, update_rows

    old = pd.DataFrame({"userId": [1, 1, 1, 2, 2, 3], "itemId": [10, 11, 12, 10, 13, 14],
                        "timestamp": [30, 10, 20, 5, 6, 7]})  # fmt: skip
    hybridrec.train(old, None, out=tmp_path / "old", model="mf", model_options=OPTIONS["mf"],
                    train_config=config(epochs=1))  # fmt: skip
    parent = hybridrec.load(tmp_path / "old")
    user1 = parent.users.transform(np.array([1]))[0]
    items = parent.items.inverse_transform(parent.seen.of(user1)).tolist()
    ages = dict(zip(items, parent.seen.newer_of(user1).tolist(), strict=True))
    assert ages == {10: 0, 11: 2, 12: 1}
    new = NewRows(np.array([user1, user1]), np.array([1, 2]), timed=True)
    rows = update_rows(new, seen_histories(parent.seen), 0.0, 0, ordered=False,
                       ages=seen_ages(parent.seen))  # fmt: skip
    keys = rows.data.timestamp.numpy()
    assert rows.history_rows == 3 and (keys[3:] > keys[:3].max()).all()  # new rows last
    oldest_first = rows.data.item_idx.numpy()[:3][np.argsort(keys[:3])]
    assert parent.items.inverse_transform(oldest_first).tolist() == [11, 12, 10]
    new_rows = pd.DataFrame({"userId": [1, 2], "itemId": [13, 11], "timestamp": [40, 50]})
    update(tmp_path / "old", new_rows, out=tmp_path / "new", epochs=1)
    grown = hybridrec.load(tmp_path / "new").seen
    got = dict(zip(grown.of(user1).tolist(), grown.newer_of(user1).tolist(), strict=True))
    assert {int(parent.items.inverse_transform(np.array([k]))[0]): v for k, v in got.items()} == {
        10: 1,
        11: 3,
        12: 2,
        13: 0,
    }


def test_two_updates_from_one_watermark_give_the_same_model(tmp_path):
    """Same parent, same new rows, same seed, on the CPU: the same weights, bit for bit."""
    old, new = _trained(tmp_path, epochs=1)
    update(old, new, out=tmp_path / "a", epochs=2, seed=3)
    update(old, new, out=tmp_path / "b", epochs=2, seed=3)
    a, b = hybridrec.load(tmp_path / "a"), hybridrec.load(tmp_path / "b")
    for (name, x), y in zip(
        a.model.state_dict().items(), b.model.state_dict().values(), strict=True
    ):
        assert torch.equal(x, y), name
    assert a.users.ids.tolist() == b.users.ids.tolist()


def test_an_update_killed_midway_leaves_the_parent_and_can_be_rerun(tmp_path):
    """SIGKILL once the update is training: OLD is byte for byte as it was, no NEW model is
    left behind, and the same command then completes."""
    import os
    import signal
    import subprocess
    import sys

    old, new = _trained(tmp_path, epochs=1)
    before = _snapshot(old)
    rows = tmp_path / "new.csv"
    new.to_csv(rows, index=False)
    out = tmp_path / "new"
    command = [sys.executable, "-m", "hybridrec", "update", "--model", str(old), "--train",
               str(rows), "--out", str(out), "--epochs", "10000"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, env=env)
    try:
        seen = b""
        while b"epoch 2/" not in seen:  # training has run a whole epoch
            chunk = proc.stderr.read1(4096)
            assert chunk, seen[-500:]  # the update must not end (or fail) before the kill
            seen += chunk
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(60)
    assert _snapshot(old) == before
    with pytest.raises(Exception, match="no model directory"):
        hybridrec.load(out)
    done = subprocess.run([*command[:-1], "1"], env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr[-500:]
    assert _snapshot(old) == before
    assert set(hybridrec.load(out).users.ids.tolist()) >= {41, 42}


def test_the_cold_user_term_grows_and_is_refitted(tmp_path):
    train, new = _split()
    users = pd.DataFrame({"userId": range(1, 200), "group": [u % 3 for u in range(1, 200)]})
    users["group"] = users["group"].astype(str)
    out = tmp_path / "old"
    hybridrec.train(train, None, out=out, model="hybrid", model_options=OPTIONS["hybrid"],
                    train_config=config(epochs=2), user_features=users)  # fmt: skip
    update(out, new, out=tmp_path / "new", epochs=1)
    parent, child = hybridrec.load(out), hybridrec.load(tmp_path / "new")
    bias = child.model.cold_user_item_bias
    assert bias.shape == (child.items.num_embeddings,)
    assert child.items.num_embeddings > parent.items.num_embeddings  # new items arrived
    counts = np.bincount(child.items.transform(pd.concat([train, new]).itemId.to_numpy()),
                         minlength=child.items.num_embeddings)  # fmt: skip
    logs = torch.log1p(torch.as_tensor(counts, dtype=torch.float32))
    weight = child.config["settings"]["cold_user_popularity"]["weight"]
    assert torch.allclose(bias[1:], weight * (logs[1:] - logs[1:].mean()), atol=1e-4)


def test_an_update_rechooses_the_batch_size_its_parents_data_chose(tmp_path):
    """A batch size and rate the parent's data size chose (``chosen_for_data``) are chosen
    again for the update's rows; ones the user gave, or an older artifact's, are kept."""
    from hybridrec.update import _train_config

    train = {"batch_size": 8192, "learning_rate": 0.01, "epochs": 3, "seed": 0}
    auto = _train_config(
        {"train": train, "chosen_for_data": ["batch_size", "learning_rate"]},
        tmp_path, 2, 0, None, "cpu",
    )  # fmt: skip
    assert (auto.batch_size, auto.learning_rate) == (None, None)
    given_lr = _train_config(
        {"train": train, "chosen_for_data": ["batch_size", "learning_rate"]},
        tmp_path, 2, 0, 0.002, "cpu",
    )  # fmt: skip
    assert (given_lr.batch_size, given_lr.learning_rate) == (None, 0.002)
    kept = _train_config({"train": train, "chosen_for_data": []}, tmp_path, 2, 0, None, "cpu")
    assert (kept.batch_size, kept.learning_rate) == (8192, 0.01)
    old = _train_config({"train": train}, tmp_path, 2, 0, None, "cpu")
    assert (old.batch_size, old.learning_rate) == (8192, 0.01)


def test_a_trained_model_records_what_its_data_chose(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("userId,itemId\n" + "".join(f"{u},{u % 7 + 1}\n" for u in range(1, 30)))
    hybridrec.train(
        path, None, out=tmp_path / "m", train_config=TrainConfig(epochs=1, device="cpu")
    )
    settings = json.loads((tmp_path / "m" / "config.json").read_text())["settings"]
    assert settings["chosen_for_data"] == ["batch_size", "learning_rate"]
    hybridrec.train(path, None, out=tmp_path / "g",
                    train_config=TrainConfig(epochs=1, device="cpu", batch_size=64))  # fmt: skip
    settings = json.loads((tmp_path / "g" / "config.json").read_text())["settings"]
    assert settings["chosen_for_data"] == ["learning_rate"]


def test_the_same_update_twice_gives_the_same_model(tmp_path):
    """Dropout drew from torch's global generator, which the update did not seed: the
    same command gave another model each time."""
    train, new = _split()
    old = tmp_path / "old"
    options = {**OPTIONS["hybrid"], "dropout": 0.3}
    hybridrec.train(train, None, out=old, model_options=options, train_config=config(epochs=1))
    first = update(old, new, out=tmp_path / "a", epochs=2).recommender.model.state_dict()
    torch.rand(7)  # whatever ran in between
    second = update(old, new, out=tmp_path / "b", epochs=2).recommender.model.state_dict()
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name
