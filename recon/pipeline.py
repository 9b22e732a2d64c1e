"""``recon.reconstruct``: 2D tracks in, cameras, a static point cloud and 3D trajectories out.

Stages:

1. **Selection**: tracks visible in at least ``min_track_length`` frames (and,
   when a confidence is given, confident enough there).
2. **Rigid groups and static/moving separation** (:mod:`recon.separation`):
   tracks are grouped by rigid motion and the static scene is chosen among
   the groups by evidence (support over the video and the image, not count);
   epipolar residuals to the static scene's motion over many frame pairs
   then separate static from moving tracks before any mapping.
3. **Cameras**, decided per video and per stretch of video:

   * a still camera: identity poses;
   * no parallax anywhere (a nodal or telephoto pan): rotation-only solve
     (:mod:`recon.rotation`: homographies, a shared focal length, a
     rotation-only bundle adjustment), every centre held at one point;
   * otherwise COLMAP (:mod:`recon.colmap`, incremental or global mapper) on
     at most ``max_keyframes`` evenly spaced frames, the other frames
     registered one by one to the triangulated static points (PnP), frames
     that only rotate relative to a solved neighbour chained to it with its
     centre, and stretches without parallax held at one centre. Frames that
     truly cannot be solved stay NaN, each with its reason
     (:attr:`Status.unsolved`).

   Every pixel threshold is relative to the resolution the tracks were
   computed at (``ReconOptions.track_resolution``).
4. **Re-separation**: every track is triangulated with the solved cameras and
   re-classified by its reprojection error (mapping again when that changed
   the static set).
5. **3D**: static tracks are one point each (constant over time); moving
   tracks are placed per frame by :mod:`recon.dynamic`: rigid movers through
   their own structure from motion and a scale from priors (or depth),
   non-rigid points by the best of a few motion models; depth maps of any kind
   (:mod:`recon.depth`) are first aligned to the static points. Every track's
   ``reliability`` ranks how well its 3D is determined.

Degenerate input (a still camera, too few tracks, every track moving, very
short videos) never raises: :attr:`Reconstruction.status` says what was
solved and why the rest was not.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from recon import colmap, dynamic, rotation, separation
from recon.depth import DEPTH_KINDS, DepthAlignment, align_depth, sample
from recon.geometry import to_camera

logger = logging.getLogger(__name__)


@dataclass
class ReconOptions:
    """How tracks are turned into 3D.

    Attributes:
        min_track_length: tracks visible in fewer frames are not used.
        min_confidence: observations with lower confidence count as not visible.
        track_resolution: ``(W, H)`` of the frames the tracker worked on (a
            CoTracker3 model works at 512x384 whatever the video's size). Every
            pixel threshold below is in pixels of that resolution, so the same
            footage at 480p, 720p and 4K gives the same decisions. Default: the
            image size.
        epipolar_threshold: px; tracks whose median epipolar (or, without
            parallax, homography) residual exceeds it are moving.
        reprojection_threshold: px; after mapping, tracks reprojecting worse are moving.
        still_threshold: px; frame pairs whose median motion is smaller show a still camera.
        mapper: ``"incremental"`` (COLMAP's incremental mapper, the default) or
            ``"global"`` (COLMAP 4's global mapper); see the README's measurements.
        max_keyframes: the mapper solves at most this many frames, evenly spaced;
            the others are registered to its points one by one (their number,
            and so the cost, grows linearly with the video).
        refinements: times the cameras are solved again when re-separation
            changed the static set by more than 2%.
        min_static_tracks: fewer static tracks than this: cameras are not solved.
        max_gap: largest frame gap of matched pairs (default: the whole video).
        depth_kind: what the given depth maps hold (:data:`recon.depth.DEPTH_KINDS`):
            ``"metric"`` (camera ``z`` up to one global scale: an RGB-D sensor),
            ``"affine"`` (``z`` up to a per-frame scale and shift) or
            ``"affine_disparity"`` (``1/z`` up to a per-frame scale and shift: what
            monocular depth networks output). Relative kinds are fitted frame by
            frame to the static points (robustly), so they need solved cameras.
        depth_scale_from_static: align given metric depth maps to the reconstruction
            with the static points (otherwise depth is taken as in reconstruction units).
        split_test: after mapping, also take as moving the tracks that reproject within the
            threshold but whose two halves triangulate apart, like their image neighbours', and
            that form a rigid mover of their own whose halves moved together
            (:func:`recon.separation.split_consistency`, :func:`recon.separation.coherent_displacements`):
            a mover sliding along the epipolar lines, which otherwise bends the cameras (on the
            synthetic movers_3d tier it brings the cameras' ATE from 0.094% to 0.024% of the
            extent). Tracks drifting together over a low-texture surface of real footage also
            triangulate apart by halves, but each along its own ray by its own amount: they are
            left static (apple.mp4, a static scene: 0 of 900 tracks taken as moving by it, 107
            before the coherence check). ``False`` restores the separation without it.
        seed: random seed of RANSAC and the mapper.
        num_threads: threads of COLMAP's mapper and bundle adjustment (-1: all cores).
    """

    min_track_length: int = 3
    min_confidence: float = 0.0
    track_resolution: tuple[int, int] | None = None
    epipolar_threshold: float = 2.0
    reprojection_threshold: float = 2.0
    still_threshold: float = 1.5
    min_static_tracks: int = 20
    refinements: int = 2
    max_gap: int | None = None
    mapper: str = "incremental"
    max_keyframes: int = 60
    depth_kind: str = "metric"
    depth_scale_from_static: bool = True
    split_test: bool = True
    seed: int = 0
    num_threads: int = -1


@dataclass
class Status:
    """What was solved, and why anything was not.

    Attributes:
        cameras: ``"solved"``, ``"still"`` (no camera motion: poses are the
            identity, depth unknown without depth maps), ``"rotation"`` (no
            parallax anywhere: rotations solved, the centre held fixed, no
            depth), or ``"failed"``.
        registered: frames with a pose / all frames.
        rotation_frames: frames whose pose is rotation-only (centre held at
            that of a neighbour, or of the whole video): no parallax there.
        unsolved: ``{frame: reason}`` for the frames left without a pose.
        focal: ``"given"``, ``"estimated"`` or ``"unknown"``.
        static_tracks, moving_tracks, unused_tracks: counts.
        moving_3d: ``"depth"`` (from depth maps), ``"estimated"`` (without depth:
            :mod:`recon.dynamic`; each point's reliability says how well) or ``"none"``.
        moving_groups: one dict per rigid mover (:class:`recon.dynamic.GroupScale`
            without its fits): its tracks, scale, the prior that chose it and
            whether the data decided it.
        mean_reprojection_error: px over the static points (NaN if none).
        messages: what happened, in order; warnings included.
        timings: seconds per stage.
    """

    cameras: str = "failed"
    registered: tuple[int, int] = (0, 0)
    rotation_frames: list[int] = field(default_factory=list)
    unsolved: dict[int, str] = field(default_factory=dict)
    focal: str = "unknown"
    static_tracks: int = 0
    moving_tracks: int = 0
    unused_tracks: int = 0
    moving_3d: str = "none"
    moving_groups: list[dict] = field(default_factory=list)
    mean_reprojection_error: float = float("nan")
    messages: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        rot = f", {len(self.rotation_frames)} rotation-only" if self.rotation_frames else ""
        head = (f"cameras {self.cameras} ({self.registered[0]}/{self.registered[1]} frames{rot}, focal {self.focal}); "
                f"{self.static_tracks} static, {self.moving_tracks} moving, {self.unused_tracks} unused tracks; "
                f"moving 3D: {self.moving_3d}")
        return "\n".join([head] + [f"  - {m}" for m in self.messages])

    def note(self, message: str) -> None:
        logger.info(message)
        self.messages.append(message)


@dataclass
class Reconstruction:
    """Cameras and 3D of a tracked video.

    Attributes:
        cam_from_world: ``(T, 4, 4)`` float64 OpenCV poses, NaN for unsolved frames.
        K: ``(T, 3, 3)`` float64 intrinsics, pixels with ``(0, 0)`` the centre of
            the top-left pixel (NaN where unknown).
        registered: ``(T,)`` bool.
        trajectories: ``(T, N, 3)`` float64 world coordinates of every track per
            frame, NaN where unknown (static tracks: the same point in every frame).
        is_dynamic: ``(N,)`` bool: the track moves independently of the camera.
        used: ``(N,)`` bool: the track was long (and confident) enough to take
            part; the others are neither static nor moving and stay NaN.
        reliability: ``(N,)`` float in ``[0, 1]``: how well each 3D trajectory is
            determined, such that a higher value means a smaller error (0:
            unknown), from each point's predicted relative error (error over its
            distance to the camera) by :func:`recon.dynamic.reliability_from_error`:
            1% gives 0.67, 10% gives 0.17. Static points: their rays' angular
            error over the angle between them (:func:`triangulation_error`), and
            with depth maps their own misfit to the maps and the maps' shared misfit
            along depth (:attr:`recon.depth.DepthAlignment.persistent`, in proportion
            to the point's distance); moving points: see :mod:`recon.dynamic`.
        status: :class:`Status`.
        points: ``(M, 3)`` the static point cloud (rows of ``trajectories`` that are static and known).
        point_tracks: ``(M,)`` the track index of each static point.
        colmap_model: the ``pycolmap.Reconstruction`` (for :func:`recon.export_colmap`), or None.
        camera_kind: ``(T,)`` str: ``"full"`` (rotation and position solved),
            ``"rotation"`` (rotation-only: the centre held fixed, see
            :attr:`Status.rotation_frames`), ``"identity"`` (a still camera) or
            ``"none"`` (unsolved, NaN; :attr:`Status.unsolved` says why).
        groups: ``(N,)`` int: rigid motion group of each track: 0 the static
            scene, 1, 2, ... independently moving rigid groups (largest first),
            -1 for tracks in no group (non-rigid, too short, or unused).
        moving_kind: ``(N,)`` str: how each moving point was placed
            (:mod:`recon.dynamic`): ``"rigid"`` (its rigid mover's structure and
            scale), ``"depth"`` (depth maps), ``"carried"`` (the depth of the rigid
            mover around it), ``"line"`` (moving along a 3D line),
            ``"hovering"`` (the intersection of its rays, put back on each ray),
            or ``""`` (not moving, or not placed).
    """

    cam_from_world: np.ndarray
    K: np.ndarray
    registered: np.ndarray
    trajectories: np.ndarray
    is_dynamic: np.ndarray
    used: np.ndarray
    reliability: np.ndarray
    status: Status
    points: np.ndarray
    point_tracks: np.ndarray
    colmap_model: object = None
    camera_kind: np.ndarray | None = None
    groups: np.ndarray | None = None
    moving_kind: np.ndarray | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays, for ``np.savez``."""
        return {
            "cam_from_world": self.cam_from_world, "K": self.K, "registered": self.registered,
            "trajectories": self.trajectories, "is_dynamic": self.is_dynamic, "used": self.used,
            "reliability": self.reliability, "points": self.points, "point_tracks": self.point_tracks,
            "camera_kind": self.camera_kind, "groups": self.groups, "moving_kind": self.moving_kind,
        }


def _check(tracks, visibility, image_size, confidence, intrinsics, depth):
    tracks = np.asarray(tracks, dtype=np.float64)
    visibility = np.asarray(visibility)
    if tracks.ndim != 3 or tracks.shape[-1] != 2:
        raise ValueError(f"tracks must be (T, N, 2) pixels, got shape {tracks.shape}")
    if visibility.shape != tracks.shape[:2]:
        raise ValueError(f"visibility must be (T, N) = {tracks.shape[:2]}, got {visibility.shape}")
    visibility = visibility.astype(bool) & np.isfinite(tracks).all(-1)
    try:
        W, H = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (W, H), got {image_size!r}") from None
    if W < 2 or H < 2:
        raise ValueError(f"image_size must be at least 2x2, got {W}x{H}")
    # A position outside the frame is no observation, whatever the flag says.
    inside = ((tracks[..., 0] >= -0.5) & (tracks[..., 0] <= W - 0.5)
              & (tracks[..., 1] >= -0.5) & (tracks[..., 1] <= H - 0.5))
    visibility &= inside
    T = tracks.shape[0]
    if confidence is not None:
        confidence = np.asarray(confidence, dtype=np.float64)
        if confidence.shape != visibility.shape:
            raise ValueError(f"confidence must be (T, N) = {visibility.shape}, got {confidence.shape}")
    K = None
    if intrinsics is not None:
        K = np.asarray(intrinsics, dtype=np.float64)
        if K.shape == (T, 3, 3):
            if not np.allclose(K, K[:1]):
                raise ValueError("per-frame intrinsics that change over time are not supported: give one (3, 3) K")
            K = K[0]
        if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(f"intrinsics must be a (3, 3) camera matrix with positive focal lengths, got {K}")
    if depth is not None:
        depth = np.asarray(depth)
        if depth.ndim != 3 or depth.shape[0] != T or min(depth.shape[1:]) < 2:
            raise ValueError(f"depth must be (T, h, w) maps with T = {T} (any h, w >= 2 covering the frame), "
                             f"got {depth.shape}")
    return tracks, visibility, (W, H), confidence, K, depth


def reconstruct(tracks, visibility, image_size, confidence=None, intrinsics=None, depth=None,
                options: ReconOptions | None = None, progress=None) -> Reconstruction:
    """Cameras, a static point cloud and 3D trajectories from 2D tracks.

    Args:
        tracks: ``(T, N, 2)`` pixels ``(x, y)``, ``(0, 0)`` the centre of the top-left pixel.
        visibility: ``(T, N)`` bool; positions outside the frame count as not visible.
        image_size: ``(W, H)`` of the frames.
        confidence: optional ``(T, N)`` in ``[0, 1]``; with ``options.min_confidence``.
        intrinsics: optional ``(3, 3)`` (or constant ``(T, 3, 3)``) camera matrix,
            kept fixed; otherwise one focal length is estimated.
        depth: optional ``(T, h, w)`` depth maps covering the frames (any resolution;
            0, NaN or inf where unknown) from an RGB-D capture or a depth estimator;
            what they hold is ``options.depth_kind``.
        options: :class:`ReconOptions`.
        progress: optional ``callable(stage, done, total)``, called as the stages
            (separation, each mapping round, 3D) finish.

    Returns:
        :class:`Reconstruction`.

    Raises:
        ValueError: arrays of the wrong shapes (degenerate *geometry* never raises).
    """
    opts = options or ReconOptions()
    if opts.depth_kind not in DEPTH_KINDS:
        raise ValueError(f"depth_kind must be one of {', '.join(map(repr, DEPTH_KINDS))}, got {opts.depth_kind!r}")
    steps = 3 + opts.refinements
    notify = (lambda done: progress("recon", done, steps)) if progress else (lambda done: None)
    notify(0)
    tracks, visibility, (W, H), confidence, K_given, depth = _check(
        tracks, visibility, image_size, confidence, intrinsics, depth)
    T, N = visibility.shape
    status = Status(registered=(0, T), focal="given" if K_given is not None else "unknown")
    t0 = time.perf_counter()

    # 1. Selection.
    vis = visibility if confidence is None else visibility & (confidence >= opts.min_confidence)
    selected = vis.sum(0) >= opts.min_track_length
    status.unused_tracks = int((~selected).sum())
    if T < 2:
        status.note(f"{T} frame(s): nothing can be reconstructed")
    px = _pixel_scale((W, H), opts.track_resolution)
    epi_thr, reproj_thr, still_thr = (opts.epipolar_threshold * px, opts.reprojection_threshold * px,
                                      opts.still_threshold * px)
    # 2. Rigid groups and separation before mapping.
    groups, background = separation.rigid_groups(tracks, vis, selected, image_size=(W, H), threshold=epi_thr,
                                                 seed=opts.seed)
    reference = groups == background if background >= 0 else None
    if reference is not None and reference.sum() < opts.min_static_tracks:
        reference = None
    if reference is not None and (groups >= 1).any():
        status.note(f"rigid groups: the static scene holds {int(reference.sum())} of {int(selected.sum())} "
                    f"tracks; {int((groups >= 1).sum())} tracks in {int(groups.max())} moving group(s)")
    score, motion = separation.epipolar_scores(tracks, vis, selected, image_size=(W, H), threshold=epi_thr,
                                               still_threshold=still_thr, reference=reference, seed=opts.seed)
    score[~selected] = np.nan
    is_dynamic = selected & (score > epi_thr)
    static = selected & ~is_dynamic & np.isfinite(score)
    status.timings["separation"] = time.perf_counter() - t0
    notify(1)
    status.note(f"frame pairs: {motion.num_pairs} with shared tracks ({motion.general} with parallax, "
                f"{motion.rotation} rotation only, {motion.still} still)")

    cam_from_world = np.full((T, 4, 4), np.nan)
    kind = np.full(T, "none", dtype=object)
    K = K_given.copy() if K_given is not None else np.full((3, 3), np.nan)
    points = np.full((N, 3), np.nan)
    point_error = np.full(N, np.nan)
    angle = np.zeros(N)
    model = None
    t0 = time.perf_counter()
    if motion.num_pairs == 0 or static.sum() < opts.min_static_tracks:
        why = ("no two frames share enough tracks" if motion.num_pairs == 0 else
               f"only {int(static.sum())} static tracks (at least {opts.min_static_tracks} needed)")
        status.cameras = "failed"
        status.note(f"cameras not solved: {why}")
    elif motion.still >= 0.8 * motion.num_pairs:
        status.cameras = "still"
        cam_from_world[:] = np.eye(4)
        kind[:] = "identity"
        status.note("the camera does not move: poses are the identity; without parallax static points have "
                    "no depth" + ("" if depth is None else " (taken from the depth maps)"))
    elif motion.rotation + motion.still >= 0.5 * motion.num_pairs and (result := _rotation_only(
            tracks, vis, static, (W, H), K_given, epi_thr, opts.seed, status,
            mostly_rotation=motion.rotation + motion.still >= 0.8 * motion.num_pairs)) is not None:
        cam_from_world = result.cam_from_world
        solved = np.isfinite(cam_from_world).all(axis=(1, 2))
        status.cameras = "rotation"
        kind[solved] = "rotation"
        if K_given is None:
            K = result.K
            status.focal = "estimated"
        point_error = np.where(static, result.error, np.nan)
        # Tracks the rotations do not explain cannot be static: they move (or drift).
        misfit = static & ~(result.error <= epi_thr)
        if misfit.any():
            is_dynamic = is_dynamic | misfit
            static = static & ~misfit
            point_error[misfit] = np.nan
            status.note(f"{int(misfit.sum())} track(s) the rotations do not explain within {epi_thr:.2f} px "
                        "are taken as moving")
        status.note("the camera only rotates (the static tracks fit rotations within the noise): rotations are "
                    "solved with the centre held fixed; without parallax neither its position nor depth can be "
                    "solved")
    else:
        keyframes = _keyframes(T, opts.max_keyframes)
        for round_ in range(1 + opts.refinements):
            result = colmap.map_tracks(tracks[keyframes], vis[keyframes], static, (W, H), K_given,
                                       max_gap=opts.max_gap, pixel_scale=px, mapper=opts.mapper, seed=opts.seed,
                                       num_threads=opts.num_threads)
            status.note(result.message + (f" (keyframes: every {keyframes[1] - keyframes[0]}th frame)"
                                          if len(keyframes) < T else ""))
            solved_keyframes = int(np.isfinite(result.cam_from_world).all(axis=(1, 2)).sum())
            if opts.mapper == "incremental" and solved_keyframes < 0.5 * len(keyframes):
                # The incremental mapper can start from a pair without enough parallax (a pan before a
                # walk) and register little more; the global mapper solves all frames at once.
                other = colmap.map_tracks(tracks[keyframes], vis[keyframes], static, (W, H), K_given,
                                          max_gap=opts.max_gap, pixel_scale=px, mapper="global", seed=opts.seed,
                                          num_threads=opts.num_threads)
                if np.isfinite(other.cam_from_world).all(axis=(1, 2)).sum() > solved_keyframes:
                    result = other
                    status.note(other.message + " (used: the incremental mapper registered under half)")
            if round_ == 0 and K_given is None:
                result = _second_focal_start(result, tracks[keyframes], vis[keyframes], static, (W, H), px,
                                             opts, status)
            notify(2 + round_)
            model = result.reconstruction
            cam_from_world = np.full((T, 4, 4), np.nan)
            cam_from_world[keyframes] = result.cam_from_world
            if K_given is None and np.isfinite(result.K).all():
                K = result.K
                status.focal = "estimated"
            status.cameras = "solved" if np.isfinite(cam_from_world).all(axis=(1, 2)).any() else "failed"
            if status.cameras != "solved":
                break
            # Frames between keyframes (and keyframes the mapper missed): registered to the points one by one.
            points, point_error, angle = separation.reprojection_scores(tracks, vis, K, cam_from_world, static)
            _register_frames(tracks, vis, static, points, K, (W, H), cam_from_world, reproj_thr)
            # 4. Re-separation with the solved cameras; map again if it changed the static set.
            points, point_error, angle = separation.reprojection_scores(tracks, vis, K, cam_from_world, selected)
            # A track seen without parallax (rays within a degree) triangulates badly: its epipolar test stands.
            moving = selected & np.isfinite(point_error) & (point_error > reproj_thr) & (angle >= 1.0)
            # Without parallax (rays within a degree) only a track that follows the camera's rotation closely
            # (within half the threshold) is taken back as static.
            fits = selected & np.isfinite(point_error) & (point_error <= np.where(angle >= 1.0, 1.0, 0.5) * reproj_thr)
            # Tracks that fit but whose two halves triangulate apart, among neighbours that do the same: a
            # mover sliding along the epipolar lines (which bends the cameras when taken as static).
            noise = float(np.median(point_error[fits])) if fits.any() else 0.5 * px
            split = (separation.split_consistency(tracks, vis, K, cam_from_world, fits, max(noise, 0.1 * px))
                     if opts.split_test else np.full(N, np.nan))
            local = separation.neighbourhood_median(tracks, vis, fits, split)
            drifting = fits & (split > separation.SPLIT_THRESHOLD) & (local > separation.SPLIT_THRESHOLD)
            if not opts.split_test or drifting.sum() < 8 or drifting.sum() > 0.5 * fits.sum():
                drifting[:] = False  # a few tracks, or the static scene's majority: not a mover
            else:
                drifting = _confirm_movers(tracks, vis, drifting, point_error, K, cam_from_world, (W, H), px, epi_thr,
                                           opts.seed)
            if drifting.any():
                status.note(f"{int(drifting.sum())} track(s) reproject within the threshold but their halves "
                            f"triangulate over {separation.SPLIT_THRESHOLD:g} standard errors apart, like their "
                            "neighbours': taken as moving")
            new_dynamic = (is_dynamic | moving | drifting) & ~(fits & ~drifting)
            new_static = selected & ~new_dynamic & np.isfinite(points).all(1)
            changed = int((new_static != static).sum())
            is_dynamic, static = new_dynamic, new_static
            status.note(f"re-separation with the cameras moved {changed} track(s) between static and moving")
            if changed <= 0.02 * max(int(selected.sum()), 1) or static.sum() < opts.min_static_tracks:
                break
        if status.cameras == "solved":
            solved = np.isfinite(cam_from_world).all(axis=(1, 2))
            kind[solved] = "full"
            # Frames still without a pose that only rotate relative to a solved neighbour.
            chained = rotation.chain_rotations(tracks, vis, static, K, cam_from_world,
                                               np.flatnonzero(~solved).tolist(), threshold=epi_thr, seed=opts.seed)
            for t, pose in chained.items():
                cam_from_world[t] = pose
                kind[t] = "rotation"
            if chained:
                status.note(f"{len(chained)} frame(s) without enough parallax or points were given the rotation "
                            "to a solved neighbour, its centre held fixed")
            _hold_rotation_stretches(motion, kind, cam_from_world, status, vis, static, points)
    status.timings["cameras"] = time.perf_counter() - t0
    registered = np.isfinite(cam_from_world).all(axis=(1, 2))
    kind[~registered] = "none"
    status.registered = (int(registered.sum()), T)
    status.rotation_frames = np.flatnonzero(kind == "rotation").tolist()
    if status.cameras in ("solved", "rotation") and registered.sum() < T:
        usable_static = (vis & static[None]).sum(1)
        for t in np.flatnonzero(~registered):
            status.unsolved[int(t)] = (f"{int(usable_static[t])} static track(s) visible" if usable_static[t] < 6
                                       else "its static tracks fit no pose of a solved neighbour")
        status.note(f"{T - int(registered.sum())} frame(s) could not be registered (left NaN): "
                    + "; ".join(f"{t}: {r}" for t, r in list(status.unsolved.items())[:10]))
    elif status.cameras == "failed":
        status.unsolved = {t: "the cameras could not be solved" for t in range(T)}

    # 5. 3D.
    t0 = time.perf_counter()
    trajectories = np.full((T, N, 3), np.nan)
    reliability = np.zeros(N)
    if status.cameras == "rotation":
        status.note("rotation-only: static points have no depth (only their directions are known)")
    if status.cameras == "solved":
        trajectories[:, static] = points[static][None]
        static_error = triangulation_error(point_error[static], angle[static], K[0, 0], noise_px=0.5 * px)
        reliability[static] = dynamic.reliability_from_error(static_error)
    moving_tracks = selected & is_dynamic
    K_all = np.broadcast_to(K, (T, 3, 3)).copy()
    moving_kind = np.full(N, "", dtype=object)
    final_groups = _final_groups(groups, selected, is_dynamic, tracks, vis, (W, H), epi_thr, opts.seed)
    if registered.any() and np.isfinite(K).all():
        alignment = None
        if depth is not None and status.cameras == "solved":
            alignment = _align(depth, tracks, vis, static, points, cam_from_world, (W, H), status, opts)
            shape = dynamic.map_shape_error(alignment)
            if static.any() and alignment.point_misfit is not None:
                # The maps' persistent misfit measures the static cloud's own distortion along depth,
                # which grows with distance (a focal length off stretches far points most); and each
                # static point's own misfit, how far its depth is from the maps'.
                distance = _distances(points[static], vis[:, static] & registered[:, None], cam_from_world)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    reach = np.nan_to_num(distance / np.nanmedian(distance), nan=1.0)
                own = np.nan_to_num(alignment.point_misfit[static], nan=0.0)
                reliability[static] = dynamic.reliability_from_error(
                    np.sqrt(static_error ** 2 + (shape * reach) ** 2 + own ** 2))
        elif depth is not None and opts.depth_kind == "metric":
            _lift_with_depth(tracks, vis, depth, (W, H), K, cam_from_world, registered, moving_tracks,
                             trajectories, reliability, status)
            if status.cameras == "still":
                _lift_with_depth(tracks, vis, depth, (W, H), K, cam_from_world, registered, selected & ~is_dynamic,
                                 trajectories, reliability, status, static_points=True)
        elif depth is not None:
            status.note(f"{opts.depth_kind} depth maps need solved cameras (static points of known depth) to be "
                        "aligned: not used")
        if status.cameras == "solved":
            known_error = point_error[static & np.isfinite(point_error)]
            noise = float(np.median(known_error)) if len(known_error) else px
            result = dynamic.lift_moving(tracks, vis, K, cam_from_world, registered, static, points, moving_tracks,
                                         final_groups, (W, H), trajectories, reliability, pixel_scale=px,
                                         noise_px=max(noise, 0.1 * px), alignment=alignment, depth=depth,
                                         seed=opts.seed)
            moving_kind = result.kind.astype(object)
            status.moving_groups = [{k: v for k, v in dataclasses.asdict(g).items() if k != "fits"}
                                    for g in result.groups]
            if moving_tracks.any():
                status.moving_3d = "depth" if alignment is not None and alignment.aligned.any() else "estimated"
                counts = {k: int((result.kind == k).sum()) for k in ("rigid", "depth", "carried", "line", "hovering")}
                status.note("moving points: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
                            + "".join(f"; mover {g.group} ({g.solved}/{g.tracks} tracks): scale by {g.prior}"
                                      for g in result.groups if g.solved))
    status.timings["lift"] = time.perf_counter() - t0
    notify(steps)
    status.static_tracks = int((selected & ~is_dynamic).sum())
    status.moving_tracks = int(moving_tracks.sum())
    if status.cameras == "solved" and status.moving_tracks > 0.4 * max(int(selected.sum()), 1):
        status.note(f"warning: {status.moving_tracks} of {int(selected.sum())} tracks move; when one moving "
                    "object holds about as many tracks as the static scene, it can be taken for the static "
                    "scene (check the cameras, or give a denser grid on the background)")
    known = static & np.isfinite(points).all(1) & (status.cameras == "solved")
    status.mean_reprojection_error = float(np.nanmean(point_error[known])) if known.any() else float("nan")
    return Reconstruction(
        cam_from_world=cam_from_world,
        K=K_all,
        registered=registered,
        trajectories=trajectories,
        is_dynamic=is_dynamic & selected,
        used=selected,
        reliability=reliability,
        status=status,
        points=points[known],
        point_tracks=np.flatnonzero(known),
        colmap_model=model,
        camera_kind=kind.astype(str),
        groups=final_groups,
        moving_kind=moving_kind.astype(str),
    )


def triangulation_error(error_px: np.ndarray, angle_deg: np.ndarray, focal: float,
                        noise_px: float = 0.5) -> np.ndarray:
    """Predicted relative 3D error (error / distance) of triangulated points: the angular error of
    a ray (the reprojection error, at least ``noise_px``, over the focal length) divided by the
    largest angle between the point's rays (a point seen from directions 1 degree apart is placed
    along its rays about 60 times less well than across them)."""
    sigma = np.maximum(np.nan_to_num(error_px, nan=np.inf), noise_px) / focal
    return sigma / np.radians(np.maximum(angle_deg, 0.01))


def _confirm_movers(tracks, vis, candidates, static_error, K, cam_from_world, image_size, px, threshold, seed,
                    gain=0.75):
    """The candidates that form rigid movers. Grouped by rigid motion among themselves, a group
    keeps its tracks whose halves moved by the group's common displacement
    (:func:`recon.separation.coherent_displacements`); it counts when those are 12 or more and
    at least :data:`recon.separation.CORE_SHARE` of the group, and when their own structure from
    motion reprojects them within ``gain`` times their error as static points. Tracking drift on a
    static surface (real footage: tracks on low-texture ground slowly sliding) also makes a
    track's halves triangulate apart, and a rigid motion of its own can explain it better than
    the cameras do, but the drifting tracks' halves do not move together."""
    groups, _ = separation.rigid_groups(tracks, vis, candidates, image_size=image_size, threshold=threshold,
                                        seed=seed)
    displacement = separation.half_displacements(tracks, vis, K, cam_from_world, candidates)
    out = np.zeros_like(candidates)
    for g in np.unique(groups[candidates & (groups >= 0)]):
        members = np.flatnonzero(candidates & (groups == g) & np.isfinite(displacement).all(1))
        if len(members) < 12:
            continue
        core = members[separation.coherent_displacements(displacement[members])]
        if len(core) < 12 or len(core) < separation.CORE_SHARE * len(members):
            continue
        rel = dynamic.relative_structure(tracks[:, core], vis[:, core], K, image_size, px, seed)
        if rel is None:
            continue
        pose, Y, _ = rel
        cam = np.einsum("tij,nj->tni", pose[:, :3, :3], Y) + pose[:, None, :3, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            xy = cam[..., :2] / cam[..., 2:] * K[[0, 1], [0, 1]] + K[:2, 2]
        err = np.linalg.norm(xy - tracks[:, core], axis=-1)
        err[~vis[:, core]] = np.nan
        own = np.nanmedian(err, axis=0)
        if np.isfinite(own).sum() >= 6 and np.nanmedian(own) <= gain * np.nanmedian(static_error[core]):
            out[core] = True
    return out


def _final_groups(groups: np.ndarray, selected: np.ndarray, is_dynamic: np.ndarray, tracks: np.ndarray | None = None,
                  vis: np.ndarray | None = None, image_size: tuple[int, int] | None = None, threshold: float = 2.0,
                  seed: int = 0) -> np.ndarray:
    """Rigid groups after separation: static tracks 0, moving tracks their moving group, unused tracks -1.
    Moving tracks that the first grouping had put with the static scene (separation found them
    later) are grouped again among themselves (given ``tracks``): their groups are numbered after
    the others; tracks in no group stay -1."""
    out = np.full(len(groups), -1)
    out[selected & ~is_dynamic] = 0
    moving = selected & is_dynamic & (groups >= 1)
    out[moving] = groups[moving]
    rest = selected & is_dynamic & (groups == 0)
    if tracks is not None and rest.sum() >= 12:
        again, _ = separation.rigid_groups(tracks, vis, rest, image_size=image_size, threshold=threshold, seed=seed)
        first = max(int(out.max()), 0) + 1
        for k, g in enumerate(sorted(set(again[rest & (again >= 0)].tolist()))):
            out[rest & (again == g)] = first + k
    return out


def _pixel_scale(image_size: tuple[int, int], track_resolution) -> float:
    """Image pixels per pixel of the resolution the tracks were computed at (geometric mean of both axes)."""
    if track_resolution is None:
        return 1.0
    (W, H), (w, h) = image_size, track_resolution
    if w <= 0 or h <= 0:
        raise ValueError(f"track_resolution must be positive (W, H), got {track_resolution}")
    return float(np.sqrt((W / w) * (H / h)))


def _rotation_only(tracks, vis, static, image_size, K, threshold, seed, status, mostly_rotation=False):
    """Solve the video as rotation-only; the result when the static tracks fit it within the noise, else None.

    The static tracks fit when their median error is under half the epipolar threshold and 90% of them are
    within it. When nearly every frame pair is explained by a homography (``mostly_rotation``) the pairs
    already rule out parallax, and the outer tracks are more likely movers or drifting tracks that the
    degenerate epipolar geometry of a pan could not tell apart: then 75% within the threshold suffices (the
    median test still rejects a plane seen from a translating camera, whose homographies share no rotation).
    """
    result = rotation.solve_rotations(tracks, vis, static, image_size, K, threshold=threshold, seed=seed)
    solved = np.isfinite(result.cam_from_world).all(axis=(1, 2))
    err = result.error[static & np.isfinite(result.error)]
    if solved.sum() < 2 or len(err) < 10:
        status.note(result.message + ": not used")
        return None
    share = 75 if mostly_rotation else 90
    outer = np.percentile(err, share)
    fits = np.median(err) <= 0.5 * threshold and outer <= threshold
    status.note(result.message + ("" if fits else f" ({share}% of static tracks within {outer:.2f} px: "
                                  "there is parallax, not used)"))
    return result if fits else None


def _second_focal_start(result, tracks, vis, static, image_size, px, opts, status):
    """Map again from a second focal length when the first model triangulated few of the static tracks.

    With the focal length unknown, the adjustment can settle in a wrong basin (a focal length 17% short
    on a 24-frame synthetic clip, depending on COLMAP's thread count); such a model triangulates
    noticeably fewer of the static tracks (142 of 237 against 235). Under 90%, the mapping is redone
    from 0.8 times the longer image side, and the model with more points is kept.
    """
    mappable = int((static & (vis.sum(0) >= 2)).sum())
    found = int(np.isfinite(result.points).all(1).sum())
    if mappable == 0 or found >= 0.9 * mappable:
        return result
    focal = 0.8 * max(image_size)
    other = colmap.map_tracks(tracks, vis, static, image_size, None, max_gap=opts.max_gap, pixel_scale=px,
                              mapper=opts.mapper, seed=opts.seed, focal_guess=focal,
                              num_threads=opts.num_threads)
    solved = int(np.isfinite(result.cam_from_world).all(axis=(1, 2)).sum())
    other_solved = int(np.isfinite(other.cam_from_world).all(axis=(1, 2)).sum())
    other_found = int(np.isfinite(other.points).all(1).sum())
    if (other_solved, other_found) > (solved, found):
        status.note(other.message + f" (used: mapped again from a focal length of {focal:.0f} px, "
                    f"as the first model triangulated {found} of {mappable} static tracks)")
        return other
    return result


def _keyframes(T: int, max_keyframes: int) -> np.ndarray:
    """Evenly spaced frames for the mapper (all of them for short videos), the last one included."""
    stride = max(1, int(np.ceil((T - 1) / max(max_keyframes - 1, 1))))
    frames = np.arange(0, T, stride)
    if frames[-1] != T - 1:
        frames = np.append(frames, T - 1)
    return frames


def _register_frames(tracks, vis, static, points, K, image_size, cam_from_world, threshold, min_inliers=6):
    """Give unregistered frames a pose from the static points they see (in place)."""
    known = static & np.isfinite(points).all(1)
    for t in np.flatnonzero(~np.isfinite(cam_from_world).all(axis=(1, 2))):
        n = np.flatnonzero(known & vis[t])
        if len(n) < min_inliers:
            continue
        pose, _ = colmap.register_frame(tracks[t, n], points[n], K, image_size, max_error=2 * threshold,
                                        min_inliers=min_inliers)
        if pose is not None:
            cam_from_world[t] = pose


def _hold_rotation_stretches(motion, kind, cam_from_world, status, vis, static, points, min_length=3):
    """Frames inside stretches where two thirds of the pairs of nearby frames (3 apart at most) are
    rotation-only, and whose solved centres move less than 1% of the scene's depth: their centres held
    at the stretch's median centre (translation there is noise, not motion)."""
    T = len(kind)
    votes = np.zeros(T)
    total = np.zeros(T)
    for (i, j), k in motion.kinds.items():
        if j - i <= 3:
            for t in (i, j):
                total[t] += 1
                votes[t] += k in ("rotation", "still")
    flat = (total > 0) & (votes >= 0.67 * total) & (kind == "full")
    t = 0
    held = 0
    while t < T:
        if not flat[t]:
            t += 1
            continue
        e = t
        while e + 1 < T and flat[e + 1]:
            e += 1
        idx = np.arange(t, e + 1)
        R = cam_from_world[idx, :3, :3]
        c = -np.einsum("tji,tj->ti", R, cam_from_world[idx, :3, 3])
        centre = np.median(c, axis=0)
        # Only where the solved centres barely move (1% of the depth of the static points seen there):
        # nearby frames without parallax may also belong to a slow but real translation.
        seen = static & np.isfinite(points).all(1) & vis[idx].any(0)
        depth = np.median(np.linalg.norm(points[seen] - centre, axis=1)) if seen.any() else np.inf
        if e - t + 1 >= min_length and np.linalg.norm(c - centre, axis=1).max() <= 0.01 * depth:
            cam_from_world[idx, :3, 3] = -np.einsum("tij,j->ti", R, centre)
            kind[idx] = "rotation"
            held += len(idx)
        t = e + 1
    if held:
        status.note(f"{held} frame(s) in stretches without parallax are rotation-only: their centres are held fixed")


def _backproject(xy: np.ndarray, z: np.ndarray, K: np.ndarray, pose: np.ndarray) -> np.ndarray:
    cam = np.stack([(xy[:, 0] - K[0, 2]) / K[0, 0] * z, (xy[:, 1] - K[1, 2]) / K[1, 1] * z, z], 1)
    R, t = pose[:3, :3], pose[:3, 3]
    return (cam - t) @ R  # R^T (cam - t)


def _distances(points: np.ndarray, seen: np.ndarray, cam_from_world: np.ndarray) -> np.ndarray:
    """``(M,)`` median over the frames that see each of ``points`` ``(M, 3)`` (``seen`` ``(T, M)``) of its
    distance to the camera (NaN where none does)."""
    dist = np.linalg.norm(to_camera(points, cam_from_world), axis=-1)  # (T, M), NaN where unregistered
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(np.where(seen, dist, np.nan), axis=0)


SHAPE_NOTICE = 0.01
"""A persistent misfit of the depth maps to the static points (:attr:`recon.depth.DepthAlignment.persistent`)
over this is said in the status."""


def _align(depth, tracks, vis, static, points, cam_from_world, image_size, status, opts) -> DepthAlignment:
    """Depth maps fitted to the static points (:func:`recon.depth.align_depth`), with a note."""
    T = len(depth)
    if opts.depth_kind == "metric" and not opts.depth_scale_from_static:
        return DepthAlignment("metric", np.ones(T), np.zeros(T), np.full(T, np.nan), np.zeros(T))  # no misfit known
    known = static & np.isfinite(points).all(1)
    cam_z = np.full(vis.shape, np.nan)
    cam_z[:, known] = to_camera(points[known], cam_from_world)[..., 2]
    alignment = align_depth(depth, opts.depth_kind, tracks, vis, known, cam_z, image_size, seed=opts.seed)
    ok = alignment.aligned
    if opts.depth_kind == "metric":
        status.note(f"depth maps scaled by {np.nanmedian(alignment.a):.4g} to the reconstruction"
                    if ok.any() else "depth maps: too few static points to scale them: not used")
    else:
        status.note(f"{opts.depth_kind} depth maps aligned to the static points in {int(ok.sum())}/{T} frames "
                    f"(median relative residual {np.nanmedian(alignment.residual) if ok.any() else np.nan:.3f}, "
                    f"inliers {np.mean(alignment.inliers[ok]) if ok.any() else 0:.0%})")
    if np.isfinite(alignment.persistent) and alignment.persistent > SHAPE_NOTICE:
        status.note(f"warning: the depth maps and the static cloud disagree along depth by "
                    f"{alignment.persistent:.1%} in every frame (the cloud stretched along depth: a focal length off "
                    "by about as much, or maps biased with depth); every point's reliability says so")
    return alignment


def _lift_with_depth(tracks, vis, depth, image_size, K, cam_from_world, registered, targets,
                     trajectories, reliability, status, static_points=False):
    """Points back-projected through metric depth maps taken as they are (cameras without solved
    static points: a still camera, or rotation-only)."""
    T = len(depth)
    for t in np.flatnonzero(registered):
        n = np.flatnonzero(targets & vis[t])
        if len(n) == 0:
            continue
        z = sample(depth[t], tracks[t, n], image_size)
        ok = np.isfinite(z)
        trajectories[t, n[ok]] = _backproject(tracks[t, n[ok]], z[ok], K, cam_from_world[t])
    if static_points:
        # A still camera: a static point's depth is the median over the frames it is seen in.
        for n in np.flatnonzero(targets):
            seen = np.isfinite(trajectories[:, n]).all(1)
            if seen.any():
                trajectories[:, n] = np.median(trajectories[seen, n], axis=0)
    known = np.isfinite(trajectories[:, targets]).all(-1)
    reliability[targets] = 0.9 * known.sum(0) / max(T, 1)
    status.moving_3d = "depth"
