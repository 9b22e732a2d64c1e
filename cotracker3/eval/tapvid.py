"""TAP-Vid evaluation: metrics, query sampling and coordinate conventions.

This module re-implements, from the published definitions, the evaluation of
the TAP-Vid benchmark (Doersch et al., "TAP-Vid: A Benchmark for Tracking Any
Point in a Video", NeurIPS 2022) so that its numbers can be compared with the
ones reported by the reference evaluator of ``google-deepmind/tapnet``. It
depends on numpy only.

Two layouts meet here:

* **tapnet's layout** (used by :func:`compute_tapvid_metrics`,
  :func:`sample_queries_first` and :func:`sample_queries_strided`, which keep
  tapnet's signatures): batched, point-major arrays; tracks ``(B, N, T, 2)``
  as ``(x, y)``; occlusion flags ``(B, N, T)`` (True = occluded); queries
  ``(B, N, 3)`` as ``(t, y, x)``; coordinates in *raster* units, where
  ``(0, 0)`` is the top-left corner of the top-left pixel and the centre of
  that pixel is ``(0.5, 0.5)``.
* **our layout** (used by :func:`tapvid_queries` and :func:`evaluate_tracks`):
  unbatched, time-major arrays; tracks ``(T, N, 2)`` float32 ``(x, y)``;
  visibility ``(T, N)`` bool (True = visible); queries ``(t, x, y)``;
  coordinates in *pixels*, where ``(0, 0)`` is the centre of the top-left
  pixel.

The TAP-Vid files store positions normalised to ``[0, 1]`` by the image size,
with the origin at the image corner: tapnet multiplies them by ``(width,
height)`` to get raster coordinates, so ``raster = norm * size`` and
``pixel = raster - 0.5 = norm * size - 0.5``. :func:`tapvid_to_pixels` and
:func:`pixels_to_tapvid` are the only place where that conversion is written.

The metrics (all in ``[0, 1]``; papers print them times 100):

* ``occlusion_accuracy``: fraction of evaluated frames whose predicted
  occlusion flag equals the ground truth.
* ``pts_within_d`` for ``d`` in :data:`THRESHOLDS`: among evaluated frames
  where the ground truth is visible, the fraction whose prediction lies
  strictly closer than ``d`` pixels (predicted visibility is ignored).
* ``jaccard_d``: true positives / (true positives + false positives + false
  negatives), where a true positive is a frame where ground truth and
  prediction are both visible and closer than ``d``; a false positive is a
  frame predicted visible where the ground truth is occluded or farther than
  ``d``; ``TP + FN`` is the number of ground-truth visible frames.
* ``average_jaccard`` and ``average_pts_within_thresh``: means over the five
  thresholds.

Which frames are evaluated depends on the query mode. In ``'first'`` mode each
ground-truth track is queried once, at its first visible frame, and only the
frames *after* the query frame count. In ``'strided'`` mode every track is
queried on each frame ``0, query_stride, 2 * query_stride, ...`` where it is
visible, and every frame except the query frame counts, before and after it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from cotracker3.errors import DatasetError

logger = logging.getLogger(__name__)

THRESHOLDS: tuple[int, ...] = (1, 2, 4, 8, 16)
"""Pixel thresholds of ``pts_within_*`` and ``jaccard_*`` (at :data:`EVAL_RESOLUTION`)."""

METRIC_KEYS: tuple[str, ...] = (
    "average_jaccard",
    "average_pts_within_thresh",
    "occlusion_accuracy",
    *(f"jaccard_{d}" for d in THRESHOLDS),
    *(f"pts_within_{d}" for d in THRESHOLDS),
)
"""Names of the TAP-Vid metrics, in the order the benchmark tables print them."""

EVAL_RESOLUTION: tuple[int, int] = (256, 256)
"""``(height, width)`` of the raster the TAP-Vid metrics are defined on.

The benchmark resizes every video to 256x256 before tracking and expresses
ground truth and predictions in the pixels of that raster, whatever the native
resolution; the thresholds of :data:`THRESHOLDS` are therefore 256x256 pixels
(1 px is 1/256 of the image width horizontally). Normalised TAP-Vid
coordinates become raster coordinates by ``norm * 256``, and our pixels by
``norm * 256 - 0.5`` (:func:`tapvid_to_pixels`). Predictions made on full
resolution frames must be scaled to this raster before the metrics are
computed (:func:`evaluate_tracks` does it given ``image_size``).
"""

QUERY_MODES: tuple[str, ...] = ("first", "strided")
"""Accepted values of ``query_mode``."""

DEFAULT_QUERY_STRIDE = 5
"""Frames between two query frames in ``'strided'`` mode (TAP-Vid's value)."""


# ---------------------------------------------------------------------------
# Coordinates
# ---------------------------------------------------------------------------


def _float_array(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
    return array.astype(np.result_type(array.dtype, np.float32), copy=False)


def _check_size(width, height) -> np.ndarray:
    for label, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"{label} must be a number, got {value!r}")
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"{label} must be positive, got {value!r}")
    return np.array([width, height], dtype=np.float64)


def tapvid_to_pixels(points, width: float, height: float) -> np.ndarray:
    """Convert normalised TAP-Vid coordinates to our pixel coordinates.

    TAP-Vid normalises positions by the image size with the origin at the image
    corner (tapnet's raster coordinates are ``norm * size``), whereas our
    pixels put ``(0, 0)`` at the centre of the top-left pixel, half a pixel in
    from the corner: ``px = norm * size - 0.5``. Hence ``norm = 0`` maps to
    ``-0.5`` (the outer edge of the first pixel), ``norm = 0.5`` to the image
    centre ``size / 2 - 0.5`` and ``norm = 1`` to ``size - 0.5`` (the outer edge
    of the last pixel).

    Args:
        points: normalised ``(x, y)`` positions, any leading shape.
        width: width in pixels of the image the result refers to.
        height: height in pixels of the image the result refers to.

    Returns:
        Pixel positions, same shape; float32 for float32 input, float64 for
        float64 or integer input.

    Shapes:
        points ``(..., 2)`` -> ``(..., 2)``.

    Raises:
        ValueError: ``points`` is not numeric or its last axis is not 2, or the
            size is not positive.
        TypeError: the size is not a number.
    """
    points = _float_array(points, "points")
    if points.ndim == 0 or points.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., 2) for (x, y), got {points.shape}")
    size = _check_size(width, height)
    return (points * size - 0.5).astype(points.dtype, copy=False)


def pixels_to_tapvid(pixels, width: float, height: float) -> np.ndarray:
    """Convert our pixel coordinates to normalised TAP-Vid coordinates.

    Inverse of :func:`tapvid_to_pixels`: ``norm = (px + 0.5) / size``.

    Args:
        pixels: ``(x, y)`` pixel positions, ``(0, 0)`` the centre of the
            top-left pixel, any leading shape.
        width: width in pixels of the image the positions refer to.
        height: height in pixels of the image the positions refer to.

    Returns:
        Normalised positions, same shape and dtype rule as
        :func:`tapvid_to_pixels`.

    Shapes:
        pixels ``(..., 2)`` -> ``(..., 2)``.

    Raises:
        ValueError: ``pixels`` is not numeric or its last axis is not 2, or the
            size is not positive.
        TypeError: the size is not a number.
    """
    pixels = _float_array(pixels, "pixels")
    if pixels.ndim == 0 or pixels.shape[-1] != 2:
        raise ValueError(f"pixels must have shape (..., 2) for (x, y), got {pixels.shape}")
    size = _check_size(width, height)
    return ((pixels + 0.5) / size).astype(pixels.dtype, copy=False)


# ---------------------------------------------------------------------------
# Metrics (tapnet's layout)
# ---------------------------------------------------------------------------


def _check_mode(query_mode: str) -> None:
    if query_mode not in QUERY_MODES:
        raise ValueError(f"query_mode must be one of {QUERY_MODES}, got {query_mode!r}")


def _bool_array(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype != np.bool_:
        raise ValueError(f"{name} must be a boolean array, got dtype {array.dtype}")
    return array


def _evaluation_mask(query_frames: np.ndarray, num_frames: int, query_mode: str) -> np.ndarray:
    """Frames that count for each query: ``(..., T)`` bool from ``(...)`` frame indices."""
    frames = np.arange(num_frames)
    if query_mode == "first":
        return frames > query_frames[..., None]
    return frames != query_frames[..., None]


def compute_tapvid_metrics(
    query_points,
    gt_occluded,
    gt_tracks,
    pred_occluded,
    pred_tracks,
    query_mode: str,
    get_trackwise_metrics: bool = False,
) -> dict[str, np.ndarray]:
    """TAP-Vid metrics of a batch of videos, in tapnet's layout and conventions.

    Same signature, inputs and outputs as tapnet's
    ``evaluation_datasets.compute_tapvid_metrics``, and the same numbers (it is
    checked against it on random inputs). Note the layout differs from ours:
    batched and point-major (``(B, N, T, ...)`` rather than ``(T, N, ...)``),
    queries ``(t, y, x)`` rather than ``(t, x, y)``, occlusion rather than
    visibility flags, and raster coordinates (``+0.5`` from our pixels, see the
    module docstring; only differences of positions matter here, so either
    origin gives the same metrics). The thresholds are in the units of the
    coordinates given: the benchmark uses the 256x256 raster of
    :data:`EVAL_RESOLUTION`. :func:`evaluate_tracks` is the wrapper in our
    convention.

    Each query row ``n`` is one track: frame ``round(query_points[b, n, 0])``
    (numpy rounding, halves to even) is its query frame; in ``'first'`` mode the
    frames after it are evaluated, in ``'strided'`` mode all frames but it. Sums
    run over the evaluated frames of all tracks of a video (or of each track
    with ``get_trackwise_metrics``), then ratios are taken in float64.

    A ratio whose denominator is 0 is NaN, as in tapnet: a video (or track)
    without evaluated frames has NaN everywhere; one whose evaluated frames all
    have the ground truth occluded has NaN ``pts_within_*`` (and NaN
    ``jaccard_*`` when nothing is predicted visible there either). That is
    logged (a warning per video, a debug message per track, where it is
    common); :func:`evaluate_tracks` refuses such inputs.

    Args:
        query_points: queries ``(t, y, x)``; only ``t`` is used.
        gt_occluded: ground-truth occlusion flags (True = occluded), bool.
        gt_tracks: ground-truth positions ``(x, y)``.
        pred_occluded: predicted occlusion flags, bool.
        pred_tracks: predicted positions ``(x, y)``; NaN counts as far away.
        query_mode: ``'first'`` or ``'strided'``.
        get_trackwise_metrics: metrics per track instead of per video.

    Returns:
        Dict with the keys of :data:`METRIC_KEYS` (in that order), each a
        float64 array of shape ``(B,)``, or ``(B, N)`` with
        ``get_trackwise_metrics``.

    Shapes:
        query_points ``(B, N, 3)``, gt_occluded and pred_occluded ``(B, N, T)``,
        gt_tracks and pred_tracks ``(B, N, T, 2)``.

    Raises:
        ValueError: unknown ``query_mode``, arrays of inconsistent shapes (the
            message lists them), occlusion flags that are not boolean, or a
            query frame outside ``[0, T)``.
    """
    _check_mode(query_mode)
    query_points = np.asarray(query_points)
    gt_tracks = np.asarray(gt_tracks)
    pred_tracks = np.asarray(pred_tracks)
    gt_occluded = _bool_array(gt_occluded, "gt_occluded")
    pred_occluded = _bool_array(pred_occluded, "pred_occluded")

    shapes = (
        f"query_points {query_points.shape}, gt_occluded {gt_occluded.shape}, gt_tracks {gt_tracks.shape}, "
        f"pred_occluded {pred_occluded.shape}, pred_tracks {pred_tracks.shape}"
    )
    if gt_tracks.ndim != 4 or gt_tracks.shape[-1] != 2:
        raise ValueError(f"gt_tracks must be (B, N, T, 2); got {shapes}")
    batch, num_points, num_frames = gt_tracks.shape[:3]
    expected = {
        "query_points": (query_points.shape, (batch, num_points, 3)),
        "gt_occluded": (gt_occluded.shape, (batch, num_points, num_frames)),
        "pred_occluded": (pred_occluded.shape, (batch, num_points, num_frames)),
        "pred_tracks": (pred_tracks.shape, (batch, num_points, num_frames, 2)),
    }
    for name, (got, want) in expected.items():
        if got != want:
            raise ValueError(f"{name} must be {want} to match gt_tracks (B, N, T, 2); got {shapes}")

    query_frames = np.round(query_points[..., 0]).astype(np.int32)
    if query_frames.size and (query_frames.min() < 0 or query_frames.max() >= num_frames):
        raise ValueError(
            f"query frames must lie in [0, {num_frames}); got {query_frames.min()} to {query_frames.max()}"
        )
    evaluated = _evaluation_mask(query_frames, num_frames, query_mode)

    axes = (2,) if get_trackwise_metrics else (1, 2)
    gt_visible = ~gt_occluded
    pred_visible = ~pred_occluded
    visible_evaluated = gt_visible & evaluated
    num_visible = np.sum(visible_evaluated, axis=axes)
    squared_distance = np.sum(np.square(pred_tracks - gt_tracks), axis=-1)

    metrics: dict[str, np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        metrics["occlusion_accuracy"] = np.sum((pred_occluded == gt_occluded) & evaluated, axis=axes) / np.sum(
            evaluated, axis=axes
        )
        for d in THRESHOLDS:
            close = squared_distance < np.square(d)
            hits = close & visible_evaluated
            metrics[f"pts_within_{d}"] = np.sum(hits, axis=axes) / num_visible
            true_pos = np.sum(hits & pred_visible, axis=axes)
            false_pos = np.sum(pred_visible & (gt_occluded | ~close) & evaluated, axis=axes)
            metrics[f"jaccard_{d}"] = true_pos / (num_visible + false_pos)
    metrics["average_jaccard"] = np.mean(np.stack([metrics[f"jaccard_{d}"] for d in THRESHOLDS], axis=1), axis=1)
    metrics["average_pts_within_thresh"] = np.mean(
        np.stack([metrics[f"pts_within_{d}"] for d in THRESHOLDS], axis=1), axis=1
    )

    undefined = [key for key in METRIC_KEYS if np.isnan(metrics[key]).any()]
    if undefined:
        # Expected for single tracks (e.g. visible only on their query frame), suspicious for whole videos.
        logger.log(
            logging.DEBUG if get_trackwise_metrics else logging.WARNING,
            "TAP-Vid metrics %s are NaN for some %s: nothing to divide by (no evaluated frame, or none with the "
            "ground truth visible)",
            ", ".join(undefined),
            "tracks" if get_trackwise_metrics else "videos",
        )
    return {key: metrics[key] for key in METRIC_KEYS}


# ---------------------------------------------------------------------------
# Query sampling (tapnet's layout)
# ---------------------------------------------------------------------------


def _check_tracks(target_occluded, target_points) -> tuple[np.ndarray, np.ndarray]:
    occluded = _bool_array(target_occluded, "target_occluded")
    points = np.asarray(target_points)
    if occluded.ndim != 2 or points.shape != (*occluded.shape, 2):
        raise ValueError(
            "target_occluded must be (N, T) and target_points (N, T, 2); "
            f"got target_occluded {occluded.shape}, target_points {points.shape}"
        )
    return occluded, points


def _package(occluded, points, queries, groups, frames) -> dict[str, np.ndarray]:
    result = {
        "query_points": queries[np.newaxis],
        "target_points": points[groups][np.newaxis],
        "occluded": occluded[groups][np.newaxis],
        "trackgroup": groups[np.newaxis],
    }
    if frames is not None:
        result["video"] = np.asarray(frames)[np.newaxis]
    return result


def sample_queries_first(target_occluded, target_points, frames=None) -> dict[str, np.ndarray]:
    """Query every track once, at its first visible frame (TAP-Vid ``'first'``).

    Same semantics as tapnet's ``sample_queries_first``: tracks never visible
    are dropped, the others keep their order, and the query is the track's
    position at its first visible frame. ``frames`` is optional here.

    Args:
        target_occluded: occlusion flags, bool, True = occluded.
        target_points: positions ``(x, y)`` in any units (raster for the
            benchmark); the queries are in the same units.
        frames: optional video, passed through under ``'video'``.

    Returns:
        Dict with ``'query_points'`` ``(1, Q, 3)`` float64 ``(t, y, x)``;
        ``'target_points'`` ``(1, Q, T, 2)`` and ``'occluded'`` ``(1, Q, T)``,
        the kept tracks; ``'trackgroup'`` ``(1, Q)`` int64, the row of
        ``target_points`` each query came from (tapnet returns it in strided
        mode only); ``'video'`` ``(1, T, H, W, C)`` when ``frames`` is given.

    Shapes:
        target_occluded ``(N, T)``, target_points ``(N, T, 2)``, frames
        ``(T, H, W, C)``.

    Raises:
        ValueError: inconsistent shapes or non-boolean flags.
        DatasetError: no track is visible in any frame (nothing to query).
    """
    occluded, points = _check_tracks(target_occluded, target_points)
    visible = ~occluded
    groups = np.flatnonzero(visible.any(axis=1))
    if groups.size == 0:
        raise DatasetError(
            f"no query in 'first' mode: none of the {occluded.shape[0]} tracks is visible in any of the "
            f"{occluded.shape[1]} frames"
        )
    first = np.argmax(visible[groups], axis=1)
    at_first = points[groups, first]
    queries = np.stack([first, at_first[:, 1], at_first[:, 0]], axis=-1).astype(np.float64)
    return _package(occluded, points, queries, groups, frames)


def sample_queries_strided(
    target_occluded, target_points, frames=None, query_stride: int = DEFAULT_QUERY_STRIDE
) -> dict[str, np.ndarray]:
    """Query every track on every ``query_stride``-th frame where it is visible.

    Same semantics as tapnet's ``sample_queries_strided``: for each query frame
    ``0, query_stride, 2 * query_stride, ... < T`` in turn, one query per track
    visible on that frame, in track order; so one track may give several
    queries, each with its own copy of the track. ``frames`` is optional here.

    Args:
        target_occluded: occlusion flags, bool, True = occluded.
        target_points: positions ``(x, y)``; the queries are in the same units.
        frames: optional video, passed through under ``'video'``.
        query_stride: frames between query frames, >= 1.

    Returns:
        Dict with ``'query_points'`` ``(1, Q, 3)`` float64 ``(t, y, x)``;
        ``'target_points'`` ``(1, Q, T, 2)`` and ``'occluded'`` ``(1, Q, T)``,
        the track of each query; ``'trackgroup'`` ``(1, Q)`` int64, the row of
        ``target_points`` each query came from; ``'video'``
        ``(1, T, H, W, C)`` when ``frames`` is given.

    Shapes:
        target_occluded ``(N, T)``, target_points ``(N, T, 2)``, frames
        ``(T, H, W, C)``.

    Raises:
        ValueError: inconsistent shapes, non-boolean flags or a stride < 1.
        DatasetError: no track is visible on any query frame.
    """
    occluded, points = _check_tracks(target_occluded, target_points)
    if isinstance(query_stride, bool) or not isinstance(query_stride, (int, np.integer)) or query_stride < 1:
        raise ValueError(f"query_stride must be a positive integer, got {query_stride!r}")
    query_frames = np.arange(0, occluded.shape[1], query_stride)
    # Frame-major order: all tracks visible on frame 0, then on frame stride, ...
    frame_of, groups = np.nonzero(~occluded[:, query_frames].T)
    if groups.size == 0:
        raise DatasetError(
            f"no query in 'strided' mode: none of the {occluded.shape[0]} tracks is visible on the query frames "
            f"{query_frames.tolist()[:6]}{'...' if query_frames.size > 6 else ''} (stride {query_stride})"
        )
    frame = query_frames[frame_of]
    at_frame = points[groups, frame]
    queries = np.stack([frame, at_frame[:, 1], at_frame[:, 0]], axis=-1).astype(np.float64)
    return _package(occluded, points, queries, groups.astype(np.int64), frames)


# ---------------------------------------------------------------------------
# Our convention
# ---------------------------------------------------------------------------


def _check_ours(tracks, visibility, tracks_name: str, visibility_name: str) -> tuple[np.ndarray, np.ndarray]:
    tracks = _float_array(tracks, tracks_name)
    visibility = _bool_array(visibility, visibility_name)
    if tracks.ndim != 3 or tracks.shape[-1] != 2 or visibility.shape != tracks.shape[:2]:
        raise ValueError(
            f"{tracks_name} must be (T, N, 2) and {visibility_name} (T, N); "
            f"got {tracks_name} {tracks.shape}, {visibility_name} {visibility.shape}"
        )
    return tracks, visibility


def _sample(visibility: np.ndarray, tracks: np.ndarray, query_mode: str, query_stride: int) -> dict[str, np.ndarray]:
    _check_mode(query_mode)
    occluded = ~visibility.T
    points = np.transpose(tracks, (1, 0, 2))
    if query_mode == "first":
        return sample_queries_first(occluded, points)
    return sample_queries_strided(occluded, points, query_stride=query_stride)


def tapvid_queries(
    gt_visibility, gt_tracks, query_mode: str, query_stride: int = DEFAULT_QUERY_STRIDE
) -> tuple[np.ndarray, np.ndarray]:
    """The TAP-Vid queries of a ground truth, in our convention.

    Run a tracker on ``queries`` and give its outputs, in the same order, to
    :func:`evaluate_tracks`. In ``'first'`` mode there is one query per track
    visible somewhere (at its first visible frame); in ``'strided'`` mode one
    per track and per query frame ``0, query_stride, ...`` where it is
    visible, ordered by query frame then track.

    Args:
        gt_visibility: ground-truth visibility, bool.
        gt_tracks: ground-truth positions ``(x, y)`` in pixels.
        query_mode: ``'first'`` or ``'strided'``.
        query_stride: frames between query frames in ``'strided'`` mode.

    Returns:
        ``(queries, point_index)``: ``queries`` ``(Q, 3)`` float32 rows
        ``(t, x, y)`` with ``t`` an integer frame index and ``(x, y)`` the
        ground truth at that frame, in the pixels of ``gt_tracks``;
        ``point_index`` ``(Q,)`` int64, the ground-truth track (column of
        ``gt_tracks``) each query came from.

    Shapes:
        gt_visibility ``(T, N)``, gt_tracks ``(T, N, 2)``.

    Raises:
        ValueError: unknown mode, inconsistent shapes, non-boolean visibility.
        DatasetError: there is no query (no visible point to start from).
    """
    tracks, visibility = _check_ours(gt_tracks, gt_visibility, "gt_tracks", "gt_visibility")
    sample = _sample(visibility, tracks, query_mode, query_stride)
    queries = sample["query_points"][0][:, [0, 2, 1]].astype(np.float32)
    return queries, sample["trackgroup"][0].astype(np.int64)


def _to_eval_raster(pixels: np.ndarray, image_size) -> np.ndarray:
    """Our pixels of an image of ``image_size`` (W, H) -> raster of EVAL_RESOLUTION."""
    eval_height, eval_width = EVAL_RESOLUTION
    if image_size is None:
        width, height = eval_width, eval_height
    else:
        try:
            width, height = image_size
        except (TypeError, ValueError):
            raise ValueError(f"image_size must be (width, height), got {image_size!r}") from None
    return pixels_to_tapvid(pixels, width, height) * np.array([eval_width, eval_height], dtype=pixels.dtype)


def evaluate_tracks(
    gt_tracks,
    gt_visibility,
    pred_tracks,
    pred_visibility,
    query_mode: str,
    *,
    image_size: tuple[int, int] | None = None,
    query_stride: int = DEFAULT_QUERY_STRIDE,
) -> dict[str, float]:
    """TAP-Vid metrics of one video's predictions, in our convention.

    Builds the queries as :func:`tapvid_queries` does, scales ground truth and
    predictions to the 256x256 raster of :data:`EVAL_RESOLUTION` and calls
    :func:`compute_tapvid_metrics`.

    Args:
        gt_tracks: ground-truth positions ``(x, y)``, our pixels.
        gt_visibility: ground-truth visibility, bool.
        pred_tracks: predicted positions, one track per query of
            ``tapvid_queries(gt_visibility, gt_tracks, query_mode)`` in that
            order; NaN counts as a miss.
        pred_visibility: predicted visibility, bool, same layout.
        query_mode: ``'first'`` or ``'strided'``.
        image_size: ``(width, height)`` of the frames the coordinates refer
            to; None when they already refer to 256x256 frames.
        query_stride: frames between query frames in ``'strided'`` mode.

    Returns:
        ``{key: value}`` for the keys of :data:`METRIC_KEYS`, plain floats in
        ``[0, 1]``.

    Shapes:
        gt_tracks ``(T, N, 2)``, gt_visibility ``(T, N)``, pred_tracks
        ``(T, Q, 2)``, pred_visibility ``(T, Q)``.

    Raises:
        ValueError: unknown mode, inconsistent shapes (``Q`` must be the number
            of queries), non-boolean visibility, bad ``image_size``.
        DatasetError: the ground truth yields no query at all, or no evaluated
            frame where it is visible (the metrics would be undefined, e.g.
            every query on the last frame in ``'first'`` mode).
    """
    gt_tracks, gt_visibility = _check_ours(gt_tracks, gt_visibility, "gt_tracks", "gt_visibility")
    pred_tracks, pred_visibility = _check_ours(pred_tracks, pred_visibility, "pred_tracks", "pred_visibility")
    gt_raster = _to_eval_raster(gt_tracks, image_size)
    sample = _sample(gt_visibility, gt_raster, query_mode, query_stride)
    num_queries = sample["query_points"].shape[1]
    if pred_tracks.shape[:2] != (gt_tracks.shape[0], num_queries):
        raise ValueError(
            f"pred_tracks must be (T, Q, 2) = ({gt_tracks.shape[0]}, {num_queries}, 2), one track per query of "
            f"tapvid_queries(..., {query_mode!r}); got pred_tracks {pred_tracks.shape} for gt_tracks "
            f"{gt_tracks.shape}"
        )
    query_frames = np.round(sample["query_points"][..., 0]).astype(np.int32)
    evaluated = _evaluation_mask(query_frames, gt_tracks.shape[0], query_mode)
    if not (evaluated & ~sample["occluded"]).any():
        raise DatasetError(
            f"no evaluated frame has a visible ground-truth point in {query_mode!r} mode (e.g. every track is "
            "visible only on its query frame): the TAP-Vid metrics are undefined"
        )
    pred_raster = _to_eval_raster(pred_tracks, image_size)
    metrics = compute_tapvid_metrics(
        sample["query_points"],
        sample["occluded"],
        sample["target_points"],
        ~pred_visibility.T[np.newaxis],
        np.transpose(pred_raster, (1, 0, 2))[np.newaxis],
        query_mode,
    )
    return {key: float(value[0]) for key, value in metrics.items()}


def mean_metrics(per_video: list[Mapping[str, float]]) -> dict[str, float]:
    """Benchmark score: the plain mean over videos of each metric.

    Args:
        per_video: one dict of metrics per video (as :func:`evaluate_tracks`
            returns).

    Returns:
        ``{key: mean}`` for the keys of :data:`METRIC_KEYS`.

    Raises:
        ValueError: the list is empty or a dict lacks a key.
    """
    if not per_video:
        raise ValueError("mean_metrics needs at least one video's metrics")
    missing = [key for key in METRIC_KEYS for m in per_video if key not in m]
    if missing:
        raise ValueError(f"metrics lack the keys {sorted(set(missing))}")
    return {key: float(np.mean([m[key] for m in per_video])) for key in METRIC_KEYS}
