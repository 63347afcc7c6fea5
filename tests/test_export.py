"""export.py: exported scorers give the same logits as the model they came from."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from hybridrec.errors import ConfigError
from hybridrec.export import export_model
from hybridrec.models import MODELS, build_model

HAS_ONNX = all(
    importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript", "onnxruntime")
)


def small_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    options = {
        "popularity": {},
        "mf": {},
        "sasrec": {"hidden_dim": 8, "max_len": 4, "num_heads": 2},
    }.get(name, {"mlp_layer_sizes": (16, 8)})
    model = build_model(name, num_users=7, num_items=9, **options)
    if hasattr(model, "prepare"):  # count-based and sequence models read their data
        users, items = torch.tensor([1, 2, 2, 2, 3, 1]), torch.tensor([3, 3, 5, 1, 8, 2])
        model.prepare(users, items, torch.ones(6))
    return model.eval()


def pairs(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 7, (n,), generator=g), torch.randint(0, 9, (n,), generator=g)


@pytest.mark.parametrize("name", list(MODELS))
def test_torchscript_scores_like_the_model(tmp_path, name):
    model = small_model(name)
    path = export_model(model, tmp_path / "scorer.pt", "torchscript")
    loaded = torch.jit.load(str(path))
    u, i = pairs()  # a batch size other than the tracing example's
    with torch.no_grad():
        torch.testing.assert_close(loaded(u, i), model(u, i), rtol=0, atol=1e-6)


@pytest.mark.skipif(not HAS_ONNX, reason="onnx, onnxscript and onnxruntime are not installed")
@pytest.mark.parametrize("name", ["hybrid", "sasrec"])
def test_onnx_scores_like_the_model(tmp_path, name):
    import onnxruntime

    model = small_model(name)
    path = export_model(model, tmp_path / "scorer.onnx", "onnx")
    session = onnxruntime.InferenceSession(str(path))
    u, i = pairs()
    (logits,) = session.run(None, {"user_idx": u.numpy(), "item_idx": i.numpy()})
    with torch.no_grad():
        expected = model(u, i).numpy()
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-5)


def test_unknown_format_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="--format must be one of torchscript, onnx"):
        export_model(small_model("hybrid"), tmp_path / "x", "pickle")  # type: ignore[arg-type]


def test_the_cli_takes_the_format_from_the_outs_suffix(tmp_path, monkeypatch, capsys):
    from hybridrec import export
    from hybridrec.cli import main
    from hybridrec.data.encoding import IdEncoder
    from hybridrec.recommend import Recommender

    ids = np.arange(1, 9)
    model = small_model("mf")
    rec = Recommender(model, IdEncoder.fit(ids[:6]), IdEncoder.fit(ids), model_name="mf")
    rec.save(tmp_path / "m")
    written = []
    monkeypatch.setattr(export, "export_model", lambda m, out, fmt: written.append((out, fmt)))
    monkeypatch.chdir(tmp_path)
    for argv, want in [
        (["--out", "s.onnx"], ("s.onnx", "onnx")),
        (["--out", "s.PT"], ("s.PT", "torchscript")),
        ([], ("m/model.pt", "torchscript")),
        (["--format", "onnx"], ("m/model.onnx", "onnx")),
    ]:
        assert main(["export", "--model", "m", *argv]) == 0
        out, fmt = written.pop()
        assert (str(out), fmt) == want
    # a suffix of neither kind is still refused, not overwritten
    assert main(["export", "--model", "m", "--out", "events.db"]) == 2
    assert "a torchscript export is a .pt file" in capsys.readouterr().err


def test_a_model_saved_over_an_exported_one_removes_the_stale_exports(tmp_path):
    """model.pt/model.onnx beside the artifact scored the new id maps with the old weights
    after a retrain into the same folder."""
    from hybridrec.data.encoding import IdEncoder
    from hybridrec.recommend import Recommender

    ids = np.arange(1, 9)
    users, items = IdEncoder.fit(ids[:6]), IdEncoder.fit(ids)
    rec = Recommender(small_model("mf"), users, items, model_name="mf")
    rec.save(tmp_path / "m")
    export_model(rec.model, tmp_path / "m" / "model.pt", "torchscript")
    (tmp_path / "m" / "model.onnx").write_bytes(b"an old export")
    (tmp_path / "m" / "notes.txt").write_text("mine")
    rec.save(tmp_path / "m")
    left = {p.name for p in (tmp_path / "m").iterdir()}
    assert "model.pt" not in left and "model.onnx" not in left and "notes.txt" in left
