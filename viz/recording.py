"""A Rerun recording (``.rrd``) of a reconstruction: cameras, video, 2D tracks and 3D.

:func:`write_recording` writes the file with Rerun's own API (a
``RecordingStream`` saved to disk; no viewer is started). Open it with
``rerun recording.rrd``.

Timelines: ``frame`` (sequence, the frame index) and ``time`` (duration:
each frame's presentation time when ``timestamps`` are given, which keeps a
variable frame rate's real times, else ``frame / fps`` seconds).

Layout of the recording:

- ``world``: the reconstruction's world frame, whatever gauge the solver
  chose; it has no known "up". It is declared ``RDF`` (x right, y down,
  z forward, the cameras' own convention), static, so a world that starts
  near the first camera is seen the way that camera saw it.
- ``world/camera``: per registered frame, a ``Transform3D`` holding
  ``cam_from_world`` as it is, marked ``relation=ChildFromParent`` (Rerun
  inverts it), and a ``Pinhole`` (intrinsics, resolution, ``camera_xyz=RDF``:
  the OpenCV convention stated explicitly) that draws the frustum. A frame
  that is not registered (NaN pose) gets a ``Clear`` instead, so no stale
  camera is shown.
- ``camera_status``: per frame, a ``TextLog`` saying how that frame's camera
  was solved, when ``camera_kind`` is given: ``full`` (INFO), ``rotation-only``
  (WARN: the centre is held fixed, no parallax there) or ``unsolved`` with
  the reason (ERROR), so the viewer's log and timeline show rotation-only and
  unsolved frames distinctly.
- ``world/camera/image``: the video frame (JPEG by default), when frames are
  given.
- ``world/camera/image/tracks``: per frame, ``Points2D`` of the tracks visible
  in it; static tracks blue-grey, moving tracks orange.
- ``world/static_points``: ``Points3D`` of the static cloud with its colours,
  static data (logged once, shown at every time).
- ``world/moving_points``: per frame, ``Points3D`` of the moving tracks whose
  3D position at that frame is known: orange, or, when ``reliability`` is
  given, coloured by it (:func:`reliability_colors`: red at 0, amber at 0.5,
  green at 1), each point carrying two extra components shown when it is
  selected in the viewer, ``reliability`` (float) and ``track`` (its index in
  the result's arrays). Tracks less reliable than ``min_reliability`` are not
  shown (nor their tails).
- ``world/moving_tails``: per frame, ``LineStrips3D`` behind the moving
  points (orange): one two-point strip per pair of consecutive known positions
  among the last ``tail`` frames (a NaN breaks the tail).

Every per-frame entity is logged at every frame, empty where there is nothing
to show, so nothing from an earlier frame lingers.

Pixels: the project puts ``(0, 0)`` at the centre of the top-left pixel; the
Rerun viewer puts pixel centres at ``(0.5, 0.5)``. Both the 2D tracks and the
principal point are shifted by half a pixel on the way in, so points sit on
the pixels they were tracked on and rays go through them.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa  # Rerun's own dependency
import rerun as rr

logger = logging.getLogger(__name__)

STATIC_TRACK_COLOR = (120, 140, 170)  # Blue-grey.
MOVING_COLOR = (255, 110, 0)  # Orange.
CLOUD_COLOR = (170, 170, 170)  # Static points without colours.
_HALF_PIXEL = 0.5  # Rerun's pixel centres minus the project's.
RELIABILITY_STOPS = ((0.0, (220, 40, 40)), (0.5, (255, 170, 0)), (1.0, (40, 200, 80)))
"""Colour map of reliability: red (0), amber (0.5), green (1), linear in between."""


def reliability_colors(reliability: np.ndarray) -> np.ndarray:
    """RGB colours of reliabilities in ``[0, 1]`` (:data:`RELIABILITY_STOPS`; NaN counts as 0).

    Shape:
        reliability: ``(D,)``. Returns ``(D, 3)`` uint8.
    """
    r = np.clip(np.nan_to_num(np.asarray(reliability, np.float64)), 0.0, 1.0)
    stops = np.array([v for v, _ in RELIABILITY_STOPS])
    colors = np.array([c for _, c in RELIABILITY_STOPS], np.float64)
    return np.stack([np.interp(r, stops, colors[:, k]) for k in range(3)], axis=-1).round().astype(np.uint8)


def _array(name: str, value, shape: tuple, dtype=np.float64) -> np.ndarray:
    """``value`` as an array of ``shape`` (None: any size there), else a ValueError naming it."""
    array = np.asarray(value)
    if array.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, array.shape)):
        wanted = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {wanted}, got {array.shape}")
    if dtype is bool:
        if array.dtype != np.bool_:
            raise ValueError(f"{name} must be a boolean array, got {array.dtype}")
        return array
    return array.astype(dtype, copy=False)


def _tail_segments(trajectories: np.ndarray, t: int, tail: int) -> np.ndarray:
    """Segments between consecutive known positions in frames ``t - tail .. t``: ``(S, 2, 3)``."""
    window = trajectories[max(0, t - tail) : t + 1]  # (L, D, 3)
    if len(window) < 2:
        return np.zeros((0, 2, 3), np.float32)
    ok = np.isfinite(window).all(axis=2)
    both = ok[:-1] & ok[1:]  # (L-1, D)
    start = window[:-1][both]
    end = window[1:][both]
    return np.stack([start, end], axis=1).astype(np.float32)


def _encode(frame: np.ndarray, jpeg_quality: int | None):
    if jpeg_quality is None:
        return rr.Image(frame, color_model="RGB")
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    if not ok:
        raise ValueError(f"JPEG encoding of a {frame.shape} frame failed")
    return rr.EncodedImage(contents=data.tobytes(), media_type="image/jpeg")


def _camera_status(t: int, kind: str, registered: bool, reason: str | None) -> rr.TextLog:
    if not registered or kind == "none":
        return rr.TextLog(f"frame {t}: camera unsolved" + (f" ({reason})" if reason else ""),
                          level=rr.TextLogLevel.ERROR)
    if kind == "rotation":
        return rr.TextLog(f"frame {t}: rotation-only camera (centre held fixed: no parallax)",
                          level=rr.TextLogLevel.WARN)
    return rr.TextLog(f"frame {t}: camera {'still (identity)' if kind == 'identity' else 'solved'}",
                      level=rr.TextLogLevel.INFO)


def write_recording(
    path: str | Path,
    *,
    tracks: np.ndarray,
    visibility: np.ndarray,
    is_dynamic: np.ndarray,
    cam_from_world: np.ndarray,
    K: np.ndarray,
    points: np.ndarray,
    trajectories: np.ndarray,
    frame_size: tuple[int, int],
    fps: float,
    frames: Iterable[np.ndarray] | None = None,
    point_colors: np.ndarray | None = None,
    tail: int = 10,
    application_id: str = "track3d",
    progress: Callable[[int, int], None] | None = None,
    jpeg_quality: int | None = 90,
    camera_kind: np.ndarray | None = None,
    unsolved: dict[int, str] | None = None,
    reliability: np.ndarray | None = None,
    min_reliability: float = 0.0,
    timestamps: np.ndarray | None = None,
) -> Path:
    """Write a Rerun recording of a reconstruction (layout: see the module docstring).

    Frames are consumed one at a time, so a generator keeps memory flat. The
    file is written beside ``path`` under a hidden temporary name and renamed
    onto it on success; on failure nothing is left behind. An existing file
    is replaced.

    Args:
        path: Output file, normally ``*.rrd``; parent folders are created.
        tracks: 2D positions in pixels, ``(x, y)``, (0, 0) the centre of the
            top-left pixel; NaN where unknown.
        visibility: True where the point is visible.
        is_dynamic: True for the tracks that move independently of the camera.
        cam_from_world: OpenCV poses (x right, y down, z forward); a frame with
            any NaN is not registered and shows no camera.
        K: Intrinsics per frame (or one for all), pixels, same pixel
            convention as ``tracks``; a frame whose K has a NaN gets no frustum.
        points: The static point cloud, world coordinates.
        trajectories: 3D position of every track per frame, world
            coordinates, NaN where unknown; only the moving tracks are used.
        frame_size: ``(W, H)`` of the video in pixels.
        fps: Frame rate, for the ``time`` timeline when ``timestamps`` is None.
        timestamps: ``(T,)`` seconds of each frame (e.g. ``tracks.npz``'s
            ``timestamps``) for the ``time`` timeline.
        frames: RGB video frames, exactly ``T`` of them, or None for none.
        point_colors: RGB colour per static point; default light grey.
        tail: How many earlier frames the tails of moving points reach back
            (0 for no tails).
        application_id: The Rerun application id shown in the viewer.
        progress: Called as ``progress(done, total)`` after each frame.
        jpeg_quality: JPEG quality (1-100) of the stored frames; None stores
            raw RGB (several times larger).
        camera_kind: ``(T,)`` str per frame, ``"full"``, ``"rotation"``,
            ``"identity"`` or ``"none"`` (:attr:`recon.Reconstruction.camera_kind`);
            logged to ``camera_status``. None: nothing logged there.
        unsolved: ``{frame: reason}`` for unsolved frames (shown in their log line).
        reliability: ``(N,)`` in ``[0, 1]`` per track, how well its 3D is determined
            (:attr:`recon.Reconstruction.reliability`); colours the moving
            points and is stored with each. None: orange points.
        min_reliability: moving tracks with a lower ``reliability`` are not
            shown in 3D (points and tails); their 2D tracks still are.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Shape:
        tracks: ``(T, N, 2)``. visibility: ``(T, N)`` bool. is_dynamic:
        ``(N,)`` bool. cam_from_world: ``(T, 4, 4)``. K: ``(T, 3, 3)`` or
        ``(3, 3)``. points: ``(M, 3)``. point_colors: ``(M, 3)`` uint8.
        trajectories: ``(T, N, 3)``. frames: each ``(H, W, 3)`` uint8.

    Raises:
        ValueError: A shape or dtype is wrong, ``fps``, ``frame_size``,
            ``tail``, ``jpeg_quality`` or ``min_reliability`` is out of range, or the frames do not
            match ``frame_size`` or ``T`` in size or number.
    """
    path = Path(path)
    tracks = _array("tracks", tracks, (None, None, 2), np.float32)
    num_steps, num_tracks = tracks.shape[:2]
    if num_steps == 0:
        raise ValueError("tracks has no time steps (T = 0); there is nothing to write")
    visibility = _array("visibility", visibility, (num_steps, num_tracks), bool)
    is_dynamic = _array("is_dynamic", is_dynamic, (num_tracks,), bool)
    cam_from_world = _array("cam_from_world", cam_from_world, (num_steps, 4, 4))
    K = np.asarray(K, dtype=np.float64)
    if K.shape == (3, 3):
        K = np.broadcast_to(K, (num_steps, 3, 3))
    if K.shape != (num_steps, 3, 3):
        raise ValueError(f"K must have shape ({num_steps}, 3, 3) (one per frame) or (3, 3), got {K.shape}")
    points = _array("points", points, (None, 3), np.float32)
    if point_colors is None:
        point_colors = np.broadcast_to(np.array(CLOUD_COLOR, np.uint8), points.shape)
    point_colors = _array("point_colors", point_colors, (len(points), 3), np.uint8)
    trajectories = _array("trajectories", trajectories, (num_steps, num_tracks, 3))
    try:
        width, height = (int(v) for v in frame_size)
    except (TypeError, ValueError):
        raise ValueError(f"frame_size must be (W, H), got {frame_size!r}") from None
    if width < 1 or height < 1:
        raise ValueError(f"frame_size must be positive, got {width}x{height}")
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if timestamps is not None:
        timestamps = np.asarray(timestamps, dtype=np.float64)
        if timestamps.shape != (num_steps,) or not np.isfinite(timestamps).all():
            raise ValueError(f"timestamps must be {num_steps} finite seconds, got shape {timestamps.shape}")
    if tail < 0:
        raise ValueError(f"tail must be >= 0 frames, got {tail}")
    if jpeg_quality is not None and not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100 or None, got {jpeg_quality}")

    if not 0.0 <= min_reliability <= 1.0:
        raise ValueError(f"min_reliability must be in [0, 1], got {min_reliability}")
    shown_3d = is_dynamic.copy()
    if reliability is not None:
        reliability = np.nan_to_num(_array("reliability", reliability, (num_tracks,), np.float32))
        shown_3d &= reliability >= min_reliability
    elif min_reliability > 0:
        raise ValueError("min_reliability needs the tracks' reliability")

    registered = np.isfinite(cam_from_world).all(axis=(1, 2))
    if camera_kind is not None:
        camera_kind = np.asarray(camera_kind).astype(str)
        if camera_kind.shape != (num_steps,):
            raise ValueError(f"camera_kind must have shape ({num_steps},), got {camera_kind.shape}")
    unsolved = unsolved or {}
    known_K = np.isfinite(K).all(axis=(1, 2))
    moving_tracks = np.flatnonzero(shown_3d)  # (D,)
    moving = trajectories[:, moving_tracks].astype(np.float32)  # (T, D, 3)
    if reliability is not None:
        moving_reliability = reliability[moving_tracks]
        moving_colors = reliability_colors(moving_reliability)
    finite_2d = np.isfinite(tracks).all(axis=2)
    track_colors = np.where(is_dynamic[:, None], np.array(MOVING_COLOR, np.uint8),
                            np.array(STATIC_TRACK_COLOR, np.uint8))  # (N, 3)
    point_radius = rr.Radius.ui_points(2.0)
    frame_iter = iter(frames) if frames is not None else None

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}.rrd")
    rec = rr.RecordingStream(application_id)
    try:
        rec.save(temporary)
        rec.set_log_time_enabled(False)  # Only the two timelines above.
        rec.log("world", rr.ViewCoordinates.RDF, static=True)
        rec.log("world/static_points",
                rr.Points3D(points, colors=point_colors, radii=point_radius), static=True)
        for t in range(num_steps):
            rec.set_time("frame", sequence=t)
            rec.set_time("time", duration=float(timestamps[t]) if timestamps is not None else t / fps)
            if registered[t]:
                pose = cam_from_world[t]
                rec.log("world/camera", rr.Transform3D(
                    translation=pose[:3, 3], mat3x3=pose[:3, :3],
                    relation=rr.TransformRelation.ChildFromParent))
                if known_K[t]:
                    image_from_camera = K[t].copy()
                    image_from_camera[:2, 2] += _HALF_PIXEL
                    rec.log("world/camera", rr.Pinhole(
                        image_from_camera=image_from_camera, resolution=[width, height],
                        camera_xyz=rr.ViewCoordinates.RDF))
            else:
                rec.log("world/camera", rr.Clear(recursive=False))
            if camera_kind is not None:
                rec.log("camera_status", _camera_status(t, camera_kind[t], registered[t], unsolved.get(t)))
            if frame_iter is not None:
                frame = next(frame_iter, None)
                if frame is None:
                    raise ValueError(f"got {t} frames but tracks has T = {num_steps} time steps")
                frame = np.asarray(frame)
                if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
                    raise ValueError(
                        f"frame {t} must be ({height}, {width}, 3) uint8 to match frame_size, "
                        f"got {frame.shape} {frame.dtype}")
                rec.log("world/camera/image", _encode(frame, jpeg_quality))
            shown = visibility[t] & finite_2d[t]
            rec.log("world/camera/image/tracks", rr.Points2D(
                tracks[t, shown] + _HALF_PIXEL, colors=track_colors[shown], radii=point_radius))
            known = np.isfinite(moving[t]).all(axis=1)
            if reliability is None:
                rec.log("world/moving_points", rr.Points3D(
                    moving[t, known], colors=MOVING_COLOR, radii=rr.Radius.ui_points(3.0)))
            else:
                rec.log("world/moving_points", rr.Points3D(
                    moving[t, known], colors=moving_colors[known], radii=rr.Radius.ui_points(3.0)),
                    # Arrow arrays: AnyValues refuses empty numpy arrays (a frame with no known point).
                    rr.AnyValues(reliability=pa.array(moving_reliability[known]),
                                 track=pa.array(moving_tracks[known].astype(np.int32))))
            if tail > 0:
                rec.log("world/moving_tails", rr.LineStrips3D(
                    _tail_segments(moving, t, tail), colors=MOVING_COLOR,
                    radii=rr.Radius.ui_points(1.0)))
            if progress is not None:
                progress(t + 1, num_steps)
        if frame_iter is not None and next(frame_iter, None) is not None:
            raise ValueError(f"more frames than tracks has time steps (T = {num_steps})")
        rec.flush()
        rec.disconnect()  # Finishes the file (footer included).
        os.replace(temporary, path)
    except BaseException:
        try:
            rec.disconnect()
        except Exception:  # The original error matters more than a failed close.
            logger.debug("closing the partial recording %s failed", temporary, exc_info=True)
        temporary.unlink(missing_ok=True)
        raise
    logger.info("wrote %s (%d frames, %d registered, %d tracks, %d moving (%d shown in 3D), %d static points)",
                path, num_steps, int(registered.sum()), num_tracks, int(is_dynamic.sum()), len(moving_tracks),
                len(points))
    return path
