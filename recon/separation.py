"""Rigid motion groups and static/moving separation of 2D tracks, before and after the cameras are solved.

Rigid groups (:func:`rigid_groups`): in frame pairs spread over the video,
motions are fitted one after the other (RANSAC of the fundamental matrix, or
of a homography where there is no parallax), each to the tracks the previous
ones left; tracks that share a motion in most of the pairs they share form a
rigid group. The static scene is the group with the most evidence of being
the background (observations over the whole video, times the share of the
image it spans), not the group with the most tracks: in casual footage the
movers can hold most of the tracks.

Before mapping (:func:`epipolar_scores`): for frame pairs at several gaps,
the static scene's fundamental matrix is estimated robustly (LO-RANSAC,
pycolmap) from the static group's tracks and every track shared by the pair
gets its Sampson distance to it. A static point satisfies every pair's
epipolar constraint up to the tracking noise; a point on an independently
moving object violates it in most pairs (it can only hide when it moves along
the epipolar lines, which is why many pairs and gaps are combined). A point
that moves along the epipolar lines still betrays itself when its two-view
triangulation (with the essential matrix of a rough pinhole camera) lands
behind the cameras: such pairs count as far off. A track's score is the upper
quartile of its distances over pairs with gaps of 3 frames or more, so that a
mover caught in a quarter of its pairs is out.

Pairs without parallax (the camera did not move, or only rotated) have no
fundamental matrix: there the static scene's motion is a homography
(identity for a still camera), and the transfer error against it is the
distance instead.

After mapping (:func:`reprojection_scores`): every track is triangulated with
the solved cameras and scored by its median reprojection error, which
re-admits static tracks that the epipolar test doubted and catches movers
that slid along epipolar lines. A mover that slides along them closely enough
reprojects within the threshold, and when it holds many tracks it bends the
cameras towards it (on ``movers_3d``: a box sliding with the camera, 1.5 px
from static with the true cameras, took the focal length 7% off and the
static cloud 8% of the scene off). Its two halves still triangulate apart
(:func:`split_consistency`): tracks that do, among image neighbours that do
the same (:func:`neighbourhood_median`), are moving, and the cameras are solved
again without them.

Thresholds are in pixels of the images the tracks are given in; the pipeline
scales them to the resolution the tracks were computed at.
"""

from __future__ import annotations

import logging
import warnings
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from recon.colmap import frame_pairs
from recon.geometry import project, triangulate_dlt

logger = logging.getLogger(__name__)


@dataclass
class PairMotion:
    """What the pairs say about the camera motion."""

    num_pairs: int  # pairs with enough shared tracks
    still: int  # pairs whose static-scene motion is (near) zero
    rotation: int  # pairs explained by a homography as well as by a fundamental matrix
    general: int  # pairs with parallax
    kinds: dict = field(default_factory=dict)  # (i, j) -> "still" | "rotation" | "general"


def sampson_distance(F: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
    """First-order geometric distance (px) of correspondences ``(M, 2)`` to ``x2^T F x1 = 0``."""
    x1 = np.concatenate([p1, np.ones((len(p1), 1))], 1)
    x2 = np.concatenate([p2, np.ones((len(p2), 1))], 1)
    Fx1, Ftx2 = x1 @ F.T, x2 @ F
    num = np.einsum("ij,ij->i", x2, Fx1) ** 2
    den = Fx1[:, 0] ** 2 + Fx1[:, 1] ** 2 + Ftx2[:, 0] ** 2 + Ftx2[:, 1] ** 2
    return np.sqrt(num / np.maximum(den, 1e-12))


def transfer_distance(Hm: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
    """Distance (px) of ``p2`` from ``p1`` mapped by the homography ``Hm``."""
    x1 = np.concatenate([p1, np.ones((len(p1), 1))], 1) @ Hm.T
    with np.errstate(divide="ignore", invalid="ignore"):
        q = x1[:, :2] / x1[:, 2:]
    return np.linalg.norm(q - p2, axis=1)


def _behind(R: np.ndarray, t: np.ndarray, K: np.ndarray, p1: np.ndarray, p2: np.ndarray,
            min_angle_deg: float) -> np.ndarray:
    """Correspondences whose two-view triangulation lies behind a camera (with enough parallax)."""
    Kinv = np.linalg.inv(K)
    d1 = np.concatenate([p1, np.ones((len(p1), 1))], 1) @ Kinv.T
    d2 = np.concatenate([p2, np.ones((len(p2), 1))], 1) @ Kinv.T @ R  # rows: R^T d2, in camera 1
    d1 /= np.linalg.norm(d1, axis=1, keepdims=True)
    d2 /= np.linalg.norm(d2, axis=1, keepdims=True)
    c2 = -R.T @ t
    # Closest points of the rays c1 + a d1 and c2 + b d2 (c1 = 0).
    b12 = np.einsum("ij,ij->i", d1, d2)
    w1, w2 = d1 @ c2, d2 @ c2
    den = np.maximum(1 - b12 ** 2, 1e-12)
    a = (w1 - b12 * w2) / den
    b = (b12 * w1 - w2) / den
    parallax = np.degrees(np.arccos(np.clip(b12, -1, 1)))
    return ((a < 0) | (b < 0)) & (parallax >= min_angle_deg)


def _ransac_options(threshold: float, seed: int):
    import pycolmap

    options = pycolmap.RANSACOptions()
    options.max_error = threshold
    options.random_seed = seed
    options.min_num_trials = 100  # COLMAP's 1000 triples the cost; tracks have few outliers per pair
    return options


def scoring_pairs(num_frames: int, max_gap: int | None = None) -> list[tuple[int, int]]:
    """Frame pairs for separation: Fibonacci gaps as :func:`recon.colmap.frame_pairs`,
    but pairs of gap ``g`` start every ``max(1, g // 3)`` frames, so that their
    number grows linearly with the video (about ``5 T``) while every frame keeps
    partners at every gap."""
    return [(i, j) for i, j in frame_pairs(num_frames, max_gap) if i % max(1, (j - i) // 3) == 0]


def _homography_explains(Hm, F, p1, p2, threshold: float) -> bool:
    """Whether a pair has no parallax: ``"strict"`` when the homography explains
    (nearly) every correspondence the fundamental matrix does, ``"loose"`` when
    only its median transfer error is within half the threshold (the noise of
    the tracks: little parallax, or noisy tracks of a pan), else ``""``.

    A transfer error is 2D where an epipolar distance is 1D, so under the same
    noise fewer correspondences pass a homography at the same threshold: it is
    counted at 1.5x the threshold. Residuals are taken to the homography only
    when strict (a loose pair's near points would look like movers); the pair
    counts as rotation-only in the video's decision either way."""
    dist = transfer_distance(Hm["H"], p1, p2)
    inliers = int((dist <= 1.5 * threshold).sum())
    if inliers >= 0.95 * F["num_inliers"]:
        return "strict"
    return "loose" if float(np.median(dist)) <= 0.5 * threshold else ""


def _pair_model(p1, p2, options, K, threshold, behind_check=True):
    """The dominant two-view motion of correspondences: ``(kind, distances, inlier mask)`` or None.

    ``kind`` is ``"rotation"`` when a homography explains (nearly) as many as the
    fundamental matrix (no parallax), else ``"general"``."""
    import cv2
    import pycolmap

    F = pycolmap.estimate_fundamental_matrix(p1, p2, options)
    if F is None:
        return None
    Hm = pycolmap.estimate_homography_matrix(p1, p2, options)
    if Hm is not None and _homography_explains(Hm, F, p1, p2, threshold) == "strict":
        dist = transfer_distance(Hm["H"], p1, p2)
        return "rotation", dist, dist <= threshold
    dist = sampson_distance(F["F"], p1, p2)
    inl = np.asarray(F["inlier_mask"], bool)
    if behind_check and inl.sum() >= 5:
        # Points moving along the epipolar lines satisfy F, but often only by
        # triangulating behind the cameras: count those as far off.
        _, R, t, _ = cv2.recoverPose(K.T @ F["F"] @ K, p1[inl], p2[inl], K)
        behind = _behind(R, t.ravel(), K, p1, p2, 1.0)
        dist = np.where(behind, np.maximum(dist, 5 * threshold), dist)
    return "general", dist, dist <= threshold


GROUP_THRESHOLD = 0.5
"""Motions of the grouping are fitted at this fraction of the epipolar threshold (tighter than the
separation's, so that two rigid bodies are less likely to share one compromise motion)."""

MERGE_FRACTION = 1.0
"""A group joins a larger one when one motion fitted to both explains this share of it (median over pairs)."""

CLUSTER_DISTANCE = 0.5
"""Tracks are one rigid group when they share a motion in at least half of their shared pairs (average linkage)."""


def _merge_groups(labels, tracks, usable, pairs, options, K, threshold, min_fraction=MERGE_FRACTION):
    """Merge groups that move as one: clustering at a tight threshold can split one rigid body
    (the static scene above all: near and far parts, noisy tracks) into several groups. A group joins
    a larger one when, in most pairs both are seen in, one motion fitted to both explains :data:`MERGE_FRACTION` of it."""
    order = sorted((c for c in np.unique(labels) if c >= 0), key=lambda c: -(labels == c).sum())
    merged = True
    while merged:
        merged = False
        for a_pos, a in enumerate(order):
            for b in order[a_pos + 1:]:
                A, B = np.flatnonzero(labels == a), np.flatnonzero(labels == b)
                fractions = []
                for i, j in pairs:
                    a_ok = A[usable[i, A] & usable[j, A]]
                    b_ok = B[usable[i, B] & usable[j, B]]
                    if len(a_ok) < 8 or len(b_ok) < 8:
                        continue
                    both = np.concatenate([a_ok, b_ok])
                    model = _pair_model(tracks[i, both], tracks[j, both], options, K, threshold)
                    if model is None:
                        continue
                    fractions.append(model[2][len(a_ok):].mean())
                    if len(fractions) >= 8:
                        break
                if len(fractions) >= 3 and np.median(fractions) >= min_fraction:
                    labels[labels == b] = a
                    order.remove(b)
                    merged = True
                    break
            if merged:
                break
    return labels


def rigid_groups(
    tracks: np.ndarray,
    visibility: np.ndarray,
    candidates: np.ndarray,
    *,
    image_size: tuple[int, int],
    threshold: float = 2.0,
    min_shared: int = 12,
    max_pairs: int = 40,
    max_groups: int = 4,
    seed: int = 0,
) -> tuple[np.ndarray, int]:
    """Group tracks by rigid motion, and choose the static scene among the groups.

    In each of up to ``max_pairs`` frame pairs (gaps of 2 frames and more,
    spread over the video), motions are fitted one after the other (RANSAC of
    the fundamental matrix, or of a homography without parallax), each on the
    tracks the previous ones left, so that every rigid body in view gets its
    own motion. Two tracks that share a motion in most of the pairs they share
    belong to one rigid group (average-linkage clustering of that affinity).
    Groups that one motion explains together are merged (a tight clustering
    can split the static scene into near and far parts). The static scene is
    the group with the most evidence of being the background: observations
    (tracks x frames, so long-lived tracks weigh more) times the share of the
    image it covers (cells of an 8x8 grid holding its tracks, median over
    frames), not its share of the tracks alone: in casual footage one mover
    can hold more tracks than any one part of the background, but rarely
    covers the image for the whole video.

    Returns:
        ``(labels (N,) int: group of each track, -1 for none; the static scene's label, -1 if none)``.
    """
    from scipy.cluster.hierarchy import fcluster, linkage

    T, N = visibility.shape
    W, H = image_size
    usable = visibility & candidates[None]
    labels = np.full(N, -1)
    cand = np.flatnonzero(candidates)
    if len(cand) < min_shared or T < 2:
        return labels, -1
    # Wide pairs: more motion, so two rigid bodies are less likely to fit one compromise motion.
    pairs = [(i, j) for i, j in frame_pairs(T) if j - i >= min(5, T - 1)]
    if len(pairs) > max_pairs:
        pairs = [pairs[k] for k in np.linspace(0, len(pairs) - 1, max_pairs).round().astype(int)]
    options = _ransac_options(GROUP_THRESHOLD * threshold, seed)
    options.max_num_trials = 1000  # many small groups are fitted: cap the trials (a miss only splits a group)
    K = np.array([[1.2 * max(W, H), 0, (W - 1) / 2], [0, 1.2 * max(W, H), (H - 1) / 2], [0, 0, 1]])
    col = {n: k for k, n in enumerate(cand)}

    def one_pair(pair):
        i, j = pair
        shared = np.flatnonzero(usable[i] & usable[j])
        if len(shared) < min_shared:
            return None
        lab = np.full(len(shared), -1)
        rest = np.arange(len(shared))
        for g in range(max_groups):
            if len(rest) < min_shared:
                break
            model = _pair_model(tracks[i, shared[rest]], tracks[j, shared[rest]], options, K, GROUP_THRESHOLD * threshold)
            if model is None or model[2].sum() < min_shared:
                break
            lab[rest[model[2]]] = g
            rest = rest[~model[2]]
        return shared, lab

    M = len(cand)
    same = np.zeros((M, M), np.float32)
    both = np.zeros((M, M), np.float32)
    with ThreadPoolExecutor(max(1, min(len(pairs), os.cpu_count() or 1))) as pool:
        for result in pool.map(one_pair, pairs):
            if result is None:
                continue
            shared, lab = result
            idx = np.array([col[n] for n in shared])
            ok = lab >= 0
            onehot = np.zeros((len(idx), int(lab.max()) + 2 if ok.any() else 1), np.float32)
            onehot[np.flatnonzero(ok), lab[ok]] = 1
            same[np.ix_(idx, idx)] += onehot @ onehot.T
            both[np.ix_(idx, idx)] += 1
    affinity = np.where(both >= 2, same / np.maximum(both, 1), 0.0)
    np.fill_diagonal(affinity, 1.0)
    dist = 1.0 - affinity
    iu = np.triu_indices(M, 1)
    Z = linkage(dist[iu].astype(np.float64), method="average")
    cluster = fcluster(Z, t=CLUSTER_DISTANCE, criterion="distance")
    for c in np.unique(cluster):
        members = cand[cluster == c]
        if len(members) >= min_shared:
            labels[members] = c
    if MERGE_FRACTION < 1:
        labels = _merge_groups(labels, tracks, usable, pairs, _ransac_options(threshold, seed), K, threshold)
    best, best_score = -1, -np.inf
    for c in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == c)
        vis = usable[:, members]
        obs = int(vis.sum())
        cover = []
        for t in range(T):
            xy = tracks[t, members[vis[t]]]
            if len(xy):
                cells = np.unique(np.clip((xy[:, 0] / W * 8).astype(int), 0, 7) * 8
                                  + np.clip((xy[:, 1] / H * 8).astype(int), 0, 7))
                cover.append(len(cells) / 64)
        coverage = float(np.median(cover)) if cover else 0.0
        score = obs * coverage
        logger.debug("rigid group %d: %d tracks, %d observations, coverage %.2f, score %.1f",
                     c, len(members), obs, coverage, score)
        if score > best_score:
            best, best_score = int(c), score
    # Renumber: the static scene 0, the others 1, 2, ... by size.
    out = np.full(N, -1)
    if best >= 0:
        out[labels == best] = 0
        others = sorted((c for c in np.unique(labels) if c not in (-1, best)), key=lambda c: -(labels == c).sum())
        for k, c in enumerate(others, 1):
            out[labels == c] = k
    return out, (0 if best >= 0 else -1)


def epipolar_scores(
    tracks: np.ndarray,
    visibility: np.ndarray,
    candidates: np.ndarray,
    *,
    image_size: tuple[int, int] | None = None,
    threshold: float = 2.0,
    still_threshold: float = 0.5,
    min_shared: int = 12,
    reference: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, PairMotion]:
    """Per-track residual to the static scene's motion in many frame pairs.

    Args:
        tracks: ``(T, N, 2)`` pixels; visibility: ``(T, N)`` bool.
        candidates: ``(N,)`` bool: tracks taking part (the selected ones).
        image_size: ``(W, H)`` (default: from the tracks).
        threshold: RANSAC inlier threshold, px (about 3-4x the tracking noise).
        still_threshold: displacement (px) below which a track has not moved in a pair;
            pairs where 40% of the reference tracks have not moved show a still camera.
        min_shared: pairs sharing fewer tracks are skipped.
        reference: ``(N,)`` bool: the tracks each pair's motion is fitted to (the
            static scene's rigid group, :func:`rigid_groups`); default: all
            candidates (the majority motion). Residuals are computed for all.
        seed: RANSAC seed.

    Returns:
        ``(score (N,) px, NaN where a track shares no scored pair; PairMotion)``.
    """
    T, N = visibility.shape
    tracks = tracks.astype(np.float64)
    usable = visibility & candidates[None]
    ref = usable if reference is None else usable & reference[None]
    pairs = scoring_pairs(T)
    options = _ransac_options(threshold, seed)
    if image_size is None:
        image_size = (int(np.nanmax(tracks[..., 0])) + 1, int(np.nanmax(tracks[..., 1])) + 1)
    W, H = image_size
    # A rough pinhole (focal 1.2 x the longer side) is enough to tell in front from behind.
    K = np.array([[1.2 * max(W, H), 0, (W - 1) / 2], [0, 1.2 * max(W, H), (H - 1) / 2], [0, 0, 1]])

    def one_pair(pair: tuple[int, int]) -> tuple[str, np.ndarray, np.ndarray] | None:
        i, j = pair
        shared = np.flatnonzero(usable[i] & usable[j])
        fit = np.flatnonzero(ref[i] & ref[j])
        if len(fit) < min_shared:
            return None
        moved = np.linalg.norm(tracks[j, fit] - tracks[i, fit], axis=1)
        if (moved < still_threshold).mean() >= 0.4:  # a large group that does not move: a still camera
            return "still", shared, np.linalg.norm(tracks[j, shared] - tracks[i, shared], axis=1)
        model = _fit_and_score(tracks[i, fit], tracks[j, fit], tracks[i, shared], tracks[j, shared],
                               options, K, threshold)
        if model is None:
            return None
        return model[0], shared, model[1]

    residuals: list[list[tuple[int, float]]] = [[] for _ in range(N)]
    counts = dict(num_pairs=0, still=0, rotation=0, general=0)
    kinds: dict[tuple[int, int], str] = {}
    # pycolmap's estimators release the GIL: pairs run on all cores, results in pair order.
    with ThreadPoolExecutor(max(1, min(len(pairs), os.cpu_count() or 1))) as pool:
        for (i, j), result in zip(pairs, pool.map(one_pair, pairs)):
            if result is None:
                continue
            kind, shared, dist = result
            counts["num_pairs"] += 1
            counts[kind] += 1
            kinds[(i, j)] = kind
            for n, d in zip(shared, dist):
                residuals[n].append((j - i, float(d)))
    score = np.full(N, np.nan)
    for n, r in enumerate(residuals):
        if not r:
            continue
        arr = np.array(r)
        wide = arr[arr[:, 0] >= min(3, arr[:, 0].max())]
        score[n] = float(np.percentile(wide[:, 1], 75))
    return score, PairMotion(**counts, kinds=kinds)


def _fit_and_score(f1, f2, p1, p2, options, K, threshold):
    """Fit the motion of ``f1 -> f2`` and score ``p1 -> p2`` against it: ``(kind, distances)``."""
    import cv2
    import pycolmap

    F = pycolmap.estimate_fundamental_matrix(f1, f2, options)
    if F is None:
        return None
    Hm = pycolmap.estimate_homography_matrix(f1, f2, options)
    explains = _homography_explains(Hm, F, f1, f2, threshold) if Hm is not None else ""
    if explains == "strict":
        return "rotation", transfer_distance(Hm["H"], p1, p2)  # no parallax: the homography rules
    dist = sampson_distance(F["F"], p1, p2)
    if explains == "loose":
        return "rotation", dist  # too little parallax to solve translation; F still scores the tracks
    inl = np.asarray(F["inlier_mask"], bool)
    _, R, t, _ = cv2.recoverPose(K.T @ F["F"] @ K, f1[inl], f2[inl], K)
    behind = _behind(R, t.ravel(), K, p1, p2, 1.0)
    return "general", np.where(behind, np.maximum(dist, 5 * threshold), dist)


def reprojection_scores(
    tracks: np.ndarray,
    visibility: np.ndarray,
    K: np.ndarray,
    cam_from_world: np.ndarray,
    tracks_to_score: np.ndarray,
    min_views: int = 3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangulate tracks with solved cameras and score their reprojection.

    Args:
        tracks, visibility: as above; K: ``(3, 3)``; cam_from_world: ``(T, 4, 4)`` (NaN: unsolved).
        tracks_to_score: ``(N,)`` bool.
        min_views: fewer registered visible views leave the track unscored.

    Returns:
        ``points (N, 3)`` (NaN if unscored), ``error (N,)`` median reprojection
        error px (NaN if unscored), ``angle (N,)`` largest triangulation angle, degrees.
    """
    T, N = visibility.shape
    solved = np.isfinite(cam_from_world).all(axis=(1, 2))
    P = np.einsum("ij,tjk->tik", K, np.nan_to_num(cam_from_world[:, :3]))
    centres = -np.einsum("tji,tj->ti", np.nan_to_num(cam_from_world[:, :3, :3]), np.nan_to_num(cam_from_world[:, :3, 3]))
    points = np.full((N, 3), np.nan)
    error = np.full(N, np.nan)
    angle = np.zeros(N)
    for n in np.flatnonzero(tracks_to_score):
        views = np.flatnonzero(visibility[:, n] & solved)
        if len(views) < min_views:
            continue
        X = triangulate_dlt(tracks[views, n].astype(np.float64), P[views])
        if not np.isfinite(X).all():
            continue
        xy, z = project(X[None], np.broadcast_to(K, (len(views), 3, 3)), cam_from_world[views])
        if (z <= 0).any():
            continue
        points[n] = X
        error[n] = float(np.median(np.linalg.norm(xy[:, 0] - tracks[views, n], axis=1)))
        rays = X - centres[views]
        rays /= np.linalg.norm(rays, axis=1, keepdims=True)
        cos = np.clip(rays @ rays.T, -1, 1)
        angle[n] = float(np.degrees(np.arccos(cos.min())))
    return points, error, angle


SPLIT_THRESHOLD = 3.0
"""A track whose first and second halves triangulate this many standard errors apart, among
neighbours in the image that do the same, moves (:func:`split_consistency`)."""


def _spread(centres: np.ndarray) -> float:
    """Largest distance of camera centres ``(V, 3)`` from their mean."""
    return float(np.linalg.norm(centres - centres.mean(0), axis=1).max())


COHERENCE = 0.4
"""Tolerance of :func:`coherent_displacements`: the halves of a mover's tracks (0.5 px noise,
synthetic movers_3d scenes) moved within 0.1-0.3 of their common displacement (10th to 90th
percentile), tracks drifting over a static table (apple.mp4, embedded model) 0.4-4.5."""

CORE_SHARE = 0.3
"""Share of a candidate group that must move coherently for the group to count as a mover
(apple.mp4's drifting groups: 0.07-0.08; movers_3d groups: 0.51-1.0; the unit scene's box of
tests/recon/test_separation.py, which slides exactly as the camera does: 0.47-0.65)."""


def _largest_angle(centres: np.ndarray, X: np.ndarray) -> float:
    """Largest angle (radians) between the rays from ``centres`` ``(V, 3)`` to ``X``."""
    rays = X - centres
    rays = rays / np.maximum(np.linalg.norm(rays, axis=1, keepdims=True), 1e-12)
    return float(np.arccos(np.clip(rays @ rays.T, -1, 1)).max())


def split_consistency(
    tracks: np.ndarray,
    visibility: np.ndarray,
    K: np.ndarray,
    cam_from_world: np.ndarray,
    tracks_to_score: np.ndarray,
    noise_px: float,
    min_views: int = 8,
    min_baseline: float = 0.2,
) -> np.ndarray:
    """How far apart the first and the second half of each track triangulate.

    A static point triangulates to the same place from any of its frames. A mover
    that slides along the epipolar lines can reproject within a pixel or two of one
    point, yet its two halves land apart: it moved between them. Each half's
    uncertainty along its rays is its distance times the angular noise
    (``noise_px`` over the focal length) over the largest angle between its rays.
    A track one of whose halves was seen by a camera that hardly moved (its
    centres spread under ``min_baseline`` times the whole track's: a pan before a
    walk) is not scored.

    Args:
        tracks, visibility: as above; K: ``(3, 3)``; cam_from_world: ``(T, 4, 4)`` (NaN: unsolved).
        tracks_to_score: ``(N,)`` bool.
        noise_px: the tracks' noise, px.
        min_views: fewer registered visible views leave a track unscored.
        min_baseline: see above.

    Returns:
        ``(N,)``: distance between the halves' points over its standard error (NaN if unscored).
    """
    angular = noise_px / K[0, 0]
    out = np.full(len(tracks_to_score), np.nan)
    for n, A, B, centres_a, centres_b in _halves(tracks, visibility, K, cam_from_world, tracks_to_score, min_views,
                                                   min_baseline):
        out[n] = float(np.linalg.norm(A - B) / np.hypot(_half_sigma(centres_a, A, angular),
                                                        _half_sigma(centres_b, B, angular)))
    return out


def half_displacements(tracks: np.ndarray, visibility: np.ndarray, K: np.ndarray, cam_from_world: np.ndarray,
                       tracks_to_score: np.ndarray, min_views: int = 8, min_baseline: float = 0.2) -> np.ndarray:
    """``(N, 3)``: where the second half of each track triangulates minus where its first half does,
    world units (NaN where :func:`split_consistency` leaves a track unscored). Points of one rigid
    mover that slides share this displacement; tracks that drift over a static surface do not."""
    out = np.full((len(tracks_to_score), 3), np.nan)
    for n, A, B, _, _ in _halves(tracks, visibility, K, cam_from_world, tracks_to_score, min_views, min_baseline):
        out[n] = B - A
    return out


def coherent_displacements(displacements: np.ndarray, tolerance: float = COHERENCE, rounds: int = 3) -> np.ndarray:
    """``(M,)`` bool: the displacements (``(M, 3)``, :func:`half_displacements` of one candidate
    group) within ``tolerance`` times the length of the group's common displacement from it.

    The common displacement is the median of all, then (``rounds`` times) of those within the
    tolerance. A rigid mover's points share it (a sliding object exactly; a turning one up to its
    rotation times its size); tracks drifting over a static surface triangulate apart along their
    own rays, by their own amounts, and few of them agree."""
    D = np.asarray(displacements, dtype=np.float64)
    ref = np.median(D, axis=0)
    keep = np.zeros(len(D), bool)
    for _ in range(rounds):
        keep = np.linalg.norm(D - ref, axis=1) <= tolerance * max(float(np.linalg.norm(ref)), 1e-12)
        if not keep.any():
            break
        ref = np.median(D[keep], axis=0)
    return keep


def _half_sigma(centres: np.ndarray, X: np.ndarray, angular: float) -> float:
    """A half's uncertainty along its rays: its distance times the angular noise over the largest
    angle between its rays."""
    dist = np.linalg.norm(X - centres, axis=1)
    return float(np.median(dist)) * angular / max(_largest_angle(centres, X), 1e-3)


def _halves(tracks, visibility, K, cam_from_world, tracks_to_score, min_views, min_baseline):
    """Yield ``(n, A, B, centres of A's views, centres of B's views)``: the points the first and the
    second half of track ``n``'s registered views triangulate to, for the tracks
    :func:`split_consistency` scores."""
    solved = np.isfinite(cam_from_world).all(axis=(1, 2))
    P = np.einsum("ij,tjk->tik", K, np.nan_to_num(cam_from_world[:, :3]))
    centres = -np.einsum("tji,tj->ti", np.nan_to_num(cam_from_world[:, :3, :3]),
                         np.nan_to_num(cam_from_world[:, :3, 3]))
    for n in np.flatnonzero(tracks_to_score):
        views = np.flatnonzero(visibility[:, n] & solved)
        if len(views) < min_views:
            continue
        half = len(views) // 2
        a, b = views[:half], views[half:]
        A = triangulate_dlt(tracks[a, n].astype(np.float64), P[a])
        B = triangulate_dlt(tracks[b, n].astype(np.float64), P[b])
        if not (np.isfinite(A).all() and np.isfinite(B).all()):
            continue
        # A half whose camera hardly moved (a pan before a walk) can land anywhere, on the camera
        # centre included, where its own rays look well separated: such a track is unscored.
        if min(_spread(centres[a]), _spread(centres[b])) < min_baseline * _spread(centres[views]):
            continue
        yield n, A, B, centres[a], centres[b]


def neighbourhood_median(tracks: np.ndarray, visibility: np.ndarray, candidates: np.ndarray, values: np.ndarray,
                         neighbours: int = 10) -> np.ndarray:
    """``(N,)`` median of ``values`` over each candidate's ``neighbours`` nearest candidates in the
    image (median positions over the frames they are seen in; itself included); NaN elsewhere."""
    from scipy.spatial import cKDTree

    out = np.full(len(candidates), np.nan)
    idx = np.flatnonzero(candidates & np.isfinite(values))
    if len(idx) < neighbours:
        return out
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        pos = np.nanmedian(np.where(visibility[:, idx, None], tracks[:, idx], np.nan), axis=0)
    keep = np.isfinite(pos).all(1)
    idx, pos = idx[keep], pos[keep]
    if len(idx) < neighbours:
        return out
    _, nb = cKDTree(pos).query(pos, k=neighbours)
    out[idx] = np.median(values[idx[nb]], axis=1)
    return out
