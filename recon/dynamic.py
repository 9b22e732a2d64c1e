"""3D trajectories of moving points, each with a reliability that means something.

A moving point seen by one camera is ambiguous along a one-parameter family:
for any camera path ``C(t)``, ``X(t) + a (X(t) - C(t))`` projects identically.
What the data decides is solved; what it does not is said through the
reliability (a point's predicted 3D error ranks with its real one).

**Rigid movers** (a rigid group of :func:`recon.separation.rigid_groups`): the
object's shape and its motion relative to the camera come from structure from
motion on its own tracks (COLMAP, the intrinsics fixed); composed with the
solved cameras, each of its points is ``X_n(t) = C(t) + s D_n(t)`` with one
unknown scale ``s`` for the whole object. A small object's structure has a
mirror image (its relief reversed) that can fit about as well; when one does,
the group says so (``mirror``) and its points' predicted error is at least the
object's size over its distance. The scale is chosen by priors, each a
linear least-squares fit in ``u = 1/s`` (residuals in units of the object's
distance, so that collapsing the object onto the camera path is no cheap way
to fit):

* *constant velocity*: the object's centre moves on a straight line at constant speed;
* *constant height*: the centre stays at one height above the floor (moving on
  the floor or on any plane parallel to it), the vertical taken from the
  cameras' up direction.

A prior is *consistent* when its residual is within ``consistency`` (1% of the
distance by default) and it fixes the scale sharply (relative standard error
under 5%: on ``movers_3d`` a box flying on a curve at changing speed fitted
constant velocity within 1% with a standard error of 8%, and was 35% of the
scene off); consistent priors that agree are averaged. The object is placed
by them, and its scale counts as *decided* when the predicted relative error
is at most 3% (:data:`DECIDED_ERROR`). The floor of the static cloud
bounds the scale (no point below it). Without a consistent prior the object is
*undecided*: placed by the least-bad prior, with a low reliability that falls
the further apart the priors put it (:data:`UNDECIDED_MIN_ERROR`).

**Non-rigid points** (moving tracks in no rigid group, or in one whose
structure could not be solved): three estimates, each reprojecting exactly
(every estimate is finally put on the point's viewing rays):

* *hovering* (the fallback): the least-squares intersection of its rays;
* *along a shared direction*: the point moves about its ray intersection along
  one direction shared with its 10 nearest hovering neighbours (a cloth waves
  along its normal, a piston along its axis): the direction (searched over a
  hemisphere) that explains most of their rays' scatter
  (:func:`common_direction`), each frame's displacement along it by
  ridge-regularised least squares; used where it explains at least twice what
  noise gives;
* *carried*: its neighbours in the image belong to a rigid mover placed by a
  consistent prior (or depth) and,
  fixed in that mover's frame, it reprojects within the noise: it is placed as
  one of the mover's points (a track the mover's structure missed).

Carried points need most of their image neighbours on one such mover and
rays that scatter about their intersection by more than the noise.

**Depth maps** (any kind of :mod:`recon.depth`, aligned to the static points):
a rigid mover's scale is the median over its observations of the map's depth
over its unit depth (robust to maps that are wrong on its edges), and each
observation's depth is the structure's and the map's weighted by their
variances (:func:`_fuse_depth`: exact metric maps pull towards the map, noisy
relative ones towards the structure); a non-rigid point takes the map's depth
per frame, outliers against its neighbouring frames replaced by their median.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np

from recon import colmap
from recon.depth import DepthAlignment, depth_at, sample
from recon.geometry import camera_centres, triangulate_dlt, umeyama

logger = logging.getLogger(__name__)


@dataclass
class GroupScale:
    """How one rigid mover's scale was chosen.

    Attributes:
        group: its label in :attr:`recon.Reconstruction.groups`.
        tracks: tracks in the group; solved: tracks placed through the group's structure.
        scale: the chosen scale ``s`` (NaN when the group's structure was not solved).
        prior: ``"depth"``, ``"constant velocity"``, ``"constant height"``, both joined
            with ``"+"``, or ``"undecided (...)"``.
        decided: a prior (or depth) fixed the scale.
        relative_error: predicted relative 3D error of the group's points.
        mirror: its structure's mirror image fits about as well (:func:`relative_structure`):
            the points' relative error is at least the object's size over its distance.
        fits: ``{prior: (u, relative standard error, residual)}`` of every prior tried.
    """

    group: int
    tracks: int
    solved: int = 0
    scale: float = float("nan")
    prior: str = "none"
    decided: bool = False
    relative_error: float = float("inf")
    mirror: bool = False
    fits: dict = field(default_factory=dict)


@dataclass
class MovingResult:
    """What :func:`lift_moving` found (counts for the status; ``groups`` for the summary)."""

    groups: list[GroupScale]
    kind: np.ndarray  # (N,) str: "rigid", "carried", "line", "hovering", "depth" or "" (not moving / unknown)


DECIDED_ERROR = 0.03
"""A rigid mover's scale counts as decided only when its predicted relative error is at most this.
At 0.04 (until 2026-12-06) a random mover of the heavy_occlusion tier was counted decided at a
predicted 3.9% (reliability 0.34) and placed 1.06% of the scene extent off; the decided movers of
the benchmark predict 0.25-2.3%."""

UNDECIDED_ERROR = 0.2
"""Predicted relative error of a point hovering or moving along a shared direction without depth maps
(its depth is a guess), before its scatter is added."""


MAP_SHAPE_GAIN = 1.5
"""Predicted relative error of a point placed by depth maps, per unit of the maps' persistent misfit to
the static points (:attr:`recon.depth.DepthAlignment.persistent`). On the benchmark's movers_3d and
mover_dominated scenes with metric maps (2026-12-06), the points the maps placed lay 1.2-2.4 times the
persistent misfit off (median 1.5) where it was over 0.2% (8 scenes; 4.3 and 6.2 times below), and the
static points 1.2-2.1 times: the misfit is the static cloud's own distortion along depth (a focal
length 1-2.4% off stretches it), shared by every point the maps are fitted through. With
affine_disparity maps it reads 0.1-0.2% on those scenes whatever the focal: a per-frame scale and
shift of inverse depth takes up the stretch."""


def map_shape_error(alignment: DepthAlignment | None) -> float:
    """Relative error every point placed by the aligned depth maps inherits from their persistent misfit
    to the static cloud (:data:`MAP_SHAPE_GAIN` times it; 0 without maps or without a measure)."""
    if alignment is None or not np.isfinite(alignment.persistent):
        return 0.0
    return MAP_SHAPE_GAIN * float(alignment.persistent)


UNDECIDED_MIN_ERROR = 0.1
"""Least predicted relative error of a rigid mover whose scale no prior decides. Above that, its
prediction is ``sqrt(spread^2 + se^2 + (3 misfit)^2)``: how far apart the priors (and the floor's
bound) put it, in log scale, the closest prior's relative standard error and its misfit (relative to
the distance). On the benchmark's 17 undecided groups of fast_motion, heavy_occlusion and
mover_dominated (2026-12-06) that ranked the groups' real errors (0.6-74%) with a Spearman correlation
of 0.51 (0.59 with each group weighted by its points), against 0.07 (0.08) for the former
``max(0.2, 10 misfit)``; the misfit's weight 3 was chosen on those groups (10: 0.52 and 0.48)."""


def reliability_from_error(relative_error: np.ndarray | float, scale: float = 0.02) -> np.ndarray:
    """Reliability in ``[0, 1]`` from a predicted relative 3D error (error / distance to the camera):
    ``1 / (1 + e / scale)``, so 1% gives 0.67 and 10% gives 0.17."""
    e = np.asarray(relative_error, dtype=np.float64)
    return np.where(np.isfinite(e), 1.0 / (1.0 + np.maximum(e, 0) / scale), 0.0)


# --------------------------------------------------------------------------
# The scene's vertical and floor
# --------------------------------------------------------------------------


def up_direction(cam_from_world: np.ndarray) -> np.ndarray:
    """World up, from the cameras (people hold cameras upright, with little roll).

    The cameras' ``x`` axes are then horizontal: up is the direction orthogonal to all of them
    when they turn enough to span the horizontal plane; otherwise the mean ``-y`` axis made
    orthogonal to the mean ``x`` axis (a camera that looks down tilts its ``-y`` axis forward).
    """
    ok = np.isfinite(cam_from_world).all(axis=(1, 2))
    x = cam_from_world[ok, 0, :3]
    minus_y = -cam_from_world[ok, 1, :3].mean(0)
    _, sv, Vt = np.linalg.svd(x, full_matrices=False)
    if len(sv) == 3 and sv[2] < 0.3 * sv[1]:
        up = Vt[2] if Vt[2] @ minus_y > 0 else -Vt[2]
    else:
        xm = x.mean(0) / max(np.linalg.norm(x.mean(0)), 1e-12)
        up = minus_y - (minus_y @ xm) * xm
    return up / max(np.linalg.norm(up), 1e-12)


def floor_plane(points: np.ndarray, up: np.ndarray, centres: np.ndarray, seed: int = 0,
                max_tilt_deg: float = 25.0) -> tuple[np.ndarray, float] | None:
    """The floor among the static points: the plane with most inliers whose normal is within
    ``max_tilt_deg`` of ``up`` and which lies below the cameras.

    Returns:
        ``(normal (3,) pointing up, offset d)`` with ``normal . X = d`` on the floor, or None.
    """
    pts = points[np.isfinite(points).all(1)]
    if len(pts) < 20:
        return None
    rng = np.random.default_rng(seed)
    spread = np.median(np.linalg.norm(pts - np.median(pts, 0), axis=1))
    tol = 0.01 * spread
    cos_max = np.cos(np.radians(max_tilt_deg))
    camera_height = float(np.median(centres @ up))
    best, best_count = None, 0
    for _ in range(300):
        a, b, c = pts[rng.choice(len(pts), 3, replace=False)]
        n = np.cross(b - a, c - a)
        norm = np.linalg.norm(n)
        if norm < 1e-12:
            continue
        n = n / norm
        if n @ up < 0:
            n = -n
        if n @ up < cos_max:
            continue
        d = n @ a
        if d >= camera_height:
            continue
        count = int((np.abs(pts @ n - d) < tol).sum())
        if count > best_count:
            best, best_count = (n, d), count
    if best is None or best_count < max(10, 0.05 * len(pts)):
        return None
    n, d = best
    inl = np.abs(pts @ n - d) < tol
    q = pts[inl]
    centre = q.mean(0)
    _, _, Vt = np.linalg.svd(q - centre)
    n = Vt[-1] if Vt[-1] @ up > 0 else -Vt[-1]
    return n, float(n @ centre)


# --------------------------------------------------------------------------
# Rigid movers
# --------------------------------------------------------------------------


def _same_shape(Y1: np.ndarray, Y2: np.ndarray, tolerance: float = 0.25) -> bool:
    """Whether two structures of one object's points (``(n, 3)``, NaN where missing) are one shape
    up to a similarity (not its mirror image): the fit's RMS residual under ``tolerance`` times
    the shape's RMS size."""
    ok = np.isfinite(Y1).all(1) & np.isfinite(Y2).all(1)
    if ok.sum() < 4:
        return True
    s, R, t = umeyama(Y1[ok], Y2[ok])
    residual = np.sqrt(np.mean(np.sum((s * Y1[ok] @ R.T + t - Y2[ok]) ** 2, axis=1)))
    size = np.sqrt(np.mean(np.sum((Y2[ok] - Y2[ok].mean(0)) ** 2, axis=1)))
    return bool(residual <= tolerance * size)


def contiguous(tracks: np.ndarray, vis: np.ndarray, spacing: float = 6.0, share: float = 0.2) -> np.ndarray:
    """``(n,)`` bool: the tracks of a rigid group that lie together in the image.

    Two tracks are neighbours when the median over the frames that see both of their distance
    is under ``spacing`` times the group's typical spacing (the median distance of a track to
    its nearest fellow). The largest set of tracks linked by neighbours is kept, and any other
    such set of at least ``share`` of the group (an object seen on both sides of an occluder);
    smaller detached sets are not.

    Args:
        tracks: ``(T, n, 2)`` pixels; vis: ``(T, n)`` bool.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    n = tracks.shape[1]
    if n < 3:
        return np.ones(n, bool)
    P = np.where(vis[..., None], tracks, np.nan)
    D = np.empty((n, n))
    rows = max(1, 2 ** 22 // (len(P) * n))  # pairwise distances in blocks of rows: a few tens of MB at a time
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for a in range(0, n, rows):
            D[a:a + rows] = np.nanmedian(np.linalg.norm(P[:, a:a + rows, None] - P[:, None], axis=-1), axis=0)
    np.fill_diagonal(D, np.inf)
    nearest = np.where(np.isfinite(D), D, np.inf).min(1)
    if not np.isfinite(nearest).any():
        return np.ones(n, bool)
    link = np.isfinite(D) & (D <= spacing * float(np.median(nearest[np.isfinite(nearest)])))
    count, label = connected_components(csr_matrix(link), directed=False)
    sizes = np.bincount(label, minlength=count)
    keep = (sizes == sizes.max()) | (sizes >= share * n)
    return keep[label]


def relative_structure(tracks: np.ndarray, vis: np.ndarray, K: np.ndarray, image_size: tuple[int, int],
                       pixel_scale: float = 1.0, seed: int = 0, max_keyframes: int = 60,
                       threshold: float = 4.0) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """A rigid object's shape and its motion relative to the camera, from its own tracks.

    Args:
        tracks: ``(T, n, 2)`` the object's tracks; vis: ``(T, n)``.
        K: ``(3, 3)`` the (solved) intrinsics, kept fixed.
        threshold: px, registration of frames between keyframes.

    Returns:
        ``(cam_from_object (T, 4, 4) NaN where not solved, points (n, 3) NaN where not
        triangulated, ambiguous)``, in units of the median camera depth of its points, where
        ``ambiguous`` says that a different shape (its mirror image) fits within 10%; or None.
    """
    T, n = vis.shape
    stride = max(1, int(np.ceil((T - 1) / max(max_keyframes - 1, 1))))
    keys = np.arange(0, T, stride)
    if keys[-1] != T - 1:
        keys = np.append(keys, T - 1)
    # A small object seen in near-affine projection has a mirrored false solution (the depth
    # reversal) that a mapper can settle in, depending on its start, and that can even reproject a
    # little better (on movers_3d: a sliding box 0.56 px against 0.60 px, 141 degrees off; a
    # circling one 0.69 against 0.57). Three incremental starts and the global mapper are tried;
    # among the models that triangulate half the tracks or more, the one that registers most frames,
    # triangulates 90% of the tracks and reprojects best is kept. When a model of a different shape
    # fits within 10% of its error, the data do not decide between them: the result says so.
    results = []
    for mapper, start in (("incremental", seed), ("incremental", seed + 1), ("incremental", seed + 2),
                          ("global", seed)):
        with colmap.colmap_log_level(3):  # a mover too small to map is expected, not an error
            r = colmap.map_tracks(tracks[keys], vis[keys], np.ones(n, bool), image_size, K,
                                  min_pair_matches=max(8, min(15, n // 3)), pixel_scale=pixel_scale, seed=start,
                                  num_threads=1, mapper=mapper)
        frames = int(np.isfinite(r.cam_from_world).all(axis=(1, 2)).sum())
        found = np.isfinite(r.points).all(1)
        error = float(np.mean(r.point_error[found])) if found.any() else np.inf
        # A model that registers every frame on a handful of points (the global mapper can) is out.
        if found.sum() >= max(6, 0.5 * n):
            results.append(((frames, int(found.sum()) >= 0.9 * n, -error), r))
    if not results:
        return None
    key, result = max(results, key=lambda x: x[0])
    ambiguous = any(k[0] >= 0.9 * key[0] and -k[2] <= 1.1 * -key[2] and not _same_shape(r.points, result.points)
                    for k, r in results)
    pose = np.full((T, 4, 4), np.nan)
    pose[keys] = result.cam_from_world
    Y = result.points
    known = np.isfinite(Y).all(1)
    if known.sum() < 6 or np.isfinite(pose).all(axis=(1, 2)).sum() < 3:
        return None
    for t in np.flatnonzero(~np.isfinite(pose).all(axis=(1, 2))):
        m = np.flatnonzero(known & vis[t])
        if len(m) >= 6:
            p, _ = colmap.register_frame(tracks[t, m], Y[m], K, image_size, max_error=threshold * pixel_scale)
            if p is not None:
                pose[t] = p
    cam = np.einsum("tij,nj->tni", pose[:, :3, :3], Y) + pose[:, None, :3, 3]
    z = cam[..., 2][vis & known[None] & np.isfinite(cam[..., 2])]
    if len(z) == 0 or np.median(z) <= 0:
        return None
    unit = float(np.median(z))
    pose = pose.copy()
    pose[:, :3, 3] /= unit
    return pose, Y / unit, ambiguous


def _prior_fit(A: np.ndarray, y: np.ndarray, scale: float = 1.0) -> tuple[float, float, float]:
    """Least squares ``A x = y`` whose first unknown is ``u = 1/s``: ``(u, relative standard error of u,
    rms residual)``; rows may be weighted, and the residual is multiplied by ``scale`` to bring it
    back to units of the object's distance."""
    x, *_ = np.linalg.lstsq(A, y, rcond=None)
    r = A @ x - y
    dof = max(len(y) - A.shape[1], 1)
    sigma2 = float(r @ r) / dof
    try:
        cov = np.linalg.inv(A.T @ A)
        se = float(np.sqrt(max(cov[0, 0] * sigma2, 0.0)))
    except np.linalg.LinAlgError:
        se = float("inf")
    u = float(x[0])
    rel = se / u if u > 0 else float("inf")
    return u, rel, float(np.sqrt(np.mean(r ** 2))) * scale


def choose_scale(C: np.ndarray, Dc: np.ndarray, times: np.ndarray, up: np.ndarray,
                 floor_bound: float = np.inf, consistency: float = 0.01,
                 max_relative_se: float = 0.05, lateral_to_depth: float = 1.0,
                 max_error: float | None = None) -> tuple[float, str, bool, float, dict]:
    """The scale ``s`` of a rigid mover whose centre is ``C(t) + s Dc(t)``.

    Args:
        C: ``(F, 3)`` camera centres; Dc: ``(F, 3)`` the centre's offset from the camera at unit
            scale (world orientation); times: ``(F,)`` frame times, for the frames where both are known.
        up: ``(3,)`` world up.
        floor_bound: the largest scale that keeps the object above the floor.
        consistency: a prior's rms residual (relative to the object's distance) must be within it.
        max_relative_se: a prior's relative standard error of the scale must be within it.
        max_error: consistent priors whose predicted relative error is larger place the object
            but do not count as deciding its scale (default :data:`DECIDED_ERROR`).
        lateral_to_depth: ratio of the noise of ``Dc`` across the line of sight to that along it
            (a small object's distance is known less well than its direction: about its size over
            its distance); residuals are weighted accordingly (generalised least squares).

    Returns:
        ``(scale, prior, decided, predicted relative error, fits)``.
    """
    F = len(C)
    fits = {}
    ray = Dc / np.maximum(np.linalg.norm(Dc, axis=1, keepdims=True), 1e-12)
    w = float(np.clip(lateral_to_depth, 0.05, 1.0))
    if F >= 4:
        tau = (times - times.min()) / max(times.max() - times.min(), 1)
        # Constant velocity: u C(t) + Dc(t) = a + b t  ->  u C(t) - a - b t = -Dc(t), each frame's
        # residual scaled by (I - (1 - w) r r^T) so that the uncertain distance weighs less.
        A = np.zeros((F, 3, 7))
        A[:, :, 0] = C
        A[:, :, 1:4] = -np.eye(3)
        A[:, :, 4:7] = -tau[:, None, None] * np.eye(3)
        Wt = np.eye(3)[None] - (1 - w) * ray[:, :, None] * ray[:, None, :]
        fits["constant velocity"] = _prior_fit(np.einsum("fij,fjk->fik", Wt, A).reshape(3 * F, 7),
                                               np.einsum("fij,fj->fi", Wt, -Dc).reshape(-1), scale=1.0)
    if F >= 3:
        # Constant height: up . (u C(t) + Dc(t)) = h, each frame weighted by the noise of up . Dc.
        v = ray @ up
        sd = np.sqrt(v ** 2 + w ** 2 * (1 - v ** 2))
        A = np.stack([C @ up, -np.ones(F)], 1) / sd[:, None]
        fits["constant height"] = _prior_fit(A, -(Dc @ up) / sd, scale=float(np.sqrt(np.mean(sd ** 2))))
    good = {k: v for k, v in fits.items()
            if v[0] > 0 and v[1] <= max_relative_se and v[2] <= consistency and 1 / v[0] <= 1.15 * floor_bound}
    if good:
        names = sorted(good, key=lambda k: good[k][1])
        u0, se0, res0 = good[names[0]]
        chosen = [names[0]]
        us, ws = [u0], [1 / (se0 * u0) ** 2]
        for k in names[1:]:
            u, se, res = good[k]
            if abs(u - u0) <= 3 * np.hypot(se * u, se0 * u0):
                chosen.append(k)
                us.append(u)
                ws.append(1 / (se * u) ** 2)
        u = float(np.average(us, weights=ws))
        rel = float(1 / np.sqrt(np.sum(ws)) / u)
        residual = min(good[k][2] for k in chosen)
        disagree = len(good) > len(chosen)
        error = np.hypot(rel, residual) * (3.0 if disagree else 1.0)
        # Placed by the priors either way; decided only when they fix the scale sharply.
        return 1 / u, "+".join(chosen), bool(error <= (DECIDED_ERROR if max_error is None else max_error)), \
            float(error), fits
    # Undecided: the least-bad prior that puts the object in front of the camera and above the floor.
    candidates = [(v[2], 1 / v[0], k) for k, v in fits.items() if v[0] > 0]
    candidates = [(r, min(s, floor_bound), k) for r, s, k in candidates]
    if not candidates:
        s = floor_bound if np.isfinite(floor_bound) else float("nan")
        return s, "undecided (floor bound)" if np.isfinite(s) else "undecided", False, 0.5, fits
    r, s, k = min(candidates)
    # How far off it may be (UNDECIDED_MIN_ERROR): the other priors' scales (and the floor's bound)
    # from the chosen one, the closest prior's own standard error, and its misfit.
    spread = max(abs(np.log(1 / v[0] / s)) for v in fits.values() if v[0] > 0)
    se = min(float(np.nan_to_num(fits[k][1], nan=1.0, posinf=1.0)), 1.0)
    error = max(UNDECIDED_MIN_ERROR, np.sqrt(spread ** 2 + se ** 2 + (3 * r) ** 2))
    return s, f"undecided (closest: {k})", False, float(error), fits


def _floor_bound(C: np.ndarray, D: np.ndarray, floor) -> float:
    """Largest scale keeping the points ``C + s D`` (``C`` ``(F, 3)``, ``D`` ``(F, n, 3)``) above the floor
    (a low quantile over the points whose rays go down, robust to a few wrong points)."""
    if floor is None:
        return np.inf
    n, d = floor
    height = C @ n - d  # camera height above the floor
    down = D @ n  # (F, n)
    ok = np.isfinite(down) & (down < -1e-9) & (height[:, None] > 0)
    if ok.sum() < 5:
        return np.inf
    s = (height[:, None] / -np.where(ok, down, -1.0))[ok]
    return float(np.quantile(s, 0.02))


# --------------------------------------------------------------------------
# Non-rigid points
# --------------------------------------------------------------------------


def _fuse_depth(tracks, members, place, z_rigid, spread, count, depth, alignment, image_size, cam_from_world,
                C_all, rays, trajectories, reliability, pixel_scale, shape_error=0.0):
    """A rigid mover scaled by depth maps: each observation's depth is the rigid structure's and the
    map's, weighted by their variances (the map's: its misfit to the static points and its change
    within 2 px; the structure's: what the spread of map over structure leaves beyond the map's
    misfit), unless they disagree by over 3 standard deviations (the map's, on a depth edge: the
    structure's alone); put on the viewing ray; reliability from the fused error, the scale's and the
    maps' shape error (``shape_error``, :func:`map_shape_error`: the scale is fitted through them)."""
    map_noise = max(float(np.nanmedian(alignment.residual)), 0.002) if np.isfinite(alignment.residual).any() else 0.05
    structure = max(float(np.sqrt(max(spread ** 2 - map_noise ** 2, 0.0))), 0.25 * spread, 1e-3)
    for i, n in enumerate(members):
        frames = np.flatnonzero(place[:, i])
        if len(frames) == 0:
            continue
        errors = []
        for t in frames:
            z_r = z_rigid[t, i]
            var_r = structure ** 2
            z = z_r
            if alignment.aligned[t]:
                z_m = depth_at(sample(depth[t], tracks[t, n][None], image_size), alignment, t)[0]
                edge = _depth_spread(depth[t], tracks[t, n], image_size, alignment, t, 2 * pixel_scale)
                var_m = float(np.nanmax([alignment.residual[t], map_noise])) ** 2 + np.nan_to_num(edge, nan=0.15) ** 2
                if np.isfinite(z_m) and abs(z_m / z_r - 1) <= 3 * np.sqrt(var_m + var_r):
                    z = (z_m / var_m + z_r / var_r) / (1 / var_m + 1 / var_r)
                    var_r = 1 / (1 / var_m + 1 / var_r)
            ray_z = (cam_from_world[t, :3, :3] @ rays[t, n])[2]
            trajectories[t, n] = C_all[t] + z / max(ray_z, 1e-9) * rays[t, n]
            errors.append(var_r)
        reliability[n] = reliability_from_error(np.sqrt(np.median(errors) + spread ** 2 / count + shape_error ** 2))


def _depth_spread(depth_map: np.ndarray, xy: np.ndarray, image_size: tuple[int, int], alignment: DepthAlignment,
                  t: int, radius: float) -> float:
    """Largest relative change of the aligned depth within ``radius`` px of ``xy`` (four samples):
    large on a depth edge, where a track's depth can come from either side."""
    offsets = np.array([[0, 0], [radius, 0], [-radius, 0], [0, radius], [0, -radius]])
    z = depth_at(sample(depth_map, xy[None] + offsets, image_size), alignment, t)
    if not np.isfinite(z[0]):
        return np.nan
    others = z[1:][np.isfinite(z[1:])]
    return float(np.max(np.abs(others / z[0] - 1))) if len(others) else np.nan


def _on_rays(X: np.ndarray, C: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``X`` ``(F, 3)`` moved to the closest point of each ray ``C + l r`` (``l`` kept positive)."""
    lam = np.einsum("fi,fi->f", X - C, r)
    lam = np.maximum(lam, 1e-6 * np.maximum(np.linalg.norm(X - C, axis=1), 1e-12))
    return C + lam[:, None] * r


def _ray_intersection(C: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Least-squares intersection of rays ``C + l r`` (unit ``r``)."""
    P = np.eye(3)[None] - r[:, :, None] * r[:, None, :]
    return np.linalg.lstsq(P.sum(0), np.einsum("fij,fj->i", P, C), rcond=None)[0]


def _directions(n: int = 600) -> np.ndarray:
    """``(n, 3)`` unit vectors spread evenly over a hemisphere (a Fibonacci lattice)."""
    i = np.arange(n) + 0.5
    phi, theta = np.arccos(1 - i / n), np.pi * (1 + 5 ** 0.5) * i
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], 1)


def common_direction(C: np.ndarray, rays: np.ndarray, X0: np.ndarray, sigma: np.ndarray,
                     prior: float) -> tuple[np.ndarray, float]:
    """The direction along which neighbouring points move about their ray intersections.

    Each point ``k`` is modelled as ``X0_k + a_kt m`` with one direction ``m`` for all of them (a cloth
    waves along its normal, a piston along its axis): ``m`` is the direction (searched over a
    hemisphere) whose displacements explain most of the points' lateral offsets from their rays, each
    ``a_kt`` regularised by a Gaussian prior of scale ``prior`` (ridge regression).

    Args:
        C: ``(F, 3)`` camera centres; rays: ``(F, k, 3)`` unit rays of the ``k`` points;
        X0: ``(k, 3)`` their ray intersections; sigma: ``(F, k)`` the lateral noise, world units;
        prior: the displacements' scale, world units.

    Returns:
        ``(m (3,), explained: the mean over observations of the squared offsets it explains, in units of
        the noise: about 1 for noise alone)``.
    """
    M = _directions()
    d = X0[None] - C[:, None]
    e = d - np.einsum("fki,fki->fk", d, rays)[..., None] * rays  # lateral offsets (F, k, 3)
    ok = np.isfinite(e).all(-1) & np.isfinite(sigma)
    e, r, sig = np.where(ok[..., None], e, 0), np.where(ok[..., None], rays, 0), np.where(ok, sigma, 1.0)
    rm = np.einsum("fki,mi->mfk", r, M)
    pe = np.einsum("mi,fki->mfk", M, e)
    pp = 1 - rm ** 2
    lam = (sig / prior) ** 2
    explained = (pe ** 2 / (pp + lam[None]) / sig[None] ** 2 * ok[None]).sum((1, 2))
    best = int(np.argmax(explained))
    return M[best], float(explained[best] / max(int(ok.sum()), 1))


def _along(X0: np.ndarray, m: np.ndarray, C: np.ndarray, r: np.ndarray, sigma: np.ndarray, prior: float):
    """Points ``X0 + a_t m`` closest to rays ``C + l r`` (``a_t`` ridge-regularised), put on the rays."""
    d = X0 - C
    e = d - np.einsum("fi,fi->f", d, r)[:, None] * r
    p = m - (r @ m)[:, None] * r
    a = -np.einsum("fi,fi->f", p, e) / (np.einsum("fi,fi->f", p, p) + (sigma / prior) ** 2)
    return _on_rays(X0 + a[:, None] * m, C, r)


def viewing_rays(tracks: np.ndarray, K: np.ndarray, cam_from_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera centres ``(T, 3)`` and unit world viewing rays ``(T, N, 3)`` of every track position."""
    T, N = tracks.shape[:2]
    hom = np.concatenate([tracks, np.ones((T, N, 1))], -1) @ np.linalg.inv(K).T
    rays = np.einsum("tji,tnj->tni", cam_from_world[:, :3, :3], hom)
    rays /= np.maximum(np.linalg.norm(rays, axis=-1, keepdims=True), 1e-12)
    return camera_centres(cam_from_world), rays


def hovering(tracks: np.ndarray, vis: np.ndarray, K: np.ndarray, cam_from_world: np.ndarray) -> np.ndarray:
    """The fallback for any moving point: the least-squares intersection of its rays, put back on each ray.

    Args:
        tracks: ``(T, N, 2)``; vis: ``(T, N)``; K: ``(3, 3)``; cam_from_world: ``(T, 4, 4)`` (NaN: unsolved).

    Returns:
        ``(T, N, 3)`` world positions, NaN where the track is not seen or has fewer than two rays.
    """
    T, N = vis.shape
    C_all, rays = viewing_rays(tracks, K, cam_from_world)
    seen = vis & np.isfinite(cam_from_world).all(axis=(1, 2))[:, None]
    out = np.full((T, N, 3), np.nan)
    for n in np.flatnonzero(seen.sum(0) >= 2):
        f = np.flatnonzero(seen[:, n])
        X0 = _ray_intersection(C_all[f], rays[f, n])
        if np.isfinite(X0).all():
            out[f, n] = _on_rays(np.broadcast_to(X0, (len(f), 3)), C_all[f], rays[f, n])
    return out


# --------------------------------------------------------------------------
# Everything
# --------------------------------------------------------------------------


def lift_moving(tracks: np.ndarray, vis: np.ndarray, K: np.ndarray, cam_from_world: np.ndarray,
                registered: np.ndarray, static: np.ndarray, points: np.ndarray, moving: np.ndarray,
                groups: np.ndarray, image_size: tuple[int, int], trajectories: np.ndarray,
                reliability: np.ndarray, *, pixel_scale: float = 1.0, noise_px: float = 0.5,
                alignment: DepthAlignment | None = None, depth: np.ndarray | None = None,
                consistency: float = 0.01, seed: int = 0) -> MovingResult:
    """Fill ``trajectories[:, moving]`` and ``reliability[moving]`` (in place).

    Args:
        tracks: ``(T, N, 2)``; vis: ``(T, N)``; K: ``(3, 3)``; cam_from_world: ``(T, 4, 4)``;
            registered: ``(T,)``.
        static: ``(N,)`` static tracks, triangulated at ``points`` ``(N, 3)``.
        moving: ``(N,)`` tracks to place; groups: ``(N,)`` their rigid group (``>= 1``) or -1.
        noise_px: the tracks' noise, px (the static points' reprojection error).
        alignment, depth: aligned depth maps (:func:`recon.depth.align_depth`) and the maps, or None.
        consistency: see :func:`choose_scale`.

    Returns:
        :class:`MovingResult`.
    """
    T, N = vis.shape
    kind = np.full(N, "", dtype=object)
    if not moving.any() or not registered.any():
        return MovingResult([], kind.astype(str))
    C_all, rays = viewing_rays(tracks, K, cam_from_world)
    seen = vis & registered[:, None]
    up = up_direction(cam_from_world)
    floor = floor_plane(points[static], up, C_all[registered], seed=seed)
    if floor is not None:
        up = floor[0]
    has_depth = alignment is not None and depth is not None and alignment.aligned.any()
    shape_error = map_shape_error(alignment) if has_depth else 0.0

    results = []
    rigid_done = np.zeros(N, bool)
    group_depth = np.full((T, N), np.nan)  # camera z of rigid points, for carried neighbours
    decided_group = np.zeros(N, bool)  # points of movers placed by a consistent prior (or depth)
    carriers = {}  # such a mover -> (cam_from_object at unit scale (T, 4, 4), scale)
    for g in sorted(set(groups[moving & (groups >= 1)].tolist())):
        members = np.flatnonzero(moving & (groups == g))
        info = GroupScale(group=int(g), tracks=len(members))
        results.append(info)
        if len(members) < 8:
            continue
        # Tracks apart from the object in the image (points that merely fit its motion, such as
        # points that look static beside a mover that slides along the epipolar lines) are left
        # to the non-rigid points.
        members = members[contiguous(tracks[:, members], seen[:, members])]
        if len(members) < 8:
            continue
        rel = relative_structure(tracks[:, members], seen[:, members], K, image_size, pixel_scale, seed)
        if rel is None:
            continue
        pose, Y, info.mirror = rel
        ok_t = registered & np.isfinite(pose).all(axis=(1, 2))
        known = np.isfinite(Y).all(1)
        if ok_t.sum() < 3 or known.sum() < 6:
            continue
        cam = np.einsum("tij,nj->tni", pose[:, :3, :3], Y) + pose[:, None, :3, 3]  # (T, n, 3) unit scale
        D = np.einsum("tji,tnj->tni", np.nan_to_num(cam_from_world[:, :3, :3]), cam)  # world orientation
        D[~ok_t] = np.nan
        D[:, ~known] = np.nan
        c = Y[known].mean(0)
        Dc = np.einsum("tji,tj->ti", np.nan_to_num(cam_from_world[:, :3, :3]),
                       np.einsum("tij,j->ti", pose[:, :3, :3], c) + pose[:, :3, 3])
        frames = np.flatnonzero(ok_t)
        bound = _floor_bound(C_all[frames], D[frames], floor)
        if has_depth:
            s_obs = []
            for t in frames:
                m = np.flatnonzero(known & seen[t, members] & alignment.aligned[t])
                if len(m):
                    z = depth_at(sample(depth[t], tracks[t, members[m]], image_size), alignment, t)
                    s_obs.append(z / cam[t, m, 2])
            s_obs = np.concatenate(s_obs) if s_obs else np.empty(0)
            s_obs = s_obs[np.isfinite(s_obs) & (s_obs > 0)]
        if has_depth and len(s_obs) >= 5:
            s = float(np.median(s_obs))
            spread = 1.4826 * np.median(np.abs(s_obs / s - 1))
            info.prior, info.decided = "depth", True
            info.relative_error = float(np.hypot(spread / np.sqrt(len(s_obs)) + np.nanmedian(alignment.residual) * 0.5,
                                                 shape_error))
        else:
            size = float(np.sqrt(np.mean(np.sum((Y[known] - c) ** 2, axis=1))))  # over a distance of ~1
            s, info.prior, info.decided, info.relative_error, info.fits = choose_scale(
                C_all[frames], Dc[frames], frames.astype(float), up, bound, consistency, lateral_to_depth=size)
        info.scale = s
        if not np.isfinite(s):
            continue
        if info.mirror and info.prior != "depth":  # the relief may be reversed: off by up to the object's size
            size = float(np.sqrt(np.mean(np.sum((Y[known] - c) ** 2, axis=1))))
            info.relative_error = max(info.relative_error, 2 * size)
            info.decided = info.decided and info.relative_error <= DECIDED_ERROR
        X = C_all[:, None] + s * D  # (T, n, 3)
        place = seen[:, members] & known[None] & ok_t[:, None]
        sub = trajectories[:, members]
        sub[place] = X[place]
        trajectories[:, members] = sub
        placed = known & place.any(0)
        reliability[members[placed]] = reliability_from_error(info.relative_error)
        if info.prior == "depth":
            _fuse_depth(tracks, members, place, s * cam[..., 2], spread, len(s_obs), depth, alignment, image_size,
                        cam_from_world, C_all, rays, trajectories, reliability, pixel_scale, shape_error)
        rigid_done[members[placed]] = True
        kind[members[placed]] = "rigid" if info.prior != "depth" else "depth"
        info.solved = int(placed.sum())
        gd = group_depth[:, members]
        gd[place] = s * cam[..., 2][place]
        group_depth[:, members] = gd
        if not info.prior.startswith("undecided"):  # placed by a consistent prior or by depth
            decided_group[members[placed]] = True
            carriers[int(g)] = (pose, s)

    # Non-rigid points (and rigid-group tracks the structure did not place).
    rest = np.flatnonzero(moving & ~rigid_done)
    from scipy.spatial import cKDTree

    carrier_rel = {g: float(reliability_from_error(info.relative_error)) for g, info in
                   ((int(i.group), i) for i in results) if g in carriers}
    hover = np.full((N, 3), np.nan)
    hover_scatter = np.full(N, np.nan)
    for n in rest:
        f = np.flatnonzero(seen[:, n])
        if len(f) == 0:
            continue
        C, r = C_all[f], rays[f, n]
        if has_depth:
            z = np.full(len(f), np.nan)
            for i, t in enumerate(f):
                if alignment.aligned[t]:
                    z[i] = depth_at(sample(depth[t], tracks[t, n][None], image_size), alignment, t)[0]
            ok = np.isfinite(z)
            if ok.sum() >= max(1, 0.5 * len(f)):
                edge = np.array([_depth_spread(depth[t], tracks[t, n], image_size, alignment, t, 2 * pixel_scale)
                                 for t in f])
                # Outliers against neighbouring frames (a map wrong on the mover's edge) -> their median.
                zf = z.copy()
                for i in range(len(f)):
                    win = z[max(0, i - 2): i + 3]
                    win = win[np.isfinite(win)]
                    med = np.median(win) if len(win) else np.nan
                    if not np.isfinite(zf[i]) or abs(zf[i] / med - 1) > 0.15:
                        zf[i] = med
                good = np.isfinite(zf)
                ray_z = (np.einsum("fij,fj->fi", cam_from_world[f, :3, :3], r))[:, 2]
                X = C + (zf / np.maximum(ray_z, 1e-9))[:, None] * r
                trajectories[f[good], n] = X[good]
                # Predicted error per frame: the map's misfit to the static points and how much the map
                # changes within 2 px (a point on a depth edge can take either side's depth); a frame
                # whose depth was replaced by its neighbours' (over 15% off) counts 15%.
                replaced = ~(np.isfinite(z) & np.isfinite(zf) & (np.abs(z / zf - 1) <= 0.15))
                e = np.sqrt(np.nan_to_num(alignment.residual[f], nan=0.05) ** 2 + np.nan_to_num(edge, nan=0.15) ** 2)
                e = np.where(replaced, np.maximum(e, 0.15), e)
                e = np.hypot(e, shape_error)  # and the maps' misfit to the static cloud, which they inherit
                reliability[n] = (reliability_from_error(np.nanmedian(e[good])) * good.mean()
                                  if good.any() else 0.0)
                kind[n] = "depth"
                continue
        if len(f) < 2:
            continue
        X0 = _ray_intersection(C, r)
        dist = np.linalg.norm(X0 - C, axis=1)
        if not np.isfinite(X0).all() or (np.einsum("fi,fi->f", X0 - C, r) <= 0).any():
            X0 = None
        scatter = (float(np.sqrt(np.mean((np.linalg.norm(np.cross(X0 - C, r), axis=1) / dist) ** 2)))
                   if X0 is not None else np.inf)
        # Carried by a decided rigid mover: most of its image neighbours belong to one.
        carried = None
        near = decided_group & np.isfinite(group_depth).any(0)
        if near.any():
            votes = {}
            for t in f:
                cand = np.flatnonzero(near & np.isfinite(group_depth[t]))
                if len(cand) < 3:
                    continue
                tree = cKDTree(tracks[t, cand])
                k = min(5, len(cand))
                dd, idx = tree.query(tracks[t, n], k=k)
                for j, d_ in zip(np.atleast_1d(idx), np.atleast_1d(dd)):
                    if d_ < 0.1 * max(image_size):
                        votes.setdefault(int(groups[cand[j]]), []).append((t, cand[j]))
            if votes:
                g, pairs = max(votes.items(), key=lambda kv: len(kv[1]))
                if len(pairs) >= 0.6 * 5 * len(f):
                    carried = g
        if carried is not None and scatter > 3 * noise_px / K[0, 0]:
            # Carried only if it moves with the mover: fixed in the mover's frame, it reprojects
            # within the noise (a cloth behind a box in the image does not).
            pose, s_c = carriers[carried]
            fo = f[np.isfinite(pose[f]).all(axis=(1, 2))]
            if len(fo) >= max(3, 0.5 * len(f)):
                P = np.einsum("ij,tjk->tik", K, pose[fo, :3])
                Y = triangulate_dlt(tracks[fo, n].astype(np.float64), P)
                cam = np.einsum("tij,j->ti", pose[fo, :3, :3], Y) + pose[fo, :3, 3]
                with np.errstate(divide="ignore", invalid="ignore"):
                    xy = cam[:, :2] / cam[:, 2:] * K[[0, 1], [0, 1]] + K[:2, 2]
                error = np.median(np.linalg.norm(xy - tracks[fo, n], axis=1))
                if np.isfinite(Y).all() and (cam[:, 2] > 0).all() and error <= 2.5 * noise_px:
                    world = np.einsum("tji,tj->ti", cam_from_world[fo, :3, :3], cam)
                    trajectories[fo, n] = C_all[fo] + s_c * world
                    reliability[n] = carrier_rel.get(carried, 0.0) * len(fo) / len(f)
                    kind[n] = "carried"
                    continue
        if X0 is None:
            continue
        trajectories[f, n] = _on_rays(np.broadcast_to(X0, C.shape), C, r)
        kind[n] = "hovering"
        hover[n] = X0
        hover_scatter[n] = scatter
    # Points that hover move about their ray intersection; when neighbours share one direction of
    # motion (a cloth along its normal), that direction brings back part of the motion along the rays.
    noise = noise_px / K[0, 0]
    cands = np.flatnonzero(np.isfinite(hover).all(1))
    if len(cands) >= 3:
        tree = cKDTree(hover[cands])
        k = min(10, len(cands))
        for i, n in enumerate(cands):
            _, nb = tree.query(hover[n], k=k)
            nb = cands[np.atleast_1d(nb)]
            f = np.flatnonzero(seen[:, n])
            dist = np.linalg.norm(hover[nb][None] - C_all[:, None], axis=-1)  # (T, k)
            sigma = np.where(seen[:, nb], noise * dist, np.nan)
            prior = max(3 * np.median(hover_scatter[nb]) * np.median(dist), 1e-12)
            m, explained = common_direction(C_all, np.where(seen[:, nb, None], rays[:, nb], np.nan), hover[nb],
                                            sigma, prior)
            error = max(hover_scatter[n], noise)
            if explained >= 2.0:
                trajectories[f, n] = _along(hover[n], m, C_all[f], rays[f, n], sigma[f, 0], prior)
                kind[n] = "line"
                error = max(0.6 * hover_scatter[n], noise)
            # Its motion along its rays is not seen: its depth is a guess (20% predicted error; on the
            # benchmark's tiers such points were 20-35% off), and the more its rays scatter about their
            # intersection (the more it moves across them), the more it likely moves along them too.
            reliability[n] = reliability_from_error(UNDECIDED_ERROR + 2 * error)
    return MovingResult(results, kind.astype(str))
