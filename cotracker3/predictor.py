"""User-facing trackers: pre-processing, queries, grids and post-processing.

The models in :mod:`cotracker3.model` work in "model pixels" (frames resized
to ``model_resolution``). The predictors here are the one place that resizes
frames, rescales query coordinates, adds the support grid, runs the
time-reversed pass for backward tracking, thresholds visibility, and maps
tracks back to the caller's pixels.

* :class:`Predictor` wraps an offline model: whole video at once.
* :class:`OnlinePredictor` wraps an online model: frames arrive in chunks, for
  videos of unknown length; its memory does not grow with the frames seen
  (apart from the tracks it returns).

Both return a :class:`TrackingResult`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cotracker3.errors import InputError, MemoryEstimateError, QueryError
from cotracker3.memory import (CPU_CHUNKS, SAFETY, ChunkPlan, available_memory, element_size, memory_advice,
                               parse_size, plan_chunks)
from cotracker3.memory import tracking_memory as tracking_memory  # re-exported: cotracker3.tracking_memory
from cotracker3.model import CoTracker3, CoTracker3Offline, CoTracker3Online, ModelOutput, OnlineState, as_float32

logger = logging.getLogger(__name__)

OFFLINE_VISIBILITY_THRESHOLD = 0.9
"""Offline: a point is visible where the visibility probability exceeds this."""
ONLINE_VISIBILITY_THRESHOLD = 0.6
"""Online: a point is visible where visibility x confidence exceeds this."""
#: Refinement iterations of a model that does not bring its own (the published predictors' 6).
DEFAULT_ITERS = 6
SUPPORT_GRID_SIZE = 6
"""Side of the grid of extra points tracked alongside user queries (then dropped)."""
DENSE_GRID_SIZE = 80
"""Dense tracking samples every ``W // 80``-th pixel in each batch of queries."""
PRECISIONS = (torch.float32, torch.bfloat16, torch.float16)
"""Arithmetic precisions of the predictors: float32 (exact), bfloat16 (CPU and GPU), float16 (GPU)."""

InitialTracks = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
"""``fn(video (B, T, 3, H, W) 0..255, queries (B, N, 3) (t, x, y) pixels of video) ->
(coords (B, T, N, 2) pixels of video, vis (B, T, N) logits)``: where a model's refinement starts."""

INITIAL_TRACKS: dict[str, InitialTracks] = {}
"""The source of starting tracks of each :data:`cotracker3.model.INITIALISATIONS` name
but ``None``, filled by :func:`register_initial_tracks` (:mod:`cotracker3.baseline`
registers ``"baseline"`` when it is imported, as ``import cotracker3`` does)."""


def register_initial_tracks(name: str, fn: InitialTracks) -> None:
    """Make ``fn`` where the predictors start a model whose ``initialisation`` is ``name``."""
    INITIAL_TRACKS[name] = fn


def initial_tracks_source(model: CoTracker3) -> InitialTracks | None:
    """Where ``model``'s refinement starts: None for a model that starts from its queries
    (the published models), else the function registered for its ``initialisation``.

    Raises:
        InputError: nothing is registered for the model's initialisation.
    """
    name = getattr(model, "initialisation", None)
    if name is None:
        return None
    if name not in INITIAL_TRACKS:
        raise InputError(f"the model refines {name!r} tracks, and nothing provides them: import cotracker3 "
                         "(it registers the Lucas-Kanade baseline's) or pass initial_tracks= to the predictor")
    return INITIAL_TRACKS[name]


@dataclass
class TrackingResult:
    """Tracks in the caller's pixels.

    Attributes:
        tracks: ``(B, T, N, 2)`` float32, pixels ``(x, y)``, ``(0, 0)`` the centre
            of the top-left pixel of the caller's frames.
        visibility: ``(B, T, N)`` bool.
        confidence: ``(B, T, N)`` float32 in ``[0, 1]``: probability that the
            predicted position is close to the truth.
        queries: ``(B, N, 3)`` float32 ``(t, x, y)`` the tracks started from.
        start_frame: video frame index of ``tracks[:, 0]`` (0 unless an online
            predictor with ``keep_history=False`` dropped older frames).
        visibility_score: ``(B, T, N)`` float32 in ``[0, 1]``, the soft visibility
            that ``visibility`` thresholds (the visibility probability offline,
            visibility x confidence online), or None for trackers without one.
    """

    tracks: Tensor
    visibility: Tensor
    confidence: Tensor
    queries: Tensor
    start_frame: int = 0
    visibility_score: Tensor | None = None

    def __iter__(self):
        # ``tracks, visibility = predictor(...)`` as with the reference predictors.
        return iter((self.tracks, self.visibility))

    def numpy(self, batch: int = 0) -> dict[str, np.ndarray]:
        """Unbatched numpy arrays of one batch element (the public convention);
        ``visibility_score`` only where the tracker gives one."""
        out = {
            "tracks": self.tracks[batch].float().cpu().numpy(),
            "visibility": self.visibility[batch].cpu().numpy(),
            "confidence": self.confidence[batch].float().cpu().numpy(),
            "queries": self.queries[batch].float().cpu().numpy(),
        }
        if self.visibility_score is not None:
            out["visibility_score"] = self.visibility_score[batch].float().cpu().numpy()
        return out


# --------------------------------------------------------------------------
# Grids and input checks
# --------------------------------------------------------------------------


def grid_points(size: int, extent: tuple[int, int], device=None) -> Tensor:
    """A ``size x size`` grid of points covering a frame, row-major.

    A margin of ``W / 64`` pixels is left on every side; ``size == 1`` gives
    the centre.

    Args:
        size: points per side, ``>= 1``.
        extent: ``(H, W)`` of the frame.

    Returns:
        ``(1, size * size, 2)`` float32 pixels ``(x, y)``.
    """
    H, W = extent
    if size == 1:
        return torch.tensor([[[W / 2, H / 2]]], device=device)
    margin = W / 64
    ys = torch.linspace(margin, H - margin, size, device=device)
    xs = torch.linspace(margin, W - margin, size, device=device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1).reshape(1, -1, 2)


def as_video_tensor(video, name: str = "video", *, to_float: bool = True) -> Tensor:
    """Check and convert a video to ``(B, T, 3, H, W)`` float32 0..255.

    Accepts a torch tensor or numpy array, ``(B, T, 3, H, W)`` or unbatched
    ``(T, 3, H, W)``, uint8 or float (0..255). With ``to_float=False`` the
    values keep their type (a uint8 video is 4 times smaller than its float copy;
    :func:`resize_frames` converts it a few frames at a time).
    """
    if isinstance(video, np.ndarray):
        video = torch.from_numpy(video)
    if not isinstance(video, Tensor):
        raise InputError(f"{name} must be a tensor or array, got {type(video).__name__}")
    if video.ndim == 4:
        video = video[None]
    if video.ndim != 5 or video.shape[2] != 3:
        raise InputError(
            f"{name} must be (B, T, 3, H, W) RGB, got shape {tuple(video.shape)}; "
            "convert (T, H, W, 3) frames with .permute(0, 3, 1, 2)"
        )
    B, T, _, H, W = video.shape
    if B < 1 or T < 2:
        raise InputError(f"{name} has {T} frame(s); tracking needs at least 2")
    if H < 2 or W < 2:
        raise InputError(f"{name} frames are {W}x{H} pixels; at least 2x2 is needed")
    if not (video.dtype == torch.uint8 or video.is_floating_point()):
        raise InputError(f"{name} must be uint8 or float 0..255, got {video.dtype}")
    return video.float() if to_float else video


def check_queries(queries, batch: int, num_frames: int, width: int, height: int, device) -> Tensor:
    """Check user queries ``(t, x, y)`` against the video; returns ``(B, N, 3)`` float32.

    Raises:
        QueryError: wrong shape, NaN/inf, a frame index that is not an integer in
            ``[0, T-1]``, or a point outside the frame's pixel area
            ``[-0.5, W-0.5] x [-0.5, H-0.5]`` (``(0, 0)`` is the centre of the
            top-left pixel, so the frame's edges lie half a pixel beyond).
    """
    if isinstance(queries, np.ndarray):
        queries = torch.from_numpy(queries)
    queries = torch.as_tensor(queries, dtype=torch.float32, device=device)
    if queries.ndim == 2:
        queries = queries[None].expand(batch, -1, -1)
    if queries.ndim != 3 or queries.shape[-1] != 3 or queries.shape[0] != batch:
        raise QueryError(f"queries must be (N, 3) or (B, N, 3) rows of (t, x, y); got {tuple(queries.shape)}")
    if queries.shape[1] == 0:
        raise QueryError("queries is empty: give at least one (t, x, y) point")
    bad = ~torch.isfinite(queries).all(-1)
    if bad.any():
        raise QueryError(f"{int(bad.sum())} query row(s) contain NaN or infinity, e.g. row {_first(bad)}")
    t, x, y = queries.unbind(-1)
    bad = (t != t.round()) | (t < 0) | (t > num_frames - 1)
    if bad.any():
        raise QueryError(
            f"query frame indices must be integers in [0, {num_frames - 1}] (the video has "
            f"{num_frames} frames); row {_first(bad)} has t={float(t[bad][0]):g}"
        )
    bad = (x < -0.5) | (x > width - 0.5) | (y < -0.5) | (y > height - 0.5)
    if bad.any():
        raise QueryError(
            f"{int(bad.sum())} query point(s) lie outside the {width}x{height} frame "
            f"(x in [-0.5, {width - 0.5}], y in [-0.5, {height - 0.5}]), e.g. row {_first(bad)}: "
            f"({float(x[bad][0]):g}, {float(y[bad][0]):g})"
        )
    return queries.clone()


def check_request(video, queries, grid_size: int, grid_query_frame: int, segm_mask, *,
                  to_float: bool = True) -> Tensor:
    """The checks every whole-video tracker makes on its arguments; returns the video
    as :func:`as_video_tensor` does.

    Raises:
        InputError: bad video. QueryError: bad grid or query frame, queries and a
            grid together, or a mask without a grid.
    """
    video = as_video_tensor(video, to_float=to_float)
    _check_grid(grid_size, grid_query_frame, video.shape[1])
    if queries is not None and grid_size > 0:
        raise QueryError("give either queries or grid_size, not both")
    if segm_mask is not None and grid_size == 0:
        raise QueryError("segm_mask selects grid points: give grid_size > 0 with it")
    return video


def _first(mask: Tensor) -> int:
    return int(mask.reshape(-1).nonzero()[0]) % mask.shape[-1]


def _check_grid(grid_size: int, grid_query_frame: int, num_frames: int) -> None:
    if not isinstance(grid_size, (int, np.integer)) or grid_size < 0:
        raise QueryError(f"grid_size must be a non-negative integer, got {grid_size!r}")
    if not 0 <= grid_query_frame < num_frames:
        raise QueryError(f"grid_query_frame must be in [0, {num_frames - 1}], got {grid_query_frame}")


def resize_frames(video: Tensor, size: tuple[int, int], chunk: int = 8) -> Tensor:
    """Bilinear resize (``align_corners=True``) of ``(B, T, 3, H, W)`` to ``size=(H', W')``, float32.

    Frames are converted and resized ``chunk`` at a time, so a uint8 video never
    exists as a whole in float at its own size.
    """
    B, T, C, H, W = video.shape
    if (H, W) == tuple(size) and video.dtype == torch.float32:
        return video
    flat = video.reshape(B * T, C, H, W)
    out = torch.empty(B * T, C, *size, dtype=torch.float32, device=video.device)
    for i in range(0, B * T, chunk):
        x = flat[i : i + chunk].float()
        if (H, W) != tuple(size):
            x = F.interpolate(x, tuple(size), mode="bilinear", align_corners=True)
        out[i : i + chunk] = x
    return out.view(B, T, C, *size)


class _PredictorBase:
    """What both predictors share: the model, its resolution, iterations, threshold."""

    def __init__(self, model: CoTracker3, kind: type, iters: int | None, visibility_threshold: float | None,
                 default_threshold: float, dtype: torch.dtype = torch.float32):
        if dtype not in PRECISIONS:
            raise ValueError(f"dtype must be one of {', '.join(map(str, PRECISIONS))}, got {dtype}")
        if not isinstance(model, kind):
            other = "OnlinePredictor" if kind is CoTracker3Offline else "Predictor"
            raise TypeError(f"{type(self).__name__} needs a {kind.__name__} model, got "
                            f"{type(model).__name__}; use {other}")
        if iters is None:  # the model's own (calibrated) iterations, else the reference's
            iters = getattr(model, "iters", None) or DEFAULT_ITERS
        if iters < 1:
            raise ValueError(f"iters must be at least 1, got {iters}")
        if dtype == torch.float16 and next(model.parameters()).device.type != "cuda":
            raise InputError("float16 runs on a GPU only; use bfloat16 on a CPU")
        self.model = model.eval()
        self.iters = iters
        if visibility_threshold is None:  # the model's own (calibrated) threshold, else the reference's
            visibility_threshold = getattr(model, "visibility_threshold", None)
        if visibility_threshold is None:
            visibility_threshold = default_threshold
        self.visibility_threshold = float(visibility_threshold)
        self.interp_shape = tuple(model.model_resolution)
        self.dtype = dtype

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters (inputs are moved there)."""
        return next(self.model.parameters()).device

    def _precision(self):
        """The context the model runs in: nothing for float32, else autocast."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _run(self, fn, *args, **kwargs):
        """Call the model under the predictor's precision; outputs come back in float32."""
        with self._precision():
            out = fn(*args, **kwargs)
        return out if self.dtype == torch.float32 else as_float32(out)

    def _to_model_frames(self, frames: Tensor) -> Tensor:
        """``(F, 3, h, w)`` caller frames (uint8 or float) to float32 at the model's resolution."""
        return resize_frames(frames[None], self.interp_shape)[0]


def _scale(src: tuple[int, int], dst: tuple[int, int], ref: Tensor) -> Tensor:
    """Factor mapping ``(x, y)`` pixels of a ``src=(H, W)`` frame onto a ``dst`` frame."""
    return ref.new_tensor([(dst[1] - 1) / (src[1] - 1), (dst[0] - 1) / (src[0] - 1)])


# --------------------------------------------------------------------------
# Offline
# --------------------------------------------------------------------------


class Predictor(_PredictorBase):
    """Offline tracking of a whole video with a :class:`CoTracker3Offline`.

    Args:
        model: an offline model with weights loaded (put on the device you want).
        iters: refinement iterations (default: the model's ``iters`` attribute where it
            has one, as the embedded model does, else :data:`DEFAULT_ITERS`, 6, as the
            published predictor).
        visibility_threshold: visibility probability above which a point is visible
            (default: the model's ``visibility_threshold`` attribute where it has one,
            as the embedded model does, else :data:`OFFLINE_VISIBILITY_THRESHOLD`).
        support_grid_size: side of the extra grid tracked with user queries.
        dtype: arithmetic precision: ``torch.float32`` (default), ``torch.bfloat16``
            (mixed precision on CPU or GPU: about twice as fast on CPUs with bfloat16
            instructions, tracks within a fraction of a pixel), or ``torch.float16`` (GPU).
            Outputs are float32 in every case.
        initial_tracks: for a model whose refinement starts from given tracks
            (``initialisation="baseline"``): ``fn(video, queries) -> (coords, vis logits)``
            in the caller's pixels (:data:`InitialTracks`), run on the caller's frames.
            Default: the one registered for the model's initialisation
            (:func:`cotracker3.baseline.initial_tracks` for ``"baseline"``); unused for
            the published models.
        max_memory: bytes a call may use, or a size such as ``"8G"`` / ``"512M"``
            (default: what the device has free). Chunk sizes
            follow it (:func:`cotracker3.memory.plan_chunks`): large on a GPU, cache-sized on
            a CPU; when even the smallest do not fit, points are tracked in batches (results
            then differ slightly, see :mod:`cotracker3.memory`), and when nothing fits the
            call fails up front with :class:`~cotracker3.errors.MemoryEstimateError`.
        chunks: ``(point-frames, tokens, encoder frames)`` per chunk, fixed instead of chosen
            from the budget (for measurements); points are still split if they do not fit.

    Example:
        >>> pred = Predictor(model)
        >>> out = pred(video, grid_size=20)   # video (B, T, 3, H, W) 0..255
        >>> out.tracks.shape                   # (B, T, 400, 2)
    """

    def __init__(
        self,
        model: CoTracker3Offline,
        iters: int | None = None,
        visibility_threshold: float | None = None,
        support_grid_size: int = SUPPORT_GRID_SIZE,
        dtype: torch.dtype = torch.float32,
        initial_tracks: InitialTracks | None = None,
        max_memory: int | str | None = None,
        chunks: tuple[int, int, int] | None = None,
    ):
        super().__init__(model, CoTracker3Offline, iters, visibility_threshold, OFFLINE_VISIBILITY_THRESHOLD, dtype)
        self.support_grid_size = support_grid_size
        self.max_memory = parse_size(max_memory, "max_memory")
        self.chunks = None if chunks is None else tuple(int(c) for c in chunks)
        #: The :class:`~cotracker3.memory.ChunkPlan` of the latest call (None before the first).
        self.last_plan: ChunkPlan | None = None
        if getattr(model, "initialisation", None) is None:
            initial_tracks = None
        elif initial_tracks is None:
            initial_tracks = initial_tracks_source(model)
        self.initial_tracks = initial_tracks

    @torch.no_grad()
    def __call__(
        self,
        video,
        queries=None,
        grid_size: int = 0,
        grid_query_frame: int = 0,
        segm_mask=None,
        backward_tracking: bool = False,
    ) -> TrackingResult:
        """Track points through a video.

        Give ``queries`` for chosen points, ``grid_size`` for a regular grid (from
        ``grid_query_frame``, optionally only inside ``segm_mask``), or neither
        for dense tracking of (almost) every pixel.

        Args:
            video: ``(B, T, 3, H, W)`` or ``(T, 3, H, W)``, uint8 or float 0..255, RGB.
            queries: ``(B, N, 3)`` or ``(N, 3)`` ``(t, x, y)``: integer frame index and
                pixels of ``video``. A 6x6 support grid is tracked along and dropped.
            grid_size: points per side of a regular grid (0: none).
            grid_query_frame: frame the grid (or dense) points start from.
            segm_mask: ``(B, 1, H, W)``, ``(1, H, W)`` or ``(H, W)``; keeps grid points
                inside the mask (non-zero).
            backward_tracking: also track backwards in time from each query frame
                (otherwise frames before a query's frame are left as the model
                initialised them).

        Returns:
            :class:`TrackingResult` in the caller's pixels.

        Raises:
            InputError: the video has the wrong shape, dtype or fewer than 2 frames.
            QueryError: invalid queries, grid size, query frame or mask.
        """
        # The frames stay where the caller has them: they move to the model's device a few at a
        # time as they are encoded (a long video need not fit in GPU memory).
        video = check_request(video, queries, grid_size, grid_query_frame, segm_mask, to_float=False)
        B, T, _, H, W = video.shape
        if queries is None and grid_size == 0:
            return self._dense(video, grid_query_frame, backward_tracking)
        if queries is not None:
            queries = check_queries(queries, B, T, W, H, self.device)
            return self._sparse(video, queries, True, backward_tracking)
        model_queries = self._grid_queries(B, grid_size, grid_query_frame, segm_mask, (H, W), self.device)
        return self._sparse(video, model_queries, segm_mask is not None, backward_tracking, in_model_px=True)

    def memory_budget(self) -> int | None:
        """Bytes a call may use: ``max_memory``, capped by what the device has free (None: unknown)."""
        free = available_memory(self.device)
        if self.max_memory is None:
            return free
        return self.max_memory if free is None else min(self.max_memory, free)

    def plan(self, num_frames: int, num_points: int, backward_tracking: bool = False,
             video_bytes: int = 0, shared: int = 0) -> ChunkPlan | None:
        """The :class:`~cotracker3.memory.ChunkPlan` a call of this size would use under the
        current budget (:meth:`memory_budget`), or None when nothing fits.

        Args:
            num_frames, num_points: the call's size (support points included).
            backward_tracking: whether it tracks backwards too (reversing the pyramid
                briefly holds a second copy of its finest level).
            video_bytes: memory the caller has yet to allocate for the video itself
                (e.g. before decoding it).
            shared: points tracked in every batch if points are split (the support grid).
        """
        return plan_chunks(self.model, num_frames, num_points, dtype=self.dtype, device=self.device,
                           budget=self.memory_budget(), shared=shared,
                           ladder=None if self.chunks is None else (self.chunks,),
                           extra=self.plan_extra(num_frames, backward_tracking) + video_bytes)

    def memory_needed(self, num_frames: int, num_points: int, backward_tracking: bool = False) -> int:
        """Estimated peak bytes a call of this size allocates beyond the model and the
        caller's video, with every point in one call and the chunks it would use without
        a memory limit (see :func:`~cotracker3.memory.tracking_memory`)."""
        return plan_chunks(self.model, num_frames, num_points, dtype=self.dtype, device=self.device,
                           extra=self.plan_extra(num_frames, backward_tracking)).estimate

    def plan_extra(self, num_frames: int, backward_tracking: bool) -> int:
        """Bytes beyond the tracking itself: a second copy of the finest pyramid level while
        the pyramid is reversed for backward tracking."""
        if not backward_tracking:
            return 0
        H, W = self.interp_shape
        return (num_frames * (H // self.model.stride) * (W // self.model.stride) * self.model.latent_dim
                * element_size(self.dtype))

    def check_memory(self, num_frames: int, num_points: int, backward_tracking: bool = False,
                     video_bytes: int = 0, shared: int = 0) -> ChunkPlan:
        """The call's :class:`~cotracker3.memory.ChunkPlan`; raise
        :class:`~cotracker3.errors.MemoryEstimateError` up front when nothing fits the memory
        available, saying how much would be needed and suggesting the online mode.

        Args:
            num_frames, num_points: the call's size (support points included).
            backward_tracking: whether it tracks backwards too.
            video_bytes: memory the caller has yet to allocate for the video itself
                (e.g. before decoding it), counted in the need.
            shared: points tracked in every batch if points are split (the support grid).

        Raises:
            MemoryEstimateError: the smallest chunks and point batches exceed the memory available.
        """
        plan = self.plan(num_frames, num_points, backward_tracking, video_bytes, shared)
        if plan is None:
            least = CPU_CHUNKS[-1]  # the smallest chunks, every point in one call
            need = tracking_memory(self.model, num_frames, num_points, dtype=self.dtype, point_frames=least[0],
                                   tokens=least[1], encoder_frames=least[2])
            need = math.ceil((need + self.plan_extra(num_frames, backward_tracking) + video_bytes) / SAFETY)
            raise MemoryEstimateError(memory_advice(self.model, num_frames, num_points, need,
                                                    self.memory_budget(), self.dtype))
        logger.debug("offline tracking of %s", plan.describe())
        if plan.batches > 1:
            logger.info("offline tracking: %s (to fit the memory available; use --online or fewer "
                        "points to track them all together)", plan.describe())
        return plan

    def _grid_queries(self, B, grid_size, frame, segm_mask, frame_hw, device) -> Tensor:
        pts = grid_points(grid_size, self.interp_shape, device)  # model pixels
        if segm_mask is not None:
            mask = torch.as_tensor(np.asarray(segm_mask) if not isinstance(segm_mask, Tensor) else segm_mask)
            while mask.ndim < 4:
                mask = mask[None]
            if mask.shape[-2:] != frame_hw:
                raise QueryError(f"segm_mask is {tuple(mask.shape[-2:])} but frames are {frame_hw} (H, W)")
            mask = F.interpolate(mask[:1, :1].float().to(device), self.interp_shape, mode="nearest")[0, 0]
            keep = mask[pts[0, :, 1].round().long(), pts[0, :, 0].round().long()].bool()
            if not keep.any():
                raise QueryError("segm_mask contains none of the grid points; use a larger mask or grid")
            pts = pts[:, keep]
        t = torch.full_like(pts[..., :1], float(frame))
        return torch.cat([t, pts], dim=-1).expand(B, -1, -1)

    def _dense(self, video: Tensor, frame: int, backward: bool) -> TrackingResult:
        B, T, _, H, W = video.shape
        step = max(W // DENSE_GRID_SIZE, 1)
        gw, gh = len(range(0, W - step + 1, step)), len(range(0, H - step + 1, step))
        results = []
        for offset in range(step * step):
            ox, oy = offset % step, offset // step
            xs = torch.arange(gw, device=self.device) * step + ox
            ys = torch.arange(gh, device=self.device) * step + oy
            gy, gx = torch.meshgrid(ys, xs, indexing="ij")
            q = torch.stack([torch.full_like(gx, frame), gx, gy], -1).reshape(1, -1, 3).float()
            logger.info("dense tracking: batch %d / %d (%d points)", offset + 1, step * step, q.shape[1])
            results.append(self._sparse(video, q.expand(B, -1, -1), False, backward))
        return TrackingResult(*(torch.cat([getattr(r, k) for r in results], dim=2 if k != "queries" else 1)
                                for k in ("tracks", "visibility", "confidence", "queries")),
                              visibility_score=torch.cat([r.visibility_score for r in results], 2))

    def _sparse(
        self,
        video: Tensor,
        queries: Tensor,
        add_support_grid: bool,
        backward: bool,
        in_model_px: bool = False,
    ) -> TrackingResult:
        B, T, _, H, W = video.shape
        support = self.support_grid_size**2 if add_support_grid else 0
        plan = self.check_memory(T, B * (queries.shape[1] + support), backward, shared=B * support)
        self.last_plan = plan
        q = queries.clone()
        if not in_model_px:
            q[..., 1:] *= _scale((H, W), self.interp_shape, q)
        n_user = q.shape[1]
        if add_support_grid:
            grid = grid_points(self.support_grid_size, self.interp_shape, q.device)
            grid = torch.cat([torch.zeros_like(grid[..., :1]), grid], dim=-1).expand(B, -1, -1)
            q = torch.cat([q, grid], dim=1)

        # Frames are resized as they are encoded; the pyramid serves both directions of time.
        init = self._initial_tracks(video, q)
        with self._chunks(plan):
            with self._precision():
                pyramid = self.model.encode(video, chunk=plan.encoder_frames, transform=self._to_model_frames)
            tracks, vis, conf = self._track(pyramid, q, init, n_user, plan.batches)
            if backward:
                for i, level in enumerate(pyramid):  # reversed in time, one level at a time
                    pyramid[i] = level.flip(1)
                tracks, vis, conf = self._merge_backward(pyramid, q, tracks, vis, conf, init, n_user, plan.batches)
        del pyramid
        q = q[:, :n_user]
        visible = vis > self.visibility_threshold

        # Each query point is where it was asked to be, and visible, in its own frame.
        t = q[..., 0].long()
        b = torch.arange(B, device=q.device)[:, None].expand_as(t)
        n = torch.arange(n_user, device=q.device)[None].expand_as(t)
        tracks[b, t, n] = q[..., 1:]
        visible[b, t, n] = True
        conf[b, t, n] = 1.0
        vis[b, t, n] = 1.0

        back = _scale(self.interp_shape, (H, W), tracks)
        q_out = q.clone()
        q_out[..., 1:] *= back
        return TrackingResult(tracks * back, visible, conf, q_out, visibility_score=vis)

    @contextlib.contextmanager
    def _chunks(self, plan: ChunkPlan):
        """The model's chunk sizes set to the plan's for the duration of a call."""
        model, former = self.model, self.model.updateformer
        saved = model.chunk_point_frames, former.chunk_tokens
        model.chunk_point_frames, former.chunk_tokens = plan.point_frames, plan.tokens
        try:
            yield
        finally:
            model.chunk_point_frames, former.chunk_tokens = saved

    def _track(self, pyramid, q, init, n_user: int, batches: int) -> tuple[Tensor, Tensor, Tensor]:
        """Final tracks, visibility and confidence ``(B, T, n_user, ...)`` of the first ``n_user``
        queries; the user points are split into ``batches`` model calls, each with the queries
        after them (the support grid)."""
        def run(sel):
            sub_init = None if init is None else (init[0][:, :, sel], init[1][:, :, sel])
            out = self._run(self.model.track_features, pyramid, q[:, sel], iters=self.iters, init=sub_init,
                            all_iterations=False)[-1]
            return out.coords, out.vis, out.conf

        if batches == 1:
            tracks, vis, conf = run(slice(None))
            return tracks[:, :, :n_user], vis[:, :, :n_user], conf[:, :, :n_user]
        extra = torch.arange(n_user, q.shape[1], device=q.device)
        parts = []
        for users in torch.arange(n_user, device=q.device).chunk(batches):
            tracks, vis, conf = run(torch.cat([users, extra]))
            k = len(users)
            parts.append((tracks[:, :, :k], vis[:, :, :k], conf[:, :, :k]))
        return tuple(torch.cat([p[i] for p in parts], dim=2) for i in range(3))

    def _initial_tracks(self, video: Tensor, q: Tensor) -> tuple[Tensor, Tensor] | None:
        """The model's starting tracks (:attr:`initial_tracks`) for queries ``q`` in model
        pixels, from the caller's frames, in model pixels on the model's device; None for a
        model that starts from its queries."""
        if self.initial_tracks is None:
            return None
        H, W = video.shape[-2:]
        q_video = q.clone()
        q_video[..., 1:] *= _scale(self.interp_shape, (H, W), q)
        coords, vis = self.initial_tracks(video, q_video.to(video.device))
        coords, vis = coords.to(q.device), vis.to(q.device)
        return coords * _scale((H, W), self.interp_shape, coords), vis

    def _merge_backward(self, reversed_pyramid, q, tracks, vis, conf, init, n_user: int, batches: int):
        """Replace each track before its query frame by a run on the time-reversed features."""
        T = reversed_pyramid[0].shape[1]
        rq = q.clone()
        rq[..., 0] = T - 1 - rq[..., 0]
        if init is not None:
            init = (init[0].flip(1), init[1].flip(1))
        rev_tracks, rev_vis, rev_conf = self._track(reversed_pyramid, rq, init, n_user, batches)
        before = torch.arange(T, device=q.device)[None, :, None] < q[:, None, :n_user, 0]
        tracks = torch.where(before[..., None], rev_tracks.flip(1), tracks)
        vis = torch.where(before, rev_vis.flip(1), vis)
        conf = torch.where(before, rev_conf.flip(1), conf)
        return tracks, vis, conf


# --------------------------------------------------------------------------
# Online
# --------------------------------------------------------------------------


class OnlinePredictor(_PredictorBase):
    """Streaming tracking with a :class:`CoTracker3Online`.

    Two ways to drive it:

    * as the reference online predictor: ``pred(first_chunk, is_first_step=True,
      queries=...)`` sets up, then ``pred(video[:, i : i + 2 * pred.step])`` for
      ``i = 0, step, 2 * step, ...`` returns the tracks of every frame seen so far;
    * frame by frame: :meth:`start`, then :meth:`push` any number of new frames
      at a time, then :meth:`finish`; or :meth:`track` over an iterable of frames.

    Only the last ``window_len`` frames and the model's window state are kept,
    so memory does not grow with the frames processed, apart from the returned
    tracks (use ``keep_history=False`` to keep only the newest ones).

    Args:
        model: an online model with weights loaded.
        iters: refinement iterations per window (default: the model's ``iters``
            attribute, else :data:`DEFAULT_ITERS`, 6, as the published predictor).
        visibility_threshold: threshold on visibility x confidence (default: the
            model's ``visibility_threshold`` attribute, else :data:`ONLINE_VISIBILITY_THRESHOLD`).
        keep_history: keep and return tracks for every frame seen (default) or
            only for the frames finalised by the latest call.
        dtype: arithmetic precision, as :class:`Predictor`'s.
    """

    def __init__(
        self,
        model: CoTracker3Online,
        iters: int | None = None,
        visibility_threshold: float | None = None,
        keep_history: bool = True,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__(model, CoTracker3Online, iters, visibility_threshold, ONLINE_VISIBILITY_THRESHOLD, dtype)
        self.keep_history = keep_history
        self.step = model.step
        self.window_len = model.window_len
        self._state: OnlineState | None = None

    # -- the reference-style interface --------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        video_chunk,
        is_first_step: bool = False,
        queries=None,
        grid_size: int = 0,
        grid_query_frame: int = 0,
        add_support_grid: bool = False,
    ) -> TrackingResult | None:
        """Process a chunk of ``2 * step`` frames starting at frame ``i * step``.

        Args:
            video_chunk: ``(B, L, 3, H, W)`` frames 0..255. With ``is_first_step``
                only its size is used (to scale queries); returns None.
            is_first_step: start a new video with these queries / grid.
            queries: ``(B, N, 3)`` or ``(N, 3)`` ``(t, x, y)`` caller's pixels.
            grid_size: regular grid side when no queries are given.
            grid_query_frame: frame the grid points start from.
            add_support_grid: track a 6x6 grid along with the queries (dropped).

        Returns:
            None on the first step; then a :class:`TrackingResult` for every
            frame seen so far (frames still inside the current window may be
            revised by the next call).
        """
        video_chunk = _as_chunk(video_chunk)
        if is_first_step:
            B, _, _, H, W = video_chunk.shape
            self.start(queries=queries, grid_size=grid_size, grid_query_frame=grid_query_frame,
                       frame_size=(W, H), batch=B, add_support_grid=add_support_grid)
            return None
        if self._state is None:
            raise InputError("call with is_first_step=True (and queries or grid_size) first")
        return self._run_window(video_chunk)

    # -- the streaming interface ---------------------------------------------

    def start(
        self,
        queries=None,
        grid_size: int = 0,
        grid_query_frame: int = 0,
        *,
        frame_size: tuple[int, int],
        batch: int = 1,
        add_support_grid: bool = False,
        num_frames: int | None = None,
    ) -> None:
        """Start a new video.

        Args:
            queries: ``(N, 3)`` / ``(B, N, 3)`` ``(t, x, y)`` in the caller's pixels.
            grid_size: regular grid side when no queries are given.
            grid_query_frame: frame of the grid points.
            frame_size: ``(W, H)`` of the frames that will be pushed.
            batch: batch size of the frames that will be pushed.
            add_support_grid: track a 6x6 support grid with the queries.
            num_frames: total frames, when known, to check query frames up front.
        """
        W, H = frame_size
        if W < 2 or H < 2:
            raise InputError(f"frames must be at least 2x2 pixels, got {W}x{H}")
        limit = num_frames if num_frames is not None else 2**31
        if queries is not None:
            if grid_size:
                raise QueryError("give either queries or grid_size, not both")
            q = check_queries(queries, batch, limit, W, H, self.device)
            q[..., 1:] *= _scale((H, W), self.interp_shape, q)
        elif grid_size > 0:
            _check_grid(grid_size, grid_query_frame, limit)
            pts = grid_points(grid_size, self.interp_shape, self.device)
            q = torch.cat([torch.full_like(pts[..., :1], float(grid_query_frame)), pts], -1).expand(batch, -1, -1)
        else:
            _check_grid(grid_size, grid_query_frame, limit)
            raise QueryError("give queries or a grid_size > 0 to track")
        self._n_user = q.shape[1]
        if add_support_grid:
            g = grid_points(SUPPORT_GRID_SIZE, self.interp_shape, self.device)
            g = torch.cat([torch.zeros_like(g[..., :1]), g], -1).expand(batch, -1, -1)
            q = torch.cat([q, g], dim=1)
        self._frame_hw = (H, W)
        self._batch = batch
        self._state = self.model.init_state(q.contiguous())
        self._buffer: list[Tensor] = []  # resized frames not yet finalised (<= window_len)
        self._seen = 0
        self._final: list[TrackingResult] = []
        self._pending: TrackingResult | None = None

    @torch.no_grad()
    def push(self, frames) -> TrackingResult | None:
        """Add new frames; runs every window that they complete.

        Args:
            frames: ``(B, L, 3, H, W)`` or ``(L, 3, H, W)`` (or one ``(3, H, W)``
                frame), uint8 or float 0..255, the next ``L >= 1`` frames.

        Returns:
            The tracks so far (see ``keep_history``) if a window ran, else None.
        """
        if self._state is None:
            raise InputError("call start(...) before push(...)")
        frames = _as_chunk(frames)
        self._check_frames(frames)
        resized = resize_frames(frames.to(self.device), self.interp_shape)
        ran = False
        for i in range(resized.shape[1]):
            self._buffer.append(resized[:, i])
            self._seen += 1
            if len(self._buffer) == self.window_len:
                self._process(torch.stack(self._buffer, 1), last=False)
                ran = True
        return self.result() if ran else None

    @torch.no_grad()
    def finish(self) -> TrackingResult:
        """Process the frames still buffered; returns tracks for every frame."""
        if self._state is None:
            raise InputError("call start(...) and push(...) before finish()")
        if self._seen < 2:
            raise InputError(f"{self._seen} frame(s) were pushed; tracking needs at least 2")
        unprocessed = len(self._buffer) > self.window_len - self.step or self._pending is None
        if unprocessed:
            self._process(torch.stack(self._buffer, 1), last=True)
        elif self._pending is not None:
            self._final.append(self._pending)
            self._pending = None
        out = self.result()
        self._state = None
        return out

    def track(self, frames: Iterable, chunk: int = 8) -> Iterator[TrackingResult]:
        """Stream an iterable of frames ``(H, W, 3)`` uint8 (e.g. from a video reader).

        Yields the tracks so far (see ``keep_history``) after each window that
        ran (batch 1); the last item is the result of :meth:`finish`. Call
        :meth:`start` first.
        """
        batch = []
        for frame in frames:
            f = torch.as_tensor(np.asarray(frame))
            batch.append(f.permute(2, 0, 1) if f.ndim == 3 and f.shape[-1] == 3 else f)
            if len(batch) == chunk:
                out = self.push(torch.stack(batch)[None])
                batch = []
                if out is not None:
                    yield out
        if batch:
            self.push(torch.stack(batch)[None])
        yield self.finish()

    def result(self) -> TrackingResult:
        """Tracks of every frame seen so far (or of the newest, see ``keep_history``)."""
        parts = self._final + ([self._pending] if self._pending is not None else [])
        if not parts:
            raise InputError("no window has been processed yet")
        return TrackingResult(
            torch.cat([p.tracks for p in parts], 1),
            torch.cat([p.visibility for p in parts], 1),
            torch.cat([p.confidence for p in parts], 1),
            parts[0].queries,
            parts[0].start_frame,
            torch.cat([p.visibility_score for p in parts], 1),
        )

    # -- internals -------------------------------------------------------------

    def _check_frames(self, frames: Tensor) -> None:
        B, _, _, H, W = frames.shape
        if (H, W) != self._frame_hw or B != self._batch:
            raise InputError(
                f"frames are {W}x{H} (batch {B}) but the stream was started for "
                f"{self._frame_hw[1]}x{self._frame_hw[0]} (batch {self._batch})"
            )

    def _run_window(self, chunk: Tensor) -> TrackingResult:
        """Reference-style call: ``chunk`` holds frames ``start .. start + L - 1``."""
        self._check_frames(chunk)
        L = chunk.shape[1]
        if L > self.window_len:
            raise InputError(f"a chunk holds at most {self.window_len} frames (2 * step), got {L}")
        resized = resize_frames(chunk.to(self.device), self.interp_shape)
        self._process(resized, last=L < self.window_len)
        return self.result()

    def _process(self, window: Tensor, last: bool) -> None:
        """Run one model window on resized frames starting at ``state.start``."""
        start = self._state.start
        out, self._state = self._run(self.model.forward_window, window, self._state, iters=self.iters)
        res = self._postprocess(out, start)
        L = window.shape[1]
        # This window supersedes the previous window's pending (shared) frames.
        if last:
            self._final.append(res)
            self._pending = None
        else:
            keep = min(self.step, L)
            self._final.append(_slice_frames(res, 0, keep))
            self._pending = _slice_frames(res, keep, L)
        if not self.keep_history and len(self._final) > 1:
            self._final = self._final[-1:]
        # Keep only the frames the next window needs.
        self._buffer = self._buffer[self.step :] if len(self._buffer) >= self.step else []

    def _postprocess(self, out: ModelOutput, start: int) -> TrackingResult:
        H, W = self._frame_hw
        n = self._n_user
        tracks = out.coords[:, :, :n] * _scale(self.interp_shape, (H, W), out.coords)
        vis, conf = out.vis[:, :, :n], out.conf[:, :, :n]
        q = self._state.queries[:, :n].clone()
        q[..., 1:] *= _scale(self.interp_shape, (H, W), q)
        score = vis * conf
        return TrackingResult(tracks, score > self.visibility_threshold, conf, q, start, score)


def _slice_frames(r: TrackingResult, a: int, b: int) -> TrackingResult:
    return TrackingResult(r.tracks[:, a:b], r.visibility[:, a:b], r.confidence[:, a:b], r.queries,
                          r.start_frame + a, r.visibility_score[:, a:b])


def _as_chunk(frames) -> Tensor:
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames)
    if not isinstance(frames, Tensor):
        raise InputError(f"frames must be a tensor or array, got {type(frames).__name__}")
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim == 4:
        frames = frames[None]
    if frames.ndim != 5 or frames.shape[2] != 3:
        raise InputError(f"frames must be (B, L, 3, H, W) RGB, got shape {tuple(frames.shape)}")
    if not (frames.dtype == torch.uint8 or frames.is_floating_point()):
        raise InputError(f"frames must be uint8 or float 0..255, got {frames.dtype}")
    return frames
