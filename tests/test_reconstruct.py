"""``track3d reconstruct`` / ``track3d.reconstruct`` end to end, as a user runs them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import recon
import track3d
from cotracker3 import synthetic
from recon.geometry import camera_centres, umeyama
from track3d.cli import main

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "videos"
FILES = {"reconstruction.npz", "colmap", "points.ply", "dynamic.glb", "recording.rrd", "overlay.mp4", "summary.json"}


@pytest.fixture(autouse=True)
def _no_weights(tmp_path, monkeypatch):
    # No test downloads weights: an empty cache and no network.
    monkeypatch.setenv("TRACK3D_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TRACK3D_OFFLINE", "1")


def _write_frames(frames: np.ndarray, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for t, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{t:04d}.png"), frame[..., ::-1])
    return folder


@pytest.fixture(scope="module")
def scene():
    cfg = dataclasses.replace(synthetic.EVAL_TIERS["moving_camera"], num_frames=16, height=192, width=192,
                              num_points=8, supersample=1)
    return synthetic.render_scene(cfg, 3)


@pytest.fixture(scope="module")
def scene_run(scene, tmp_path_factory):
    """The README's command on a rendered scene (a folder of PNG frames), with the baseline tracker."""
    root = tmp_path_factory.mktemp("scene")
    frames = _write_frames(scene.frames, root / "frames")
    out = root / "out"
    code = main(["-q", "reconstruct", str(frames), "--grid", "24", "--model", "baseline", "--out", str(out)])
    return code, out


def test_synthetic_scene_end_to_end(scene, scene_run):
    code, out = scene_run
    assert code == 0
    assert {p.name for p in out.iterdir()} == FILES
    result = track3d.load(out)
    T = len(scene.frames)
    assert result.tracks.shape == (T, 24 * 24, 2) and result.trajectories.shape == (T, 24 * 24, 3)
    assert result.registered.all(), result.summary["messages"]
    err = recon.camera_errors(result.cam_from_world, scene.cam_from_world)
    assert err["ate"] < 0.01 * scene.scene_extent, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cameras"] == "solved" and summary["registered_frames"] == T
    assert summary["model"] == "baseline"
    assert {"track", "reconstruct", "colors", "write"} <= set(summary["timings"])
    assert summary["static_points"] == len(result.points) > 100
    import open3d as o3d

    ply = o3d.io.read_point_cloud(str(out / "points.ply"))  # outliers removed, normals estimated
    assert 0.8 * len(result.points) <= len(ply.points) <= len(result.points) and ply.has_normals()
    # The static cloud's colours come from the video: the median of its pixels along the track.
    n = result.point_tracks[0]
    seen = np.flatnonzero(result.visibility[:, n])
    x, y = np.round(result.tracks[seen, n]).astype(int).T
    expected = np.median(scene.frames[seen, y, x], axis=0)
    assert np.abs(result.static_colors[0].astype(float) - expected).max() <= 1


def test_recording_reads_back_with_rerun(scene_run):
    import rerun as rr

    _, out = scene_run
    result = track3d.load(out)
    store = rr.chunk.RrdReader(out / "recording.rrd").store()
    schema = store.schema()
    assert {"/world/camera", "/world/camera/image", "/world/camera/image/tracks", "/world/static_points",
            "/world/moving_points", "/world/moving_tails"} <= set(schema.entity_paths())
    assert "frame" in {c.name for c in schema.index_columns()}
    frames, n_static = set(), 0
    for chunk in rr.chunk.RrdReader(out / "recording.rrd").stream():
        batch = chunk.to_record_batch()  # columns read one by one: the "time" durations need pandas
        names = batch.schema.names
        if chunk.entity_path == "/world/camera" and "Transform3D:translation" in names:
            frames |= set(batch.column("frame").to_pylist())
        if chunk.entity_path == "/world/static_points" and "Points3D:positions" in names:
            assert chunk.is_static
            n_static += sum(len(row) for row in batch.column("Points3D:positions").to_pylist() if row)
    assert frames == set(range(len(result.tracks)))  # a camera pose on every (registered) frame
    assert n_static == len(result.points)


def _glb_tracks(path: Path, result) -> dict[int, int]:
    """``frame -> number of points`` in a dynamic.glb, after checking each point is a moving track's."""
    import trimesh

    scene = trimesh.load(path, force="scene")
    counts = {}
    for t, index in enumerate(result.frame_indices):
        name = f"frame_{index:06d}"
        geometry = scene.geometry.get(name)
        counts[t] = 0 if geometry is None else len(geometry.vertices)
    return counts


def _moving_points_in_recording(path: Path) -> tuple[dict[int, int], list[float], list[int]]:
    """``frame -> number of moving points``, every logged reliability and track index."""
    import rerun as rr

    counts, reliability, tracks = {}, [], []
    for chunk in rr.chunk.RrdReader(path).stream():
        if chunk.entity_path != "/world/moving_points":
            continue
        batch = chunk.to_record_batch()  # columns read one by one: the "time" durations need pandas
        for key in batch.schema.names:
            values = batch.column(key).to_pylist() if key != "time" else None
            if key.endswith("Points3D:positions"):
                for frame, row in zip(batch.column("frame").to_pylist(), values):
                    counts[frame] = len(row or [])
            elif key.endswith("reliability"):
                reliability += [v for row in values for v in (row or [])]
            elif key.endswith("track"):
                tracks += [v for row in values for v in (row or [])]
    return counts, reliability, tracks


def test_min_reliability_hides_moving_points_in_glb_and_recording(scene_run, tmp_path, capsys):
    _, out = scene_run
    full = track3d.load(out)
    known = np.isfinite(full.trajectories).all(-1)  # (T, N)
    shown_all = full.is_dynamic & known.any(0)
    assert shown_all.sum() >= 4, "the scene needs moving points with 3D"
    # Without a threshold every moving point with 3D is in dynamic.glb and the recording, with its reliability.
    every = {t: int((known[t] & full.is_dynamic).sum()) for t in range(len(known))}
    assert _glb_tracks(out / "dynamic.glb", full) == every
    counts, reliability, tracks = _moving_points_in_recording(out / "recording.rrd")
    assert counts == every
    np.testing.assert_allclose(reliability, full.reliability[tracks], atol=1e-6)
    assert full.is_dynamic[tracks].all()

    # A threshold between the moving points' reliabilities: the run keeps every array, shows the rest.
    threshold = float(np.median(full.reliability[shown_all]))
    frames = out.parent / "frames"
    again = tmp_path / "again"
    assert main(["-q", "reconstruct", str(frames), "--grid", "24", "--model", "baseline",
                 "--min-reliability", f"{threshold:.6f}", "--out", str(again)]) == 0
    assert f"shown with reliability >= {float(f'{threshold:.6f}'):g}" in capsys.readouterr().out
    result = track3d.load(again)
    assert result.summary["options"]["min_reliability"] == pytest.approx(threshold, abs=1e-6)
    known = np.isfinite(result.trajectories).all(-1)
    reliable = result.reliability >= float(f"{threshold:.6f}")
    assert (result.is_dynamic & ~reliable & known.any(0)).any(), "some moving point should be hidden"
    assert np.isfinite(result.trajectories[:, result.is_dynamic & ~reliable]).any()  # the npz keeps them
    shown = {t: int((known[t] & result.is_dynamic & reliable).sum()) for t in range(len(known))}
    assert _glb_tracks(again / "dynamic.glb", result) == shown
    counts, reliability, tracks = _moving_points_in_recording(again / "recording.rrd")
    assert counts == shown and min(reliability) >= threshold - 1e-6
    assert reliable[tracks].all() and result.is_dynamic[tracks].all()
    # The Python API: the option is the default, and can be overridden.
    assert result.shown_moving().sum() == (result.is_dynamic & reliable).sum()
    assert (result.shown_moving(0.0) == result.is_dynamic).all()
    frame = int(np.argmax([known[t][result.is_dynamic & ~reliable].sum() for t in range(len(known))]))
    assert (len(result.point_cloud(frame, min_reliability=0.0).points)
            > len(result.point_cloud(frame).points) == len(result.points) + shown[frame])
    assert main(["-q", "reconstruct", str(frames), "--min-reliability", "1.5", "--model", "baseline",
                 "--out", str(tmp_path / "bad")]) == 2


def test_result_api_round_trip_and_exports(scene_run, tmp_path):
    _, out = scene_run
    result = track3d.load(out)
    again = tmp_path / "again.npz"
    result.export(again)
    with np.load(again) as f:
        for key in ("cam_from_world", "trajectories", "is_dynamic", "points", "colors"):
            np.testing.assert_array_equal(f[key], result.arrays[key])
    cloud = result.point_cloud()
    assert len(cloud.points) == len(result.points)
    moving_at_5 = (result.is_dynamic & np.isfinite(result.trajectories[5]).all(-1)).sum()
    assert len(result.point_cloud(5).points) == len(result.points) + moving_at_5
    with pytest.raises(IndexError):
        result.point_cloud(len(result.tracks))
    assert result.export(tmp_path / "model").joinpath("cameras.bin").is_file()
    with pytest.raises(track3d.OutputError):
        result.export(tmp_path / "cloud.xyz")


def test_existing_output_is_refused_unless_overwrite(scene, scene_run, capsys):
    _, out = scene_run
    frames = out.parent / "frames"
    before = (out / "summary.json").read_text()
    code = main(["-q", "reconstruct", str(frames), "--grid", "4", "--model", "baseline", "--out", str(out)])
    assert code == 2 and "exists" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == before


def test_without_weights_falls_back_to_the_baseline_with_a_warning(scene, tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("TRACK3D_EMBEDDED_DIR", str(tmp_path / "no-embedded-model"))  # a build that ships none
    frames = _write_frames(scene.frames[:6], tmp_path / "frames")
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="track3d"):
        code = main(["reconstruct", str(frames), "--grid", "6", "--no-viz", "--out", str(out)])
    assert code == 0
    assert "weights are not available" in caplog.text and "baseline" in caplog.text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "baseline" and any("baseline" in w for w in summary["warnings"])
    assert "recording.rrd" not in summary["files"] and not (out / "overlay.mp4").exists()


def test_an_explicit_model_without_weights_is_an_error(scene, tmp_path, capsys):
    frames = _write_frames(scene.frames[:4], tmp_path / "frames")
    code = main(["reconstruct", str(frames), "--model", "cotracker3-offline", "--out", str(tmp_path / "out")])
    assert code == 2 and "scaled_offline.pth" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_still_camera_is_written_and_reported(tmp_path):
    cfg = dataclasses.replace(synthetic.EVAL_TIERS["static_camera"], num_frames=8, height=128, width=128,
                              num_points=8, supersample=1)
    frames = _write_frames(synthetic.render_scene(cfg, 0).frames, tmp_path / "frames")
    out = tmp_path / "out"
    assert main(["-q", "reconstruct", str(frames), "--grid", "10", "--model", "baseline", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cameras"] == "still"
    assert any("does not move" in w for w in summary["warnings"])
    assert (out / "recording.rrd").is_file() and not (out / "colmap").exists()


def test_depth_folder_checks(scene, tmp_path, capsys):
    frames = _write_frames(scene.frames[:6], tmp_path / "frames")
    depth = tmp_path / "depth"
    depth.mkdir()
    for t in range(5):  # one map short
        np.save(depth / f"{t:04d}.npy", np.ones((192, 192)))
    args = ["reconstruct", str(frames), "--grid", "4", "--model", "baseline", "--depth", str(depth), "--no-viz"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 2
    assert "holds 5 maps" in capsys.readouterr().err
    np.save(depth / "0005.npy", np.ones((100, 192)))  # the right count, one of another size than the others
    assert main(args + ["--out", str(tmp_path / "b")]) == 2
    assert "0005.npy is 192x100, the first map 0000.npy is 192x192" in capsys.readouterr().err
    np.save(depth / "0005.npy", np.ones((192, 1)))
    assert main(args + ["--out", str(tmp_path / "c")]) == 2
    assert "at least 2x2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse: not a kind
        main(args + ["--depth-kind", "inverse", "--out", str(tmp_path / "d")])
    assert exit_info.value.code == 2 and "invalid choice: 'inverse'" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["metric", "affine_disparity"])
def test_depth_maps_at_a_lower_resolution_and_their_kind_reach_recon(scene, tmp_path, monkeypatch, kind):
    frames = _write_frames(scene.frames[:6], tmp_path / "frames")
    depth = tmp_path / "depth"
    depth.mkdir()
    for t in range(6):  # 48x40 maps of a 192x192 video, as 16-bit PNG (read as float32)
        cv2.imwrite(str(depth / f"{t:04d}.png"), np.full((40, 48), 1000 + t, np.uint16))
    seen = {}
    real = recon.reconstruct

    def spy(*args, depth=None, options=None, **kwargs):
        seen.update(shape=depth.shape, dtype=depth.dtype, first=depth[:, 0, 0].tolist(), kind=options.depth_kind)
        return real(*args, depth=depth, options=options, **kwargs)

    monkeypatch.setattr(recon, "reconstruct", spy)
    out = tmp_path / "out"
    args = ["-q", "reconstruct", str(frames), "--grid", "6", "--model", "baseline", "--depth", str(depth),
            "--no-viz", "--out", str(out)] + (["--depth-kind", kind] if kind != "metric" else [])
    assert main(args) == 0
    assert seen == dict(shape=(6, 40, 48), dtype=np.float32, first=[1000.0 + t for t in range(6)], kind=kind)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["depth"] == {"source": "folder", "path": str(depth), "kind": kind, "map_size": [48, 40]}
    assert summary["options"]["depth_kind"] == kind


def test_depth_maps_place_the_moving_points(tmp_path):
    # A scene with enough moving points, tracked from the true positions of its points at frame 0.
    cfg = dataclasses.replace(synthetic.EVAL_TIERS["moving_camera"], num_frames=16, height=192, width=192,
                              num_points=300, supersample=1)
    scene = synthetic.render_scene(cfg, 3)
    frames = _write_frames(scene.frames, tmp_path / "frames")
    depth = tmp_path / "depth"
    depth.mkdir()
    for t, d in enumerate(scene.depth):
        np.save(depth / f"{t:04d}.npy", np.where(np.isfinite(d), d, 0.0))
    seen = np.flatnonzero(scene.visibility[0])
    queries = np.concatenate([np.zeros((len(seen), 1)), scene.tracks[0, seen]], axis=1)
    np.save(tmp_path / "queries.npy", queries)
    result = track3d.reconstruct(frames, model="baseline", depth=str(depth), queries=str(tmp_path / "queries.npy"))
    assert result.summary["moving_3d"] == "depth"
    assert result.summary["cameras"] == "solved"
    # The moving trajectories against the truth, in the truth's frame (similarity fitted to the camera centres).
    s, R, t = umeyama(camera_centres(result.cam_from_world), camera_centres(scene.cam_from_world))
    truth = scene.trajectories[:, seen]
    dyn = result.is_dynamic & scene.is_dynamic[seen]
    assert dyn.sum() >= 20, dyn.sum()
    world = s * result.trajectories[:, dyn] @ R.T + t
    err = np.linalg.norm(world - truth[:, dyn], axis=-1)
    assert np.isfinite(err).mean() > 0.7
    assert np.nanmedian(err) < 0.05 * scene.scene_extent, np.nanmedian(err)
    # Each point's motion since frame 0: a point left where it started would be off by the whole motion.
    moved = np.linalg.norm(truth[:, dyn] - truth[:1, dyn], axis=-1)
    motion_err = np.linalg.norm((world - world[:1]) - (truth[:, dyn] - truth[:1, dyn]), axis=-1)
    assert np.nanmedian(motion_err) < 0.4 * np.median(moved), (np.nanmedian(motion_err), np.median(moved))


@pytest.mark.parametrize("spec", ["1,2,3", "0,100,50,50", "nofile.npy"])
def test_bad_intrinsics(scene, tmp_path, capsys, spec):
    frames = _write_frames(scene.frames[:4], tmp_path / "frames")
    code = main(["reconstruct", str(frames), "--model", "baseline", "--intrinsics", spec,
                 "--out", str(tmp_path / "out")])
    assert code == 2 and "--intrinsics" in capsys.readouterr().err


def test_given_intrinsics_are_kept(scene, tmp_path):
    frames = _write_frames(scene.frames, tmp_path / "frames")
    K = scene.K
    spec = f"{K[0, 0]},{K[1, 1]},{K[0, 2]},{K[1, 2]}"
    result = track3d.reconstruct(frames, grid=16, model="baseline", intrinsics=spec)
    assert result.summary["focal"] == "given"
    np.testing.assert_allclose(result.K[0], K)


@pytest.mark.skipif(not (SHARED_VIDEOS / "apple.mp4").is_file(), reason="../shared/videos is not there")
def test_real_video_short(tmp_path):
    out = tmp_path / "apple"
    code = main(["-q", "reconstruct", str(SHARED_VIDEOS / "apple.mp4"), "--end", "6", "--grid", "8",
                 "--max-side", "256", "--model", "baseline", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 6 and summary["tracks"] == 64
    result = track3d.load(out)
    assert result.frame_size == tuple(summary["frame_size"])
    # Tracks are in the source video's pixels, whatever --max-side read them at.
    assert result.tracks[..., 0].max() > 256 or max(result.frame_size) <= 256


def test_view_serves_on_localhost_only(scene_run, monkeypatch, capsys):
    import subprocess

    _, out = scene_run
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda command: calls.append(command) or 0)
    assert main(["view", str(out), "--web", "--port", "9123"]) == 0
    command = calls[0]
    assert command[command.index("--bind") + 1] == "127.0.0.1" and "--serve-web" in command
    assert str(out / "recording.rrd") in command
    assert "http://127.0.0.1:9123/" in capsys.readouterr().out
    assert main(["view", str(out / "colmap")]) == 2  # no recording there


def test_interrupted_run_leaves_no_folder(scene, tmp_path, monkeypatch):
    import viz.recording

    frames = _write_frames(scene.frames[:6], tmp_path / "frames")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(viz.recording, "write_recording", interrupt)
    out = tmp_path / "out"
    assert main(["-q", "reconstruct", str(frames), "--grid", "8", "--model", "baseline", "--out", str(out)]) == 130
    assert not out.exists() and not any(p.name.startswith(".out.tmp") for p in tmp_path.iterdir())
    # The finished stages are kept for a rerun (test_real_world_video.py), nothing else.
    assert {p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")} == {".out.partial"}
