"""The whole loop: serve -> record events -> update -> reload, with nothing lost."""

from __future__ import annotations

from fastapi.testclient import TestClient

import hybridrec
from hybridrec.serve import create_app
from hybridrec.update import update
from tests.test_update import _trained


def _items(answer) -> list:
    return [entry["item_id"] for entry in answer.json()["items"]]


def test_serve_record_update_reload(tmp_path):
    old, _ = _trained(tmp_path, epochs=2)
    log = tmp_path / "events.db"
    app = create_app(model_dir=old, events=log, admin_token="secret", cache_top=20)
    with TestClient(app) as client:
        body = {"events": [{"user": 41, "item": 1}, {"user": 41, "item": 2},
                           {"user": 41, "item": 101}, {"user": 3, "item": 5}]}  # fmt: skip
        assert client.post("/events", json=body).status_code == 200
        assert client.get("/recommend/41?k=5").json()["source"] == "events"  # a fold-in
        assert 5 not in _items(client.get("/recommend/3?k=30"))  # excluded at once
        result = update(old, events=log, out=tmp_path / "new", epochs=1)
        assert result.info["watermark"]["event_id"] == 4
        headers = {"Authorization": "Bearer secret"}
        answer = client.post("/admin/reload", json={"model_dir": str(tmp_path / "new")},
                             headers=headers)  # fmt: skip
        assert answer.status_code == 200, answer.text
        after = client.get("/recommend/41?k=5")
        assert after.json()["source"] == "model"  # the updated model knows user 41 now
        assert not {1, 2, 101} & set(_items(after))  # and what they had
        assert 5 not in _items(client.get("/recommend/3?k=30"))  # seen by the model now
    assert hybridrec.load(tmp_path / "new").config["settings"]["watermark"]["event_id"] == 4
