"""Classical baseline: pyramidal Lucas-Kanade with a forward-backward check.

:class:`LucasKanadeTracker` has the call signature and the result of
:class:`cotracker3.Predictor` (same inputs, checks, errors and
:class:`~cotracker3.predictor.TrackingResult`), so it can stand in for the
model anywhere, e.g. as the reference point of an evaluation.

What it is: OpenCV's pyramidal Lucas-Kanade (``cv2.calcOpticalFlowPyrLK``)
chained frame to frame on grey-level frames, vectorised over all the points of
a frame pair. A point is visible where its step passes a forward-backward
consistency check, stays inside the frame and still looks like its query patch
(normalised cross-correlation); otherwise it is *lost* and searched for again
in later frames, so it can come back after an occlusion (see
:class:`LucasKanadeTracker`).

What it is not: there is no learned appearance model and no reasoning across
tracks or frames beyond the step at hand. Each point is followed on its own
from local image gradients with a translation-only window, so it drifts
(sub-pixel per frame on textured surfaces, more under rotation and scaling),
fails on textureless regions and near occlusion boundaries, and after a long
occlusion it comes back only if it reappears within reach of the search (a few
tens of pixels from where its last velocity puts it) still looking like its
query patch. Positions reported for frames where a point is lost are
interpolated, not observed.

Pixel convention: ``(x, y)`` with ``(0, 0)`` the centre of the top-left pixel,
as everywhere in :mod:`cotracker3`. OpenCV's Lucas-Kanade uses the same: the
intensity at integer ``(x, y)`` is the pixel at column ``x``, row ``y``
(bilinear in between), and level ``l`` of its pyramid samples level 0 at
``2**l * (x, y)``. ``tests/test_baseline.py`` checks this with a zoom about
pixel ``(0, 0)``.

Note: OpenCV's Python binding (checked with 5.0) accepts images only, not the
pyramids of ``cv2.buildOpticalFlowPyramid``, so every LK call builds the
pyramids of its two frames; for the frame sizes tracked here that costs less
than the tracking itself.
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
    _check_grid,
    as_video_tensor,
    check_queries,
    grid_points,
)

logger = logging.getLogger(__name__)

GREY_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights of R, G, B (those of ``cv2.COLOR_RGB2GRAY``)."""


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def to_grey(video: Tensor) -> np.ndarray:
    """``(B, T, 3, H, W)`` float 0..255 RGB -> ``(B, T, H, W)`` uint8 luma, C-contiguous."""
    grey = torch.einsum("btchw,c->bthw", video, video.new_tensor(GREY_WEIGHTS))
    return np.ascontiguousarray(grey.round().clamp(0, 255).to(torch.uint8).cpu().numpy())


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


def normalise_patches(patches: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-norm rows, so that NCC is a dot product; flat rows become zeros."""
    p = patches - patches.mean(1, keepdims=True)
    norm = np.linalg.norm(p, axis=1, keepdims=True)
    return np.where(norm > 1e-3, p / np.maximum(norm, 1e-3), 0.0).astype(np.float32)


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
    * ``p_{t+1}`` lies inside the frame, ``[0, W-1] x [0, H-1]``, and
    * the ``patch_size`` patch at ``p_{t+1}`` still correlates with the
      patch at the query (zero-mean NCC ``>= ncc_threshold``), which catches a
      point dragged along by an occluder or a neighbouring surface.

    A point is visible in ``t + 1`` exactly when it is reliable there;
    otherwise it is *lost*. Loss handling and re-acquisition:

    * a lost point keeps being stepped frame to frame from its estimate; the
      estimate follows steps that are forward-backward consistent (they may be
      following an occluder) and stays put otherwise. It is visible again as
      soon as a step passes every check with the stricter NCC
      ``reacquire_ncc_threshold``.
    * from its second lost frame on, it is also searched for directly: LK from
      the query frame's query point to the current frame, started at the last
      reliable position plus the last velocity times the frames since, then
      tracked back to the query frame. It is re-acquired when the
      forward-backward error (against the query point) is within
      ``fb_threshold``, the point is inside the frame and its NCC with the
      query patch is at least ``reacquire_ncc_threshold``. The search stops
      ``max_lost_frames`` frames after the last reliable one. Searching from
      the query frame costs two LK calls per frame and distinct query frame,
      however many points are lost, and does not accumulate drift.

    In frames where a point is lost, its position is the linear interpolation
    between the reliable positions on either side of the gap (the last
    reliable position after the last one): an estimate, flagged not visible.

    Confidence: ``exp(-e / fb_threshold)`` with ``e`` the forward-backward error
    of the step (or search) that made the point visible; 1 at the query; 0
    where lost or before the query frame.

    The defaults were chosen on synthetic 256x256 scenes of textured planar
    layers moving, rotating and scaling over a textured background (TAP-Vid
    average Jaccard and occlusion accuracy): a small window (fewer errors at
    occlusion boundaries) with two pyramid levels did better there than the
    common 21x21, 3 levels, also for motions of 10+ pixels per frame. Use a
    larger window for smooth, low-texture video and more levels for faster
    motion or larger frames.

    Args:
        win_size: side of the LK integration window, pixels.
        levels: pyramid levels above the full image (0: none). Motions up to
            about ``win_size / 2 * 2**levels`` pixels per frame are caught.
        fb_threshold: forward-backward error, pixels, above which a step fails.
        max_iters: LK iterations per pyramid level at most.
        eps: LK stops iterating at a level once an update is below this, pixels.
        min_eig_threshold: LK fails where the smallest eigenvalue of the
            window's gradient matrix (divided by the window area, intensities
            0..1) is below this (OpenCV's ``minEigThreshold``); the default only
            rejects practically uniform windows.
        patch_size: side of the patches compared by NCC, pixels.
        ncc_threshold: NCC with the query patch below which a tracked point is
            lost (low: appearance changes legitimately under rotation, scale
            and lighting; it only catches a switch to another surface).
        reacquire_ncc_threshold: NCC with the query patch a lost point needs to
            become visible again (a fresh match needs more evidence than a
            continued track).
        max_lost_frames: frames after its last reliable one during which a lost
            point is searched for directly (None: to the end of the video).
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
        win_size: int = 11,
        levels: int = 2,
        fb_threshold: float = 1.0,
        max_iters: int = 30,
        eps: float = 0.01,
        min_eig_threshold: float = 1e-6,
        patch_size: int = 11,
        ncc_threshold: float = 0.1,
        reacquire_ncc_threshold: float = 0.5,
        max_lost_frames: int | None = None,
        dense_stride: int | None = None,
        device: str | torch.device = "cpu",
    ):
        if win_size < 3:
            raise ValueError(f"win_size must be at least 3 pixels, got {win_size}")
        if levels < 0:
            raise ValueError(f"levels must be >= 0, got {levels}")
        if not fb_threshold > 0:
            raise ValueError(f"fb_threshold must be > 0 pixels, got {fb_threshold}")
        if max_iters < 1 or not eps > 0:
            raise ValueError(f"max_iters must be >= 1 and eps > 0, got {max_iters} and {eps}")
        if not min_eig_threshold >= 0:
            raise ValueError(f"min_eig_threshold must be >= 0, got {min_eig_threshold}")
        if patch_size < 3:
            raise ValueError(f"patch_size must be at least 3 pixels, got {patch_size}")
        if not (-1 <= ncc_threshold <= 1 and -1 <= reacquire_ncc_threshold <= 1):
            raise ValueError(f"NCC thresholds must be in [-1, 1], got {ncc_threshold} and {reacquire_ncc_threshold}")
        if max_lost_frames is not None and max_lost_frames < 0:
            raise ValueError(f"max_lost_frames must be >= 0 or None, got {max_lost_frames}")
        if dense_stride is not None and dense_stride < 1:
            raise ValueError(f"dense_stride must be >= 1 or None, got {dense_stride}")
        self.win_size = int(win_size)
        self.levels = int(levels)
        self.fb_threshold = float(fb_threshold)
        self.max_iters = int(max_iters)
        self.eps = float(eps)
        self.min_eig_threshold = float(min_eig_threshold)
        self.patch_size = int(patch_size)
        self.ncc_threshold = float(ncc_threshold)
        self.reacquire_ncc_threshold = float(reacquire_ncc_threshold)
        self.max_lost_frames = max_lost_frames
        self.dense_stride = dense_stride
        self._device = torch.device(device)

    @property
    def device(self) -> torch.device:
        """Where the returned tensors are put (inputs may be on any device)."""
        return self._device

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(win_size={self.win_size}, levels={self.levels}, "
            f"fb_threshold={self.fb_threshold}, ncc_threshold={self.ncc_threshold}, "
            f"reacquire_ncc_threshold={self.reacquire_ncc_threshold})"
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
        video = as_video_tensor(video)
        B, T, _, H, W = video.shape
        _check_grid(grid_size, grid_query_frame, T)
        if queries is not None and grid_size > 0:
            raise QueryError("give either queries or grid_size, not both")
        if segm_mask is not None and grid_size == 0:
            raise QueryError("segm_mask selects grid points: give grid_size > 0 with it")
        if queries is not None:
            q = check_queries(queries, B, T, W, H, "cpu")
        elif grid_size > 0:
            q = self._grid_queries(B, grid_size, grid_query_frame, segm_mask, (H, W))
        else:
            q = self._dense_queries(B, grid_query_frame, (H, W))

        grey = to_grey(video)
        qn = q.numpy()
        N = qn.shape[1]
        tracks = np.empty((B, T, N, 2), np.float32)
        vis = np.empty((B, T, N), bool)
        conf = np.empty((B, T, N), np.float32)
        for b in range(B):
            tracks[b], vis[b], conf[b] = self._track_video(list(grey[b]), qn[b], backward_tracking)
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
            templates[sel] = normalise_patches(sample_patches(grey[t], qxy[sel], self.patch_size))
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
        ref_t = qt.copy()  # frame, position and velocity at the last reliable observation
        ref_xy = qxy.copy()
        vel = np.zeros((N, 2), np.float32)
        max_gap = T if self.max_lost_frames is None else self.max_lost_frames

        def inside(p):
            return (p[:, 0] >= 0) & (p[:, 0] <= W - 1) & (p[:, 1] >= 0) & (p[:, 1] <= H - 1)

        def similar(frame, p, idx, threshold):
            """NCC of the patches at ``p`` with the query patches of points ``idx`` >= threshold."""
            ncc = (normalise_patches(sample_patches(frame, p, self.patch_size)) * templates[idx]).sum(1)
            return ncc >= threshold

        def accept(t, idx, p, fb):
            """Points ``idx`` are reliable at ``p`` in frame ``t``, with forward-backward errors ``fb``."""
            gap = (t - ref_t[idx]).astype(np.float32)[:, None]
            vel[idx] = (p - ref_xy[idx]) / gap
            pos[idx] = ref_xy[idx] = p
            ref_t[idx] = t
            lost[idx] = False
            conf[t, idx] = np.exp(-fb / self.fb_threshold)

        vis[qt, np.arange(N)] = True
        conf[qt, np.arange(N)] = 1.0
        for t in range(int(qt.min()), T - 1):
            idx = np.flatnonzero(qt <= t)  # started points
            cur, nxt = grey[t], grey[t + 1]

            # 1. One LK step forward and back for every started point, lost or not.
            p1, ok_f = self._lk(cur, nxt, pos[idx])
            p0, ok_b = self._lk(nxt, cur, p1)
            fb = np.linalg.norm(p0 - pos[idx], axis=1)
            consistent = ok_f & ok_b & (fb <= self.fb_threshold)
            ok = consistent & inside(p1)
            threshold = np.where(lost[idx], self.reacquire_ncc_threshold, self.ncc_threshold)
            ok[ok] = similar(nxt, p1[ok], idx[ok], threshold[ok])
            accept(t + 1, idx[ok], p1[ok], fb[ok])
            lost[idx[~ok]] = True
            follow = ~ok & consistent  # lost, but moving coherently with something
            pos[idx[follow]] = p1[follow]

            # 2. Points lost for 2+ frames: search from the query frame near where they should be.
            gap = t + 1 - ref_t
            search = np.flatnonzero(lost & (qt <= t) & (gap >= 2) & (gap <= max_gap))
            for r in np.unique(qt[search]):
                sel = search[qt[search] == r]
                guess = ref_xy[sel] + vel[sel] * gap[sel, None]
                np.clip(guess, 0, [W - 1, H - 1], out=guess)
                p1, ok_f = self._lk(grey[r], nxt, qxy[sel], guess)
                p0, ok_b = self._lk(nxt, grey[r], p1)
                fb = np.linalg.norm(p0 - qxy[sel], axis=1)
                ok = ok_f & ok_b & (fb <= self.fb_threshold) & inside(p1)
                ok[ok] = similar(nxt, p1[ok], sel[ok], self.reacquire_ncc_threshold)
                accept(t + 1, sel[ok], p1[ok], fb[ok])

            vis[t + 1, idx] = ~lost[idx]
            tracks[t + 1, idx] = ref_xy[idx]

        # Where lost: interpolate between the reliable positions around the gap, hold after the last.
        frames = np.arange(T)
        for n in np.flatnonzero((~vis & (frames[:, None] >= qt)).any(0)):
            seen = np.flatnonzero(vis[:, n])
            after = frames[qt[n]:]
            for d in range(2):
                tracks[after, n, d] = np.interp(after, seen, tracks[seen, n, d])
        return tracks, vis, conf

    def _lk(self, prev: np.ndarray, nxt: np.ndarray, pts: np.ndarray, guess: np.ndarray | None = None):
        """LK of ``(M, 2)`` points from ``prev`` to ``nxt`` (started at ``guess``) -> ``(M, 2)`` points, ``(M,)`` success."""
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
            winSize=(self.win_size, self.win_size),
            maxLevel=self.levels,
            criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, self.max_iters, self.eps),
            flags=0 if guess is None else cv2.OPTFLOW_USE_INITIAL_FLOW,
            minEigThreshold=self.min_eig_threshold,
        )
        out = out.reshape(-1, 2)
        ok = status.reshape(-1).astype(bool) & np.isfinite(out).all(1)
        return np.where(ok[:, None], out, pts).astype(np.float32), ok
