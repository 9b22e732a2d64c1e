"""Videos with point tracks drawn on them.

- :func:`track_colors` gives every track a stable colour: a rainbow over the
  x position where the track is first seen, so neighbouring points share
  similar hues and the colours do not change from run to run.
- :func:`draw_tracks` draws one frame: a filled disc for a visible point, a
  thin ring for an occluded one, and optional fading tails behind the points.
- :func:`write_overlay_video` streams frames through :func:`draw_tracks` into
  an H.264 mp4 (MPEG-4 Part 2 where libx264 is missing) with PyAV. The video
  is written to a temporary file beside the target and renamed at the end,
  so an interrupted write never leaves a file that looks complete.

Pixel coordinates are ``(x, y)`` with ``(0, 0)`` the centre of the top-left
pixel, which is also where OpenCV draws integer coordinates; points are drawn
with sub-pixel precision (fixed point, 4 fractional bits).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

logger = logging.getLogger(__name__)

_SHIFT = 4  # Fractional bits of the fixed-point coordinates given to OpenCV.
_SCALE = 1 << _SHIFT
_MAX_HUE = 150  # OpenCV hue is 0..179; stop before red comes round again.


def _check_tracks(tracks: np.ndarray, visibility: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tracks = np.asarray(tracks, dtype=np.float32)
    visibility = np.asarray(visibility)
    if tracks.ndim != 3 or tracks.shape[2] != 2:
        raise ValueError(f"tracks must have shape (T, N, 2), got {tracks.shape}")
    if visibility.shape != tracks.shape[:2]:
        raise ValueError(
            f"visibility must have shape (T, N) = {tracks.shape[:2]} to match tracks, "
            f"got {visibility.shape}"
        )
    if visibility.dtype != np.bool_:
        raise ValueError(
            f"visibility must be a boolean array, got {visibility.dtype}; "
            "threshold it first (e.g. visibility > 0.5)"
        )
    return tracks, visibility


def track_colors(tracks: np.ndarray, visibility: np.ndarray) -> np.ndarray:
    """A stable, deterministic colour per track.

    The hue follows the x coordinate where the track is first visible (the
    first finite position if it is never visible), from red on the left to
    blue-violet on the right, scaled over the range of those x coordinates.
    Tracks without any finite position are grey.

    Args:
        tracks: Positions in pixels, ``(x, y)``; NaN where unknown.
        visibility: True where the point is visible.

    Returns:
        RGB colours.

    Shape:
        tracks: ``(T, N, 2)`` float. visibility: ``(T, N)`` bool.
        Returns ``(N, 3)`` uint8.

    Raises:
        ValueError: The shapes do not match or visibility is not boolean.
    """
    tracks, visibility = _check_tracks(tracks, visibility)
    num_tracks = tracks.shape[1]
    finite = np.isfinite(tracks).all(axis=2)  # (T, N)
    seen = finite & visibility
    use = np.where(seen.any(axis=0), seen, finite)  # (T, N): where to take the x from
    has_x = use.any(axis=0)  # (N,)
    first = use.argmax(axis=0)  # (N,): first frame with a usable position
    x0 = tracks[first, np.arange(num_tracks), 0]  # (N,)

    colors = np.full((num_tracks, 3), 128, dtype=np.uint8)
    if has_x.any():
        xs = x0[has_x].astype(np.float64)
        span = xs.max() - xs.min()
        unit = (xs - xs.min()) / span if span > 0 else np.zeros_like(xs)
        hsv = np.empty((1, xs.size, 3), dtype=np.uint8)
        hsv[0, :, 0] = np.round(unit * _MAX_HUE).astype(np.uint8)
        hsv[0, :, 1] = 255
        hsv[0, :, 2] = 255
        colors[has_x] = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]
    return colors


def _fixed(point: np.ndarray) -> tuple[int, int]:
    return int(round(float(point[0]) * _SCALE)), int(round(float(point[1]) * _SCALE))


def default_radius(height: int, width: int) -> int:
    """Point radius in pixels used when none is given: grows with the frame.

    Args:
        height: Frame height in pixels.
        width: Frame width in pixels.

    Returns:
        ``max(2, round(min(height, width) / 160))``.
    """
    return max(2, round(min(height, width) / 160))


def draw_tracks(
    frame: np.ndarray,
    points: np.ndarray,
    visible: np.ndarray,
    colors: np.ndarray,
    *,
    tails: np.ndarray | None = None,
    radius: int | None = None,
) -> np.ndarray:
    """Draw the points of one frame (and optionally their tails) on a copy of it.

    Visible points are filled discs; occluded points are thin rings of the
    same radius, so their centre shows the image. Points with a NaN
    coordinate are skipped. Tails are polylines through earlier positions,
    oldest first, fading in with age; a segment is drawn only when both its
    ends are finite, so mark positions where the point was hidden with NaN.
    The last tail position is joined to the current point when that point is
    visible.

    Args:
        frame: The image, RGB.
        points: Current positions in pixels, ``(x, y)``.
        visible: True where the point is visible.
        colors: RGB colour per point (see :func:`track_colors`).
        tails: Earlier positions, oldest first; NaN where hidden.
        radius: Point radius in pixels; default :func:`default_radius`.

    Returns:
        A new image with the drawing; ``frame`` is not modified.

    Shape:
        frame: ``(H, W, 3)`` uint8. points: ``(N, 2)`` float.
        visible: ``(N,)`` bool. colors: ``(N, 3)`` uint8.
        tails: ``(L, N, 2)`` float. Returns ``(H, W, 3)`` uint8.

    Raises:
        ValueError: A shape or dtype is wrong, or ``radius < 1``.
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(
            f"frame must be an (H, W, 3) uint8 RGB image, got {frame.shape} {frame.dtype}"
        )
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {points.shape}")
    num_points = points.shape[0]
    visible = np.asarray(visible)
    if visible.shape != (num_points,) or visible.dtype != np.bool_:
        raise ValueError(
            f"visible must be a boolean array of shape ({num_points},), "
            f"got {visible.shape} {visible.dtype}"
        )
    colors = np.asarray(colors)
    if colors.shape != (num_points, 3):
        raise ValueError(f"colors must have shape ({num_points}, 3), got {colors.shape}")
    if tails is not None:
        tails = np.asarray(tails, dtype=np.float64)
        if tails.ndim != 3 or tails.shape[1:] != (num_points, 2):
            raise ValueError(f"tails must have shape (L, {num_points}, 2), got {tails.shape}")
    if radius is None:
        radius = default_radius(frame.shape[0], frame.shape[1])
    elif radius < 1:
        raise ValueError(f"radius must be >= 1 pixel, got {radius}")

    out = np.ascontiguousarray(frame).copy()
    color_tuples = [tuple(int(c) for c in color) for color in colors.astype(np.uint8)]
    finite = np.isfinite(points).all(axis=1)

    if tails is not None and len(tails) > 0 and num_points > 0:
        current = np.where((visible & finite)[:, None], points, np.nan)
        path = np.concatenate([tails, current[None]], axis=0)  # (L+1, N, 2)
        ok = np.isfinite(path).all(axis=2)  # (L+1, N)
        segment_ok = ok[:-1] & ok[1:]  # (L, N): segment from path[k] to path[k+1]
        thickness = max(1, radius // 2)
        num_segments = len(segment_ok)
        for age_index in range(num_segments):  # Oldest first: newer segments on top.
            indices = np.flatnonzero(segment_ok[age_index])
            if indices.size == 0:
                continue
            layer = out.copy()
            for n in indices:
                cv2.line(
                    layer,
                    _fixed(path[age_index, n]),
                    _fixed(path[age_index + 1, n]),
                    color_tuples[n],
                    thickness,
                    cv2.LINE_AA,
                    _SHIFT,
                )
            alpha = (age_index + 1) / num_segments
            cv2.addWeighted(layer, alpha, out, 1.0 - alpha, 0.0, dst=out)

    ring = max(1, radius // 3)
    for n in np.flatnonzero(finite & ~visible):
        cv2.circle(out, _fixed(points[n]), radius * _SCALE, color_tuples[n], ring, cv2.LINE_AA, _SHIFT)
    for n in np.flatnonzero(finite & visible):
        cv2.circle(out, _fixed(points[n]), radius * _SCALE, color_tuples[n], -1, cv2.LINE_AA, _SHIFT)
    return out


def _pick_codec() -> str:
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except (av.error.FFmpegError, ValueError):
        logger.warning("libx264 is not available in this PyAV build; writing MPEG-4 Part 2")
        return "mpeg4"


def _pad_even(frame: np.ndarray) -> np.ndarray:
    pad_y, pad_x = frame.shape[0] % 2, frame.shape[1] % 2
    if pad_y or pad_x:
        frame = np.pad(frame, ((0, pad_y), (0, pad_x), (0, 0)), mode="edge")
    return frame


def write_overlay_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    tracks: np.ndarray,
    visibility: np.ndarray,
    *,
    fps: float,
    tail_length: int = 10,
    colors: np.ndarray | None = None,
) -> Path:
    """Encode a video of ``frames`` with the tracks drawn on them.

    Frames are consumed one at a time, so a generator keeps memory flat. The
    file is an mp4 (H.264, yuv420p, CRF 20; MPEG-4 Part 2 if libx264 is
    missing). H.264 needs an even width and height: an odd frame is padded
    by one pixel (edge replicated) on the right or bottom, which does not
    move any coordinate. The video is written to a hidden temporary file
    beside ``path`` and renamed onto it on success; on failure nothing is
    left behind. An existing file at ``path`` is replaced.

    Args:
        path: Output file, normally ``*.mp4``; parent folders are created.
        frames: RGB frames, as many as ``tracks`` has time steps.
        tracks: Positions in pixels, ``(x, y)``; NaN where unknown.
        visibility: True where the point is visible.
        fps: Frame rate of the output.
        tail_length: How many earlier positions to draw behind each point
            (0 for none); hidden positions break the tail.
        colors: RGB colour per track; default :func:`track_colors`.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Shape:
        frames: each ``(H, W, 3)`` uint8, all the same size.
        tracks: ``(T, N, 2)`` float32. visibility: ``(T, N)`` bool.
        colors: ``(N, 3)`` uint8.

    Raises:
        ValueError: Shapes do not match, ``fps`` is not positive, the frames
            change size, or the number of frames is not ``T``.
    """
    path = Path(path)
    tracks, visibility = _check_tracks(tracks, visibility)
    num_steps, num_tracks = visibility.shape
    if num_steps == 0:
        raise ValueError("tracks has no time steps (T = 0); there is nothing to write")
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if tail_length < 0:
        raise ValueError(f"tail_length must be >= 0, got {tail_length}")
    if colors is None:
        colors = track_colors(tracks, visibility)
    colors = np.asarray(colors)
    if colors.shape != (num_tracks, 3):
        raise ValueError(f"colors must have shape ({num_tracks}, 3), got {colors.shape}")
    hidden_as_nan = np.where(visibility[..., None], tracks, np.nan)

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}.mp4")
    codec = _pick_codec()
    container = av.open(str(temporary), mode="w", format="mp4")
    try:
        stream = None
        first_shape = None
        count = 0
        for frame in frames:
            if count >= num_steps:
                raise ValueError(
                    f"more frames than tracks has time steps (T = {num_steps}); pass the "
                    "frames the tracks were computed on"
                )
            frame = np.asarray(frame)
            if first_shape is None:
                first_shape = frame.shape
            elif frame.shape != first_shape:
                raise ValueError(
                    f"frame {count} has shape {frame.shape}, frame 0 had {first_shape}; "
                    "all frames must have the same size"
                )
            tails = hidden_as_nan[max(0, count - tail_length) : count] if tail_length else None
            drawn = _pad_even(
                draw_tracks(frame, tracks[count], visibility[count], colors, tails=tails)
            )
            if stream is None:
                stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height = drawn.shape[1], drawn.shape[0]
                stream.pix_fmt = "yuv420p"
                if codec == "libx264":
                    stream.options = {"crf": "20", "preset": "medium"}
                else:
                    stream.bit_rate = max(1_000_000, int(drawn.shape[0] * drawn.shape[1] * fps * 0.25))
            video_frame = av.VideoFrame.from_ndarray(drawn, format="rgb24")
            container.mux(stream.encode(video_frame))
            count += 1
        if count != num_steps:
            raise ValueError(
                f"got {count} frames but tracks has T = {num_steps} time steps; pass the "
                "frames the tracks were computed on"
            )
        container.mux(stream.encode(None))
        container.close()
        os.replace(temporary, path)
    except BaseException:
        try:
            container.close()
        except Exception:  # The original error matters more than a failed close.
            logger.debug("closing the partial video %s failed", temporary, exc_info=True)
        temporary.unlink(missing_ok=True)
        raise
    logger.info("wrote %s (%d frames, %d tracks, %s)", path, count, num_tracks, codec)
    return path


def write_video(path: str | Path, frames: Iterable[np.ndarray], *, fps: float, num_frames: int) -> Path:
    """Encode ``num_frames`` RGB ``frames`` as an mp4 with nothing drawn (see :func:`write_overlay_video`)."""
    return write_overlay_video(path, frames, np.zeros((num_frames, 0, 2), np.float32),
                               np.zeros((num_frames, 0), bool), fps=fps, tail_length=0)
