"""Every pycolmap call of the project: mapping from track correspondences, and export.

No feature extraction or matching: the tracks *are* the correspondences. Each
frame becomes an image whose keypoint ``n`` is track ``n``'s position there,
and two frames are matched on the static tracks visible in both. COLMAP's
incremental mapper then initialises, registers, triangulates and bundle-adjusts
as it does for its own features.

Pixel convention: COLMAP puts ``(0.5, 0.5)`` at the centre of the top-left
pixel, we put ``(0, 0)`` there: keypoints and principal points are shifted by
half a pixel here, and only here.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

HALF_PIXEL = 0.5
"""Our pixel + ``HALF_PIXEL`` = COLMAP's pixel."""


@dataclass
class MappingResult:
    """What the mapper solved.

    Attributes:
        cam_from_world: ``(T, 4, 4)``, NaN for unregistered frames.
        K: ``(3, 3)`` shared intrinsics in our pixel convention.
        points: ``(N, 3)`` triangulated position of each track, NaN if none.
        point_error: ``(N,)`` mean reprojection error of each triangulated track, px.
        reconstruction: the ``pycolmap.Reconstruction`` (for export), or None.
        message: what happened, for the status.
    """

    cam_from_world: np.ndarray
    K: np.ndarray
    points: np.ndarray
    point_error: np.ndarray
    reconstruction: object
    message: str


@contextlib.contextmanager
def colmap_log_level(level: int = 2):
    """COLMAP logs every mapping step (and warns that our frames have no image
    files, which the mapper never needs): keep it to ``level`` (glog: 0 INFO,
    1 WARNING, 2 ERROR, 3 FATAL) or quieter if an enclosing block asked so,
    unless this module's logger is at DEBUG; restore the previous level afterwards."""
    import pycolmap

    previous = pycolmap.logging.minloglevel
    if not logger.isEnabledFor(logging.DEBUG):
        pycolmap.logging.minloglevel = max(level, previous)
    try:
        yield
    finally:
        pycolmap.logging.minloglevel = previous


def frame_pairs(num_frames: int, max_gap: int | None = None) -> list[tuple[int, int]]:
    """Frame pairs to match: gaps 1, 2, 3, 5, 8, 13, ... (Fibonacci) up to ``max_gap``.

    Dense tracks are long, so a few gaps per frame give every frame wide-baseline
    partners without the cost of all ``T^2 / 2`` pairs.
    """
    gaps, a, b = [], 1, 2
    limit = num_frames - 1 if max_gap is None else min(max_gap, num_frames - 1)
    while a <= limit:
        gaps.append(a)
        a, b = b, a + b
    return [(i, i + g) for g in gaps for i in range(num_frames - g)]


def map_tracks(
    tracks: np.ndarray,
    visibility: np.ndarray,
    use: np.ndarray,
    image_size: tuple[int, int],
    K: np.ndarray | None = None,
    *,
    min_pair_matches: int = 15,
    max_gap: int | None = None,
    num_threads: int = -1,
    pixel_scale: float = 1.0,
    mapper: str = "incremental",
    seed: int = 0,
    focal_guess: float | None = None,
) -> MappingResult:
    """Cameras and 3D points from tracks with COLMAP's incremental mapper.

    Args:
        tracks: ``(T, N, 2)`` pixels (ours); visibility: ``(T, N)`` bool.
        use: ``(N,)`` bool: tracks to map (the static ones).
        image_size: ``(W, H)``.
        K: ``(3, 3)`` known intrinsics (kept fixed), or None to estimate one
            shared focal length (principal point at the image centre).
        min_pair_matches: frame pairs with fewer shared tracks are not matched.
        max_gap: largest frame gap of a matched pair (default: the video).
        num_threads: mapper threads (-1: all).
        pixel_scale: image pixels per pixel of the resolution the tracks were
            computed at: COLMAP's pixel thresholds (reprojection errors of
            initialisation, registration, triangulation and filtering) are
            multiplied by it.
        mapper: ``"incremental"`` (COLMAP's incremental mapper) or ``"global"``
            (COLMAP 4's global mapper, GLOMAP: rotation averaging, global
            positioning, one bundle adjustment).
        seed: the mapper's random seed (results are deterministic for a seed
            and a thread count).
        focal_guess: px, the focal length the adjustment starts from when ``K``
            is None (default: COLMAP's, 1.2 times the longer image side).

    Returns:
        :class:`MappingResult`; frames the mapper could not register are NaN.
    """
    import pycolmap

    T, N = visibility.shape
    W, H = image_size
    nan_pose = np.full((T, 4, 4), np.nan)
    with tempfile.TemporaryDirectory(prefix="track3d-recon-") as tmp:
        tmp = Path(tmp)
        db = pycolmap.Database.open(str(tmp / "database.db"))
        if K is None:
            f0 = 1.2 * max(W, H) if focal_guess is None else float(focal_guess)
            camera = pycolmap.Camera.create_from_model_id(1, pycolmap.CameraModelId.SIMPLE_PINHOLE, f0, W, H)
            camera.has_prior_focal_length = False
        else:
            camera = pycolmap.Camera.create_from_model_id(1, pycolmap.CameraModelId.PINHOLE, 1.0, W, H)
            camera.params = [K[0, 0], K[1, 1], K[0, 2] + HALF_PIXEL, K[1, 2] + HALF_PIXEL]
            camera.has_prior_focal_length = True
        camera_id = db.write_camera(camera)
        sensor = pycolmap.sensor_t(pycolmap.SensorType.CAMERA, camera_id)
        rig = pycolmap.Rig()
        rig.add_ref_sensor(sensor)
        rig_id = db.write_rig(rig)
        image_ids = []
        keypoints = np.nan_to_num(tracks.astype(np.float64), nan=0.0) + HALF_PIXEL
        for t in range(T):
            image_id = db.write_image(pycolmap.Image(name=f"{t:06d}", camera_id=camera_id))
            frame = pycolmap.Frame()
            frame.rig_id = rig_id
            frame.add_data_id(pycolmap.data_t(sensor, image_id))
            db.write_frame(frame)
            db.write_keypoints(image_id, keypoints[t].astype(np.float32))
            image_ids.append(image_id)
        usable = visibility & use[None]
        n_pairs = 0
        for i, j in frame_pairs(T, max_gap):
            shared = np.flatnonzero(usable[i] & usable[j])
            if len(shared) < min_pair_matches:
                continue
            matches = np.stack([shared, shared], 1).astype(np.uint32)
            db.write_matches(image_ids[i], image_ids[j], matches)
            geometry = pycolmap.TwoViewGeometry()
            geometry.config = (pycolmap.TwoViewGeometryConfiguration.CALIBRATED if K is not None
                               else pycolmap.TwoViewGeometryConfiguration.UNCALIBRATED)
            geometry.inlier_matches = matches
            db.write_two_view_geometry(image_ids[i], image_ids[j], geometry)
            n_pairs += 1
        db.close()
        K_out = _K_ours(camera) if K is not None else None
        if n_pairs == 0:
            return MappingResult(nan_pose, K_out if K_out is not None else np.full((3, 3), np.nan),
                                 np.full((N, 3), np.nan), np.full(N, np.nan), None,
                                 "no pair of frames shares enough static tracks")
        if mapper == "global":
            options = pycolmap.GlobalPipelineOptions()
            options.num_threads = num_threads
            options.random_seed = seed
            options.min_model_size = 3
            options.multiple_models = False
            if K is not None:
                options.mapper.bundle_adjustment.refine_focal_length = False
                options.mapper.bundle_adjustment.refine_principal_point = False
            with colmap_log_level():
                models = pycolmap.global_mapping(str(tmp / "database.db"), str(tmp), str(tmp / "sparse"), options)
        else:
            options = pycolmap.IncrementalPipelineOptions()
            options.num_threads = num_threads
            options.random_seed = seed
            options.extract_colors = False
            options.multiple_models = False
            options.min_model_size = 3
            # Global bundle adjustment when the model grew by half (COLMAP: by a tenth): on
            # 24-frame synthetic videos a third faster, same poses (benchmarks/reconstruction.py).
            options.ba_global_frames_ratio = 1.5
            options.ba_global_points_ratio = 1.5
            # COLMAP's pixel thresholds are for features at the image's own resolution.
            options.mapper.init_max_error *= pixel_scale
            options.mapper.abs_pose_max_error *= pixel_scale
            options.mapper.filter_max_reproj_error *= pixel_scale
            options.triangulation.complete_max_reproj_error *= pixel_scale
            options.triangulation.merge_max_reproj_error *= pixel_scale
            if K is not None:
                options.ba_refine_focal_length = False
                options.ba_refine_principal_point = False
                options.ba_refine_extra_params = False
            with colmap_log_level():
                models = pycolmap.incremental_mapping(str(tmp / "database.db"), str(tmp), str(tmp / "sparse"),
                                                      options)
    if not models:
        return MappingResult(nan_pose, K_out if K_out is not None else np.full((3, 3), np.nan),
                             np.full((N, 3), np.nan), np.full(N, np.nan), None,
                             "COLMAP could not initialise a model from any frame pair")
    rec = max(models.values(), key=lambda r: r.num_reg_images())
    return _read_model(rec, T, N, image_ids, n_pairs, mapper)


def _K_ours(camera) -> np.ndarray:
    K = np.array(camera.calibration_matrix(), dtype=np.float64)
    K[0, 2] -= HALF_PIXEL
    K[1, 2] -= HALF_PIXEL
    return K


def _read_model(rec, T: int, N: int, image_ids: list[int], n_pairs: int, mapper: str) -> MappingResult:
    frame_of = {image_id: t for t, image_id in enumerate(image_ids)}
    cam_from_world = np.full((T, 4, 4), np.nan)
    for image_id, image in rec.images.items():
        if image.has_pose:
            pose = np.eye(4)
            pose[:3] = image.cam_from_world().matrix()
            cam_from_world[frame_of[image_id]] = pose
    camera = next(iter(rec.cameras.values()))
    points = np.full((N, 3), np.nan)
    error = np.full(N, np.nan)
    for point in rec.points3D.values():
        for element in point.track.elements:
            n = int(element.point2D_idx)
            if np.isnan(error[n]) or point.error < error[n]:
                points[n], error[n] = point.xyz, point.error
    message = (f"COLMAP {mapper} mapping from {n_pairs} frame pairs: {rec.num_reg_images()}/{T} frames, "
               f"{rec.num_points3D()} points, mean reprojection error {rec.compute_mean_reprojection_error():.2f} px")
    return MappingResult(cam_from_world, _K_ours(camera), points, error, rec, message)


def register_frame(points2d: np.ndarray, points3d: np.ndarray, K: np.ndarray, image_size: tuple[int, int], *,
                   max_error: float = 4.0, min_inliers: int = 6) -> tuple[np.ndarray | None, int]:
    """A camera pose from 2D-3D correspondences (P3P in LO-RANSAC, then refinement), intrinsics fixed.

    Args:
        points2d: ``(M, 2)`` pixels (ours); points3d: ``(M, 3)`` world points.
        K: ``(3, 3)``; image_size: ``(W, H)``.
        max_error: RANSAC threshold, px.
        min_inliers: fewer inliers: no pose.

    Returns:
        ``(cam_from_world (4, 4) or None, number of inliers)``.
    """
    import pycolmap

    if len(points2d) < max(4, min_inliers):
        return None, 0
    W, H = image_size
    camera = pycolmap.Camera.create_from_model_id(1, pycolmap.CameraModelId.PINHOLE, 1.0, W, H)
    camera.params = [K[0, 0], K[1, 1], K[0, 2] + HALF_PIXEL, K[1, 2] + HALF_PIXEL]
    estimation = pycolmap.AbsolutePoseEstimationOptions()
    estimation.ransac.max_error = max_error
    estimation.ransac.random_seed = 0
    refinement = pycolmap.AbsolutePoseRefinementOptions()
    refinement.refine_focal_length = False
    refinement.refine_extra_params = False
    with colmap_log_level():
        result = pycolmap.estimate_and_refine_absolute_pose(
            (points2d + HALF_PIXEL).astype(np.float64), points3d.astype(np.float64), camera, estimation, refinement)
    if result is None or result["num_inliers"] < min_inliers:
        return None, 0 if result is None else int(result["num_inliers"])
    pose = np.eye(4)
    pose[:3] = result["cam_from_world"].matrix()
    return pose, int(result["num_inliers"])


def write_model(reconstruction, path: str | Path, *, text: bool = False) -> Path:
    """Write a ``pycolmap.Reconstruction`` as a COLMAP model folder (binary, or text)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if text:
        reconstruction.write_text(str(path))
    else:
        reconstruction.write(str(path))
    return path
