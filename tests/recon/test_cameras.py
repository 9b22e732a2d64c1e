"""Cameras for casual videos: nodal pans, pans then walks, mover-dominated scenes,
frames without static tracks, and decisions that do not depend on the resolution."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import recon
from cotracker3 import synthetic
from recon import rotation, separation
from recon.geometry import camera_centres

SIZE = dict(num_frames=16, height=160, width=160, num_points=400, supersample=1)


def _noisy(scene, seed=0, noise=0.5, flip=0.1):
    rng = np.random.default_rng(seed)
    tracks = scene.tracks + rng.normal(0, noise, scene.tracks.shape)
    vis = scene.visibility ^ (rng.random(scene.visibility.shape) < flip)
    return tracks, vis


def _scene(tier, index=0, **overrides):
    cfg = dataclasses.replace(synthetic.RECON_TIERS[tier], **{**SIZE, **overrides})
    return synthetic.render_scene(cfg, synthetic.recon_seed(tier, index))


def _rotation_errors(est, gt):
    """Degrees between estimated and true relative rotations of consecutive frames."""
    out = []
    for i in range(len(est) - 1):
        d = (est[i + 1, :3, :3] @ est[i, :3, :3].T).T @ (gt[i + 1, :3, :3] @ gt[i, :3, :3].T)
        out.append(np.degrees(np.arccos(np.clip((np.trace(d) - 1) / 2, -1, 1))))
    return np.array(out)


@pytest.fixture(scope="module")
def pan():
    return _scene("nodal_pan")


def test_nodal_pan_is_solved_as_rotation_only(pan):
    tracks, vis = _noisy(pan)
    rec = recon.reconstruct(tracks, vis, (SIZE["width"], SIZE["height"]))
    assert rec.status.cameras == "rotation", str(rec.status)
    assert rec.registered.all()
    assert (rec.camera_kind == "rotation").all()
    assert rec.status.rotation_frames == list(range(SIZE["num_frames"]))
    # Every centre is the same point; the rotations are those of the truth.
    centres = camera_centres(rec.cam_from_world)
    assert np.abs(centres - centres[0]).max() < 1e-9
    assert _rotation_errors(rec.cam_from_world, pan.cam_from_world).mean() < 0.1
    assert abs(rec.K[0, 0, 0] - pan.K[0, 0]) / pan.K[0, 0] < 0.05
    # No parallax: no depth, and nothing invented.
    assert np.isnan(rec.trajectories).all() and len(rec.points) == 0
    assert "rotation" in str(rec.status)


def test_rotation_solver_recovers_focal_and_rotations(pan):
    tracks, vis = _noisy(pan, noise=0.3, flip=0.0)
    result = rotation.solve_rotations(tracks, vis, ~pan.is_dynamic, (SIZE["width"], SIZE["height"]))
    assert np.isfinite(result.cam_from_world).all()
    assert abs(result.K[0, 0] - pan.K[0, 0]) / pan.K[0, 0] < 0.03
    assert _rotation_errors(result.cam_from_world, pan.cam_from_world).max() < 0.1
    static = ~pan.is_dynamic & (vis.sum(0) >= 2)
    assert np.nanmedian(result.error[static]) < 0.6
    # With the intrinsics given they are kept.
    given = rotation.solve_rotations(tracks, vis, ~pan.is_dynamic, (SIZE["width"], SIZE["height"]), pan.K)
    np.testing.assert_array_equal(given.K, pan.K)


def test_rotation_solver_with_no_shared_tracks():
    T, N = 5, 30
    tracks = np.zeros((T, N, 2))
    vis = np.zeros((T, N), bool)
    result = rotation.solve_rotations(tracks, vis, np.ones(N, bool), (100, 100))
    assert np.isnan(result.cam_from_world).all() and "no two frames" in result.message


def test_pan_then_walk_gets_one_consistent_trajectory():
    scene = _scene("pan_walk", num_frames=24)
    tracks, vis = _noisy(scene)
    rec = recon.reconstruct(tracks, vis, (SIZE["width"], SIZE["height"]))
    assert rec.status.cameras == "solved", str(rec.status)
    assert rec.registered.all()
    errors = recon.camera_errors(rec.cam_from_world, scene.cam_from_world)
    assert errors["ate"] < 0.01 * scene.scene_extent
    assert errors["rpe_rot_deg"] < 0.2
    # The pan's frames are rotation-only, with one centre; the walk's are not.
    rot = np.flatnonzero(rec.camera_kind == "rotation")
    assert len(rot) >= 3 and rot.max() < 12, rec.camera_kind
    assert (rec.camera_kind[14:] == "full").all()
    centres = camera_centres(rec.cam_from_world[rot])
    assert np.abs(centres - centres[0]).max() < 1e-9
    assert rec.status.rotation_frames == rot.tolist()


@pytest.fixture(scope="module")
def busy():
    return _scene("mover_dominated", index=1, num_frames=24)


def test_movers_hold_most_tracks_but_the_static_scene_is_found(busy):
    tracks, vis = _noisy(busy)
    assert busy.is_dynamic.mean() > 0.5  # movers hold most of the tracks
    rec = recon.reconstruct(tracks, vis, (SIZE["width"], SIZE["height"]))
    assert rec.status.cameras == "solved" and rec.registered.all(), str(rec.status)
    errors = recon.camera_errors(rec.cam_from_world, busy.cam_from_world)
    assert errors["ate"] < 0.01 * busy.scene_extent
    truth, pred = busy.is_dynamic & rec.used, rec.is_dynamic
    f1 = 2 * (truth & pred).sum() / (truth.sum() + pred.sum())
    assert f1 >= 0.9
    # Group 0 is the static scene; the moving groups hold moving tracks.
    assert busy.is_dynamic[rec.groups == 0].mean() < 0.1
    assert busy.is_dynamic[rec.groups >= 1].mean() > 0.9


def test_rigid_groups_choose_the_static_scene_not_the_majority(busy):
    tracks, vis = _noisy(busy)
    selected = vis.sum(0) >= 3
    groups, background = separation.rigid_groups(tracks, vis, selected, image_size=(SIZE["width"], SIZE["height"]))
    assert background == 0
    members = groups == 0
    assert members.sum() >= 20
    # Mostly static where most tracks move (the separation then fits each pair's motion to it robustly).
    assert busy.is_dynamic[members].mean() < 0.5 < busy.is_dynamic.mean()
    assert (~busy.is_dynamic[members]).sum() > 0.5 * (~busy.is_dynamic & selected).sum()
    # Each moving group lies mostly on one object.
    for g in range(1, groups.max() + 1):
        objects, counts = np.unique(busy.object_id[groups == g], return_counts=True)
        assert counts.max() >= 0.6 * counts.sum()


def test_a_frame_without_static_tracks_is_listed_and_its_neighbours_solved():
    scene = _scene("moving_camera", num_frames=16)
    tracks, vis = _noisy(scene)
    vis[8, ~scene.is_dynamic] = False  # frame 8 sees only movers
    rec = recon.reconstruct(tracks, vis, (SIZE["width"], SIZE["height"]))
    assert rec.status.cameras == "solved", str(rec.status)
    assert not rec.registered[8] and rec.camera_kind[8] == "none"
    assert np.isnan(rec.cam_from_world[8]).all()
    assert rec.registered[np.arange(16) != 8].all()
    assert rec.status.unsolved == {8: "0 static track(s) visible"}
    assert "8: 0 static track(s) visible" in str(rec.status)


def test_frames_with_few_static_tracks_are_registered():
    scene = _scene("moving_camera", num_frames=16)
    tracks, vis = _noisy(scene, flip=0.0)
    rng = np.random.default_rng(3)
    static = np.flatnonzero(~scene.is_dynamic & vis[8])
    keep = rng.choice(static, 10, replace=False)
    hide = np.setdiff1d(static, keep)
    vis[8, hide] = False  # frame 8 keeps 10 static tracks
    rec = recon.reconstruct(tracks, vis, (SIZE["width"], SIZE["height"]))
    assert rec.registered.all(), str(rec.status)
    errors = recon.camera_errors(rec.cam_from_world, scene.cam_from_world)
    assert errors["ate"] < 0.01 * scene.scene_extent


@pytest.mark.parametrize("factor", [3.0, 15.0])
def test_the_same_tracks_at_a_higher_resolution_give_the_same_cameras(factor):
    """Tracks computed at 160x160 (0.5 px noise there), mapped to a video `factor` times
    larger (to 2400x2400 for 15: a 4K-class frame): with the tracks' resolution given,
    the same frames are registered and the same tracks are static."""
    scene = _scene("moving_camera", num_frames=16)
    tracks, vis = _noisy(scene)
    W, H = SIZE["width"], SIZE["height"]
    opts = recon.ReconOptions(track_resolution=(W, H))
    small = recon.reconstruct(tracks, vis, (W, H), options=opts)
    big_size = (int(W * factor), int(H * factor))
    big = recon.reconstruct((tracks + 0.5) * factor - 0.5, vis, big_size, options=opts)
    assert small.registered.all()
    assert abs(int(big.registered.sum()) - int(small.registered.sum())) <= 0.1 * len(small.registered)
    s_static, b_static = small.status.static_tracks, big.status.static_tracks
    assert abs(b_static - s_static) <= 0.25 * s_static, (s_static, b_static)
    ate = recon.camera_errors(big.cam_from_world, scene.cam_from_world)["ate"]
    assert ate < 0.01 * scene.scene_extent


def test_without_the_tracks_resolution_4k_tracks_look_like_movers():
    """The reason for ``track_resolution``: 2 px thresholds on tracks whose errors are 15x larger."""
    scene = _scene("moving_camera", num_frames=10)
    tracks, vis = _noisy(scene)
    W, H = SIZE["width"], SIZE["height"]
    big = recon.reconstruct((tracks + 0.5) * 15 - 0.5, vis, (W * 15, H * 15))
    small = recon.reconstruct(tracks, vis, (W, H))
    assert big.status.static_tracks < 0.5 * small.status.static_tracks


def test_track_resolution_is_checked():
    with pytest.raises(ValueError, match="track_resolution"):
        recon.reconstruct(np.zeros((3, 5, 2)), np.ones((3, 5), bool), (100, 100),
                          options=recon.ReconOptions(track_resolution=(0, 10)))


def test_long_videos_map_keyframes_and_register_the_rest():
    scene = _scene("moving_camera", num_frames=30)
    tracks, vis = _noisy(scene)
    rec = recon.reconstruct(tracks, vis, (SIZE["width"], SIZE["height"]),
                            options=recon.ReconOptions(max_keyframes=8))
    assert rec.registered.all(), str(rec.status)
    assert "keyframes" in str(rec.status)
    errors = recon.camera_errors(rec.cam_from_world, scene.cam_from_world)
    assert errors["ate"] < 0.01 * scene.scene_extent and errors["rpe_rot_deg"] < 0.2


def test_global_mapper_option():
    scene = _scene("moving_camera", num_frames=16)
    tracks, vis = _noisy(scene)
    rec = recon.reconstruct(tracks, vis, (SIZE["width"], SIZE["height"]),
                            options=recon.ReconOptions(mapper="global"))
    assert "global mapping" in str(rec.status)
    assert rec.registered.mean() >= 0.9, str(rec.status)
    assert recon.camera_errors(rec.cam_from_world, scene.cam_from_world)["ate"] < 0.01 * scene.scene_extent


def test_a_model_that_triangulates_few_static_tracks_is_mapped_again_from_a_second_focal_length():
    from recon import colmap
    from recon.pipeline import ReconOptions, Status, _second_focal_start

    scene = _scene("moving_camera", 1)
    tracks, vis = _noisy(scene)
    static = ~scene.is_dynamic
    # A start so far off (20x the image) that the mapper builds nothing.
    poor = colmap.map_tracks(tracks, vis, static, (160, 160), None, focal_guess=3200.0)
    assert np.isfinite(poor.points).all(1).sum() < 0.9 * static.sum()
    status = Status()
    result = _second_focal_start(poor, tracks, vis, static, (160, 160), 1.0, ReconOptions(), status)
    assert np.isfinite(result.points).all(1).sum() >= 0.9 * static.sum()
    assert abs(result.K[0, 0] / scene.K[0, 0] - 1) < 0.03
    assert any("mapped again from a focal length of 128 px" in m for m in status.messages)
    # A model that already triangulates its static tracks is kept as it is.
    assert _second_focal_start(result, tracks, vis, static, (160, 160), 1.0, ReconOptions(), Status()) is result
