"""Cameras that only rotate: nodal pans, telephoto pans and low-parallax stretches.

When the camera centre does not move (or moves too little for the tracks to
see it), every pair of frames is related by a homography ``H = K R K^-1`` and
the translation is not observable: fitting one anyway fits it to noise. Here
such frames get a pose whose centre is held fixed and a rotation solved from
the static tracks:

1. **Initial rotations**: homographies of consecutive frames (RANSAC,
   pycolmap), ``K^-1 H K`` projected onto the rotations and chained.
2. **Focal length**, when not given: the one that makes the homographies of
   the widest-apart frame pairs closest to rotations.
3. **Rotation-only bundle adjustment** (scipy's sparse least squares, robust
   loss): every frame's rotation, the shared focal length and every track's
   direction in the world, minimising the reprojection error of all
   observations.

:func:`chain_rotations` extends a solved stretch of video over neighbouring
frames that only rotate (the centre of the last solved frame held fixed), so
a video that pans, then walks, gets one consistent trajectory.

Conventions as in :mod:`recon.geometry` (OpenCV cameras, ``cam_from_world``,
pixels with ``(0, 0)`` the centre of the top-left pixel).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class RotationResult:
    """A rotation-only camera solve.

    Attributes:
        cam_from_world: ``(T, 4, 4)``: rotations, centres at the origin, NaN for
            frames that could not be solved.
        K: ``(3, 3)`` shared intrinsics.
        directions: ``(N, 3)`` unit world direction of each solved track, NaN otherwise.
        error: ``(N,)`` median reprojection error (px) of each solved track, NaN otherwise.
        message: what happened, for the status.
    """

    cam_from_world: np.ndarray
    K: np.ndarray
    directions: np.ndarray
    error: np.ndarray
    message: str


def _intrinsics(f: float, W: int, H: int) -> np.ndarray:
    return np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1.0]])


def _nearest_rotation(M: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(M)
    R = U @ Vt
    if np.linalg.det(R) < 0:
        R = U @ np.diag([1, 1, -1]) @ Vt
    return R


def _homography(p1: np.ndarray, p2: np.ndarray, threshold: float, seed: int) -> np.ndarray | None:
    import pycolmap

    options = pycolmap.RANSACOptions()
    options.max_error = threshold
    options.random_seed = seed
    options.min_num_trials = 100
    result = pycolmap.estimate_homography_matrix(p1, p2, options)
    if result is None or result["num_inliers"] < 8:
        return None
    return np.asarray(result["H"], dtype=np.float64)


def relative_rotation(H: np.ndarray, K: np.ndarray) -> np.ndarray:
    """The rotation ``R`` closest to ``K^-1 H K`` (``H`` maps frame ``i``'s pixels to frame ``j``'s)."""
    M = np.linalg.inv(K) @ H @ K
    M /= np.cbrt(np.linalg.det(M))
    return _nearest_rotation(M)


def focal_from_homographies(homographies: list[np.ndarray], W: int, H: int) -> float:
    """The focal length (px) under which the homographies are closest to rotations.

    Searches a logarithmic grid from 0.3 to 6 times the longer image side; with
    rotations of a few degrees the optimum is flat and the BA refines it.
    """
    candidates = np.geomspace(0.3, 6.0, 80) * max(W, H)
    cost = []
    for f in candidates:
        K = _intrinsics(f, W, H)
        Kinv = np.linalg.inv(K)
        c = []
        for Hm in homographies:
            M = Kinv @ Hm @ K
            d = np.linalg.det(M)
            if d <= 0:
                c.append(1.0)
                continue
            M = M / np.cbrt(d)
            c.append(np.linalg.norm(M.T @ M - np.eye(3)))
        cost.append(np.median(c))
    return float(candidates[int(np.argmin(cost))])


def _rotvec_to_matrix(rv: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(rv).as_matrix()


def _matrix_to_rotvec(R: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(R).as_rotvec()


def solve_rotations(
    tracks: np.ndarray,
    visibility: np.ndarray,
    use: np.ndarray,
    image_size: tuple[int, int],
    K: np.ndarray | None = None,
    *,
    threshold: float = 2.0,
    min_shared: int = 8,
    max_adjusted: int = 300,
    seed: int = 0,
) -> RotationResult:
    """Rotations (centre fixed at the origin), a shared focal length and track directions.

    Args:
        tracks: ``(T, N, 2)`` pixels; visibility: ``(T, N)`` bool.
        use: ``(N,)`` bool: the static tracks.
        image_size: ``(W, H)``.
        K: ``(3, 3)`` known intrinsics (kept fixed), or None to estimate one
            focal length (principal point at the image centre).
        threshold: px; RANSAC threshold of the homographies and scale of the
            robust loss of the adjustment.
        min_shared: consecutive solved frames must share this many static tracks.
        max_adjusted: the bundle adjustment uses at most this many tracks (the
            longest-lived); the others' directions are computed from the result.
        seed: RANSAC seed.

    Returns:
        :class:`RotationResult`. Frames that share too few tracks with the
        others stay NaN (the longest connected stretch is solved).
    """
    T, N = visibility.shape
    W, H = image_size
    usable = visibility & use[None]
    nan = RotationResult(np.full((T, 4, 4), np.nan), K if K is not None else np.full((3, 3), np.nan),
                         np.full((N, 3), np.nan), np.full(N, np.nan), "")
    # 1. Homographies along the video: each frame to its nearest earlier frame that shares enough tracks.
    links: dict[int, tuple[int, np.ndarray]] = {}
    for t in range(1, T):
        for s in range(t - 1, max(-1, t - 4), -1):
            shared = np.flatnonzero(usable[s] & usable[t])
            if len(shared) < min_shared:
                continue
            Hm = _homography(tracks[s, shared], tracks[t, shared], threshold, seed)
            if Hm is not None:
                links[t] = (s, Hm)
                break
    # The longest stretch connected by links.
    stretches, current = [], [0]
    for t in range(1, T):
        if t in links and links[t][0] in current:
            current.append(t)
        else:
            stretches.append(current)
            current = [t]
    stretches.append(current)
    frames = max(stretches, key=len)
    if len(frames) < 2:
        nan.message = "rotation-only solve: no two frames share enough static tracks"
        return nan
    # 2. Focal length from homographies between frames far apart (more rotation, better conditioned).
    if K is None:
        wide = []
        for gap in (len(frames) - 1, (len(frames) - 1) // 2, (len(frames) - 1) // 4, 8, 4):
            for a in range(0, len(frames) - gap, max(1, gap // 2)) if gap > 0 else []:
                s, t = frames[a], frames[a + gap]
                shared = np.flatnonzero(usable[s] & usable[t])
                if len(shared) >= 4 * min_shared:
                    Hm = _homography(tracks[s, shared], tracks[t, shared], threshold, seed)
                    if Hm is not None:
                        wide.append(Hm)
            if len(wide) >= 6:
                break
        f0 = focal_from_homographies(wide, W, H) if wide else 1.2 * max(W, H)
        K0 = _intrinsics(f0, W, H)
    else:
        K0 = np.asarray(K, dtype=np.float64)
    # Chained initial rotations.
    R = {frames[0]: np.eye(3)}
    for t in frames[1:]:
        s, Hm = links[t]
        R[t] = relative_rotation(Hm, K0) @ R[s]
    # The adjustment runs on the longest-lived tracks (enough to fix rotations and focal length); every
    # track's direction is then the mean of its rays under the solved cameras.
    lived = usable[frames].sum(0)
    adjust = np.zeros(N, bool)
    adjust[np.argsort(-lived, kind="stable")[:max_adjusted]] = True
    adjust &= lived >= 2
    rotations, K_out, _, _ = _adjust(tracks, usable & adjust[None], frames, R, K0, estimate_focal=K is None,
                                     threshold=threshold)
    directions, error = _directions(tracks, usable, frames, rotations, K_out)
    cam_from_world = np.full((T, 4, 4), np.nan)
    for t in frames:
        cam_from_world[t] = np.eye(4)
        cam_from_world[t, :3, :3] = rotations[t]
    message = (f"rotation-only solve: {len(frames)}/{T} frames, focal {K_out[0, 0]:.1f} px, "
               f"median reprojection error {np.nanmedian(error):.2f} px")
    return RotationResult(cam_from_world, K_out, directions, error, message)


def _adjust(tracks, usable, frames, R0, K0, *, estimate_focal: bool, threshold: float):
    """Rotation-only bundle adjustment: rotations (the first frame fixed), focal length, track directions."""
    from scipy.optimize import least_squares
    from scipy.sparse import coo_matrix

    frames = list(frames)
    F = len(frames)
    index = {t: i for i, t in enumerate(frames)}
    sub = usable[frames]  # (F, N)
    seen = sub.sum(0) >= 2
    track_ids = np.flatnonzero(seen)
    M = len(track_ids)
    obs_f, obs_m = np.nonzero(sub[:, track_ids])
    uv = tracks[np.asarray(frames)[obs_f], track_ids[obs_m]].astype(np.float64)
    cx, cy = K0[0, 2], K0[1, 2]
    rv0 = np.stack([_matrix_to_rotvec(R0[t]) for t in frames])
    # Initial directions: the mean of each track's back-projected rays.
    rays = np.stack([(uv[:, 0] - cx) / K0[0, 0], (uv[:, 1] - cy) / K0[1, 1], np.ones(len(uv))], 1)
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    Rf = np.stack([R0[t] for t in frames])
    world = np.einsum("kji,kj->ki", Rf[obs_f], rays)  # R^T ray
    d0 = np.zeros((M, 3))
    np.add.at(d0, obs_m, world)
    d0 /= np.linalg.norm(d0, axis=1, keepdims=True)
    nf = 1 if estimate_focal else 0

    def unpack(x):
        rv = np.concatenate([rv0[:1], x[:3 * (F - 1)].reshape(F - 1, 3)])
        f = np.exp(x[3 * (F - 1)]) if estimate_focal else K0[0, 0]
        d = x[3 * (F - 1) + nf:].reshape(M, 3)
        return rv, f, d

    def residuals(x):
        rv, f, d = unpack(x)
        Rm = _rotvec_to_matrix(rv)
        p = np.einsum("kij,kj->ki", Rm[obs_f], d[obs_m])
        z = np.where(p[:, 2] > 1e-6, p[:, 2], 1e-6)
        fy = f * K0[1, 1] / K0[0, 0]
        return np.concatenate([f * p[:, 0] / z + cx - uv[:, 0], fy * p[:, 1] / z + cy - uv[:, 1]])

    n_obs = len(obs_f)
    n_par = 3 * (F - 1) + nf + 3 * M
    rows, cols = [], []
    obs = np.arange(n_obs)
    moving = obs_f > 0  # the first frame's rotation is fixed
    for half in (0, n_obs):
        for k in range(3):
            rows += [obs[moving] + half, obs + half]
            cols += [3 * (obs_f[moving] - 1) + k, 3 * (F - 1) + nf + 3 * obs_m + k]
        if estimate_focal:
            rows.append(obs + half)
            cols.append(np.full(n_obs, 3 * (F - 1)))
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    A = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(2 * n_obs, n_par))
    x0 = np.concatenate([rv0[1:].ravel(), [np.log(K0[0, 0])] if estimate_focal else [], d0.ravel()])
    A = A.tocsr()
    # A wide robust loss first (a bad initial link must not be explained away as outliers), then a tight one.
    solver = dict(jac_sparsity=A, method="trf", x_scale="jac", tr_solver="lsmr", tr_options={"maxiter": 100})
    sol = least_squares(residuals, x0, loss="soft_l1", f_scale=20 * threshold, max_nfev=20, ftol=1e-5, **solver)
    sol = least_squares(residuals, sol.x, loss="huber", f_scale=threshold, max_nfev=30, ftol=1e-7, **solver)
    rv, f, d = unpack(sol.x)
    Rm = _rotvec_to_matrix(rv)
    K = K0.copy()
    if estimate_focal:
        K[1, 1] = f * K0[1, 1] / K0[0, 0]
        K[0, 0] = f
    res = residuals(sol.x)
    err = np.hypot(res[:n_obs], res[n_obs:])
    N = usable.shape[1]
    error = np.full(N, np.nan)
    per = [[] for _ in range(M)]
    for m, e in zip(obs_m, err):
        per[m].append(e)
    for m, e in enumerate(per):
        error[track_ids[m]] = float(np.median(e))
    directions = np.full((N, 3), np.nan)
    directions[track_ids] = d / np.linalg.norm(d, axis=1, keepdims=True)
    return {t: Rm[i] for i, t in enumerate(frames)}, K, directions, error


def _directions(tracks, usable, frames, rotations, K):
    """Each track's world direction (the mean of its rays) and median reprojection error under the cameras."""
    T, N = usable.shape
    frames = np.asarray(frames)
    Kinv = np.linalg.inv(K)
    Rs = np.stack([rotations[t] for t in frames])  # (F, 3, 3)
    seen = usable[frames]  # (F, N)
    xy = np.nan_to_num(tracks[frames].astype(np.float64))
    rays = np.concatenate([xy, np.ones(xy.shape[:2] + (1,))], -1) @ Kinv.T
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    world = np.einsum("fji,fnj->fni", Rs, rays) * seen[..., None]  # R^T ray
    d = world.sum(0)
    norm = np.linalg.norm(d, axis=1)
    ok = (seen.sum(0) >= 2) & (norm > 0)
    directions = np.full((N, 3), np.nan)
    directions[ok] = d[ok] / norm[ok, None]
    p = np.einsum("fij,nj->fni", Rs, np.nan_to_num(directions)) @ K.T
    with np.errstate(divide="ignore", invalid="ignore"):
        proj = p[..., :2] / p[..., 2:]
    err = np.linalg.norm(proj - xy, axis=-1)
    err = np.where(seen & (p[..., 2] > 0), err, np.nan)
    error = np.full(N, np.nan)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            error[ok] = np.nanmedian(err[:, ok], axis=0)
    return directions, error


def chain_rotations(
    tracks: np.ndarray,
    visibility: np.ndarray,
    use: np.ndarray,
    K: np.ndarray,
    cam_from_world: np.ndarray,
    frames: list[int],
    *,
    threshold: float = 2.0,
    min_shared: int = 8,
    seed: int = 0,
) -> dict[int, np.ndarray]:
    """Poses for unsolved ``frames`` that only rotate relative to a solved neighbour.

    Walks outwards from the solved frames: an unsolved frame next to a solved
    (or already chained) one gets that frame's centre and the rotation of the
    homography of their shared static tracks. Frames that share too few
    tracks with any neighbour within 3 frames stay unsolved.

    Returns:
        ``{frame: (4, 4) cam_from_world}`` for the frames that could be chained.
    """
    T = len(cam_from_world)
    usable = visibility & use[None]
    poses = {t: cam_from_world[t] for t in range(T) if np.isfinite(cam_from_world[t]).all()}
    out: dict[int, np.ndarray] = {}
    todo = set(frames)
    changed = True
    while todo and changed:
        changed = False
        for t in sorted(todo):
            for s in sorted((s for s in range(max(0, t - 3), min(T, t + 4)) if s in poses), key=lambda s: abs(s - t)):
                shared = np.flatnonzero(usable[s] & usable[t])
                if len(shared) < min_shared:
                    continue
                Hm = _homography(tracks[s, shared], tracks[t, shared], threshold, seed)
                if Hm is None:
                    continue
                R_rel = relative_rotation(Hm, K)
                pose = np.eye(4)
                R_s, c_s = poses[s][:3, :3], -poses[s][:3, :3].T @ poses[s][:3, 3]
                pose[:3, :3] = R_rel @ R_s
                pose[:3, 3] = -pose[:3, :3] @ c_s
                poses[t] = out[t] = pose
                todo.discard(t)
                changed = True
                break
    return out
