"""The embedded model: found through the registry, loaded from its files, and its use as a fallback
(its export from a training run: ``train/test_export.py``)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import cotracker3
from cotracker3 import embedded, synthetic
from cotracker3.errors import CheckpointError, WeightsUnavailableError
from track3d import io
from track3d.cli import main
from track3d.tracking import FALLBACK_NOTICE


def test_not_shipped_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACK3D_EMBEDDED_DIR", str(tmp_path / "none"))
    assert not embedded.available()
    with pytest.raises(WeightsUnavailableError, match="not shipped"):
        cotracker3.from_pretrained("embedded")


def test_found_through_the_registry(shipped):
    model = cotracker3.from_pretrained("embedded")
    assert type(model) is cotracker3.CoTracker3Offline and not model.training
    assert model.latent_dim == embedded.provenance()["architecture"]["latent_dim"] == 32


def test_damaged_weights(shipped):
    (shipped / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="damaged"):
        embedded.load()


def test_reconstruct_falls_back_to_the_embedded_model(shipped, tmp_path, monkeypatch, caplog):
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

    # track3d track, with no model named, also falls back to it: it says so, and its tracks are the
    # embedded model's.
    caplog.clear()
    with caplog.at_level("WARNING", logger="track3d"):
        assert main(["-q", "track", str(frames), "--grid", "3", "--no-overlay", "--out", str(tmp_path / "t2")]) == 0
    assert FALLBACK_NOTICE in caplog.text and "embedded model" in caplog.text
    named, fallback = io.load_tracks(tmp_path / "tracks"), io.load_tracks(tmp_path / "t2")
    for key in ("tracks", "visibility", "confidence"):
        np.testing.assert_array_equal(fallback[key], named[key])
