"""The embedded model: export from a training run, provenance, loading, and its use as a fallback."""

from __future__ import annotations

import json

import cv2
import pytest
import torch

import cotracker3
from cotracker3 import embedded, synthetic
from cotracker3.errors import CheckpointError, WeightsUnavailableError
from cotracker3.training import TrainConfig, train
from track3d.cli import main

TINY = dict(window_len=8, model_resolution=(64, 64), latent_dim=32, hidden_size=32, num_heads=2, time_depth=1,
            space_depth=1, corr_hidden_dim=32, corr_embed_dim=16, num_virtual_tracks=4)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(steps=2, iters=2, num_points=16, min_frames=4, max_frames=8, scene_reuse=2,
                         scene=dict(num_frames=8, height=64, width=64, num_points=48, supersample=1),
                         model=dict(TINY), seed=1)
    return train(config, out)


@pytest.fixture
def shipped(run, tmp_path, monkeypatch):
    monkeypatch.setenv("TRACK3D_EMBEDDED_DIR", str(tmp_path / "embedded"))
    embedded.export(run, metrics={"mean": {"average_jaccard": 1.0}}, command="track3d train ...", wall_time_s=3.0)
    return tmp_path / "embedded"


def test_not_shipped_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACK3D_EMBEDDED_DIR", str(tmp_path / "none"))
    assert not embedded.available()
    with pytest.raises(WeightsUnavailableError, match="not shipped"):
        cotracker3.from_pretrained("embedded")


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
    embedded.export(run, calibration={"threshold": 0.45, "table": {}})
    assert embedded.provenance()["visibility_threshold"] == 0.45
    assert Predictor(cotracker3.from_pretrained("embedded")).visibility_threshold == 0.45
    monkeypatch.setenv("TRACK3D_EMBEDDED_DIR", str(tmp_path / "uncalibrated"))
    embedded.export(run)
    assert embedded.provenance()["visibility_threshold"] is None
    assert Predictor(cotracker3.from_pretrained("embedded")).visibility_threshold == OFFLINE_VISIBILITY_THRESHOLD


def test_the_calibrated_iterations_travel_with_the_model(run, tmp_path, monkeypatch):
    from cotracker3.predictor import DEFAULT_ITERS, Predictor

    monkeypatch.setenv("TRACK3D_EMBEDDED_DIR", str(tmp_path / "calibrated"))
    embedded.export(run, calibration={"threshold": 0.45, "iters": 3, "table": {}})
    assert embedded.provenance()["iters"] == 3
    model = cotracker3.from_pretrained("embedded")
    assert Predictor(model).iters == 3 and Predictor(model, iters=5).iters == 5  # an explicit number wins
    monkeypatch.setenv("TRACK3D_EMBEDDED_DIR", str(tmp_path / "uncalibrated"))
    embedded.export(run, calibration={"threshold": 0.45, "table": {}})
    assert embedded.provenance()["iters"] is None
    assert Predictor(cotracker3.from_pretrained("embedded")).iters == DEFAULT_ITERS == 6


def test_export_command_calibrates_then_evaluates_with_the_threshold(run, tmp_path, monkeypatch):
    from cotracker3 import evaluation, training
    from track3d import cli

    scene = dict(num_frames=6, height=64, width=64, num_points=32, supersample=1)
    monkeypatch.setattr(evaluation, "calibration_videos", lambda: [evaluation.scene_to_video(
        synthetic.training_scene(evaluation.CALIBRATION_STREAM, 0, synthetic.SceneConfig(**scene)))])
    seen = []

    def evaluate_model(model, videos_per_tier):
        seen.append((model.visibility_threshold, model.iters))
        return {"mean": {"average_jaccard": 12.5}}

    monkeypatch.setattr(training, "evaluate_model", evaluate_model)
    cli._export_embedded(str(run), str(tmp_path / "out"))
    record = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert record["visibility_threshold"] == record["calibration"]["threshold"] == seen[0][0]
    assert record["iters"] == record["calibration"]["iters"] == seen[0][1]
    assert sorted(map(int, record["calibration"]["iters_table"])) == list(evaluation.CALIBRATION_ITERS)
    assert len(record["calibration"]["table"]) == 19 and record["metrics"]["mean"]["average_jaccard"] == 12.5


def test_run_model_is_the_trained_one(run):
    from cotracker3.training import load_run_model

    model = load_run_model(run)
    trained = torch.load(run / "model.pt", weights_only=True)
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items()) and not model.training


def test_damaged_weights(shipped):
    (shipped / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="damaged"):
        embedded.load()


def test_reconstruct_falls_back_to_the_embedded_model(shipped, tmp_path, monkeypatch):
    monkeypatch.setenv("TRACK3D_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TRACK3D_OFFLINE", "1")
    cfg = synthetic.SceneConfig(num_frames=6, height=64, width=64, num_points=4, supersample=1)
    frames = tmp_path / "frames"
    frames.mkdir()
    for t, frame in enumerate(synthetic.render_scene(cfg, 0).frames):
        cv2.imwrite(str(frames / f"{t:03d}.png"), frame[..., ::-1])
    out = tmp_path / "out"
    assert main(["-q", "reconstruct", str(frames), "--grid", "4", "--no-viz", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "embedded" and any("embedded model" in w for w in summary["warnings"])
    assert main(["-q", "track", str(frames), "--model", "embedded", "--grid", "3", "--no-overlay",
                 "--out", str(tmp_path / "tracks")]) == 0

    # track3d track, with no model named, also falls back to it.
    assert main(["-q", "track", str(frames), "--grid", "3", "--no-overlay", "--out", str(tmp_path / "t2")]) == 0


def test_evaluate_model_reports_every_tier_in_percent(run):
    from cotracker3.training import evaluate_model, load_run_model

    metrics = evaluate_model(load_run_model(run), videos_per_tier=1)
    assert set(metrics) == {f"{tier}/mean" for tier in synthetic.EVAL_TIERS} | {"mean"}
    for values in metrics.values():
        assert set(values) == {"average_jaccard", "average_pts_within_thresh", "occlusion_accuracy"}
        assert all(0 <= v <= 100 for v in values.values())
