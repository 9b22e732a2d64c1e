"""Classical baseline: pyramidal Lucas-Kanade with a forward-backward check.

:class:`LucasKanadeTracker` has the call signature and the result of
:class:`cotracker3.Predictor` (same inputs, checks, errors and
:class:`~cotracker3.predictor.TrackingResult`), so it can stand in for the
model anywhere, e.g. as the reference point of an evaluation.

What it is: OpenCV's pyramidal Lucas-Kanade (``cv2.calcOpticalFlowPyrLK``)
chained frame to frame on grey-level frames, vectorised over all the points of
a frame pair, with a small window and a large one for the points the small
one fails on. A point is visible where its step passes a forward-backward
consistency check, stays inside the frame, still looks like its query patch
(SSIM-style structural similarity) and moves smoothly; otherwise it is *lost*
and searched for again in every later frame by matching the query patch near
where the point should be, so it comes back after an occlusion (see
:class:`LucasKanadeTracker`).

What it is not: there is no learned appearance model and no reasoning across
tracks: each point is followed on its own from local image gradients with a
translation-only window. It drifts (hundredths of a pixel per frame on
textured surfaces, more under rotation, scaling and perspective), loses points
on weak texture and near occlusion boundaries, can slip onto look-alike spots,
and after a long occlusion finds a point again only if it reappears near where
its last velocity puts it, still looking like its query patch. Positions
reported for frames where a point is lost are interpolated, not observed.

Pixel convention: ``(x, y)`` with ``(0, 0)`` the centre of the top-left pixel,
as everywhere in :mod:`cotracker3`. OpenCV's Lucas-Kanade uses the same: the
intensity at integer ``(x, y)`` is the pixel at column ``x``, row ``y``
(bilinear in between), and level ``l`` of its pyramid samples level 0 at
``2**l * (x, y)``. ``tests/cotracker3/test_baseline.py`` checks this with a zoom about
pixel ``(0, 0)``.

Cost: OpenCV's Python binding (checked with 5.0) accepts images only, not the
pyramids of ``cv2.buildOpticalFlowPyramid``, so every LK call builds the
pyramids of its two frames. 1024 points from one frame through 24 frames of
256x256 take 0.2-0.4 s on two CPU cores (0.6-0.8 s with query frames spread
over the video and backward tracking).

It is also where a model built with ``initialisation="baseline"`` starts its
refinement: :func:`initial_tracks` turns the baseline's tracks and visibility
into the model's ``init`` input, and is registered with the predictors
(:func:`cotracker3.predictor.register_initial_tracks`) when this module is
imported (``import cotracker3`` does), so they start such a model from it by
themselves. The model and the predictors never import this module.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor

from cotracker3.errors import QueryError
from cotracker3.predictor import (
    DENSE_GRID_SIZE,
    TrackingResult,
    check_queries,
    check_request,
    grid_points,
    register_initial_tracks,
)

logger = logging.getLogger(__name__)

BASELINE = "baseline"
"""Tracker name of the classical Lucas-Kanade baseline (``--model`` / ``--tracker``), and
the :data:`cotracker3.model.INITIALISATIONS` name of a model that refines its tracks."""

#: Initial visibility logit of a point the baseline sees (minus it: one it lost).
BASELINE_VIS_LOGIT = 2.0

GREY_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights of R, G, B (those of ``cv2.COLOR_RGB2GRAY``)."""


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def to_grey(video: Tensor) -> np.ndarray:
    """``(B, T, 3, H, W)`` float 0..255 RGB -> ``(B, T, H, W)`` uint8 luma, C-contiguous."""
    grey = torch.einsum("btchw,c->bthw", video, video.new_tensor(GREY_WEIGHTS))
    return np.ascontiguousarray(grey.round().clamp(0, 255).to(torch.uint8).cpu().numpy())


def working_size(frame_hw: tuple[int, int], max_size: int | None) -> tuple[int, int]:
    """``(H, W)`` scaled down (aspect ratio kept, rounded) so that neither side exceeds ``max_size``."""
    H, W = frame_hw
    if max_size is None or max(H, W) <= max_size:
        return H, W
    s = max_size / max(H, W)
    return max(round(H * s), 2), max(round(W * s), 2)


def resize_grey(frame: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Area-averaging resize of an ``(H, W)`` uint8 frame to ``size_hw`` (identity if equal)."""
    import cv2

    if frame.shape == tuple(size_hw):
        return frame
    return cv2.resize(frame, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_AREA)


def sample_patches(image: np.ndarray, centres: np.ndarray, size: int) -> np.ndarray:
    """Bilinear ``size x size`` patches of ``image`` centred on sub-pixel points.

    Args:
        image: ``(H, W)`` grey image, ``H, W >= 2``.
        centres: ``(M, 2)`` pixels ``(x, y)``, ``(0, 0)`` the centre of the top-left pixel.
        size: patch side; samples are one pixel apart.

    Returns:
        ``(M, size * size)`` float32, row-major patches; samples outside the
        image repeat its border.
    """
    H, W = image.shape
    off = np.arange(size, dtype=np.float32) - (size - 1) / 2
    xs = np.clip(centres[:, 0, None, None] + off[None, None, :], 0, W - 1)  # (M, 1, size)
    ys = np.clip(centres[:, 1, None, None] + off[None, :, None], 0, H - 1)  # (M, size, 1)
    x0 = np.minimum(xs.astype(np.intp), W - 2)
    y0 = np.minimum(ys.astype(np.intp), H - 2)
    fx, fy = xs - x0, ys - y0
    flat = image.reshape(-1)
    i00 = y0 * W + x0  # broadcasts to (M, size, size)

    def at(i):
        return flat[i].astype(np.float32)

    top = at(i00) * (1 - fx) + at(i00 + 1) * fx
    bot = at(i00 + W) * (1 - fx) + at(i00 + W + 1) * fx
    return (top * (1 - fy) + bot * fy).reshape(len(centres), size * size)


def centre_patches(patches: np.ndarray) -> np.ndarray:
    """Subtract each row's mean (patches ``(M, P)`` -> zero-mean ``(M, P)`` float32)."""
    return (patches - patches.mean(1, keepdims=True)).astype(np.float32)


def structural_similarity(a: np.ndarray, b: np.ndarray, contrast_floor: float) -> np.ndarray:
    """Similarity of zero-mean patches ``(M, P)``: ``(2 s_ab + c^2) / (s_aa + s_bb + c^2)``.

    ``s_ab`` is the covariance of the two patches' grey levels and ``c =
    contrast_floor`` (grey levels): the contrast-structure term of SSIM. It is
    1 for identical patches, near 0 for unrelated ones, negative for inverted
    ones; unlike plain normalised cross-correlation it stays near 1 for two
    flat patches (whose correlation is that of their noise) and near 0 for a
    flat patch against a textured one.

    Returns:
        ``(M,)`` float32 in ``[-1, 1]``.
    """
    c = a.shape[1] * contrast_floor**2
    return ((2 * (a * b).sum(1) + c) / ((a * a).sum(1) + (b * b).sum(1) + c)).astype(np.float32)


# --------------------------------------------------------------------------
# The tracker
# --------------------------------------------------------------------------


class LucasKanadeTracker:
    """Pyramidal Lucas-Kanade point tracker with the interface of :class:`~cotracker3.Predictor`.

    Each point is tracked from its query frame to the last frame (and, with
    ``backward_tracking``, from its query frame back to frame 0, the same way
    on the reversed frames), one frame pair at a time, all points of a pair in
    one OpenCV call. Going from frame ``t`` to ``t + 1``, every point that has
    started is moved from its current estimate ``p_t`` to ``p_{t+1}`` by LK,
    and ``p_{t+1}`` is tracked back to ``p'_t``. The step is *reliable* when

    * LK reports success both ways,
    * the forward-backward error ``|p'_t - p_t| <= fb_threshold`` pixels,
    * ``p_{t+1}`` lies inside the frame's pixel area, ``[-0.5, W-0.5] x
      [-0.5, H-0.5]`` (the pixel centres span ``[0, W-1]``),
    * the ``patch_size`` patch at ``p_{t+1}`` still resembles the patch at the
      query: :func:`structural_similarity` ``>= similarity_threshold``, and no
      more than ``max_similarity_drop`` below its value at the point's last
      reliable frame. Appearance changes slowly under rotation, scaling and
      lighting but jumps when the track slides onto an occluder or a
      neighbouring surface that moves coherently (which the forward-backward
      check does not catch), and
    * the step changes the point's velocity (since its last reliable frame) by
      at most ``max_velocity_change`` pixels per frame, once it has one: a
      sudden jump is a slip onto a look-alike spot.

    A tracked point that fails is stepped once more with the larger window
    ``fallback_win_size`` (``fallback_levels``), which reaches texture a small
    window does not see; the small window comes first because it errs less at
    occlusion boundaries. A point is visible in ``t + 1`` exactly when it is
    reliable there; otherwise it is *lost*. Loss handling and re-acquisition:

    * a lost point keeps being stepped frame to frame from an estimate that
      follows forward-backward consistent steps (they may be following the
      occluder) and stays put otherwise;
    * in every frame a lost point is searched for directly: LK from its query
      point in the query frame to the current frame, and back (started at the
      query point). The search starts where the frame-to-frame step put the
      point if that step passed every check with similarity
      ``>= reacquire_threshold``, else where the point would be had it kept its
      last velocity since its last reliable frame. The point is re-acquired
      (visible again) when the search ends within ``search_radius`` of where
      it started, comes back within ``fb_threshold`` of the query point, lies
      inside the frame and has similarity ``>= reacquire_threshold``. The
      search gives up ``max_lost_frames`` after the last reliable frame.
      Matching the query patch itself, rather than whatever the lost estimate
      sat on, makes re-acquired positions free of drift and of the occluder;
      searching from the query frame costs two LK calls per frame and distinct
      query frame, however many points are lost.

    In frames where a point is lost its position is the linear interpolation
    between the reliable positions on either side of the gap (the last
    reliable position after the last one): an estimate, flagged not visible.

    Confidence: ``exp(-e / fb_threshold)`` with ``e`` the forward-backward error
    of the step (or search) that made the point visible; 1 at the query; 0
    where lost and before the query frame.

    The defaults were chosen on training scenes of :mod:`cotracker3.synthetic`
    (not the held-out evaluation set) and on 2D scenes of textured layers
    moving, rotating and scaling over a textured background, by TAP-Vid
    average Jaccard and occlusion accuracy: small windows did better than
    the common 21x21 with three levels, which drift onto neighbouring surfaces
    at occlusion boundaries; the large fallback window recovers points on weak
    texture. Larger videos are tracked shrunk to ``max_size`` (the model too
    tracks at its own resolution), so the same windows suit them.

    Args:
        win_size: side of the LK integration window, pixels.
        levels: pyramid levels above the full image (0: none). Motions up to
            about ``win_size / 2 * 2**levels`` pixels per frame are caught.
        fallback_win_size: side of the window of the second attempt of a
            failed step (None: no second attempt).
        fallback_levels: pyramid levels of the second attempt.
        fb_threshold: forward-backward error, pixels, above which a step fails.
        max_iters: LK iterations per pyramid level at most.
        eps: LK stops iterating at a level once an update is below this, pixels.
        min_eig_threshold: LK fails where the smallest eigenvalue of the
            window's gradient matrix (divided by the window area, intensities
            0..1) is below this (OpenCV's ``minEigThreshold``); the default only
            rejects practically uniform windows.
        patch_size: side of the patches compared with the query's, pixels.
        contrast_floor: grey levels of contrast (standard deviation) below
            which patches count as flat in :func:`structural_similarity`;
            about the noise of the video.
        similarity_threshold: similarity to the query patch below which a
            tracked point is lost (low: appearance changes legitimately).
        max_similarity_drop: largest fall of that similarity from the point's
            last reliable frame accepted in one step.
        max_velocity_change: largest change, pixels per frame, of a point's
            velocity accepted in one step.
        reacquire_threshold: similarity to the query patch a lost point needs
            to become visible again (a fresh match needs more evidence than a
            continued track).
        search_radius: pixels from its starting point within which the search
            for a lost point must end.
        max_lost_frames: frames after its last reliable one during which a lost
            point is searched for directly (None: to the end of the video).
        max_size: frames whose longer side exceeds this many pixels are
            tracked shrunk (area averaging, aspect ratio kept) to that size:
            motion in pixels shrinks with them, so the windows need not grow
            with the video, and it is faster. Coordinates are mapped in and
            out exactly (pixel centres); positions lose the precision of the
            full frame, and the pixel sizes and thresholds above are in the
            shrunk frame's pixels. None: always track at the video's size.
        dense_stride: spacing in pixels of the dense grid (neither queries nor
            grid given); None: ``max(W // 80, 1)``, the spacing of one batch of
            :class:`~cotracker3.Predictor`'s dense mode.
        device: where the returned tensors are put; the tracking itself always
            runs on the CPU (OpenCV, numpy).

    Example:
        >>> lk = LucasKanadeTracker()
        >>> out = lk(video, grid_size=20)   # video (B, T, 3, H, W) 0..255
        >>> out.tracks.shape                 # (B, T, 400, 2)
    """

    def __init__(
        self,
        win_size: int = 9,
        levels: int = 2,
        fallback_win_size: int | None = 31,
        fallback_levels: int = 3,
        fb_threshold: float = 1.0,
        max_iters: int = 30,
        eps: float = 0.01,
        min_eig_threshold: float = 1e-6,
        patch_size: int = 11,
        contrast_floor: float = 3.0,
        similarity_threshold: float = 0.4,
        max_similarity_drop: float = 0.3,
        max_velocity_change: float = 10.0,
        reacquire_threshold: float = 0.7,
        search_radius: float = 16.0,
        max_lost_frames: int | None = None,
        max_size: int | None = 512,
        dense_stride: int | None = None,
        device: str | torch.device = "cpu",
    ):
        if win_size < 3:
            raise ValueError(f"win_size must be at least 3 pixels, got {win_size}")
        if levels < 0 or fallback_levels < 0:
            raise ValueError(f"levels must be >= 0, got {levels} and {fallback_levels}")
        if fallback_win_size is not None and fallback_win_size < 3:
            raise ValueError(f"fallback_win_size must be at least 3 pixels or None, got {fallback_win_size}")
        if not fb_threshold > 0:
            raise ValueError(f"fb_threshold must be > 0 pixels, got {fb_threshold}")
        if max_iters < 1 or not eps > 0:
            raise ValueError(f"max_iters must be >= 1 and eps > 0, got {max_iters} and {eps}")
        if not min_eig_threshold >= 0:
            raise ValueError(f"min_eig_threshold must be >= 0, got {min_eig_threshold}")
        if patch_size < 3:
            raise ValueError(f"patch_size must be at least 3 pixels, got {patch_size}")
        if not contrast_floor > 0:
            raise ValueError(f"contrast_floor must be > 0 grey levels, got {contrast_floor}")
        for name, value in (("similarity_threshold", similarity_threshold),
                            ("reacquire_threshold", reacquire_threshold)):
            if not -1 <= value <= 1:
                raise ValueError(f"{name} must be in [-1, 1], got {value}")
        if not max_similarity_drop >= 0:
            raise ValueError(f"max_similarity_drop must be >= 0, got {max_similarity_drop}")
        if not max_velocity_change > 0 or not search_radius > 0:
            raise ValueError(f"max_velocity_change and search_radius must be > 0 pixels, got "
                             f"{max_velocity_change} and {search_radius}")
        if max_lost_frames is not None and max_lost_frames < 0:
            raise ValueError(f"max_lost_frames must be >= 0 or None, got {max_lost_frames}")
        if max_size is not None and max_size < 2:
            raise ValueError(f"max_size must be >= 2 pixels or None, got {max_size}")
        if dense_stride is not None and dense_stride < 1:
            raise ValueError(f"dense_stride must be >= 1 or None, got {dense_stride}")
        self.win_size = int(win_size)
        self.levels = int(levels)
        self.fallback_win_size = None if fallback_win_size is None else int(fallback_win_size)
        self.fallback_levels = int(fallback_levels)
        self.fb_threshold = float(fb_threshold)
        self.max_iters = int(max_iters)
        self.eps = float(eps)
        self.min_eig_threshold = float(min_eig_threshold)
        self.patch_size = int(patch_size)
        self.contrast_floor = float(contrast_floor)
        self.similarity_threshold = float(similarity_threshold)
        self.max_similarity_drop = float(max_similarity_drop)
        self.max_velocity_change = float(max_velocity_change)
        self.reacquire_threshold = float(reacquire_threshold)
        self.search_radius = float(search_radius)
        self.max_lost_frames = max_lost_frames
        self.max_size = max_size
        self.dense_stride = dense_stride
        self._device = torch.device(device)

    @property
    def device(self) -> torch.device:
        """Where the returned tensors are put (inputs may be on any device)."""
        return self._device

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(win_size={self.win_size}, levels={self.levels}, "
            f"fb_threshold={self.fb_threshold}, similarity_threshold={self.similarity_threshold}, "
            f"reacquire_threshold={self.reacquire_threshold})"
        )

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
        for a dense grid: the pixels ``(i * s, j * s)`` of frame
        ``grid_query_frame``, ``s = dense_stride`` (``max(W // 80, 1)`` by
        default), row-major. (:class:`~cotracker3.Predictor` tracks every pixel
        in ``s * s`` batches; one batch is what a classical tracker affords.)

        Args:
            video: ``(B, T, 3, H, W)`` or ``(T, 3, H, W)``, uint8 or float 0..255, RGB.
                Tracked on its BT.601 luma rounded to uint8.
            queries: ``(B, N, 3)`` or ``(N, 3)`` ``(t, x, y)``: integer frame index and
                pixels of ``video``.
            grid_size: points per side of a regular grid (0: none), placed by
                :func:`~cotracker3.predictor.grid_points` in the frame's pixels.
            grid_query_frame: frame the grid (or dense) points start from.
            segm_mask: ``(B, 1, H, W)``, ``(1, H, W)`` or ``(H, W)``; keeps the grid
                points whose nearest pixel is non-zero in the (first) mask.
            backward_tracking: also track backwards in time from each query
                frame. Without it, frames before a point's query frame hold the
                query position, not visible, confidence 0 (the model leaves them
                as initialised and unreliable).

        Returns:
            :class:`~cotracker3.predictor.TrackingResult` on :attr:`device`:
            ``tracks`` ``(B, T, N, 2)`` float32 pixels ``(x, y)`` (``(0, 0)`` the
            centre of the top-left pixel), ``visibility`` ``(B, T, N)`` bool,
            ``confidence`` ``(B, T, N)`` float32 in ``[0, 1]``, ``queries``
            ``(B, N, 3)`` float32. In its query frame a point is exactly its
            query, visible, confidence 1.

        Raises:
            InputError: the video has the wrong type, shape, dtype or fewer than 2 frames.
            QueryError: invalid queries (shape, empty, NaN, frame index, outside
                the frame), grid size, query frame or mask, or both queries and
                a grid.
        """
        video = check_request(video, queries, grid_size, grid_query_frame, segm_mask)
        B, T, _, H, W = video.shape
        if queries is not None:
            q = check_queries(queries, B, T, W, H, "cpu")
        elif grid_size > 0:
            q = self._grid_queries(B, grid_size, grid_query_frame, segm_mask, (H, W))
        else:
            q = self._dense_queries(B, grid_query_frame, (H, W))

        grey = to_grey(video)
        qn = q.numpy()
        N = qn.shape[1]
        work_hw = working_size((H, W), self.max_size)
        resized = work_hw != (H, W)
        if resized:
            logger.info("tracking on frames resized from %dx%d to %dx%d", W, H, work_hw[1], work_hw[0])
        # Pixel centres under a resize of the whole frame: x' = (x + 0.5) * W' / W - 0.5.
        scale = np.array([work_hw[1] / W, work_hw[0] / H], np.float32)
        tracks = np.empty((B, T, N, 2), np.float32)
        vis = np.empty((B, T, N), bool)
        conf = np.empty((B, T, N), np.float32)
        for b in range(B):
            frames = [resize_grey(f, work_hw) for f in grey[b]]
            qw = qn[b].copy()
            if resized:
                qw[:, 1:] = (qw[:, 1:] + 0.5) * scale - 0.5  # the pixel area maps onto the pixel area
            tracks[b], vis[b], conf[b] = self._track_video(frames, qw, backward_tracking)
        if resized:
            tracks = (tracks + 0.5) / scale - 0.5
            # Exactly the query in its query frame (and before it without backward tracking).
            frame, query_frame = np.arange(T)[None, :, None], qn[:, None, :, 0]
            exact = frame == query_frame if backward_tracking else frame <= query_frame
            tracks = np.where(exact[..., None], qn[:, None, :, 1:], tracks).astype(np.float32)
        dev = self.device
        return TrackingResult(
            torch.from_numpy(tracks).to(dev),
            torch.from_numpy(vis).to(dev),
            torch.from_numpy(conf).to(dev),
            q.to(dev),
        )

    # -- queries ---------------------------------------------------------------

    def _grid_queries(self, B: int, grid_size: int, frame: int, segm_mask, frame_hw: tuple[int, int]) -> Tensor:
        pts = grid_points(grid_size, frame_hw)
        if segm_mask is not None:
            mask = torch.as_tensor(np.asarray(segm_mask) if not isinstance(segm_mask, Tensor) else segm_mask)
            while mask.ndim < 4:
                mask = mask[None]
            if mask.ndim != 4 or tuple(mask.shape[-2:]) != frame_hw:
                raise QueryError(f"segm_mask is {tuple(mask.shape)} but frames are {frame_hw} (H, W)")
            H, W = frame_hw
            xi = pts[0, :, 0].round().long().clamp(0, W - 1)
            yi = pts[0, :, 1].round().long().clamp(0, H - 1)
            keep = mask[0, 0].cpu()[yi, xi] != 0
            if not keep.any():
                raise QueryError("segm_mask contains none of the grid points; use a larger mask or grid")
            pts = pts[:, keep]
        t = torch.full_like(pts[..., :1], float(frame))
        return torch.cat([t, pts], dim=-1).expand(B, -1, -1).contiguous()

    def _dense_queries(self, B: int, frame: int, frame_hw: tuple[int, int]) -> Tensor:
        H, W = frame_hw
        step = self.dense_stride or max(W // DENSE_GRID_SIZE, 1)
        gy, gx = torch.meshgrid(torch.arange(0, H, step), torch.arange(0, W, step), indexing="ij")
        q = torch.stack([torch.full_like(gx, frame), gx, gy], -1).reshape(1, -1, 3).float()
        logger.info("dense tracking: %d points, every %d-th pixel", q.shape[1], step)
        return q.expand(B, -1, -1).contiguous()

    # -- tracking --------------------------------------------------------------

    def _track_video(self, grey: list[np.ndarray], q: np.ndarray, backward: bool):
        """One video: ``T`` frames ``(H, W)`` uint8, queries ``(N, 3)`` -> tracks, visibility, confidence."""
        T = len(grey)
        qt = q[:, 0].astype(np.intp)
        qxy = np.ascontiguousarray(q[:, 1:], np.float32)
        templates = np.zeros((len(q), self.patch_size**2), np.float32)
        for t in np.unique(qt):
            sel = qt == t
            templates[sel] = centre_patches(sample_patches(grey[t], qxy[sel], self.patch_size))
        tracks, vis, conf = self._track_forward(grey, qt, qxy, templates)
        if backward and qt.max() > 0:
            rt, rv, rc = self._track_forward(grey[::-1], T - 1 - qt, qxy, templates)
            before = np.arange(T)[:, None] < qt[None, :]
            tracks = np.where(before[..., None], rt[::-1], tracks)
            vis = np.where(before, rv[::-1], vis)
            conf = np.where(before, rc[::-1], conf)
        return tracks, vis, conf

    def _track_forward(self, grey: list[np.ndarray], qt: np.ndarray, qxy: np.ndarray, templates: np.ndarray):
        """Track every point from its query frame ``qt`` to the last frame of ``grey``.

        Returns ``(T, N, 2)`` tracks, ``(T, N)`` visibility and confidence; frames
        before a point's query frame hold its query position, not visible.
        """
        T, N = len(grey), len(qt)
        H, W = grey[0].shape
        tracks = np.repeat(qxy[None], T, axis=0)
        vis = np.zeros((T, N), bool)
        conf = np.zeros((T, N), np.float32)
        pos = qxy.copy()  # current estimate (followed while lost)
        lost = np.zeros(N, bool)
        # At the last reliable observation: frame, position, velocity, similarity to the query.
        ref_t = qt.copy()
        ref_xy = qxy.copy()
        vel = np.zeros((N, 2), np.float32)
        ref_sim = np.ones(N, np.float32)
        max_gap = T if self.max_lost_frames is None else self.max_lost_frames

        def inside(p):  # the frame's pixel area
            return (p[:, 0] >= -0.5) & (p[:, 0] <= W - 0.5) & (p[:, 1] >= -0.5) & (p[:, 1] <= H - 0.5)

        def similarity(frame, p, idx):
            patches = centre_patches(sample_patches(frame, p, self.patch_size))
            return structural_similarity(patches, templates[idx], self.contrast_floor)

        def step(cur, nxt, idx, window=None):
            """LK of points ``idx`` from their estimates in ``cur`` to ``nxt`` and back.

            Returns the new positions, forward-backward errors, consistency
            (LK succeeded both ways within ``fb_threshold``), that and inside
            the frame, and similarity to the query patch (-1 where not inside).
            """
            p1, ok_f = self._lk(cur, nxt, pos[idx], window=window)
            p0, ok_b = self._lk(nxt, cur, p1, window=window)
            fb = np.linalg.norm(p0 - pos[idx], axis=1)
            consistent = ok_f & ok_b & (fb <= self.fb_threshold)
            ok = consistent & inside(p1)
            sim = np.full(len(idx), -1.0, np.float32)
            sim[ok] = similarity(nxt, p1[ok], idx[ok])
            return p1, fb, consistent, ok, sim

        known = np.zeros(N, bool)  # velocity known (reliable at least once after the query)

        def smooth(idx, p):
            """Steps of points ``idx`` to ``p`` change their known velocity by at most ``max_velocity_change``."""
            change = np.linalg.norm(p - pos[idx] - vel[idx], axis=1)
            return ~known[idx] | (change <= self.max_velocity_change)

        def accept(t, idx, p, fb, sim):
            """Points ``idx`` are reliable at ``p`` in frame ``t`` (forward-backward errors ``fb``)."""
            known[idx] = True
            gap = (t - ref_t[idx]).astype(np.float32)[:, None]
            vel[idx] = (p - ref_xy[idx]) / gap
            pos[idx] = ref_xy[idx] = p
            ref_t[idx] = t
            ref_sim[idx] = sim
            lost[idx] = False
            conf[t, idx] = np.exp(-fb / self.fb_threshold)

        vis[qt, np.arange(N)] = True
        conf[qt, np.arange(N)] = 1.0
        for t in range(int(qt.min()), T - 1):
            idx = np.flatnonzero(qt <= t)  # started points
            cur, nxt = grey[t], grey[t + 1]

            # 1. One LK step forward and back for every started point, lost or not.
            p1, fb, consistent, ok, sim = step(cur, nxt, idx)
            was_lost = lost[idx]
            keep = ok & ~was_lost & (sim >= self.similarity_threshold)
            keep &= sim >= ref_sim[idx] - self.max_similarity_drop
            keep &= smooth(idx, p1)
            if self.fallback_win_size is not None and not keep[~was_lost].all():
                # Tracked points that failed: once more with the large window (low texture).
                r = np.flatnonzero(~keep & ~was_lost)
                q1, qfb, _, qok, qsim = step(cur, nxt, idx[r], (self.fallback_win_size, self.fallback_levels))
                qkeep = qok & (qsim >= self.similarity_threshold) & (qsim >= ref_sim[idx[r]] - self.max_similarity_drop)
                qkeep &= smooth(idx[r], q1)
                r = r[qkeep]
                p1[r], fb[r], sim[r] = q1[qkeep], qfb[qkeep], qsim[qkeep]
                keep[r] = consistent[r] = ok[r] = True
            accept(t + 1, idx[keep], p1[keep], fb[keep], sim[keep])
            lost[idx[~keep]] = True
            # A lost point's estimate follows coherent motion (maybe an occluder's) or stays put.
            follow = ~keep & consistent
            pos[idx[follow]] = p1[follow]
            candidate = np.zeros(N, bool)  # lost, but the step found something that looks right
            candidate[idx[ok & was_lost & (sim >= self.reacquire_threshold)]] = True

            # 2. Every lost point: LK from its query point to where it should be, and back.
            gap = t + 1 - ref_t
            search = np.flatnonzero(lost & (qt <= t) & (gap <= max_gap))
            for r in np.unique(qt[search]):
                sel = search[qt[search] == r]
                guess = np.where(candidate[sel, None], pos[sel], ref_xy[sel] + vel[sel] * gap[sel, None])
                np.clip(guess, -0.5, [W - 0.5, H - 0.5], out=guess)
                p1, ok_f = self._lk(grey[r], nxt, qxy[sel], guess)
                p0, ok_b = self._lk(nxt, grey[r], p1, qxy[sel])  # the long way back: start at the query
                fb = np.linalg.norm(p0 - qxy[sel], axis=1)
                ok = ok_f & ok_b & (fb <= self.fb_threshold) & inside(p1)
                ok &= np.linalg.norm(p1 - guess, axis=1) <= self.search_radius
                sim = np.full(len(sel), -1.0, np.float32)
                sim[ok] = similarity(nxt, p1[ok], sel[ok])
                ok &= sim >= self.reacquire_threshold
                accept(t + 1, sel[ok], p1[ok], fb[ok], sim[ok])

            vis[t + 1, idx] = ~lost[idx]
            tracks[t + 1, idx] = ref_xy[idx]

        # Where lost: interpolate between the reliable positions around the gap, hold after the last.
        frames = np.arange(T)
        for n in np.flatnonzero((~vis & (frames[:, None] >= qt)).any(0)):
            seen = np.flatnonzero(vis[:, n])
            after = frames[qt[n] :]
            for d in range(2):
                tracks[after, n, d] = np.interp(after, seen, tracks[seen, n, d])
        return tracks, vis, conf

    def _lk(self, prev: np.ndarray, nxt: np.ndarray, pts: np.ndarray, guess: np.ndarray | None = None,
            window: tuple[int, int] | None = None):
        """LK of ``(M, 2)`` points from ``prev`` to ``nxt``, started at ``guess`` (default: the points).

        ``window`` is ``(win_size, levels)``, by default the tracker's. Returns the new
        ``(M, 2)`` points (the old ones where LK failed) and ``(M,)`` success.
        """
        win, levels = window or (self.win_size, self.levels)
        import cv2

        p = np.ascontiguousarray(pts, np.float32).reshape(-1, 1, 2)
        if len(p) == 0:
            return np.zeros((0, 2), np.float32), np.zeros(0, bool)
        init = None if guess is None else np.array(guess, np.float32).reshape(-1, 1, 2)
        out, status, _ = cv2.calcOpticalFlowPyrLK(
            prev,
            nxt,
            p,
            init,
            winSize=(win, win),
            maxLevel=levels,
            criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, self.max_iters, self.eps),
            flags=0 if guess is None else cv2.OPTFLOW_USE_INITIAL_FLOW,
            minEigThreshold=self.min_eig_threshold,
        )
        out = out.reshape(-1, 2)
        ok = status.reshape(-1).astype(bool) & np.isfinite(out).all(1)
        return np.where(ok[:, None], out, pts).astype(np.float32), ok


# --------------------------------------------------------------------------
# Starting tracks of a model that refines the baseline's
# --------------------------------------------------------------------------


@torch.no_grad()
def initial_tracks(video: Tensor, queries: Tensor) -> tuple[Tensor, Tensor]:
    """Where a model with ``initialisation="baseline"`` starts its refinement: the baseline's
    tracks (both directions of time from each query) and its visibility as logits.

    Args:
        video: ``(B, T, 3, H, W)`` 0..255, any size (the baseline tracks it as given).
        queries: ``(B, N, 3)`` ``(t, x, y)`` in pixels of ``video`` (frame indices are
            rounded, points clamped into the frame).

    Returns:
        ``(coords (B, T, N, 2)`` pixels of ``video``, ``vis (B, T, N)`` logits
        ``+-BASELINE_VIS_LOGIT``), on the queries' device, float32: the model's ``init``.
    """
    H, W = video.shape[-2:]
    q = queries.detach().float().cpu().clone()
    q[..., 0] = q[..., 0].round()
    q[..., 1] = q[..., 1].clamp(0, W - 1)
    q[..., 2] = q[..., 2].clamp(0, H - 1)
    out = LucasKanadeTracker()(video.detach().cpu(), queries=q, backward_tracking=True)
    vis = torch.where(out.visibility, BASELINE_VIS_LOGIT, -BASELINE_VIS_LOGIT)
    return out.tracks.float().to(queries.device), vis.float().to(queries.device)


register_initial_tracks(BASELINE, initial_tracks)
