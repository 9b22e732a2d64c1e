"""The synthetic scene engine: ground-truth invariants, determinism, motion (the scene sets: test_sets.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cotracker3 import synthetic
from cotracker3.synthetic import EVAL_TIERS, SceneConfig, render_scene

SMALL = dict(num_frames=8, height=48, width=64, num_points=96, supersample=1)


@pytest.fixture(scope="module")
def scenes():
    """One small scene per evaluation tier, two seeds each."""
    out = []
    for tier, cfg in EVAL_TIERS.items():
        for seed in (0, 1):
            out.append(render_scene(dataclasses.replace(cfg, **SMALL), seed, name=tier))
    return out


def test_shapes_and_dtypes(scenes):
    s = scenes[0]
    T, H, W, N = SMALL["num_frames"], SMALL["height"], SMALL["width"], SMALL["num_points"]
    assert s.frames.shape == (T, H, W, 3) and s.frames.dtype == np.uint8
    assert s.tracks.shape == (T, N, 2) and s.tracks.dtype == np.float32
    assert s.visibility.shape == (T, N) and s.visibility.dtype == bool
    assert s.trajectories.shape == (T, N, 3) and s.trajectories.dtype == np.float64
    assert s.depth.shape == (T, H, W) and s.depth.dtype == np.float32
    assert s.segmentation.shape == (T, H, W)
    assert s.K.shape == (3, 3) and s.cam_from_world.shape == (T, 4, 4)
    assert s.object_id.shape == s.is_dynamic.shape == s.query_frame.shape == (N,)
    assert s.queries.shape == (N, 3)


def test_projecting_trajectories_gives_the_tracks(scenes):
    # Independent of the engine's own projection: homogeneous K [R | t] X.
    for s in scenes:
        X = np.concatenate([s.trajectories, np.ones(s.trajectories.shape[:2] + (1,))], -1)
        P = np.einsum("ij,tjk->tik", s.K, s.cam_from_world[:, :3, :])  # (T, 3, 4)
        h = np.einsum("tij,tnj->tni", P, X)
        front = h[..., 2] > 1e-3
        xy = h[..., :2] / h[..., 2:]
        assert np.abs(xy - s.tracks)[front].max() < 0.01
        # Every visible point is in front of the camera and inside the frame.
        v = s.visibility
        assert front[v].all()
        x, y = s.tracks[..., 0][v], s.tracks[..., 1][v]
        assert (x >= -0.5).all() and (x <= s.config.width - 0.5).all()
        assert (y >= -0.5).all() and (y <= s.config.height - 0.5).all()


def test_cameras_are_rigid_and_principal_point_is_centred(scenes):
    for s in scenes:
        R = s.cam_from_world[:, :3, :3]
        np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-9)
        np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-9)
        np.testing.assert_array_equal(s.cam_from_world[:, 3], np.broadcast_to([0, 0, 0, 1.0], (len(R), 4)))
        # (0, 0) is the centre of the top-left pixel: the image centre is ((W-1)/2, (H-1)/2).
        assert s.K[0, 2] == (s.config.width - 1) / 2 and s.K[1, 2] == (s.config.height - 1) / 2


def _interior(s, tt, xr, yr, nn):
    """Visible samples whose 3x3 pixel neighbourhood all shows the point's object."""
    seg = s.segmentation
    ok = (xr >= 1) & (xr <= s.config.width - 2) & (yr >= 1) & (yr <= s.config.height - 2)
    xr, yr = np.clip(xr, 1, s.config.width - 2), np.clip(yr, 1, s.config.height - 2)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            ok &= seg[tt, yr + dy, xr + dx] == s.object_id[nn]
    return ok


def test_visible_points_have_the_depth_of_the_depth_map(scenes):
    """The depth map is sampled at pixel centres; a point lies within half a pixel of
    its nearest centre, so on a smooth surface ``|z - D| <= |dx| |dD/dx| + |dy| |dD/dy|``
    to first order. Allow twice that (curvature) plus float32 rounding."""
    checked = 0
    for s in scenes:
        _, z = synthetic.project(s.trajectories, s.K, s.cam_from_world)
        tt, nn = np.nonzero(s.visibility)
        x, y = s.tracks[tt, nn, 0].astype(np.float64), s.tracks[tt, nn, 1].astype(np.float64)
        xr, yr = np.round(x).astype(int), np.round(y).astype(int)
        keep = _interior(s, tt, xr, yr, nn)
        tt, nn, x, y, xr, yr = tt[keep], nn[keep], x[keep], y[keep], xr[keep], yr[keep]
        d = s.depth.astype(np.float64)
        gx = np.maximum(abs(d[tt, yr, xr + 1] - d[tt, yr, xr]), abs(d[tt, yr, xr] - d[tt, yr, xr - 1]))
        gy = np.maximum(abs(d[tt, yr + 1, xr] - d[tt, yr, xr]), abs(d[tt, yr, xr] - d[tt, yr - 1, xr]))
        bound = 2 * (abs(x - xr) * gx + abs(y - yr) * gy) + 1e-5 * z[tt, nn]
        assert (abs(d[tt, yr, xr] - z[tt, nn]) <= bound).all()
        checked += len(tt)
    assert checked > 500


def test_visible_points_lie_on_their_object_in_the_render(scenes):
    for s in scenes:
        tt, nn = np.nonzero(s.visibility)
        xr = np.round(s.tracks[tt, nn, 0]).astype(int)
        yr = np.round(s.tracks[tt, nn, 1]).astype(int)
        keep = _interior(s, tt, xr, yr, nn)
        assert keep.mean() > 0.5


def test_hidden_points_are_behind_a_surface_or_outside(scenes):
    hidden_inside = 0
    for s in scenes:
        _, z = synthetic.project(s.trajectories, s.K, s.cam_from_world)
        x, y = s.tracks[..., 0], s.tracks[..., 1]
        W, H = s.config.width, s.config.height
        inside = (z > 1e-3) & (x >= 0) & (x <= W - 1) & (y >= 0) & (y <= H - 1)
        tt, nn = np.nonzero(inside & ~s.visibility)
        xr = np.clip(np.round(x[tt, nn]).astype(int), 0, W - 1)
        yr = np.clip(np.round(y[tt, nn]).astype(int), 0, H - 1)
        # Away from silhouettes (3x3 neighbourhood of one object), the surface seen at
        # the pixel is nearer than the hidden point.
        seg = s.segmentation
        xc, yc = np.clip(xr, 1, W - 2), np.clip(yr, 1, H - 2)
        flat = np.ones(len(tt), bool)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                flat &= seg[tt, yc + dy, xc + dx] == seg[tt, yc, xc]
        front = s.depth[tt, yr, xr] < z[tt, nn] * 0.999
        assert front[flat].all()
        hidden_inside += int(flat.sum())
    assert hidden_inside > 0


def test_points_are_visible_where_they_were_sampled(scenes):
    for s in scenes:
        n = np.arange(s.config.num_points)
        assert s.visibility[s.query_frame, n].all()
        np.testing.assert_array_equal(s.queries[:, 0], s.query_frame)
        np.testing.assert_array_equal(s.queries[:, 1:], s.tracks[s.query_frame, n])


def test_static_objects_stay_put_and_dynamic_ones_move(scenes):
    for s in scenes:
        motion = np.abs(s.trajectories - s.trajectories[:1]).max(axis=(0, 2))
        assert (motion[~s.is_dynamic] == 0).all()
        assert (motion[s.is_dynamic] > 1e-3).all()
        np.testing.assert_array_equal(s.is_dynamic, s.object_dynamic[s.object_id])
        # Ground and four walls are static quads; they are the first five objects.
        assert not s.object_dynamic[:5].any()
        assert (s.object_kind[:5] == synthetic.QUAD).all()
        if s.config.camera == "static":
            np.testing.assert_array_equal(s.cam_from_world, np.broadcast_to(s.cam_from_world[0], s.cam_from_world.shape))
        else:
            centres = synthetic.camera_centres(s.cam_from_world)
            assert np.linalg.norm(centres[-1] - centres[0]) > 0.1
            angle = np.arccos(np.clip((np.trace(s.cam_from_world[0, :3, :3] @ s.cam_from_world[-1, :3, :3].T) - 1) / 2, -1, 1))
            assert angle > np.radians(1)


def test_scenes_have_both_kinds_of_points_and_occlusions(scenes):
    for s in scenes:
        assert 0 < s.is_dynamic.sum() < len(s.is_dynamic)
        kinds = set(s.object_kind.tolist())
        assert {synthetic.QUAD, synthetic.BOX, synthetic.SPHERE} & kinds >= {synthetic.QUAD}
    all_kinds = set(np.concatenate([s.object_kind for s in scenes]).tolist())
    assert all_kinds == {synthetic.QUAD, synthetic.BOX, synthetic.SPHERE}
    # Some points disappear and come back in the same clip.
    reappear = 0
    for s in scenes:
        v = s.visibility.astype(int)
        changes = np.abs(np.diff(v, axis=0)).sum(0)
        reappear += int((changes >= 2).sum())
    assert reappear > 0


def test_an_exiting_object_leaves_the_view_and_comes_back():
    cfg = SceneConfig(num_frames=24, height=48, width=64, num_points=64, num_dynamic=1, num_exiting=1,
                      num_static=0, camera="static", supersample=1)
    reentries = 0
    for seed in range(6):
        s = render_scene(cfg, seed)
        obj = np.flatnonzero(s.object_dynamic)[0]
        seen = (s.segmentation == obj).any(axis=(1, 2))
        assert seen.any() and not seen.all()
        first, last = np.flatnonzero(seen)[[0, -1]]
        reentries += int(not seen[first:last + 1].all())  # seen, gone, seen again
    assert reentries >= 3


def test_deterministic_from_the_seed():
    cfg = SceneConfig(**SMALL)
    a, b, c = render_scene(cfg, 5), render_scene(cfg, 5), render_scene(cfg, 6)
    for key in ("frames", "tracks", "visibility", "trajectories", "depth", "cam_from_world", "object_id"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert not np.array_equal(a.frames, c.frames)


def test_supersampling_changes_only_colour():
    a = render_scene(SceneConfig(**{**SMALL, "supersample": 1}), 3)
    b = render_scene(SceneConfig(**{**SMALL, "supersample": 2}), 3)
    np.testing.assert_array_equal(a.tracks, b.tracks)
    np.testing.assert_array_equal(a.depth, b.depth)
    assert not np.array_equal(a.frames, b.frames)
    # Anti-aliasing smooths: same average colour, a little less contrast between neighbours.
    assert abs(a.frames.mean() - b.frames.mean()) < 2.0
    grad = lambda f: np.abs(np.diff(f.astype(float), axis=2)).mean()
    assert grad(b.frames) < grad(a.frames)


def test_any_resolution_and_zero_points():
    s = render_scene(SceneConfig(num_frames=3, height=17, width=31, num_points=0, supersample=1), 0)
    assert s.frames.shape == (3, 17, 31, 3)
    assert s.tracks.shape == (3, 0, 2) and s.visibility.shape == (3, 0)
    one = render_scene(SceneConfig(num_frames=1, height=20, width=20, num_points=5, supersample=1), 0)
    assert one.visibility.all()


@pytest.mark.parametrize("bad", [
    dict(num_frames=0), dict(height=1), dict(num_points=-1), dict(camera="orbit"),
    dict(num_exiting=4, num_dynamic=3), dict(supersample=0), dict(dynamic_point_fraction=1.5),
])
def test_bad_configs_are_refused(bad):
    with pytest.raises(ValueError):
        SceneConfig(**bad)
