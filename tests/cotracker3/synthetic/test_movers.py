"""Movers of named kinds (SceneConfig.movers): their motions, the cloth's ray casting, and legacy scenes unchanged."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cotracker3 import synthetic
from cotracker3.synthetic import MOVER_KINDS, SceneConfig, engine, render_scene

SMALL = dict(num_frames=10, height=64, width=64, num_points=160, num_dynamic=1, num_exiting=0,
             movers=MOVER_KINDS, dynamic_point_fraction=0.8, supersample=1)


@pytest.fixture(scope="module")
def scenes():
    """Small scenes holding one mover of each kind and one random rigid mover."""
    return [render_scene(SceneConfig(**SMALL), seed) for seed in (0, 1, 2)]


def _points_of(s, kind: str) -> np.ndarray:
    """``(N,)`` bool: the points on the objects whose motion is ``kind``."""
    return np.isin(s.object_id, np.flatnonzero(s.object_motion == kind))


def _second_differences(x: np.ndarray) -> np.ndarray:
    return x[2:] - 2 * x[1:-1] + x[:-2]


# --------------------------------------------------------------------------
# Legacy scenes, configuration, labels
# --------------------------------------------------------------------------

# Recorded from the code before movers existed (commit 3e5b737): sums of each output of
# render_scene(config, seed). With movers=() a scene must stay bit-identical (the same
# random draws in the same order); a change here means legacy scenes changed.
LEGACY = [
    (SceneConfig(num_frames=6, height=48, width=48, num_points=20), 3,
     dict(frames=3725265, tracks=4931.0450634509325, visibility=95, trajectories=-255.08212926052227,
          depth=163048.1884856224, segmentation=32217, object_id=103, query_frame=52)),
    (SceneConfig(num_frames=5, height=40, width=56, num_points=30, camera="static", num_dynamic=2, num_occluders=2,
                 supersample=1), 11,
     dict(frames=2482426, tracks=6779.674529194832, visibility=126, trajectories=338.6564880544041,
          depth=122901.48052167892, segmentation=15347, object_id=165, query_frame=56)),
]


@pytest.mark.parametrize("config, seed, sums", LEGACY)
def test_scenes_without_movers_are_unchanged(config, seed, sums):
    s = render_scene(config, seed)
    for key, expected in sums.items():
        a = getattr(s, key)
        total = a[np.isfinite(a)].astype(np.float64).sum() if a.dtype.kind == "f" else int(a.astype(np.int64).sum())
        if isinstance(expected, int):
            assert total == expected, key
        else:  # float sums: summation order alone may move the last digits
            assert total == pytest.approx(expected, rel=1e-12, abs=0), key
    assert (s.object_motion[s.object_dynamic] == "rigid").all()
    assert (s.object_motion[~s.object_dynamic] == "static").all()


def test_movers_leave_the_rest_of_the_scene_as_it_was():
    cfg = SceneConfig(num_frames=4, height=40, width=40, num_points=20, supersample=1)
    a, b = render_scene(cfg, 7), render_scene(dataclasses.replace(cfg, movers=("slide", "cloth")), 7)
    np.testing.assert_array_equal(a.K, b.K)
    np.testing.assert_array_equal(a.cam_from_world, b.cam_from_world)
    n = len(a.object_kind)
    np.testing.assert_array_equal(b.object_motion[n:], ["slide", "cloth"])
    np.testing.assert_array_equal(b.object_kind[:n], a.object_kind)
    # The images differ only where a mover is seen.
    same = a.segmentation == b.segmentation
    assert (b.segmentation[~same] >= n).all()
    # Colours within one level: the atlas holds the movers' textures too, so texture
    # coordinates round a little differently.
    assert np.abs(a.frames[same].astype(int) - b.frames[same]).max() <= 1
    np.testing.assert_array_equal(a.depth[same], b.depth[same])


@pytest.mark.parametrize("movers", [("wobble",), ("slide", "orbit")])
def test_unknown_mover_kinds_are_refused(movers):
    with pytest.raises(ValueError, match="kinds: 'slide', 'circle', 'fly', 'cloth'"):
        SceneConfig(movers=movers)


def test_movers_as_a_string_is_refused_and_a_list_becomes_a_tuple():
    with pytest.raises(ValueError, match="sequence of kinds"):
        SceneConfig(movers="cloth")
    assert SceneConfig(movers=["cloth", "fly"]).movers == ("cloth", "fly")


def test_object_motion_labels_every_object(scenes):
    for s in scenes:
        n = len(s.object_kind)
        assert s.object_motion.shape == s.object_dynamic.shape == (n,)
        np.testing.assert_array_equal(s.object_motion == "static", ~s.object_dynamic)
        np.testing.assert_array_equal(s.object_motion[n - len(MOVER_KINDS):], MOVER_KINDS)
        assert set(s.object_motion[:n - len(MOVER_KINDS)]) == {"static", "rigid"}
        np.testing.assert_array_equal(s.object_motion == "cloth", s.object_kind == synthetic.CLOTH)
        for kind in MOVER_KINDS:  # points on moving objects are shared among the movers in view
            assert _points_of(s, kind).sum() >= 10, (s.seed, kind)


# --------------------------------------------------------------------------
# The motions
# --------------------------------------------------------------------------


def test_slide_points_move_at_constant_velocity_at_constant_height(scenes):
    for s in scenes:
        x = s.trajectories[:, _points_of(s, "slide")]
        assert np.abs(_second_differences(x)).max() < 1e-9
        assert np.ptp(x[..., 2], axis=0).max() < 1e-9
        assert (x[..., 2] > -1e-9).all()
        travel = np.linalg.norm(x[-1] - x[0], axis=-1)
        assert (travel > 1.0 - 1e-6).all() and (travel < 2.5 + 1e-6).all()


def test_circle_points_keep_their_height_and_accelerate(scenes):
    for s in scenes:
        x = s.trajectories[:, _points_of(s, "circle")]
        assert np.ptp(x[..., 2], axis=0).max() < 1e-9
        assert (x[..., 2] > -1e-9).all()
        acc = np.linalg.norm(_second_differences(x), axis=-1)
        assert (acc.max(axis=0) > 1e-2).all()


def test_fly_points_change_height_accelerate_in_3d_and_stay_off_the_floor(scenes):
    for s in scenes:
        x = s.trajectories[:, _points_of(s, "fly")]
        assert (np.ptp(x[..., 2], axis=0) > 0.02).all()
        acc = np.abs(_second_differences(x)).max(axis=0)  # (n, 3)
        assert (acc > 1e-3).all()
        assert (x[..., 2] > 0.05).all()


def test_cloth_points_wave_along_its_normal_by_different_amounts(scenes):
    for s in scenes:
        x = s.trajectories[:, _points_of(s, "cloth")]
        d = (x - x[:1]).reshape(-1, 3)
        sv = np.linalg.svd(d, compute_uv=False)
        assert sv[1] < 1e-9 * sv[0]  # every displacement along one direction
        normal = np.linalg.svd(d)[2][0]
        assert abs(normal[2]) < 1e-9  # horizontal: the normal of a standing cloth
        along = (x - x[:1]) @ normal  # (T, n)
        assert np.abs(along).max() <= 0.6 + 1e-9  # twice the largest amplitude
        assert np.ptp(along, axis=1).max() > 0.05  # by different amounts
        # Non-rigid: the distances between its points change (second order in the waves' differences).
        pair = np.linalg.norm(x[:, :, None] - x[:, None], axis=-1)
        assert np.abs(pair - pair[:1]).max() > 0.01
        assert (x[..., 2] > 0.2 - 1e-9).all()


def _lowest(obj, f: int) -> float:
    """Height of the lowest point of a rigid mover's primitive at frame ``f``."""
    if obj.kind == synthetic.SPHERE:
        return obj.position[f, 2] - obj.half[0]
    return obj.position[f, 2] - np.abs(obj.rotation[f, 2]) @ obj.half


def test_mover_shapes_rest_on_the_floor_or_stay_above_it():
    rng = np.random.default_rng(0)
    tau = np.linspace(0, 1, 16)
    camera = np.array([8.0, 0, 2.0])
    for _ in range(40):
        for kind in ("slide", "circle"):
            obj = engine._mover(kind, rng, tau, 1.0, camera)
            assert all(abs(_lowest(obj, f)) < 1e-12 for f in range(16)), kind
        fly = engine._mover("fly", rng, tau, 1.0, camera)
        assert min(_lowest(fly, f) for f in range(16)) > 0.05
        assert (fly.position[:, 2] >= 1.0).all() and (fly.position[:, 2] <= 2.5).all()
        cloth = engine._mover("cloth", rng, tau, 1.0, camera)
        a, b, amplitude = cloth.half
        assert 0.6 <= a <= 1.0 and 0.5 <= b <= 0.75 and 0.15 <= amplitude <= 0.3
        assert 0.2 <= cloth.position[0, 2] - b <= 0.6  # the bottom edge
        np.testing.assert_array_equal(cloth.position, np.broadcast_to(cloth.position[0], cloth.position.shape))
        np.testing.assert_allclose(cloth.rotation[0, 2], [0, 1, 0], atol=1e-12)  # local y is up
        cycles = (cloth.wave.phase[0] - cloth.wave.phase[-1]) / (2 * np.pi)
        assert 2 <= cycles <= 3


# --------------------------------------------------------------------------
# The cloth's rendering
# --------------------------------------------------------------------------


def test_cloth_hits_are_the_first_crossings_of_the_surface():
    """Against a brute-force search along each ray in float64 (fine steps, then bisection),
    for rays from in front of the cloth and from low on its sides (crossing its waves
    more than once); those crossing twice within one of the caster's sample steps (a
    graze of a crest, which it misses) are left out."""
    rng = np.random.default_rng(1)
    half = np.array([0.8, 0.6, 0.25])
    wave = engine._Wave(0.25, 2 * np.pi / 1.6, 0.6, np.zeros(1))
    phase = 0.7
    R = 600
    target = np.stack([rng.uniform(-1.0, 1.0, R), rng.uniform(-0.8, 0.8, R), rng.uniform(-0.3, 0.3, R)], -1)
    low = np.arange(R) % 2 == 1
    origin = np.stack([np.where(low, rng.uniform(3, 5, R) * rng.choice([-1, 1], R), rng.uniform(-4, 4, R)),
                       rng.uniform(-3, 3, R),
                       np.where(low, rng.uniform(0.3, 1.0, R), rng.uniform(0.5, 6, R)) * rng.choice([-1, 1], R)], -1)
    d = target - origin
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    t = engine._cloth_hit(wave, half, torch.from_numpy(origin).float(), torch.from_numpy(d).float(),
                          torch.tensor(phase)).double().numpy()

    def residual(s):
        p = origin[:, None] + s[..., None] * d[:, None]
        w = wave.height(torch.from_numpy(p[..., 0]), torch.from_numpy(p[..., 1]), 
                        torch.tensor(phase, dtype=torch.float64))
        return p[..., 2] - w.numpy()

    inv = 1 / d
    near = np.minimum((-half - origin) * inv, (half - origin) * inv).max(-1)
    far = np.maximum((-half - origin) * inv, (half - origin) * inv).min(-1)
    steps = np.linspace(0, 1, 8001)
    s = near[:, None] + (far - near)[:, None] * steps
    f = residual(s)
    cross = (f[:, :-1] * f[:, 1:] <= 0) & (far > near)[:, None]
    hit = cross.any(-1)
    assert 100 < hit.sum() < R  # both hits and misses
    assert (cross.sum(-1) >= 2).sum() > 10  # crossing the waves more than once: the first crossing counts
    first_two = np.argsort(~cross, axis=-1, kind="stable")[:, :2]
    graze = cross.sum(-1) >= 2
    graze &= (first_two[:, 1] - first_two[:, 0]) < len(steps) / engine._CLOTH_STEPS
    assert graze.sum() < 0.05 * R
    ok = ~graze
    np.testing.assert_array_equal(np.isfinite(t)[ok], hit[ok])
    j = cross.argmax(-1)
    lo, hi = s[np.arange(R), j], s[np.arange(R), j + 1]
    f_lo = residual(lo[:, None])[:, 0]
    for _ in range(60):
        mid = (lo + hi) / 2
        same = np.sign(residual(mid[:, None])[:, 0]) == np.sign(f_lo)
        lo, hi = np.where(same, mid, lo), np.where(same, hi, mid)
    assert np.abs(t - lo)[hit & ok].max() < 1e-5  # metres, at 1-8 m: float32


def _flat(s, tt, xr, yr):
    """Samples whose 3x3 pixel neighbourhood is inside the frame and shows one object."""
    H, W = s.config.height, s.config.width
    ok = (xr >= 1) & (xr <= W - 2) & (yr >= 1) & (yr <= H - 2)
    xc, yc = np.clip(xr, 1, W - 2), np.clip(yr, 1, H - 2)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            ok &= s.segmentation[tt, yc + dy, xc + dx] == s.segmentation[tt, yc, xc]
    return ok


def test_cloth_depth_and_visibility_agree_with_its_trajectories():
    """At the nearest pixel centre, away from silhouettes, the depth map holds a visible
    cloth point's camera ``z`` to first order in the half-pixel offset (twice the
    one-sided gradients bound it, as in test_engine.py); a hidden one lies behind it."""
    cfg = SceneConfig(num_frames=6, height=96, width=96, num_points=150, num_dynamic=2, num_exiting=0,
                      movers=("cloth",), dynamic_point_fraction=1.0, supersample=1, fov_deg=(30.0, 30.0))
    checked_visible = checked_hidden = 0
    for seed in (0, 1):
        s = render_scene(cfg, seed)
        cloth = int(np.flatnonzero(s.object_motion == "cloth")[0])
        _, z = synthetic.project(s.trajectories, s.K, s.cam_from_world)
        inside = (z > 1e-3) & (s.tracks[..., 0] >= 0) & (s.tracks[..., 1] >= 0)  # _flat checks the far sides
        tt, nn = np.nonzero(inside & (s.object_id == cloth)[None])
        x, y = s.tracks[tt, nn, 0].astype(np.float64), s.tracks[tt, nn, 1].astype(np.float64)
        xr, yr = np.round(x).astype(int), np.round(y).astype(int)
        vis = s.visibility[tt, nn]
        shown = s.segmentation[tt, np.clip(yr, 0, cfg.height - 1), np.clip(xr, 0, cfg.width - 1)]
        keep = _flat(s, tt, xr, yr) & (~vis | (shown == cloth))  # a visible point shows on the cloth
        tt, nn, x, y, xr, yr, vis = tt[keep], nn[keep], x[keep], y[keep], xr[keep], yr[keep], vis[keep]
        d = s.depth.astype(np.float64)
        gx = np.maximum(abs(d[tt, yr, xr + 1] - d[tt, yr, xr]), abs(d[tt, yr, xr] - d[tt, yr, xr - 1]))
        gy = np.maximum(abs(d[tt, yr + 1, xr] - d[tt, yr, xr]), abs(d[tt, yr, xr] - d[tt, yr - 1, xr]))
        bound = 2 * (abs(x - xr) * gx + abs(y - yr) * gy) + 1e-5 * z[tt, nn]
        err = d[tt, yr, xr] - z[tt, nn]
        assert (abs(err[vis]) <= bound[vis]).all()
        assert (err[~vis] < -bound[~vis]).all()
        checked_visible += int(vis.sum())
        checked_hidden += int((~vis).sum())
    assert checked_visible > 300 and checked_hidden > 0


# --------------------------------------------------------------------------
# The reconstruction tier
# --------------------------------------------------------------------------


def test_the_movers_tier_comes_last_and_shares_its_points_among_the_movers():
    assert list(synthetic.RECON_TIERS)[-1] == "movers_3d"  # earlier tiers keep their seeds
    assert synthetic.RECON_TIERS["movers_3d"].movers == MOVER_KINDS
    s = next(synthetic.recon_scenes(["movers_3d"], 1, num_frames=8, height=64, width=64, num_points=240,
                                    supersample=1))
    for kind in MOVER_KINDS:
        on = _points_of(s, kind)
        assert on.sum() >= 15, kind
        assert s.visibility[:, on].mean() > 0.5, kind
