"""recon.geometry: pose alignment."""

import numpy as np
from scipy.spatial.transform import Rotation

from recon.geometry import align_poses, camera_centres, umeyama


def _poses(centres, rotations):
    T = len(centres)
    out = np.tile(np.eye(4), (T, 1, 1))
    R = rotations.as_matrix()  # cam_from_world rotations
    out[:, :3, :3] = R
    out[:, :3, 3] = -np.einsum("tij,tj->ti", R, centres)
    return out


def _transformed(cam_from_world, s, R, t):
    """The same cameras in a world where X' = s R X + t."""
    out = cam_from_world.copy()
    out[:, :3, :3] = cam_from_world[:, :3, :3] @ R.T
    out[:, :3, 3] = -np.einsum("tij,tj->ti", out[:, :3, :3], s * camera_centres(cam_from_world) @ R.T + t)
    return out


def test_align_poses_recovers_a_similarity_where_collinear_centres_leave_umeyama_ambiguous():
    rng = np.random.default_rng(3)
    # A still stretch then a walk along a straight line: centres collinear, orientations varied.
    centres = np.concatenate([np.zeros((6, 3)), np.linspace([0, 0, 0], [2, 0, 0], 8)])
    rotations = Rotation.random(len(centres), random_state=1)
    est = _poses(centres, rotations)
    R_true = Rotation.random(random_state=2).as_matrix()
    # The truth: the same orientations, centres with 1 mm of noise (as an estimate's would be).
    noisy = _poses(centres + rng.normal(0, 1e-3, centres.shape), rotations)
    gt = _transformed(noisy, 3.0, R_true, np.array([1.0, -2.0, 0.5]))
    s, R, t = align_poses(est, gt)
    assert abs(s - 3.0) < 0.01 and np.allclose(R, R_true, atol=1e-9) and np.allclose(t, [1, -2, 0.5], atol=0.01)
    # Centres alone fix no rotation about the line of travel.
    _, R_centres, _ = umeyama(camera_centres(est), camera_centres(gt))
    assert np.degrees(np.arccos(np.clip((np.trace(R_centres.T @ R_true) - 1) / 2, -1, 1))) > 1.0


def test_align_poses_skips_unsolved_frames_and_keeps_scale_one_for_a_still_camera():
    est = _poses(np.zeros((5, 3)), Rotation.random(5, random_state=4))
    est[2] = np.nan
    R_true = Rotation.random(random_state=5).as_matrix()
    gt = _transformed(np.nan_to_num(est), 1.0, R_true, np.array([0.0, 1.0, 0.0]))
    gt[2] = _transformed(_poses(np.zeros((1, 3)), Rotation.random(1, random_state=9)), 1.0, R_true, np.zeros(3))[0]
    s, R, t = align_poses(est, gt)
    assert s == 1.0 and np.allclose(R, R_true, atol=1e-9) and np.allclose(t, [0, 1, 0])
