"""recon.separation: a mover that slides along the epipolar lines, on a scene built here.

A camera on a 40-degree arc; static points on the floor and a wall; a box that
slides as far as the camera travels, parallel to the arc's chord, so that it
stays within 2 px of one static point per track (it passes the reprojection
test) while its tracks' two halves triangulate apart.
"""

from __future__ import annotations

import numpy as np

from recon import separation
from recon.geometry import project
from tests.recon.test_dynamic import H, K, T, W, _box, _look_at


def _scene(seed=0, noise=0.5):
    rng = np.random.default_rng(seed)
    tau = np.linspace(0, 1, T)
    az = np.radians(40) * tau
    eye = np.stack([8 * np.cos(az), 8 * np.sin(az), np.full(T, 2.5)], 1)
    poses = np.stack([_look_at(e, np.array([0, 0, 0.8])) for e in eye])
    floor = np.concatenate([rng.uniform(-6, 6, (300, 2)), np.zeros((300, 1))], 1)
    wall = np.stack([np.full(100, -9.0), rng.uniform(-9, 9, 100), rng.uniform(0, 5, 100)], 1)
    static = np.concatenate([floor, wall])
    local = _box(rng, 60, np.array([0.5, 0.4, 0.35])) + np.array([0.5, 1.0, 0.35])
    slide = local[None] + (tau[:, None, None] - 0.5) * (eye[-1] - eye[0])
    X = np.concatenate([np.broadcast_to(static, (T,) + static.shape), slide], 1)
    xy, z = project(X, np.broadcast_to(K, (T, 3, 3)), poses)
    tracks = xy + rng.normal(0, noise, xy.shape)
    vis = (z > 0) & (xy[..., 0] >= 0) & (xy[..., 0] < W) & (xy[..., 1] >= 0) & (xy[..., 1] < H)
    return tracks, vis, poses, np.arange(X.shape[1]) >= len(static)


def test_a_mover_sliding_along_the_epipolar_lines_splits_apart():
    tracks, vis, poses, moving = _scene()
    everything = np.ones(len(moving), bool)
    _, error, _ = separation.reprojection_scores(tracks, vis, K, poses, everything)
    # With the true cameras it reprojects within the 2 px threshold: the reprojection test passes it.
    assert np.nanmedian(error[moving]) < 2.0 and np.nanmedian(error[~moving]) < 0.7
    split = separation.split_consistency(tracks, vis, K, poses, everything, noise_px=0.5)
    assert np.nanmedian(split[moving]) > 3.0
    assert np.nanmedian(split[~moving]) < 1.0  # about what noise gives
    local = separation.neighbourhood_median(tracks, vis, everything, split)
    flagged = local > separation.SPLIT_THRESHOLD
    assert flagged[moving].mean() >= 0.5
    assert flagged[~moving].mean() <= 0.05


def test_split_consistency_edge_cases():
    tracks, vis, poses, moving = _scene()
    a, b, c = np.flatnonzero(vis.all(0))[:3]  # seen in every frame
    few = vis.copy()
    few[8:, a] = False  # 8 views: still scored
    few[7:, b] = False  # 7 views: unscored
    poses = poses.copy()
    poses[-1] = np.nan  # an unsolved frame (where a and b are unseen) is left out, not a failure
    score = np.zeros(len(moving), bool)
    score[[a, b, c]] = True
    out = separation.split_consistency(tracks, few, K, poses, score, noise_px=0.5)
    assert np.isnan(out[b]) and np.isfinite(out[[a, c]]).all() and np.isnan(out[~score]).all()
    # Fewer candidates than neighbours: nothing to compare with.
    assert np.isnan(separation.neighbourhood_median(tracks, vis, score, out)).all()


def test_split_test_finds_a_box_that_bends_the_cameras():
    """movers_3d/01 of the reconstruction benchmark: a box sliding with the camera passes as static
    and bends the cameras; with ReconOptions(split_test=True) it is found and the cameras are right."""
    import recon
    from cotracker3 import synthetic

    scene = list(synthetic.recon_scenes(["movers_3d"], 2, num_points=600))[1]
    rng = np.random.default_rng(0)
    tracks = scene.tracks + rng.normal(0, 0.5, scene.tracks.shape)
    vis = scene.visibility ^ (rng.random(scene.visibility.shape) < 0.1)
    slide = scene.object_motion[scene.object_id] == "slide"
    out = {}
    for on in (False, True):
        rec = recon.reconstruct(tracks, vis, (scene.config.width, scene.config.height),
                                options=recon.ReconOptions(split_test=on))
        ate = recon.camera_errors(rec.cam_from_world, scene.cam_from_world)["ate"] / scene.scene_extent
        out[on] = (rec.is_dynamic[slide & rec.used].mean(), ate, rec.is_dynamic[~scene.is_dynamic & rec.used].mean())
    assert out[False][0] < 0.2 and out[False][1] > 0.001, out  # taken as static, cameras 0.1% of the extent off
    assert out[True][0] > 0.8 and out[True][1] < 0.0005, out
    assert out[True][2] < 0.05, out  # the static scene stays static


def test_the_halves_of_a_sliding_box_move_together_and_drifting_tracks_do_not():
    """The box's tracks triangulate apart by halves, many by one common displacement. Tracks on the
    floor that drift in the image (a tracker slipping on low texture: each its own slow slide of
    6-12 px over the clip) triangulate apart too, further than still ones, but each by its own
    amount along its own ray: few of them agree."""
    tracks, vis, poses, moving = _scene()
    rng = np.random.default_rng(1)
    floor = np.flatnonzero(~moving)[:300]
    drifting = floor[rng.permutation(len(floor))[:60]]
    still = np.setdiff1d(floor, drifting)
    tau = np.linspace(0, 1, len(tracks))[:, None, None]
    direction = rng.normal(size=(len(drifting), 2))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    tracks = tracks.copy()
    tracks[:, drifting] += tau * rng.uniform(6, 12, (len(drifting), 1)) * direction
    box = np.flatnonzero(moving)
    score = np.zeros(len(moving), bool)
    score[np.concatenate([box, drifting, still])] = True
    split = separation.split_consistency(tracks, vis, K, poses, score, noise_px=0.5)
    assert np.nanmedian(split[drifting]) > 1.5 * np.nanmedian(split[still])
    shift = separation.half_displacements(tracks, vis, K, poses, score)
    assert (np.isfinite(shift).all(1) == np.isfinite(split)).all()  # the tracks split_consistency scores
    box, drifting = box[np.isfinite(shift[box]).all(1)], drifting[np.isfinite(shift[drifting]).all(1)]
    assert len(box) > 40 and len(drifting) > 30
    # This box slides exactly as the camera does, so each half alone looks like a static point near
    # infinity and its halves' shift is long and noisy along the rays: about half of them agree
    # (0.47-0.65 over seeds 0-4), against none of the drifting tracks.
    assert separation.coherent_displacements(shift[box]).mean() > 0.4
    assert separation.coherent_displacements(shift[drifting]).mean() < 0.5 * separation.CORE_SHARE


def test_coherent_displacements_by_hand():
    # Ten shifts of (1, 0, 0) and three far off: the common shift is (1, 0, 0), tolerance 0.4 x 1.
    D = np.array([[1.0, 0, 0]] * 10 + [[1.3, 0.2, 0], [0, 0, 0], [3, 0, 0]])
    assert separation.coherent_displacements(D).tolist() == [True] * 10 + [True, False, False]
    assert separation.coherent_displacements(D, tolerance=0.3).tolist() == [True] * 10 + [False] * 3
