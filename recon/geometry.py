"""Small geometry helpers on arrays: projection, alignment, camera metrics.

Conventions: OpenCV/COLMAP cameras (x right, y down, z forward), poses are
``cam_from_world`` ``(T, 4, 4)``; pixels ``(x, y)`` with ``(0, 0)`` the centre
of the top-left pixel (COLMAP puts it at ``(0.5, 0.5)``: :mod:`recon.colmap`
converts); missing values are NaN.
"""

from __future__ import annotations

import numpy as np


def camera_centres(cam_from_world: np.ndarray) -> np.ndarray:
    """``(T, 3)`` camera centres in world coordinates (NaN for unsolved frames)."""
    R, t = cam_from_world[:, :3, :3], cam_from_world[:, :3, 3]
    return -np.einsum("tji,tj->ti", R, t)


def to_camera(points: np.ndarray, cam_from_world: np.ndarray) -> np.ndarray:
    """World points ``(T, N, 3)`` (or ``(N, 3)`` for all frames) in each camera's frame ``(T, N, 3)``."""
    if points.ndim == 2:
        points = np.broadcast_to(points, (len(cam_from_world),) + points.shape)
    return np.einsum("tij,tnj->tni", cam_from_world[:, :3, :3], points) + cam_from_world[:, None, :3, 3]


def project(points: np.ndarray, K: np.ndarray, cam_from_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``(T, N, 2)`` and camera depth ``(T, N)`` of world points through per-frame ``K`` ``(T, 3, 3)``."""
    cam = to_camera(points, cam_from_world)
    z = cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = cam[..., :2] / z[..., None]
    fx, fy = K[:, 0, 0][:, None], K[:, 1, 1][:, None]
    cx, cy = K[:, 0, 2][:, None], K[:, 1, 2][:, None]
    return np.stack([fx * uv[..., 0] + cx, fy * uv[..., 1] + cy], -1), z


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity ``dst ~ s R src + t`` minimising squared error (Umeyama, 1991).

    Args:
        src, dst: ``(M, 3)`` corresponding points, ``M >= 3`` (not collinear).

    Returns:
        ``(s, R (3, 3), t (3,))``.
    """
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    cov = b.T @ a / len(src)
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1
    R = U @ D @ Vt
    var = (a ** 2).sum() / len(src)
    s = float(np.trace(np.diag(S) @ D) / var) if with_scale and var > 0 else 1.0
    return s, R, mu_d - s * R @ mu_s


def align_poses(est: np.ndarray, gt: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity taking the world of ``est`` cameras to that of ``gt`` from orientations and centres.

    The rotation is the chordal mean of ``R_gt R_est^T`` over the frames (camera orientations fix it even
    when the centres are nearly collinear or still, where :func:`umeyama` on centres alone is ambiguous);
    scale and translation then come from the centres by least squares (scale 1 when the centres do not
    spread).

    Args:
        est, gt: ``(T, 4, 4)`` ``cam_from_world``; frames with NaN in either are skipped.

    Returns:
        ``(s, R (3, 3), t (3,))`` with ``X_gt ~ s R X_est + t``.
    """
    ok = np.isfinite(est).all(axis=(1, 2)) & np.isfinite(gt).all(axis=(1, 2))
    if not ok.any():
        raise ValueError("align_poses needs at least one frame solved in both")
    # world_from_cam rotations are the transposes; R maps est's world axes to gt's.
    M = np.einsum("tji,tjk->ik", gt[ok, :3, :3], est[ok, :3, :3])
    U, _, Vt = np.linalg.svd(M)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt
    ce, cg = camera_centres(est[ok]), camera_centres(gt[ok])
    a, b = ce - ce.mean(0), cg - cg.mean(0)
    var = (a ** 2).sum()
    s = float(np.einsum("ni,ni->", b, a @ R.T) / var) if var > 1e-12 * max((b ** 2).sum(), 1e-300) else 1.0
    return s, R, cg.mean(0) - s * R @ ce.mean(0)


def camera_errors(est: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Absolute trajectory error after Sim3 alignment, and relative rotation error.

    Args:
        est: ``(T, 4, 4)`` estimated ``cam_from_world`` (NaN rows for unsolved frames).
        gt: ``(T, 4, 4)`` true ``cam_from_world``.

    Returns:
        ``ate`` (RMSE of aligned camera centres, in ``gt`` units), ``ate_max``,
        ``rpe_rot_deg`` (mean angle of the error of consecutive relative
        rotations, degrees), ``rpe_rot_max_deg``, ``registered`` (fraction of frames).
    """
    ok = np.isfinite(est).all(axis=(1, 2))
    out = {"registered": float(ok.mean()), "ate": float("nan"), "ate_max": float("nan"),
           "rpe_rot_deg": float("nan"), "rpe_rot_max_deg": float("nan")}
    if ok.sum() < 3:
        return out
    ce, cg = camera_centres(est[ok]), camera_centres(gt[ok])
    s, R, t = umeyama(ce, cg)
    err = np.linalg.norm((s * ce @ R.T + t) - cg, axis=1)
    out["ate"], out["ate_max"] = float(np.sqrt((err ** 2).mean())), float(err.max())
    idx = np.flatnonzero(ok)
    pairs = [(i, j) for i, j in zip(idx[:-1], idx[1:])]
    angles = []
    for i, j in pairs:
        rel_e = est[j, :3, :3] @ est[i, :3, :3].T
        rel_g = gt[j, :3, :3] @ gt[i, :3, :3].T
        d = rel_e.T @ rel_g
        angles.append(np.degrees(np.arccos(np.clip((np.trace(d) - 1) / 2, -1, 1))))
    out["rpe_rot_deg"], out["rpe_rot_max_deg"] = float(np.mean(angles)), float(np.max(angles))
    return out


def triangulate_dlt(observations: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Linear triangulation of one point from its pixels in several views.

    Args:
        observations: ``(V, 2)`` pixels; P: ``(V, 3, 4)`` projection matrices ``K [R | t]``.

    Returns:
        ``(3,)`` world point (NaN when fewer than two views).
    """
    if len(observations) < 2:
        return np.full(3, np.nan)
    rows = np.concatenate([observations[:, :1] * P[:, 2] - P[:, 0], observations[:, 1:] * P[:, 2] - P[:, 1]])
    _, _, Vt = np.linalg.svd(rows)
    X = Vt[-1]
    return X[:3] / X[3] if abs(X[3]) > 1e-12 else np.full(3, np.nan)
