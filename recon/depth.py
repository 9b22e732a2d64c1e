"""Depth maps of any kind brought into the reconstruction's units.

Depth maps come from RGB-D sensors (metric: camera ``z`` in some unit) or from
monocular depth networks (relative: each frame with its own unknown scale and
shift, often of *inverse* depth). :func:`align_depth` fits, per frame, the
map's values to the camera depth of the static points the cameras already
place (a robust fit: static points on a mover's edge, where a network's map is
blurred, and drifting tracks are outliers); :func:`depth_at` then turns map
values at any pixel into camera ``z`` in reconstruction units.

Kinds (:data:`DEPTH_KINDS`):

============================ ========================================== ============
kind                         the map holds                              fitted
============================ ========================================== ============
``"metric"``                 ``z / a``: depth up to one global scale     ``a`` per video
``"affine"``                 ``(z - b_t) / a_t``                        ``a_t, b_t`` per frame
``"affine_disparity"``       ``(1/z - b_t) / a_t`` (inverse depth)      ``a_t, b_t`` per frame
============================ ========================================== ============

Maps may have any resolution ``(h, w)``: they cover the whole frame and are
sampled at the matching position (nearest pixel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEPTH_KINDS = ("metric", "affine", "affine_disparity")
"""What a depth map's values mean (see the module's table)."""

_MIN_OBSERVATIONS = 8


@dataclass
class DepthAlignment:
    """Per-frame parameters taking map values to camera ``z`` in reconstruction units.

    Attributes:
        kind: one of :data:`DEPTH_KINDS`.
        a, b: ``(T,)`` the fitted parameters (NaN for frames that could not be aligned).
        residual: ``(T,)`` robust relative residual of the fit (median absolute
            relative depth error of the static inliers), NaN where not aligned.
        inliers: ``(T,)`` share of the frame's static observations within the fit.
        persistent: the part of the misfit that the static points at one depth share in every
            frame: each static point's median signed relative residual over its frames (pixel
            noise averages out), the median of those over the points in its depth bin (up to 5
            bins of 16 points or more: each point's own triangulation error averages out), and the
            median absolute value of that over the points (NaN with under 8 points seen in 3
            aligned frames). What is left is a disagreement of shape between the maps and the
            static cloud along depth (a cloud stretched along depth by a wrong focal length), which
            every point the maps are fitted through inherits.
        point_misfit: ``(N,)`` each static point's own median signed relative residual over the
            aligned frames that see it (3 or more; NaN otherwise or where not static): how far its
            triangulated depth is from the maps'.
    """

    kind: str
    a: np.ndarray
    b: np.ndarray
    residual: np.ndarray
    inliers: np.ndarray
    persistent: float = float("nan")
    point_misfit: np.ndarray | None = None

    @property
    def aligned(self) -> np.ndarray:
        """``(T,)`` bool: frames whose maps could be aligned."""
        return np.isfinite(self.a) & np.isfinite(self.b)


def sample(depth_map: np.ndarray, xy: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Nearest-pixel map values at ``xy`` ``(M, 2)`` (pixels of the ``(W, H)`` frame).

    The map ``(h, w)`` covers the whole frame; NaN outside it and where the map
    is not finite (or, for every kind, not positive: networks and sensors mark
    unknown depth with 0).
    """
    h, w = depth_map.shape
    W, H = image_size
    x = np.round((xy[:, 0] + 0.5) * (w / W) - 0.5).astype(np.int64)
    y = np.round((xy[:, 1] + 0.5) * (h / H) - 0.5).astype(np.int64)
    ok = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    out = np.full(len(xy), np.nan)
    out[ok] = depth_map[y[ok], x[ok]]
    out[~np.isfinite(out) | (out <= 0)] = np.nan
    return out


def depth_at(values: np.ndarray, alignment: DepthAlignment, t: int) -> np.ndarray:
    """Camera ``z`` (reconstruction units) of map ``values`` of frame ``t``; NaN where unknown or not positive."""
    a, b = alignment.a[t], alignment.b[t]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = a * values + b
        if alignment.kind == "affine_disparity":
            z = 1.0 / z
    return np.where(np.isfinite(z) & (z > 0), z, np.nan)


def _relative_residual(kind: str, a, b, m: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Relative depth error of ``(a, b)`` on observations ``m`` (map) with camera depth ``z``."""
    if kind == "affine_disparity":
        return (a * m + b) * z - 1.0  # relative error of inverse depth = that of depth, to first order
    return (a * m + b) / z - 1.0


def _fit(kind: str, m: np.ndarray, z: np.ndarray, rng: np.random.Generator,
         threshold: float = 0.05, samples: int = 200) -> tuple[float, float, float, float]:
    """Robust ``(a, b, residual, inlier share)`` of one frame (RANSAC on pairs, least squares on inliers)."""
    # Linear in (a, b) with unit target: rows [m w, w] . (a, b) = 1, w = z (disparity) or 1/z (depth).
    w = z if kind == "affine_disparity" else 1.0 / z
    A = np.stack([m * w, w], 1)
    n = len(m)
    i = rng.integers(0, n, samples)
    j = rng.integers(0, n, samples)
    keep = i != j
    i, j = i[keep], j[keep]
    M = np.stack([A[i], A[j]], 1)  # (S, 2, 2)
    det = M[:, 0, 0] * M[:, 1, 1] - M[:, 0, 1] * M[:, 1, 0]
    ok = np.abs(det) > 1e-12
    M, det = M[ok], det[ok]
    a_s = (M[:, 1, 1] - M[:, 0, 1]) / det
    b_s = (M[:, 0, 0] - M[:, 1, 0]) / det
    if len(a_s) == 0:
        return np.nan, np.nan, np.nan, 0.0
    res = np.abs(A @ np.stack([a_s, b_s]) - 1.0)  # (n, S)
    best = int(np.argmax((res < threshold).sum(0)))
    inl = res[:, best] < threshold
    a, b = a_s[best], b_s[best]
    for _ in range(2):
        if inl.sum() < 2:
            break
        (a, b), *_ = np.linalg.lstsq(A[inl], np.ones(int(inl.sum())), rcond=None)
        r = np.abs(A @ np.array([a, b]) - 1.0)
        mad = 1.4826 * np.median(r[inl])
        inl = r < max(3 * mad, 0.01)
    r = np.abs(_relative_residual(kind, a, b, m, z))
    if inl.sum() < max(_MIN_OBSERVATIONS // 2, 2):
        return np.nan, np.nan, np.nan, float(inl.mean())
    return float(a), float(b), float(np.median(r[inl])), float(inl.mean())


def align_depth(depth: np.ndarray, kind: str, tracks: np.ndarray, vis: np.ndarray, static: np.ndarray,
                cam_z: np.ndarray, image_size: tuple[int, int], seed: int = 0) -> DepthAlignment:
    """Fit depth maps to the camera depth of the static points.

    Args:
        depth: ``(T, h, w)`` maps of ``kind``.
        kind: one of :data:`DEPTH_KINDS`.
        tracks: ``(T, N, 2)`` pixels; vis: ``(T, N)`` bool.
        static: ``(N,)`` bool: tracks whose camera depth ``cam_z`` is known.
        cam_z: ``(T, N)`` camera ``z`` of the static points in reconstruction units (NaN where unknown).
        image_size: ``(W, H)`` of the frames.
        seed: RANSAC's random seed.

    Returns:
        :class:`DepthAlignment`. ``"metric"`` maps get one scale for the whole
        video (the median ratio); relative kinds one robust fit per frame, and
        frames with fewer than 8 usable static observations stay unaligned (NaN).
    """
    if kind not in DEPTH_KINDS:
        raise ValueError(f"depth kind must be one of {', '.join(map(repr, DEPTH_KINDS))}, got {kind!r}")
    T = len(depth)
    rng = np.random.default_rng(seed)
    a, b = np.full(T, np.nan), np.full(T, np.nan)
    residual, inliers = np.full(T, np.nan), np.zeros(T)
    obs = []
    for t in range(T):
        n = np.flatnonzero(static & vis[t] & np.isfinite(cam_z[t]) & (cam_z[t] > 0))
        m = sample(depth[t], tracks[t, n], image_size) if len(n) else np.empty(0)
        ok = np.isfinite(m)
        obs.append((m[ok], cam_z[t, n[ok]], n[ok]))
    if kind == "metric":
        ratios = np.concatenate([z / m for m, z, _ in obs]) if obs else np.empty(0)
        if len(ratios) >= _MIN_OBSERVATIONS:
            scale = float(np.median(ratios))
            for t, (m, z, _) in enumerate(obs):
                a[t], b[t] = scale, 0.0
                if len(m):
                    r = np.abs(scale * m / z - 1.0)
                    residual[t] = float(np.median(r))
                    inliers[t] = float((r < 0.05).mean())
    else:
        for t, (m, z, _) in enumerate(obs):
            if len(m) >= _MIN_OBSERVATIONS:
                a[t], b[t], residual[t], inliers[t] = _fit(kind, m, z, rng)
    return DepthAlignment(kind, a, b, residual, inliers, *_persistent(kind, a, b, obs, len(static)))


def _persistent(kind: str, a: np.ndarray, b: np.ndarray, obs: list, N: int) -> tuple[float, np.ndarray]:
    """:attr:`DepthAlignment.persistent` and ``point_misfit`` from the frames' ``(map values, camera z,
    track indices)``."""
    misfit = np.full(N, np.nan)
    idx, res, depth = [], [], []
    for t, (m, z, n) in enumerate(obs):
        if len(m) and np.isfinite(a[t]) and np.isfinite(b[t]):
            idx.append(n)
            res.append(_relative_residual(kind, a[t], b[t], m, z))
            depth.append(z)
    if not idx:
        return float("nan"), misfit
    idx, res, depth = np.concatenate(idx), np.concatenate(res), np.concatenate(depth)
    order = np.argsort(idx, kind="stable")
    idx, res, depth = idx[order], res[order], depth[order]
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    counts = np.diff(np.r_[starts, len(idx)])
    keep = counts >= 3
    per_point = np.array([(np.median(res[s:s + c]), np.median(depth[s:s + c]))
                          for s, c in zip(starts[keep], counts[keep])]).reshape(-1, 2)
    point_res, point_z = per_point[:, 0], per_point[:, 1]
    misfit[idx[starts[keep]]] = point_res
    if keep.sum() < _MIN_OBSERVATIONS:
        return float("nan"), misfit
    # A point's own triangulation error stays with it too, but differs from point to point; the
    # cloud's distortion changes smoothly with depth. Points binned by depth (16 or more per bin, up to
    # 5 bins): each bin's median residual is what the points at that depth share.
    bins = int(np.clip(len(point_res) // 16, 1, 5))
    edges = np.quantile(point_z, np.linspace(0, 1, bins + 1)[1:-1])
    which = np.searchsorted(edges, point_z)
    shared = np.array([np.median(point_res[which == k]) for k in range(bins)])[which]
    return float(np.median(np.abs(shared))), misfit
