"""recon.reconstruct on synthetic scenes with known cameras, and on degenerate input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import recon
from cotracker3 import synthetic
from recon.geometry import camera_centres, umeyama

CFG = dict(num_frames=16, height=160, width=160, num_points=400, supersample=1)


def _noisy(scene, seed=0, noise=0.5, flip=0.1):
    rng = np.random.default_rng(seed)
    tracks = scene.tracks + rng.normal(0, noise, scene.tracks.shape)
    vis = scene.visibility ^ (rng.random(scene.visibility.shape) < flip)
    return tracks, vis


@pytest.fixture(scope="module")
def moving():
    cfg = dataclasses.replace(synthetic.EVAL_TIERS["moving_camera"], **CFG)
    return synthetic.render_scene(cfg, 11)


@pytest.fixture(scope="module")
def moving_rec(moving):
    tracks, vis = _noisy(moving)
    return recon.reconstruct(tracks, vis, (CFG["width"], CFG["height"]), depth=moving.depth)


def test_moving_camera_cameras_and_separation(moving, moving_rec):
    rec = moving_rec
    assert rec.status.cameras == "solved" and rec.registered.all(), str(rec.status)
    err = recon.camera_errors(rec.cam_from_world, moving.cam_from_world)
    assert err["ate"] < 0.01 * moving.scene_extent, err
    assert err["rpe_rot_deg"] < 0.5, err
    truth, pred = moving.is_dynamic & rec.used, rec.is_dynamic
    f1 = 2 * (truth & pred).sum() / (truth.sum() + pred.sum())
    assert f1 >= 0.95, f1
    # The estimated focal length is close to the truth (principal point at the centre).
    assert abs(rec.K[0, 0, 0] - moving.K[0, 0]) < 0.03 * moving.K[0, 0]
    assert rec.status.focal == "estimated"


def test_static_points_and_moving_trajectories_with_depth(moving, moving_rec):
    rec = moving_rec
    s, R, t = umeyama(camera_centres(rec.cam_from_world), camera_centres(moving.cam_from_world))
    world = s * rec.trajectories @ R.T + t
    extent = moving.scene_extent
    static = ~rec.is_dynamic & (rec.reliability > 0) & ~moving.is_dynamic
    err_static = np.linalg.norm(world[:, static] - moving.trajectories[:, static], axis=-1)
    assert np.nanmedian(err_static) < 0.02 * extent  # far walls, short baseline: depth is the weak axis
    dyn = rec.is_dynamic & moving.is_dynamic
    err_dyn = np.linalg.norm(world[:, dyn] - moving.trajectories[:, dyn], axis=-1)
    assert np.isfinite(err_dyn).any() and np.nanmedian(err_dyn) < 0.02 * extent
    assert rec.status.moving_3d == "depth"
    assert ((rec.reliability >= 0) & (rec.reliability <= 1)).all()
    # Static points are one point over time; the cloud lists them.
    assert np.allclose(rec.trajectories[0, rec.point_tracks], rec.points)


def test_without_depth_moving_points_rank_by_reliability(moving):
    tracks, vis = _noisy(moving)
    rec = recon.reconstruct(tracks, vis, (CFG["width"], CFG["height"]))
    assert rec.status.moving_3d == "estimated"
    static = ~rec.is_dynamic & (rec.reliability > 0)
    assert np.median(rec.reliability[static]) > 0.5
    # Every moving point says how it was placed; the placed ones are finite where seen.
    placed = rec.is_dynamic & (rec.moving_kind != "")
    assert placed.sum() >= 0.8 * rec.is_dynamic.sum()
    assert set(rec.moving_kind[placed]) <= {"rigid", "carried", "line", "hovering"}
    # Reliability ranks with the error of every used track (static and moving).
    s, R, t = umeyama(camera_centres(rec.cam_from_world), camera_centres(moving.cam_from_world))
    err = np.nanmedian(np.linalg.norm(s * rec.trajectories @ R.T + t - moving.trajectories, axis=-1), axis=0)
    from scipy.stats import spearmanr

    ok = rec.used & np.isfinite(err)
    assert spearmanr(rec.reliability[ok], -err[ok]).statistic >= 0.5
    # Static points alone: reliability predicts the error relative to the distance to the camera.
    centres = camera_centres(moving.cam_from_world)
    rel = np.nanmedian(np.linalg.norm(s * rec.trajectories @ R.T + t - moving.trajectories, axis=-1)
                       / np.linalg.norm(moving.trajectories - centres[:, None], axis=-1), axis=0)
    st = ok & ~rec.is_dynamic & ~moving.is_dynamic & np.isfinite(rel)
    assert spearmanr(rec.reliability[st], -rel[st]).statistic >= 0.5


def test_triangulation_error_worked_by_hand():
    from recon.pipeline import triangulation_error

    # 0.5 px on a 500 px focal length is 1 mrad; rays 0.1 rad (5.73 degrees) apart: 1% along the rays.
    e = triangulation_error(np.array([0.5, 0.2, np.nan]), np.array([np.degrees(0.1)] * 3), 500.0, noise_px=0.5)
    assert np.allclose(e[:2], 0.01)  # below the noise floor, the floor counts
    assert np.isinf(e[2])  # no error measured: nothing known
    assert np.allclose(recon.dynamic.reliability_from_error(e), [2 / 3, 2 / 3, 0])


def test_depth_maps_at_another_resolution_and_relative_kinds(moving):
    tracks, vis = _noisy(moving)
    rng = np.random.default_rng(0)
    T = len(moving.depth)
    half = moving.depth[:, ::2, ::2].astype(np.float64)  # (T, 80, 80) for 160x160 frames
    a, b = rng.uniform(0.5, 2, T), rng.uniform(0, 0.3, T)
    disparity = a[:, None, None] / half + b[:, None, None]  # per-frame scale and shift of 1/z
    ok = moving.is_dynamic
    for depth, kind in ((half, "metric"), (disparity, "affine_disparity")):
        rec = recon.reconstruct(tracks, vis, (CFG["width"], CFG["height"]), depth=depth,
                                options=recon.ReconOptions(depth_kind=kind))
        assert rec.status.moving_3d == "depth", rec.status
        s, R, t = umeyama(camera_centres(rec.cam_from_world), camera_centres(moving.cam_from_world))
        world = s * rec.trajectories @ R.T + t
        dyn = rec.is_dynamic & ok
        err = np.linalg.norm(world[:, dyn] - moving.trajectories[:, dyn], axis=-1)
        assert np.nanmedian(err) < 0.02 * moving.scene_extent, (kind, np.nanmedian(err) / moving.scene_extent)
    with pytest.raises(ValueError, match="depth_kind"):
        recon.reconstruct(tracks, vis, (CFG["width"], CFG["height"]), depth=half,
                          options=recon.ReconOptions(depth_kind="inverse"))


def test_given_intrinsics_are_kept(moving):
    tracks, vis = _noisy(moving)
    calls = []
    rec = recon.reconstruct(tracks, vis, (CFG["width"], CFG["height"]), intrinsics=moving.K,
                            progress=lambda *a: calls.append(a))
    assert calls[0] == ("recon", 0, calls[-1][2]) and calls[-1][1] == calls[-1][2]
    assert [c[1] for c in calls] == sorted(c[1] for c in calls)
    assert rec.status.focal == "given"
    np.testing.assert_allclose(rec.K[0], moving.K)
    assert rec.registered.all()


def test_export_colmap_model(moving_rec, tmp_path):
    import pycolmap

    path = recon.export_colmap(moving_rec, tmp_path / "colmap")
    assert {"cameras.bin", "images.bin", "points3D.bin"} <= {p.name for p in path.iterdir()}
    back = pycolmap.Reconstruction(str(path))
    assert back.num_reg_images() == int(moving_rec.registered.sum())


def test_still_camera():
    cfg = dataclasses.replace(synthetic.EVAL_TIERS["static_camera"], **CFG)
    scene = synthetic.render_scene(cfg, 3)
    tracks, vis = _noisy(scene)
    rec = recon.reconstruct(tracks, vis, (CFG["width"], CFG["height"]), intrinsics=scene.K, depth=scene.depth)
    assert rec.status.cameras == "still", str(rec.status)
    assert rec.registered.all()
    np.testing.assert_array_equal(rec.cam_from_world, np.broadcast_to(np.eye(4), rec.cam_from_world.shape))
    # World = the camera frame: static points at their camera coordinates (from the depth maps).
    truth_cam = synthetic.project(scene.trajectories, scene.K, scene.cam_from_world)[1]
    static = ~rec.is_dynamic & ~scene.is_dynamic & np.isfinite(rec.trajectories[0]).all(-1)
    assert static.sum() > 20
    rel = np.abs(rec.trajectories[0, static, 2] - truth_cam[0, static]) / truth_cam[0, static]
    # Nearest-pixel depth: points on a depth edge may read the other surface.
    assert np.median(rel) < 0.02 and (rel < 0.05).mean() > 0.95
    assert "does not move" in str(rec.status)
    no_depth = recon.reconstruct(tracks, vis, (CFG["width"], CFG["height"]))
    assert no_depth.status.cameras == "still" and np.isnan(no_depth.trajectories).all()


def test_pure_rotation_is_solved_as_rotation_only_not_invented():
    rng = np.random.default_rng(0)
    T, N, W, H = 12, 300, 200, 150
    X = rng.uniform(-5, 5, (N, 3)) + [0, 0, 12]
    K = np.array([[180.0, 0, (W - 1) / 2], [0, 180.0, (H - 1) / 2], [0, 0, 1]])
    poses = np.tile(np.eye(4), (T, 1, 1))
    for t in range(T):
        a = np.radians(1.5 * t)
        poses[t, :3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    xy, z = recon.geometry.project(X, np.broadcast_to(K, (T, 3, 3)), poses)
    vis = (z > 0) & (xy[..., 0] > 0) & (xy[..., 0] < W - 1) & (xy[..., 1] > 0) & (xy[..., 1] < H - 1)
    rec = recon.reconstruct(xy + rng.normal(0, 0.3, xy.shape), vis, (W, H))
    assert rec.status.cameras == "rotation", str(rec.status)
    # Rotations are solved (the centre held fixed); positions and depth are not invented.
    assert rec.registered.all() and (rec.camera_kind == "rotation").all()
    np.testing.assert_allclose(camera_centres(rec.cam_from_world), 0.0, atol=1e-9)
    steps = [np.degrees(np.arccos(np.clip((np.trace(rec.cam_from_world[t + 1, :3, :3]
                                                    @ rec.cam_from_world[t, :3, :3].T) - 1) / 2, -1, 1)))
             for t in range(T - 1)]
    np.testing.assert_allclose(steps, 1.5, atol=0.05)
    assert abs(rec.K[0, 0, 0] - 180.0) < 10
    assert np.isnan(rec.trajectories).all() and len(rec.points) == 0
    assert (rec.reliability == 0).all()


def test_too_few_tracks_and_all_moving():
    rng = np.random.default_rng(1)
    T, W, H = 10, 100, 80
    few = rng.uniform(10, 70, (T, 5, 2))
    rec = recon.reconstruct(few, np.ones((T, 5), bool), (W, H))
    assert rec.status.cameras == "failed" and not rec.registered.any()
    assert "static tracks" in str(rec.status) or "share" in str(rec.status)
    # Every point wanders on its own: nothing is static.
    walk = np.cumsum(rng.normal(0, 3, (T, 200, 2)), axis=0) + rng.uniform(20, 60, (1, 200, 2))
    rec = recon.reconstruct(walk, np.ones((T, 200), bool), (W, H))
    assert rec.status.cameras == "failed"
    assert rec.is_dynamic.mean() > 0.8
    assert np.isnan(rec.cam_from_world).all()


def test_positions_outside_the_frame_are_not_observations(moving):
    tracks, vis = _noisy(moving)
    n = np.flatnonzero(vis.sum(0) >= 8)[:5]
    vis[:, n] = True
    tracks[2:, n] = [-40.0, 30.0]  # flagged visible, but off the left edge from frame 2 on
    rec = recon.reconstruct(tracks, vis, (CFG["width"], CFG["height"]))
    assert not rec.used[n].any() and not rec.is_dynamic[n].any()
    assert np.isnan(rec.trajectories[:, n]).all()
    assert rec.used.sum() >= 0.9 * (vis.sum(0) >= 3).sum() - len(n)
    assert rec.arrays()["used"] is rec.used


def test_three_frames(moving):
    tracks, vis = _noisy(moving)
    # Three frames far enough apart for parallax: cameras solved, all three registered, close to the truth.
    frames = [0, 7, 15]
    rec = recon.reconstruct(tracks[frames], vis[frames], (CFG["width"], CFG["height"]))
    assert rec.cam_from_world.shape == (3, 4, 4) and rec.trajectories.shape == (3, CFG["num_points"], 3)
    assert rec.status.cameras == "solved" and rec.status.registered == (3, 3), str(rec.status)
    assert rec.registered.all()
    err = recon.camera_errors(rec.cam_from_world, moving.cam_from_world[frames])
    assert err["ate"] < 0.01 * moving.scene_extent and err["rpe_rot_deg"] < 2.0, err
    static = ~rec.is_dynamic & rec.used
    assert static.sum() >= 50 and np.isfinite(rec.trajectories[:, static]).all()
    # Three consecutive frames barely move the camera: whatever is solved, the status and arrays agree.
    rec = recon.reconstruct(tracks[:3], vis[:3], (CFG["width"], CFG["height"]))
    assert rec.status.registered == (int(rec.registered.sum()), 3), str(rec.status)
    assert np.isnan(rec.cam_from_world[~rec.registered]).all()
    assert np.isfinite(rec.cam_from_world[rec.registered]).all()
    if not rec.registered.any():
        assert rec.status.cameras != "solved" and np.isnan(rec.trajectories).all(), str(rec.status)


@pytest.mark.parametrize("bad", [
    dict(tracks=np.zeros((4, 3)), visibility=np.ones((4, 3), bool)),
    dict(visibility=np.ones((4, 2), bool)),
    dict(image_size=(1, 50)),
    dict(intrinsics=np.eye(2)),
    dict(depth=np.ones((3, 10, 10))),
    dict(depth=np.ones((4, 10))),
    dict(confidence=np.ones((3, 3))),
])
def test_bad_arrays(bad):
    args = dict(tracks=np.zeros((4, 3, 2)), visibility=np.ones((4, 3), bool), image_size=(64, 48))
    args.update(bad)
    with pytest.raises(ValueError):
        recon.reconstruct(**args)
