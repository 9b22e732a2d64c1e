"""recon.dynamic: moving points in 3D on a scene built here from known geometry.

The scene (numpy only, no renderer): a camera on a 40-degree arc around a room,
static points on the floor and two walls, and four movers whose kind is known:
a box sliding on the floor at constant velocity, a box circling on the floor
while turning, a box flying on an accelerating path in mid-air, and a cloth
waving in place along its normal. Tracks are the exact projections plus
Gaussian noise; every point is visible in every frame.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import recon
from recon import dynamic
from recon.depth import align_depth
from recon.geometry import camera_centres, project

T, W, H, F = 24, 320, 240, 260.0
K = np.array([[F, 0, (W - 1) / 2], [0, F, (H - 1) / 2], [0, 0, 1.0]])
KINDS = {"slide": 1, "circle": 2, "fly": 3, "cloth": -1}


def _rot_z(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _look_at(eye, target):
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0, 0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = R, -R @ eye
    return pose


def _box(rng, n, half):
    """Points on the surface of a box of half extents ``half``, centred at the origin."""
    p = rng.uniform(-1, 1, (n, 3)) * half
    face = rng.integers(0, 3, n)
    p[np.arange(n), face] = np.sign(rng.uniform(-1, 1, n)) * half[face]
    return p


def make_scene(seed=0, noise=0.5):
    """``(tracks, vis, cam_from_world, truth (T, N, 3), kind (N,) str, group (N,) int)``."""
    rng = np.random.default_rng(seed)
    tau = np.linspace(0, 1, T)
    az = np.radians(40) * (0.3 * tau + 0.7 * (0.5 - 0.5 * np.cos(np.pi * tau))) + rng.uniform(0, 2 * np.pi)
    eye = np.stack([8 * np.cos(az), 8 * np.sin(az), 2.5 + 0.6 * np.sin(np.pi * tau)], 1)
    poses = np.stack([_look_at(e, np.array([0, 0, 0.8])) for e in eye])
    parts, kinds = [], []
    floor = np.concatenate([rng.uniform(-7, 7, (300, 2)), np.zeros((300, 1))], 1)
    walls = []
    for a in np.arange(4) * np.pi / 2:
        u = rng.uniform(-10, 10, 60)
        walls.append(np.stack([10 * np.cos(a) - u * np.sin(a), 10 * np.sin(a) + u * np.cos(a), rng.uniform(0, 5, 60)], 1))
    static = np.concatenate([floor] + walls)
    parts.append(np.broadcast_to(static, (T,) + static.shape))
    kinds += ["static"] * len(static)
    # Slide: constant velocity on the floor, fixed orientation.
    half = np.array([0.5, 0.4, 0.35])
    local = _box(rng, 80, half)
    start = np.array([-1.5, 0.5, half[2]])
    v = np.array([2.0, -0.8, 0.0])
    parts.append(local[None] + start + tau[:, None, None] * v)
    kinds += ["slide"] * len(local)
    # Circle: on the floor, centre on a circle, turning with it.
    half = np.array([0.45, 0.35, 0.4])
    local = _box(rng, 80, half)
    ang = 2 * np.pi * 0.6 * tau
    centre = np.stack([1.5 + 1.5 * np.cos(ang), -1.0 + 1.5 * np.sin(ang), np.full(T, half[2])], 1)
    parts.append(np.einsum("tij,nj->tni", np.stack([_rot_z(a) for a in ang]), local) + centre[:, None])
    kinds += ["circle"] * len(local)
    # Fly: mid-air, accelerating in all directions, turning.
    half = np.array([0.35, 0.35, 0.35])
    local = _box(rng, 80, half)
    centre = np.stack([-0.5 + 1.2 * np.sin(2.5 * tau), 2.0 * tau - 1.0, 1.8 + 0.6 * np.sin(3.5 * tau)], 1)
    ang = 3.0 * tau
    parts.append(np.einsum("tij,nj->tni", np.stack([_rot_z(a) for a in ang]), local) + centre[:, None])
    kinds += ["fly"] * len(local)
    # Cloth: a vertical sheet facing the middle camera, waving along its normal.
    g = rng.uniform(-1, 1, (80, 2)) * [0.8, 0.6]
    mid = eye[T // 2, :2] / np.linalg.norm(eye[T // 2, :2])
    normal = np.array([mid[0], mid[1], 0.0])
    side = np.cross([0, 0, 1.0], normal)
    base = np.array([0.5, 2.0, 1.2]) + g[:, :1] * side + g[:, 1:] * np.array([0, 0, 1.0])
    amp = 0.25 * (0.6 - g[:, 1]) / 1.2
    wave = amp[None] * np.sin(4.0 * g[None, :, 0] - 2 * np.pi * 2.5 * tau[:, None])
    parts.append(base[None] + wave[..., None] * normal)
    kinds += ["cloth"] * len(g)
    truth = np.concatenate(parts, 1)
    kinds = np.array(kinds)
    uv, z = project(truth, np.broadcast_to(K, (T, 3, 3)), poses)
    tracks = uv + rng.normal(0, noise, uv.shape)
    vis = (z > 0.1) & (tracks[..., 0] > 0) & (tracks[..., 0] < W - 1) & (tracks[..., 1] > 0) & (tracks[..., 1] < H - 1)
    group = np.array([KINDS.get(k, 0) for k in kinds])
    return tracks, vis, poses, truth, kinds, group


def extent(truth, poses):
    allp = np.concatenate([camera_centres(poses), truth.reshape(-1, 3)])
    return float(np.linalg.norm(allp.max(0) - allp.min(0)))


@pytest.fixture(scope="module")
def scene():
    return make_scene()


def _lift(scene, **kwargs):
    tracks, vis, poses, truth, kinds, group = scene
    N = len(kinds)
    static = kinds == "static"
    traj = np.full((T, N, 3), np.nan)
    traj[:, static] = truth[0, static]
    rel = np.zeros(N)
    out = dynamic.lift_moving(tracks, vis, K, poses, np.ones(T, bool), static, np.where(static[:, None], truth[0], np.nan),
                              ~static, group, (W, H), traj, rel, **kwargs)
    err = np.nanmedian(np.linalg.norm(traj - truth, axis=-1), axis=0) / extent(truth, poses)
    return out, traj, rel, err


def test_rigid_movers_decided_by_priors(scene):
    out, traj, rel, err = _lift(scene)
    kinds = scene[4]
    by_group = {g.group: g for g in out.groups}
    # Decided by its priors, unless its structure's mirror image fitted about as well (then said so).
    assert (by_group[1].decided or by_group[1].mirror) and "constant velocity" in by_group[1].prior, by_group[1]
    assert (by_group[2].decided or by_group[2].mirror) and by_group[2].prior == "constant height", by_group[2]
    assert not by_group[3].decided, by_group[3]
    for k in ("slide", "circle"):
        assert np.median(err[kinds == k]) < 0.01, (k, np.median(err[kinds == k]))
    assert rel[kinds == "fly"].max() < min(rel[kinds == "slide"].min(), rel[kinds == "circle"].min())


def test_non_rigid_points_beat_the_triangulated_mean(scene):
    tracks, vis, poses, truth, kinds, group = scene
    out, traj, rel, err = _lift(scene)
    cloth = kinds == "cloth"
    mean = dynamic.hovering(tracks, vis, K, poses)
    err_mean = np.nanmedian(np.linalg.norm(mean - truth, axis=-1), axis=0) / extent(truth, poses)
    assert np.isfinite(err[cloth]).all()
    assert np.median(err[cloth]) <= np.median(err_mean[cloth])


def test_same_shape_tells_a_structure_from_its_mirror_image():
    rng = np.random.default_rng(3)
    Y = _box(rng, 40, np.array([0.5, 0.3, 0.2]))
    R = _rot_z(0.7)
    moved = 2.5 * Y @ R.T + np.array([1.0, -2.0, 0.5]) + rng.normal(0, 0.005, Y.shape)
    assert dynamic._same_shape(Y, moved)
    mirrored = moved * np.array([1, 1, -1.0])  # the relief reversed
    assert not dynamic._same_shape(Y, mirrored)
    few = np.full_like(Y, np.nan)
    few[:3] = mirrored[:3]
    assert dynamic._same_shape(Y, few)  # under 4 common points: nothing to tell them apart


def test_tracks_a_mover_missed_are_carried_by_it(scene):
    tracks, vis, poses, truth, kinds, group = scene
    missed = np.flatnonzero(kinds == "slide")[::8]
    regrouped = group.copy()
    regrouped[missed] = -1  # tracks the rigid grouping left out
    out, traj, rel, err = _lift((tracks, vis, poses, truth, kinds, regrouped))
    assert (out.kind[missed] == "carried").all(), out.kind[missed]
    assert np.median(err[missed]) < 0.01
    members = (kinds == "slide") & (regrouped == 1)
    assert 0 < rel[missed].min() and rel[missed].max() <= rel[members].max()  # the mover's, at most
    # A non-rigid point is never carried: fixed in a mover's frame, it does not reproject.
    assert set(out.kind[kinds == "cloth"]) <= {"line", "hovering"}


def _depth_maps(truth, poses, vis, tracks):
    """Metric depth maps holding each visible point's true camera z at its pixel (NaN elsewhere)."""
    maps = np.full((T, H, W), np.nan)
    z = np.einsum("tij,tnj->tni", poses[:, :3, :3], truth)[..., 2] + poses[:, None, 2, 3]
    for t in range(T):
        xy = np.round(tracks[t, vis[t]]).astype(int)
        maps[t, xy[:, 1], xy[:, 0]] = z[t, vis[t]]
    return maps


def test_depth_maps_place_every_mover(scene):
    tracks, vis, poses, truth, kinds, group = scene
    maps = _depth_maps(truth, poses, vis, tracks)
    static = kinds == "static"
    cam_z = np.where(static[None], np.einsum("tij,tnj->tni", poses[:, :3, :3], truth)[..., 2] + poses[:, None, 2, 3],
                     np.nan)
    alignment = align_depth(maps, "metric", tracks, vis, static, cam_z, (W, H))
    out, traj, rel, err = _lift(scene, alignment=alignment, depth=maps)
    for k in ("slide", "circle", "fly", "cloth"):
        assert np.median(err[kinds == k]) < 0.003, (k, np.median(err[kinds == k]))
    assert {g.prior for g in out.groups} == {"depth"}
    assert set(out.kind[~static]) == {"depth"}


def test_contiguous_keeps_the_object_and_drops_detached_tracks():
    """An object of 40 tracks on a 5 px grid moving right, a second part of it (15 tracks, 38%)
    beyond an occluder 60 px away, and 4 tracks 80 px away that only share its motion."""
    rng = np.random.default_rng(0)
    T = 12
    grid = np.stack(np.meshgrid(np.arange(8) * 5.0, np.arange(5) * 5.0), -1).reshape(-1, 2)
    part = np.stack(np.meshgrid(np.arange(5) * 5.0, np.arange(3) * 5.0), -1).reshape(-1, 2) + [100, 0]
    stray = np.array([[0.0, 80], [5, 80], [0, 85], [5, 85]])
    base = np.concatenate([grid, part, stray])
    tracks = base[None] + np.arange(T)[:, None, None] * [3.0, 0] + rng.normal(0, 0.3, (T, len(base), 2))
    vis = rng.random((T, len(base))) > 0.1
    keep = dynamic.contiguous(tracks, vis)
    assert keep[:55].all() and not keep[55:].any()
    # A detached set under a fifth of the group goes; at a fifth or more it stays.
    assert dynamic.contiguous(tracks, vis, share=0.4)[:40].all() and not dynamic.contiguous(tracks, vis, share=0.4)[40:].any()
    assert dynamic.contiguous(tracks[:, :3], vis[:, :3]).all()  # too few to judge


def _static_depth(scene):
    """The static tracks and their true camera z ``(T, N)`` (NaN for the others)."""
    tracks, vis, poses, truth, kinds, group = scene
    static = kinds == "static"
    z = np.einsum("tij,tnj->tni", poses[:, :3, :3], truth)[..., 2] + poses[:, None, 2, 3]
    return static, np.where(static[None], z, np.nan)


def _biased_maps(scene, factor):
    """Metric maps holding each visible point's true camera z times ``factor[n]`` at its pixel."""
    tracks, vis, poses, truth, kinds, group = scene
    z = np.einsum("tij,tnj->tni", poses[:, :3, :3], truth)[..., 2] + poses[:, None, 2, 3]
    maps = np.full((T, H, W), np.nan)
    for t in range(T):
        n = np.flatnonzero(vis[t])
        xy = np.round(tracks[t, n]).astype(int)
        maps[t, xy[:, 1], xy[:, 0]] = z[t, n] * factor[n]
    return maps


def _step(scene):
    """``(N,)`` map factors: +4% for the nearest third of the static points' depths, 0 for the middle
    third and -4% for the farthest."""
    tracks, vis, poses, truth, kinds, group = scene
    static, cam_z = _static_depth(scene)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # points never seen: NaN
        z = np.einsum("tij,tnj->tni", poses[:, :3, :3], truth)[..., 2] + poses[:, None, 2, 3]
        z = np.nanmedian(np.where(vis, z, np.nan), axis=0)
    near, far = np.nanquantile(z[static], [1 / 3, 2 / 3])
    return np.where(z < near, 1.04, np.where(z > far, 0.96, 1.0))


def test_persistent_misfit_is_the_maps_shape_along_depth(scene):
    tracks, vis, poses, truth, kinds, group = scene
    static, cam_z = _static_depth(scene)
    rng = np.random.default_rng(1)
    exact = _biased_maps(scene, np.ones(len(kinds)))
    # 5% noise per pixel and frame: each frame's residual is about 0.674 x 5% = 3.4% (the median of
    # |N(0, 1)| is 0.674), but it averages out over a point's frames and a depth bin's points.
    noisy = exact * (1 + 0.05 * rng.standard_normal(exact.shape))
    # Each point off by its own factor within +-5%, the same in every frame (as a point's own
    # triangulation error is): it averages out over a depth bin's points.
    scattered_factor = 1 + rng.uniform(-0.05, 0.05, len(kinds))
    scattered = _biased_maps(scene, scattered_factor)
    # The near third 4% deeper, the far third 4% shallower: the fitted scale is the middle third's
    # (the median ratio), so two thirds of the points are 4% off.
    stepped = _biased_maps(scene, _step(scene))
    fit = {name: align_depth(maps, "metric", tracks, vis, static, cam_z, (W, H))
           for name, maps in (("exact", exact), ("noisy", noisy), ("scattered", scattered), ("stepped", stepped))}
    assert fit["exact"].persistent < 0.002
    assert 0.025 < np.nanmedian(fit["noisy"].residual) < 0.045
    assert fit["noisy"].persistent < 0.01
    assert 0.018 < np.nanmedian(fit["scattered"].residual) and fit["scattered"].persistent < 0.01
    # ... but it is each point's own misfit: its map value over its depth, at the fitted scale.
    misfit = fit["scattered"].point_misfit
    seen = np.isfinite(misfit)
    assert seen.sum() > 300 and not seen[~static].any()
    expected = fit["scattered"].a[0] * scattered_factor - 1
    assert np.mean(np.abs(misfit[seen] - expected[seen]) < 1e-9) > 0.95  # all but pixels two points share
    assert 0.03 < fit["stepped"].persistent < 0.045
    # A per-frame scale and shift takes up part of it (a line through the steps), not all.
    assert 0.01 < align_depth(stepped, "affine", tracks, vis, static, cam_z, (W, H)).persistent < 0.045
    assert dynamic.map_shape_error(fit["stepped"]) == pytest.approx(dynamic.MAP_SHAPE_GAIN * fit["stepped"].persistent)
    assert dynamic.map_shape_error(None) == 0.0


def test_points_the_maps_place_inherit_their_misfit_to_the_static_cloud(scene):
    tracks, vis, poses, truth, kinds, group = scene
    static, cam_z = _static_depth(scene)
    factor = np.where(static, _step(scene), 1.0)  # the movers' depths stay exact
    rel = {}
    for name, f in (("exact", np.ones(len(kinds))), ("stepped", factor)):
        maps = _biased_maps(scene, f)
        alignment = align_depth(maps, "metric", tracks, vis, static, cam_z, (W, H))
        out, traj, rel[name], err = _lift(scene, alignment=alignment, depth=maps)
        assert set(out.kind[~static]) == {"depth"}
    inherited = dynamic.reliability_from_error(dynamic.map_shape_error(alignment))
    moving = ~static
    assert (rel["stepped"][moving] <= inherited + 1e-12).all()
    assert (rel["stepped"][moving] < rel["exact"][moving]).all()


def test_static_points_lose_reliability_to_maps_that_disagree_with_them(scene):
    tracks, vis, poses, truth, kinds, group = scene
    static = kinds == "static"
    without = recon.reconstruct(tracks, vis, (W, H), intrinsics=K)
    exact = recon.reconstruct(tracks, vis, (W, H), intrinsics=K, depth=_biased_maps(scene, np.ones(len(kinds))))
    stepped = recon.reconstruct(tracks, vis, (W, H), intrinsics=K, depth=_biased_maps(scene, _step(scene)))
    kept = without.used & ~without.is_dynamic & static
    assert kept.sum() > 300
    assert (stepped.reliability[kept] <= without.reliability[kept] + 1e-12).all()
    assert (exact.reliability[kept] <= without.reliability[kept] + 1e-12).all()
    # 1.5 x 4% = 6% at the median distance: a reliability of 1 / (1 + 6 / 2) = 0.25 there.
    assert np.median(stepped.reliability[kept]) < 0.3
    assert np.median(stepped.reliability[kept]) < np.median(exact.reliability[kept])
    said = [line for line in stepped.status.messages if "disagree along depth" in line]
    assert len(said) == 1, stepped.status.messages
    assert float(re.search(r"by ([0-9.]+)%", said[0]).group(1)) >= 3.0  # the 4% steps (less what the scale takes)
