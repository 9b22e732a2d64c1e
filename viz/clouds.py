"""Point clouds for other tools: colours from the video, Open3D clouds, PLY and GLB files.

- :func:`sample_colors` gives each track the median colour of the video where
  the track is seen.
- :func:`point_cloud` builds an ``open3d.geometry.PointCloud``, with Open3D's
  own statistical outlier removal, voxel down-sampling and normal estimation
  on request; :func:`write_ply` writes one as a binary PLY.
- :func:`write_dynamic_glb` writes the moving points as a glTF binary scene,
  one point-cloud node per frame, for viewers that step through nodes.

Coordinates are written as they are (the reconstruction's world, OpenCV
camera convention); nothing is rotated to the +Y-up convention of glTF.
Open3D is imported inside the functions (it is slow to import), and its
console messages are kept to errors while they run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

UNSEEN_COLOR = (128, 128, 128)  # Tracks never visible inside the frame.
MOVING_COLOR = (255, 110, 0)  # Default colour of moving points in the GLB.


@contextlib.contextmanager
def _quiet_open3d():
    import open3d as o3d

    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        yield o3d


def _check_output(path: str | Path) -> Path:
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"the folder {path.parent} does not exist; create it first")
    return path


def sample_colors(
    frames: Iterable[np.ndarray],
    tracks: np.ndarray,
    visibility: np.ndarray,
    which: np.ndarray | None = None,
) -> np.ndarray:
    """The median video colour of each track where it is visible.

    Each visible position is rounded to the nearest pixel (halves up); those
    that fall outside the frame, or are NaN, are not used. The median is
    taken per channel over the frames that remain and rounded to the nearest
    integer. Frames are consumed one at a time (a generator is fine).

    Args:
        frames: RGB video frames, exactly ``T`` of them.
        tracks: Positions in pixels, ``(x, y)``, (0, 0) the centre of the
            top-left pixel.
        visibility: True where the point is visible.
        which: The tracks to colour, as indices (or a boolean mask over the
            ``N`` tracks); default all, in order.

    Returns:
        RGB colour per selected track; grey ``(128, 128, 128)`` for a track
        never visible inside the frame.

    Shape:
        frames: each ``(H, W, 3)`` uint8. tracks: ``(T, N, 2)``.
        visibility: ``(T, N)`` bool. which: ``(M,)``. Returns ``(M, 3)`` uint8.

    Raises:
        ValueError: A shape or dtype is wrong, an index is out of range, or
            the number of frames is not ``T``.
    """
    tracks = np.asarray(tracks, dtype=np.float64)
    if tracks.ndim != 3 or tracks.shape[2] != 2:
        raise ValueError(f"tracks must have shape (T, N, 2), got {tracks.shape}")
    num_steps, num_tracks = tracks.shape[:2]
    visibility = np.asarray(visibility)
    if visibility.shape != (num_steps, num_tracks) or visibility.dtype != np.bool_:
        raise ValueError(f"visibility must be a boolean array of shape {(num_steps, num_tracks)}, "
                         f"got {visibility.shape} {visibility.dtype}")
    if which is None:
        which = np.arange(num_tracks)
    which = np.asarray(which)
    if which.dtype == np.bool_:
        if which.shape != (num_tracks,):
            raise ValueError(f"which as a mask must have shape ({num_tracks},), got {which.shape}")
        which = np.flatnonzero(which)
    if which.ndim != 1 or (which.size and not np.issubdtype(which.dtype, np.integer)):
        raise ValueError(f"which must be a 1D array of track indices, got {which.shape} {which.dtype}")
    which = which.astype(np.intp)
    if which.size and (which.min() < -num_tracks or which.max() >= num_tracks):
        raise ValueError(f"which has indices outside 0..{num_tracks - 1}")

    samples = np.full((num_steps, which.size, 3), np.nan, np.float32)
    count = 0
    for frame in frames:
        if count >= num_steps:
            raise ValueError(f"more frames than tracks has time steps (T = {num_steps})")
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame {count} must be an (H, W, 3) uint8 RGB image, "
                             f"got {frame.shape} {frame.dtype}")
        height, width = frame.shape[:2]
        with np.errstate(invalid="ignore"):
            pixel = np.floor(tracks[count, which] + 0.5)  # (M, 2), NaN stays NaN
            use = (visibility[count, which] & (pixel[:, 0] >= 0) & (pixel[:, 0] < width)
                   & (pixel[:, 1] >= 0) & (pixel[:, 1] < height))
        x, y = pixel[use].astype(np.intp).T
        samples[count, use] = frame[y, x]
        count += 1
    if count != num_steps:
        raise ValueError(f"got {count} frames but tracks has T = {num_steps} time steps")

    # Median without nanmedian's warnings: NaN sorts last, so the k samples come first.
    colors = np.full((which.size, 3), UNSEEN_COLOR, np.uint8)
    if num_steps == 0:
        return colors
    seen = np.isfinite(samples[..., 0]).sum(axis=0)  # (M,)
    ordered = np.sort(samples, axis=0)
    columns = np.arange(which.size)
    low = ordered[np.maximum(seen - 1, 0) // 2, columns]  # (M, 3)
    high = ordered[np.minimum(seen // 2, num_steps - 1), columns]
    ok = seen > 0
    colors[ok] = np.floor((low[ok] + high[ok]) / 2 + 0.5).astype(np.uint8)
    return colors


def point_cloud(
    points: np.ndarray,
    colors: np.ndarray | None = None,
    *,
    remove_outliers: bool = False,
    nb_neighbors: int = 20,
    std_ratio: float = 2.0,
    voxel_size: float | None = None,
    normals: bool = False,
):
    """An Open3D point cloud of the finite points, cleaned on request.

    Steps, in order: rows with a NaN (or infinite) coordinate are dropped;
    Open3D's statistical outlier removal (``remove_statistical_outlier``:
    a point goes when its mean distance to ``nb_neighbors`` neighbours exceeds
    the mean over all points by ``std_ratio`` standard deviations); voxel
    down-sampling (``voxel_down_sample``: one point per occupied voxel,
    coordinates and colours averaged); normal estimation
    (``estimate_normals`` on 30 neighbours, within ``2 * voxel_size`` when
    down-sampled; their sign is arbitrary).

    Args:
        points: 3D points; NaN rows are dropped.
        colors: RGB per point, integers (0-255) or floats (0-1); None for none.
        remove_outliers: Run the statistical outlier removal.
        nb_neighbors: Neighbours it looks at.
        std_ratio: Its threshold, in standard deviations.
        voxel_size: Edge of the down-sampling voxels, in world units; None
            for no down-sampling.
        normals: Estimate normals.

    Returns:
        ``open3d.geometry.PointCloud``.

    Shape:
        points: ``(M, 3)``. colors: ``(M, 3)``.

    Raises:
        ValueError: A shape is wrong, or a parameter is not positive.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (M, 3), got {points.shape}")
    if colors is not None:
        colors = np.asarray(colors)
        if colors.shape != points.shape:
            raise ValueError(f"colors must have shape {points.shape} to match points, got {colors.shape}")
        colors = colors / 255.0 if np.issubdtype(colors.dtype, np.integer) else colors.astype(np.float64)
    if nb_neighbors < 1 or not std_ratio > 0:
        raise ValueError(f"nb_neighbors must be >= 1 and std_ratio > 0, got {nb_neighbors}, {std_ratio}")
    if voxel_size is not None and not voxel_size > 0:
        raise ValueError(f"voxel_size must be positive or None, got {voxel_size}")

    keep = np.isfinite(points).all(axis=1)
    with _quiet_open3d() as o3d:
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points[keep]))
        if colors is not None:
            cloud.colors = o3d.utility.Vector3dVector(np.clip(colors[keep], 0.0, 1.0))
        if remove_outliers and len(cloud.points) > 0:
            cloud, _ = cloud.remove_statistical_outlier(nb_neighbors=int(nb_neighbors),
                                                        std_ratio=float(std_ratio))
        if voxel_size is not None:
            cloud = cloud.voxel_down_sample(float(voxel_size))
        if normals:
            search = (o3d.geometry.KDTreeSearchParamHybrid(radius=2.0 * voxel_size, max_nn=30)
                      if voxel_size is not None else o3d.geometry.KDTreeSearchParamKNN(knn=30))
            cloud.estimate_normals(search)
    logger.debug("point cloud: %d finite of %d points, %d kept", int(keep.sum()), len(points),
                 len(cloud.points))
    return cloud


def write_ply(path: str | Path, points: np.ndarray, colors: np.ndarray | None = None,
              **cloud_options) -> Path:
    """Write a binary PLY of a point cloud with ``open3d.io.write_point_cloud``.

    The file is written under a hidden temporary name beside ``path`` and
    renamed onto it, so an interrupted write leaves no partial file.

    Args:
        path: Output file, ``*.ply``; its folder must exist.
        points: 3D points; NaN rows are dropped.
        colors: RGB per point, integers (0-255) or floats (0-1); stored as 8 bits.
        **cloud_options: Passed to :func:`point_cloud` (``remove_outliers``,
            ``voxel_size``, ``normals``, ...).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Shape:
        points: ``(M, 3)``. colors: ``(M, 3)``.

    Raises:
        FileNotFoundError: The folder of ``path`` does not exist.
        ValueError: As :func:`point_cloud`, or no finite point is left.
        OSError: Open3D could not write the file.
    """
    path = _check_output(path)
    cloud = point_cloud(points, colors, **cloud_options)
    if len(cloud.points) == 0:
        raise ValueError("no finite point is left to write; Open3D cannot write an empty PLY")
    temporary = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}.ply")
    with _quiet_open3d() as o3d:
        written = o3d.io.write_point_cloud(str(temporary), cloud, write_ascii=False)
    if not written:
        temporary.unlink(missing_ok=True)
        raise OSError(f"Open3D could not write {path}")
    os.replace(temporary, path)
    logger.info("wrote %s (%d points)", path, len(cloud.points))
    return path


def write_dynamic_glb(
    path: str | Path,
    trajectories: np.ndarray,
    is_dynamic: np.ndarray,
    colors: np.ndarray | None = None,
    frame_indices: Iterable[int] | None = None,
) -> Path:
    """Write the moving points as a GLB scene with one point-cloud node per frame.

    The node of frame ``t`` is named ``f"frame_{frame_indices[t]:06d}"``
    (``frame_indices`` default ``0..T-1``) and holds a ``trimesh.PointCloud``
    (glTF ``POINTS``) of the moving tracks whose 3D position at ``t`` is
    known, in track order. A frame where none is known is a node with no
    geometry (glTF cannot store an empty point set).

    Args:
        path: Output file, ``*.glb``; its folder must exist.
        trajectories: 3D position of every track per frame, world
            coordinates, NaN where unknown.
        is_dynamic: True for the moving tracks; only those are written.
        colors: RGB per track (over all ``N`` tracks); default orange.
        frame_indices: The number each frame's node is named by, e.g. the
            index of each tracked frame in the source video; default
            ``0..T-1``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Shape:
        trajectories: ``(T, N, 3)``. is_dynamic: ``(N,)`` bool.
        colors: ``(N, 3)`` uint8. frame_indices: ``(T,)`` int.

    Raises:
        FileNotFoundError: The folder of ``path`` does not exist.
        ValueError: A shape or dtype is wrong, or ``frame_indices`` are not
            ``T`` distinct non-negative integers.
    """
    import trimesh

    path = _check_output(path)
    trajectories = np.asarray(trajectories, dtype=np.float64)
    if trajectories.ndim != 3 or trajectories.shape[2] != 3:
        raise ValueError(f"trajectories must have shape (T, N, 3), got {trajectories.shape}")
    num_steps, num_tracks = trajectories.shape[:2]
    is_dynamic = np.asarray(is_dynamic)
    if is_dynamic.shape != (num_tracks,) or is_dynamic.dtype != np.bool_:
        raise ValueError(f"is_dynamic must be a boolean array of shape ({num_tracks},), "
                         f"got {is_dynamic.shape} {is_dynamic.dtype}")
    if colors is None:
        colors = np.broadcast_to(np.array(MOVING_COLOR, np.uint8), (num_tracks, 3))
    colors = np.asarray(colors)
    if colors.shape != (num_tracks, 3):
        raise ValueError(f"colors must have shape ({num_tracks}, 3), got {colors.shape}")
    indices = np.arange(num_steps) if frame_indices is None else np.asarray(frame_indices)
    if (indices.shape != (num_steps,) or (indices.size and not np.issubdtype(indices.dtype, np.integer))
            or (indices < 0).any() or len(np.unique(indices)) != num_steps):
        raise ValueError(f"frame_indices must be {num_steps} distinct non-negative integers (one per "
                         f"frame of trajectories), got {indices.shape} {indices.dtype}")

    moving = trajectories[:, is_dynamic]  # (T, D, 3)
    rgba = np.concatenate([colors[is_dynamic].astype(np.uint8),
                           np.full((int(is_dynamic.sum()), 1), 255, np.uint8)], axis=1)
    scene = trimesh.Scene()
    for t, index in enumerate(indices.tolist()):
        name = f"frame_{index:06d}"
        known = np.isfinite(moving[t]).all(axis=1)
        if known.any():
            scene.add_geometry(trimesh.PointCloud(moving[t, known], colors=rgba[known]),
                               node_name=name, geom_name=name)
        else:
            scene.graph.update(frame_to=name, frame_from=scene.graph.base_frame)
    data = scene.export(file_type="glb")
    temporary = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}.glb")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    logger.info("wrote %s (%d frames, %d moving tracks)", path, len(indices), int(is_dynamic.sum()))
    return path
