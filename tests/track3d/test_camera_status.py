"""Rotation-only and unsolved frames as users see them: ``summary.json``, the
result arrays and the Rerun recording; and the same clip at its own size and at 4K."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import track3d
from cotracker3 import synthetic
from track3d.cli import main


@pytest.fixture(autouse=True)
def _no_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACK3D_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TRACK3D_OFFLINE", "1")


def _write_frames(frames: np.ndarray, folder: Path, ext: str = "png") -> Path:
    folder.mkdir(parents=True)
    for t, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{t:04d}.{ext}"), frame[..., ::-1])
    return folder


def _log_lines(path: Path) -> dict[int, tuple[str, str]]:
    import rerun as rr

    out = {}
    for chunk in rr.chunk.RrdReader(path).stream():
        if chunk.entity_path != "/camera_status":
            continue
        batch = chunk.to_record_batch()
        names = batch.schema.names
        text = [c for c in names if c.endswith("TextLog:text")][0]
        level = [c for c in names if c.endswith("TextLog:level")][0]
        for f, tx, lv in zip(batch.column("frame").to_pylist(), batch.column(text).to_pylist(),
                             batch.column(level).to_pylist()):
            out[f] = (tx[0], lv[0])
    return out


def test_a_nodal_pan_is_reported_rotation_only(tmp_path):
    cfg = dataclasses.replace(synthetic.RECON_TIERS["nodal_pan"], num_frames=12, height=160, width=160,
                              num_points=8, supersample=1)
    scene = synthetic.render_scene(cfg, synthetic.recon_seed("nodal_pan", 0))
    frames = _write_frames(scene.frames, tmp_path / "frames")
    out = tmp_path / "out"
    assert main(["-q", "reconstruct", str(frames), "--grid", "20", "--model", "baseline", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cameras"] == "rotation", summary["messages"]
    assert summary["registered_frames"] == 12
    assert summary["rotation_only_frames"] == list(range(12)) and summary["unsolved_frames"] == {}
    result = track3d.load(out)
    assert (result.camera_kind == "rotation").all()
    lines = _log_lines(out / "recording.rrd")
    assert set(lines) == set(range(12))
    assert all(level == "WARN" and "rotation-only" in text for text, level in lines.values())


def test_the_recording_marks_unsolved_frames(tmp_path):
    from viz.recording import write_recording

    T, N = 4, 6
    poses = np.tile(np.eye(4), (T, 1, 1))
    poses[2] = np.nan
    path = write_recording(
        tmp_path / "r.rrd", tracks=np.zeros((T, N, 2)), visibility=np.ones((T, N), bool),
        is_dynamic=np.zeros(N, bool), cam_from_world=poses, K=np.eye(3), points=np.zeros((0, 3)),
        trajectories=np.full((T, N, 3), np.nan), frame_size=(32, 32), fps=10.0,
        camera_kind=np.array(["full", "rotation", "none", "identity"]), unsolved={2: "0 static track(s) visible"})
    lines = _log_lines(path)
    assert lines[0][1] == "INFO" and "solved" in lines[0][0]
    assert lines[1][1] == "WARN" and "rotation-only" in lines[1][0]
    assert lines[2] == ("frame 2: camera unsolved (0 static track(s) visible)", "ERROR")
    assert lines[3][1] == "INFO" and "still" in lines[3][0]
    with pytest.raises(ValueError, match="camera_kind"):
        write_recording(tmp_path / "bad.rrd", tracks=np.zeros((T, N, 2)), visibility=np.ones((T, N), bool),
                        is_dynamic=np.zeros(N, bool), cam_from_world=poses, K=np.eye(3), points=np.zeros((0, 3)),
                        trajectories=np.full((T, N, 3), np.nan), frame_size=(32, 32), fps=10.0,
                        camera_kind=np.array(["full"]))


def test_the_same_clip_at_its_own_size_and_at_4k(tmp_path):
    """A rendered clip at 384x216 and the same frames upscaled to 3840x2160, reconstructed with the
    default tracker (the embedded model, which tracks at its own input size whatever the frame size):
    frames with a camera within 10% and static tracks within 25% of each other."""
    cfg = dataclasses.replace(synthetic.RECON_TIERS["moving_camera"], num_frames=8, height=216, width=384,
                              num_points=8, supersample=1)
    scene = synthetic.render_scene(cfg, synthetic.recon_seed("moving_camera", 1))
    small = _write_frames(scene.frames, tmp_path / "small")
    big_frames = np.stack([cv2.resize(f, (3840, 2160), interpolation=cv2.INTER_CUBIC) for f in scene.frames])
    big = _write_frames(big_frames, tmp_path / "big", ext="jpg")
    del big_frames
    summaries = []
    for name, folder in (("small", small), ("big", big)):
        out = tmp_path / f"out-{name}"
        assert main(["-q", "reconstruct", str(folder), "--grid", "20", "--no-viz", "--out", str(out)]) == 0
        summaries.append(json.loads((out / "summary.json").read_text()))
    s, b = summaries
    assert b["frame_size"] == [3840, 2160] and s["frame_size"] == [384, 216]
    assert s["track_resolution"] == b["track_resolution"]
    assert s["registered_frames"] >= 7, s["messages"]
    assert abs(b["registered_frames"] - s["registered_frames"]) <= 0.1 * 8
    assert abs(b["static_tracks"] - s["static_tracks"]) <= 0.25 * s["static_tracks"], (s["static_tracks"],
                                                                                         b["static_tracks"])
