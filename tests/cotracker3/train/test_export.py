"""Writing a training run as the embedded model: 16-bit weights and provenance, calibration, atomicity."""

from __future__ import annotations

import json

import pytest
import torch

import cotracker3
from cotracker3 import embedded, synthetic
from cotracker3.train import export as export_module
from cotracker3.train.export import export


def test_export_and_load(run, shipped):
    assert embedded.available()
    record = json.loads((shipped / "provenance.json").read_text())
    assert record["steps"] == 2 and record["architecture"]["latent_dim"] == 32
    assert record["training"]["seed"] == 1 and record["metrics"]["mean"]["average_jaccard"] == 1.0
    assert (shipped / "model.safetensors").stat().st_size <= embedded.MAX_BYTES
    model = cotracker3.from_pretrained("embedded")
    trained = torch.load(run / "model.pt", weights_only=True)
    for k, v in model.state_dict().items():  # the shipped weights are the run's, rounded to 16 bits
        assert torch.allclose(v, trained[k].half().float()), k
    assert not model.training


def test_the_calibrated_threshold_travels_with_the_model(run, tmp_path, monkeypatch):
    from cotracker3.predictor import OFFLINE_VISIBILITY_THRESHOLD, Predictor

    monkeypatch.setenv("TRACK3D_EMBEDDED_DIR", str(tmp_path / "calibrated"))
    export(run, calibration={"threshold": 0.45, "table": {}})
    assert embedded.provenance()["visibility_threshold"] == 0.45
    assert Predictor(cotracker3.from_pretrained("embedded")).visibility_threshold == 0.45
    monkeypatch.setenv("TRACK3D_EMBEDDED_DIR", str(tmp_path / "uncalibrated"))
    export(run)
    assert embedded.provenance()["visibility_threshold"] is None
    assert Predictor(cotracker3.from_pretrained("embedded")).visibility_threshold == OFFLINE_VISIBILITY_THRESHOLD


def test_the_calibrated_iterations_travel_with_the_model(run, tmp_path, monkeypatch):
    from cotracker3.predictor import DEFAULT_ITERS, Predictor

    monkeypatch.setenv("TRACK3D_EMBEDDED_DIR", str(tmp_path / "calibrated"))
    export(run, calibration={"threshold": 0.45, "iters": 3, "table": {}})
    assert embedded.provenance()["iters"] == 3
    model = cotracker3.from_pretrained("embedded")
    assert Predictor(model).iters == 3 and Predictor(model, iters=5).iters == 5  # an explicit number wins
    monkeypatch.setenv("TRACK3D_EMBEDDED_DIR", str(tmp_path / "uncalibrated"))
    export(run, calibration={"threshold": 0.45, "table": {}})
    assert embedded.provenance()["iters"] is None
    assert Predictor(cotracker3.from_pretrained("embedded")).iters == DEFAULT_ITERS == 6


def test_export_command_calibrates_then_evaluates_the_shipped_weights(run, tmp_path, monkeypatch):
    from cotracker3.eval import scoring
    from track3d import cli

    scene = dict(num_frames=6, height=64, width=64, num_points=32, supersample=1)
    monkeypatch.setattr(export_module, "calibration_videos", lambda: [scoring.scene_to_video(
        synthetic.calibration_scene(0, synthetic.SceneConfig(**scene)))])
    seen = []

    def evaluate_model(model, videos_per_tier):
        sixteen_bits = all(torch.equal(v, v.half().float()) for v in model.state_dict().values())
        seen.append((model.visibility_threshold, model.iters, sixteen_bits))
        return {"mean": {"average_jaccard": 12.5}}

    monkeypatch.setattr(export_module, "evaluate_model", evaluate_model)
    cli._export_embedded(str(run), str(tmp_path / "out"))
    record = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert record["visibility_threshold"] == record["calibration"]["threshold"] == seen[0][0]
    assert record["iters"] == record["calibration"]["iters"] == seen[0][1]
    assert seen[0][2]  # evaluated as shipped: the weights rounded to 16 bits
    trained = torch.load(run / "model.pt", weights_only=True)
    assert not all(torch.equal(v, v.half().float()) for v in trained.values())  # which the run's are not
    assert sorted(map(int, record["calibration"]["iters_table"])) == list(scoring.CALIBRATION_ITERS)
    assert len(record["calibration"]["table"]) == 19 and record["metrics"]["mean"]["average_jaccard"] == 12.5


def test_export_replaces_weights_and_provenance_together(run, tmp_path):
    dest = tmp_path / "embedded"
    export(run, dest, metrics={"mean": {"average_jaccard": 1.0}})
    weights, record = (dest / embedded.WEIGHTS_FILE).read_bytes(), (dest / embedded.PROVENANCE_FILE).read_text()
    with pytest.raises(TypeError):  # the new record cannot be written: nothing of the new export lands
        export(run, dest, metrics={"mean": {"average_jaccard": object()}})
    assert (dest / embedded.WEIGHTS_FILE).read_bytes() == weights
    assert (dest / embedded.PROVENANCE_FILE).read_text() == record
    assert sorted(p.name for p in dest.iterdir()) == sorted([embedded.WEIGHTS_FILE, embedded.PROVENANCE_FILE])
