"""Training-time augmentation of video clips with point tracks.

A re-implementation, in numpy and OpenCV, of the augmentations the CoTracker3
reference applies to its Kubric training clips (``CoTrackerDataset`` in
``cotracker/datasets/kubric_movif_dataset.py`` of facebookresearch/co-tracker:
``add_photometric_augs``, ``add_spatial_augs``, and the visibility update that
follows them in ``KubricMovifDataset.getitem_helper``). The stages run in the
reference's order:

1. **Occluders** (:func:`erase_patches`, then :func:`replace_patches` when
   enabled): on each frame *after the first*, with some probability, a few
   random rectangles are filled with their own mean colour (eraser) or pasted
   over with a patch cut from a random place of a random, colour-jittered
   frame (replace). Every track point inside such a rectangle on that frame
   becomes not visible. The first frame is never touched, so points queried
   there stay clean.
2. **Colour jitter** (brightness, contrast, saturation and hue in a random
   order, with fresh factors for every frame), decided once per clip.
3. **Gaussian blur** with a fresh sigma for every frame, decided once per clip.
4. **Spatial** (:func:`spatial_augment`): zero padding of random width on each
   side; a resize whose horizontal and vertical scales follow a smoothed random
   walk over time (so objects slowly stretch and zoom); a crop of ``crop_size``
   centred on the points visible in the first frame whose window drifts over
   time by a smoothed random walk; horizontal and vertical flips
   (:func:`flip_clip`). Points that leave the crop keep their coordinates and
   become not visible.

Coordinates follow ``ARCHITECTURE.md``: ``(x, y)`` pixels with ``(0, 0)`` the
centre of the top-left pixel, so pixel ``i`` covers ``[i - 0.5, i + 0.5)``.
Hence

* padding by ``p`` on the left or cropping at ``x0`` shifts ``x`` by ``+p`` or
  ``-x0``;
* resizing width ``W`` to ``W'`` maps ``x -> (x + 0.5) * W' / W - 0.5``
  (the mapping ``cv2.resize`` samples with);
* a horizontal flip maps ``x -> (W - 1) - x`` (vertical: ``y -> (H - 1) - y``);
* a point lies *in* an image (or a rectangle of pixels ``[x0, x1)``) when its
  nearest pixel, ``floor(x + 0.5)``, does: ``-0.5 <= x < W - 0.5``.

Everything is a deterministic function of the inputs and of the state of the
``numpy.random.Generator`` passed in; no global random state is used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from cotracker3.errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "AugmentConfig",
    "augment_clip",
    "photometric_augment",
    "erase_patches",
    "replace_patches",
    "spatial_augment",
    "flip_clip",
    "resize_points",
]

_GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma, as PIL's "L"


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the clip augmentations.

    Defaults are the values the CoTracker3 reference trains on Kubric with
    (``CoTrackerDataset.__init__`` overridden by ``KubricMovifDataset.__init__``
    for the spatial ranges). Integer ranges are *inclusive* here; the reference
    writes them as the half-open ``np.random.randint(low, high)``, so its
    ``[2, 100]`` becomes ``(2, 99)``. A probability of 0 switches a stage off.

    Attributes:
        color_prob: probability that a clip is colour-jittered (reference
            ``color_aug_prob = 0.25``).
        brightness, contrast, saturation: each frame draws a factor uniformly
            in ``[max(0, 1 - v), 1 + v]`` (reference ``ColorJitter(brightness=0.2,
            contrast=0.2, saturation=0.2, ...)``). Brightness scales the colour,
            contrast blends with the frame's mean grey level, saturation blends
            with the frame's grey image.
        hue: each frame rotates its hue by a fraction of the colour circle drawn
            uniformly in ``[-hue, hue]`` (reference ``hue=0.25 / 3.14``, about
            +-29 degrees).
        blur_prob: probability that a clip is blurred (reference
            ``blur_aug_prob = 0.25``).
        blur_kernel: side of the square Gaussian kernel, odd pixels (reference
            ``GaussianBlur(11, ...)``).
        blur_sigma: each frame draws its sigma uniformly in this range, pixels
            (reference ``sigma=(0.1, 2.0)``).
        eraser: whether the eraser runs at all (the reference's
            ``add_photometric_augs(eraser=True)`` default).
        eraser_prob: per frame after the first, probability of erasing
            (reference ``eraser_aug_prob = 0.5``).
        eraser_max: an erased frame gets between 1 and this many rectangles
            (reference ``eraser_max = 10``).
        eraser_size: inclusive range of each rectangle's width and height
            before clipping to the frame, pixels (reference ``eraser_bounds =
            [2, 100]``, half-open).
        replace: whether the patch-replacement occluder runs (the reference
            defines it but trains on Kubric with ``replace=False``).
        replace_prob, replace_max, replace_size: as for the eraser (reference
            ``replace_aug_prob = 0.5``, ``replace_max = 10``, ``replace_bounds =
            [2, 100]``).
        pad_max: each side of the frame is zero-padded by a width drawn in
            ``[0, pad_max]`` pixels (reference Kubric ``pad_bounds = [0, 25]``,
            half-open; the base class has ``[0, 100]``).
        resize_range: the clip's initial scale is drawn uniformly here
            (reference Kubric ``resize_lim = [0.75, 1.25]``; base ``[0.25, 2.0]``).
        resize_delta: half-width of the per-frame scale change (reference Kubric
            ``resize_delta = 0.05``; base ``0.2``).
        resize_momentum: the per-frame scale change is ``momentum * previous +
            (1 - momentum) * fresh`` (reference ``0.8``).
        scale_limits: per-axis scales are clipped to this range (reference
            ``np.clip(scale, 0.2, 2.0)``).
        crop_margin: the resized frame is at least ``crop + crop_margin`` pixels
            on each axis, so the crop can move (reference ``crop_size + 10``).
        max_crop_offset: half-width of the per-frame crop drift, pixels
            (reference Kubric ``max_crop_offset = 15``; base ``50``).
        crop_momentum: the per-frame drift is ``momentum * previous + (1 -
            momentum) * fresh`` (reference ``0.8``).
        h_flip_prob, v_flip_prob: probabilities of flipping the whole clip
            left-right and upside-down (reference ``0.5`` each).
        still_prob: probability that a clip keeps one scale and one crop window
            for all its frames (no per-frame scale change, no crop drift), so a
            static camera stays static. The reference has no such stage (``0``);
            without it every training clip moves, and a model trained on them
            never sees still points.
        crop_size: ``(H, W)`` of the output; ``None``: the input size. An
            explicit ``crop_size`` given to :func:`augment_clip` wins (the
            reference's default is ``(384, 512)``).
    """

    color_prob: float = 0.25
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.25 / 3.14
    blur_prob: float = 0.25
    blur_kernel: int = 11
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    eraser: bool = True
    eraser_prob: float = 0.5
    eraser_max: int = 10
    eraser_size: tuple[int, int] = (2, 99)
    replace: bool = False
    replace_prob: float = 0.5
    replace_max: int = 10
    replace_size: tuple[int, int] = (2, 99)
    pad_max: int = 24
    resize_range: tuple[float, float] = (0.75, 1.25)
    resize_delta: float = 0.05
    resize_momentum: float = 0.8
    scale_limits: tuple[float, float] = (0.2, 2.0)
    crop_margin: int = 10
    max_crop_offset: int = 15
    crop_momentum: float = 0.8
    h_flip_prob: float = 0.5
    v_flip_prob: float = 0.5
    still_prob: float = 0.0
    crop_size: tuple[int, int] | None = None

    def __post_init__(self):
        for name in ("color_prob", "blur_prob", "eraser_prob", "replace_prob", "h_flip_prob", "v_flip_prob",
                     "still_prob", "resize_momentum", "crop_momentum"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        for name in ("brightness", "contrast", "saturation", "resize_delta"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue must lie in [0, 0.5] (a fraction of the colour circle), got {self.hue}")
        if self.blur_kernel < 1 or self.blur_kernel % 2 == 0:
            raise ValueError(f"blur_kernel must be a positive odd number of pixels, got {self.blur_kernel}")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"blur_sigma must be (low, high) with 0 < low <= high, got {self.blur_sigma}")
        for name in ("eraser", "replace"):
            count, size = getattr(self, f"{name}_max"), getattr(self, f"{name}_size")
            if count < 1:
                raise ValueError(f"{name}_max must be >= 1, got {count}")
            if not 0 <= size[0] <= size[1]:
                raise ValueError(f"{name}_size must be (low, high) with 0 <= low <= high, got {size}")
        if self.pad_max < 0 or self.crop_margin < 0 or self.max_crop_offset < 0:
            raise ValueError("pad_max, crop_margin and max_crop_offset must be >= 0 pixels")
        if not 0 < self.resize_range[0] <= self.resize_range[1]:
            raise ValueError(f"resize_range must be (low, high) with 0 < low <= high, got {self.resize_range}")
        if not 0 < self.scale_limits[0] <= self.scale_limits[1]:
            raise ValueError(f"scale_limits must be (low, high) with 0 < low <= high, got {self.scale_limits}")
        if self.crop_size is not None:
            _check_crop_size(self.crop_size)


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _check_crop_size(crop_size) -> tuple[int, int]:
    try:
        h, w = crop_size
    except (TypeError, ValueError):
        raise ValueError(f"crop_size must be (H, W), got {crop_size!r}") from None
    for v in (h, w):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"crop_size must be two positive integers (H, W), got {crop_size!r}")
    return int(h), int(w)


def _check_clip(frames: np.ndarray, tracks: np.ndarray, visibility: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = getattr(frames, "shape", None)
        dtype = getattr(frames, "dtype", type(frames).__name__)
        raise InputError(f"frames must be a (T, H, W, 3) uint8 array, got shape {shape} and dtype {dtype}")
    T, H, W = frames.shape[:3]
    if T < 1 or H < 1 or W < 1:
        raise InputError(f"frames must hold at least one frame of 1x1 pixels, got shape {frames.shape}")
    tracks = np.asarray(tracks)
    if tracks.ndim != 3 or tracks.shape[0] != T or tracks.shape[2] != 2:
        raise InputError(f"tracks must be (T, N, 2) = ({T}, N, 2) pixels, got shape {tracks.shape}")
    if not np.issubdtype(tracks.dtype, np.floating):
        raise InputError(f"tracks must be floating point pixels, got dtype {tracks.dtype}")
    visibility = np.asarray(visibility)
    if visibility.shape != tracks.shape[:2] or visibility.dtype != np.bool_:
        raise InputError(f"visibility must be a ({T}, {tracks.shape[1]}) bool array, got shape "
                         f"{visibility.shape} and dtype {visibility.dtype}")


def _inside(xy: np.ndarray, x0, y0, x1, y1) -> np.ndarray:
    """Whether points ``(..., 2)`` lie in the pixels ``[x0, x1) x [y0, y1)`` (nearest-pixel rule)."""
    x, y = xy[..., 0], xy[..., 1]
    return (x >= x0 - 0.5) & (x < x1 - 0.5) & (y >= y0 - 0.5) & (y < y1 - 0.5)


def _grey(img: np.ndarray) -> np.ndarray:
    return img @ _GREY_WEIGHTS


def _jitter_colour(frame: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """One frame through brightness, contrast, saturation and hue, in a random order, with fresh factors."""
    order = rng.permutation(4)
    factors = [rng.uniform(max(0.0, 1.0 - v), 1.0 + v)
               for v in (config.brightness, config.contrast, config.saturation)]
    shift = rng.uniform(-config.hue, config.hue)
    img = frame.astype(np.float32)
    for op in order:
        if op == 0:
            img = img * factors[0]
        elif op == 1:
            img = factors[1] * img + (1.0 - factors[1]) * float(_grey(img).mean())
        elif op == 2:
            img = factors[2] * img + (1.0 - factors[2]) * _grey(img)[..., None]
        elif shift != 0.0:
            hsv = cv2.cvtColor(img / 255.0, cv2.COLOR_RGB2HSV)  # float: hue in degrees [0, 360)
            hsv[..., 0] = np.mod(hsv[..., 0] + 360.0 * shift, 360.0)
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
        img = np.clip(img, 0.0, 255.0)
    return np.rint(img).astype(np.uint8)


def _sample_box(rng: np.random.Generator, H: int, W: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A random rectangle ``(x0, y0, x1, y1)`` (end exclusive) as the reference draws it.

    Centre uniform over the pixels, sides uniform in ``size``, corners clipped to
    ``[0, W - 1]`` and rounded, so the box may be empty and never covers the last
    row or column (both as in the reference).
    """
    xc, yc = rng.integers(0, W), rng.integers(0, H)
    dx, dy = rng.integers(size[0], size[1] + 1, size=2)
    x0, x1 = np.rint(np.clip([xc - dx / 2, xc + dx / 2], 0, W - 1)).astype(int)
    y0, y1 = np.rint(np.clip([yc - dy / 2, yc + dy / 2], 0, H - 1)).astype(int)
    return int(x0), int(y0), int(x1), int(y1)


def _occlude(frames, tracks, visibility, rng, prob, max_count, size, paste):
    """Shared loop of the eraser and replace occluders; ``paste(frame, box)`` fills a box in place."""
    _check_clip(frames, tracks, visibility)
    T, H, W = frames.shape[:3]
    frames = frames.copy()
    visibility = np.array(visibility, dtype=bool, copy=True)
    tracks = np.asarray(tracks)
    boxes = []
    for t in range(1, T):
        if rng.random() >= prob:
            continue
        for _ in range(int(rng.integers(1, max_count + 1))):
            x0, y0, x1, y1 = _sample_box(rng, H, W, size)
            paste(frames[t], (x0, y0, x1, y1))
            visibility[t, _inside(tracks[t], x0, y0, x1, y1)] = False
            boxes.append((t, x0, y0, x1, y1))
    return frames, visibility, np.array(boxes, dtype=np.int64).reshape(-1, 5)


# --------------------------------------------------------------------------
# Photometric stages
# --------------------------------------------------------------------------


def erase_patches(frames: np.ndarray, tracks: np.ndarray, visibility: np.ndarray, rng: np.random.Generator,
                  config: AugmentConfig | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fill random rectangles with their mean colour and hide the points under them.

    Each frame after the first is erased with probability ``config.eraser_prob``,
    by 1 to ``config.eraser_max`` rectangles drawn one after the other (a later
    one may cover an earlier one; its mean is taken over the frame as it is then).

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        tracks: ``(T, N, 2)`` float pixels ``(x, y)``; not modified.
        visibility: ``(T, N)`` bool.
        rng: the source of randomness.
        config: the probabilities and sizes (default :class:`AugmentConfig`).

    Returns:
        frames: a ``(T, H, W, 3)`` uint8 copy with the rectangles filled by their
            mean colour (rounded to integers).
        visibility: a ``(T, N)`` bool copy, False for every point whose nearest
            pixel lies in a rectangle of its frame.
        boxes: ``(K, 5)`` int64 ``(t, x0, y0, x1, y1)``, the rectangles in the order
            they were drawn, pixels ``[x0, x1) x [y0, y1)`` (possibly empty).

    Raises:
        InputError: arrays of the wrong shape or dtype.
    """
    config = config or AugmentConfig()

    def paste(frame, box):
        x0, y0, x1, y1 = box
        if x1 > x0 and y1 > y0:
            region = frame[y0:y1, x0:x1]
            region[:] = np.rint(region.reshape(-1, 3).mean(axis=0)).astype(np.uint8)

    return _occlude(frames, tracks, visibility, rng, config.eraser_prob, config.eraser_max, config.eraser_size,
                    paste)


def replace_patches(frames: np.ndarray, tracks: np.ndarray, visibility: np.ndarray, rng: np.random.Generator,
                    config: AugmentConfig | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paste patches of other places and frames over random rectangles and hide the points under them.

    The sources are the clip's frames colour-jittered twice (fresh factors per
    frame and pass, as the reference does whatever ``color_prob``); each pasted
    patch comes from a uniformly random frame and position. Frame choice,
    probabilities and the occlusion rule are those of :func:`erase_patches`.

    Returns:
        frames, visibility, boxes: as :func:`erase_patches`.
    """
    config = config or AugmentConfig()
    _check_clip(frames, tracks, visibility)
    T, H, W = frames.shape[:3]
    sources = np.stack([_jitter_colour(_jitter_colour(f, rng, config), rng, config) for f in frames])

    def paste(frame, box):
        x0, y0, x1, y1 = box
        h, w = y1 - y0, x1 - x0
        sy, sx, st = rng.integers(0, H - h), rng.integers(0, W - w), rng.integers(0, T)
        frame[y0:y1, x0:x1] = sources[st, sy:sy + h, sx:sx + w]

    return _occlude(frames, tracks, visibility, rng, config.replace_prob, config.replace_max,
                    config.replace_size, paste)


def photometric_augment(frames: np.ndarray, tracks: np.ndarray, visibility: np.ndarray, rng: np.random.Generator,
                        config: AugmentConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Occluders, colour jitter and blur, in the reference's order; tracks are unchanged.

    1. :func:`erase_patches` (if ``config.eraser``), then :func:`replace_patches`
       (if ``config.replace``);
    2. with probability ``config.color_prob``, every frame gets its own random
       brightness, contrast, saturation and hue factors, applied in an order
       drawn per frame;
    3. with probability ``config.blur_prob``, every frame gets a Gaussian blur of
       ``config.blur_kernel`` pixels and its own sigma from ``config.blur_sigma``
       (borders reflected).

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        tracks: ``(T, N, 2)`` float pixels ``(x, y)``; read to hide occluded points.
        visibility: ``(T, N)`` bool.
        rng: the source of randomness.
        config: the augmentation settings (default :class:`AugmentConfig`).

    Returns:
        frames: ``(T, H, W, 3)`` uint8, a new array.
        visibility: ``(T, N)`` bool, a new array; occluded points set False.

    Raises:
        InputError: arrays of the wrong shape or dtype.
    """
    config = config or AugmentConfig()
    _check_clip(frames, tracks, visibility)
    frames = frames.copy()
    visibility = np.array(visibility, dtype=bool, copy=True)
    if config.eraser:
        frames, visibility, _ = erase_patches(frames, tracks, visibility, rng, config)
    if config.replace:
        frames, visibility, _ = replace_patches(frames, tracks, visibility, rng, config)
    if rng.random() < config.color_prob:
        frames = np.stack([_jitter_colour(f, rng, config) for f in frames])
    if rng.random() < config.blur_prob:
        k = config.blur_kernel
        sigmas = rng.uniform(config.blur_sigma[0], config.blur_sigma[1], size=len(frames))
        frames = np.stack([cv2.GaussianBlur(f, (k, k), sigmaX=float(s), sigmaY=float(s),
                                            borderType=cv2.BORDER_REFLECT_101) for f, s in zip(frames, sigmas)])
    return frames, visibility


# --------------------------------------------------------------------------
# Spatial stages
# --------------------------------------------------------------------------


def resize_points(xy: np.ndarray, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> np.ndarray:
    """Map pixel coordinates through a resize of an image from ``src_hw`` to ``dst_hw`` (H, W).

    ``x -> (x + 0.5) * W' / W - 0.5`` and ``y -> (y + 0.5) * H' / H - 0.5``: pixel
    edges map to pixel edges, which is where ``cv2.resize`` samples.

    Args:
        xy: ``(..., 2)`` pixels ``(x, y)``.
        src_hw, dst_hw: ``(H, W)`` before and after.

    Returns:
        ``(..., 2)`` float64 pixels in the resized image.
    """
    scale = np.array([dst_hw[1] / src_hw[1], dst_hw[0] / src_hw[0]])
    return (np.asarray(xy, dtype=np.float64) + 0.5) * scale - 0.5


def flip_clip(frames: np.ndarray, tracks: np.ndarray, horizontal: bool, vertical: bool
              ) -> tuple[np.ndarray, np.ndarray]:
    """Flip every frame and the tracks with it.

    Args:
        frames: ``(T, H, W, C)`` any dtype.
        tracks: ``(T, N, 2)`` float pixels ``(x, y)``.
        horizontal: mirror left-right, ``x -> (W - 1) - x``.
        vertical: mirror upside-down, ``y -> (H - 1) - y``.

    Returns:
        frames: ``(T, H, W, C)`` contiguous copy; tracks: ``(T, N, 2)`` copy, same dtype.
    """
    H, W = frames.shape[1:3]
    tracks = np.array(tracks, copy=True)
    if horizontal:
        frames = frames[:, :, ::-1]
        tracks[..., 0] = (W - 1) - tracks[..., 0]
    if vertical:
        frames = frames[:, ::-1]
        tracks[..., 1] = (H - 1) - tracks[..., 1]
    return np.ascontiguousarray(frames), tracks


def _scale_schedule(T: int, H: int, W: int, crop_hw: tuple[int, int], rng: np.random.Generator,
                    config: AugmentConfig) -> np.ndarray:
    """``(T, 2)`` int ``(H_t, W_t)`` sizes of the resized frames (before cropping)."""
    lo, hi = config.scale_limits
    sx = sy = rng.uniform(*config.resize_range)
    d = config.resize_delta
    m = config.resize_momentum
    step = np.zeros(2)
    sizes = np.empty((T, 2), dtype=np.int64)
    for t in range(T):
        if t == 1:
            step = rng.uniform(-d, d, size=2)
        elif t > 1:
            step = m * step + (1.0 - m) * rng.uniform(-d, d, size=2)
        sx, sy = sx + step[0], sy + step[1]
        mean = 0.5 * (sx + sy)  # pull the two axes towards each other
        sx, sy = float(np.clip(0.5 * (sx + mean), lo, hi)), float(np.clip(0.5 * (sy + mean), lo, hi))
        h = max(int(H * sy), crop_hw[0] + config.crop_margin)
        w = max(int(W * sx), crop_hw[1] + config.crop_margin)
        sizes[t] = h, w
        sx, sy = w / W, h / H  # the scale actually applied carries on
    return sizes


def _crop_schedule(first_xy: np.ndarray, sizes: np.ndarray, crop_hw: tuple[int, int], rng: np.random.Generator,
                   config: AugmentConfig) -> np.ndarray:
    """``(T, 2)`` int ``(x0, y0)`` top-left corners of the crop windows."""
    ch, cw = crop_hw
    if len(first_xy):
        mid_x, mid_y = first_xy.mean(axis=0)
    else:
        mid_x, mid_y = (sizes[0, 1] - 1) / 2, (sizes[0, 0] - 1) / 2
    x0, y0 = int(mid_x - cw // 2), int(mid_y - ch // 2)
    r, m = config.max_crop_offset, config.crop_momentum
    off_x = off_y = 0
    corners = np.empty((len(sizes), 2), dtype=np.int64)
    for t, (h, w) in enumerate(sizes):
        if t == 1:
            off_x, off_y = (int(v) for v in rng.integers(-r, r + 1, size=2))
        elif t > 1:
            fresh = rng.integers(-r, r + 1, size=2)
            off_x, off_y = int(m * off_x + (1.0 - m) * fresh[0]), int(m * off_y + (1.0 - m) * fresh[1])
        x0, y0 = x0 + off_x, y0 + off_y
        x0 = 0 if w <= cw else min(max(0, x0), w - cw - 1)
        y0 = 0 if h <= ch else min(max(0, y0), h - ch - 1)
        corners[t] = x0, y0
    return corners


def spatial_augment(frames: np.ndarray, tracks: np.ndarray, visibility: np.ndarray, rng: np.random.Generator,
                    config: AugmentConfig | None = None, crop_size: tuple[int, int] | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pad, resize (time-varying, anisotropic), crop (drifting) and flip a clip with its tracks.

    1. Zero-pad each side by a width drawn in ``[0, config.pad_max]``.
    2. Draw a scale in ``config.resize_range``; from the second frame on, each
       axis's scale moves by a smoothed random step (half-width
       ``config.resize_delta``, momentum ``config.resize_momentum``), the two axes
       are pulled halfway towards their mean, clipped to ``config.scale_limits``,
       and each resized frame is at least ``crop + config.crop_margin`` pixels.
       Frames are resized bilinearly, points with :func:`resize_points`.
    3. Crop ``crop_size``: the first window is centred on the mean of the points
       visible in the first frame (on the frame centre if none is), then drifts by
       a smoothed random offset (half-width ``config.max_crop_offset``, momentum
       ``config.crop_momentum``), kept inside the resized frame.
    4. Flip left-right and upside-down with ``config.h_flip_prob`` and
       ``config.v_flip_prob`` (:func:`flip_clip`).
    5. Points outside the output (``x < -0.5``, ``x >= W - 0.5``, likewise ``y``)
       become not visible; their coordinates are kept.

    With probability ``config.still_prob`` (drawn first, and only when it is
    above 0, so the random stream is the reference's otherwise) steps 2 and 3
    keep their first frame's scale and window for the whole clip.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        tracks: ``(T, N, 2)`` float pixels ``(x, y)``.
        visibility: ``(T, N)`` bool.
        rng: the source of randomness.
        config: the augmentation settings (default :class:`AugmentConfig`).
        crop_size: ``(H, W)`` of the output; default ``config.crop_size``, else the input size.

    Returns:
        frames: ``(T, crop_H, crop_W, 3)`` uint8.
        tracks: ``(T, N, 2)`` float32 pixels of the output frames.
        visibility: ``(T, N)`` bool.

    Raises:
        InputError: arrays of the wrong shape or dtype.
        ValueError: a ``crop_size`` that is not two positive integers.
    """
    config = config or AugmentConfig()
    _check_clip(frames, tracks, visibility)
    T, H0, W0 = frames.shape[:3]
    crop_size = crop_size if crop_size is not None else config.crop_size
    ch, cw = _check_crop_size(crop_size) if crop_size is not None else (H0, W0)
    xy = np.array(tracks, dtype=np.float64, copy=True)
    visibility = np.array(visibility, dtype=bool, copy=True)
    still = config.still_prob > 0 and rng.random() < config.still_prob

    left, right, top, bottom = (int(v) for v in rng.integers(0, config.pad_max + 1, size=4))
    H, W = H0 + top + bottom, W0 + left + right
    xy += (left, top)

    sizes = _scale_schedule(T, H, W, (ch, cw), rng, config)
    if still:
        sizes[1:] = sizes[0]
    for t in range(T):
        xy[t] = resize_points(xy[t], (H, W), sizes[t])
    corners = _crop_schedule(xy[0, visibility[0]], sizes, (ch, cw), rng, config)
    if still:
        corners[1:] = corners[0]
    xy -= corners[:, None, :]

    out = np.empty((T, ch, cw, 3), dtype=np.uint8)
    for t in range(T):
        padded = cv2.copyMakeBorder(frames[t], top, bottom, left, right, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        h, w = (int(v) for v in sizes[t])
        resized = padded if (h, w) == (H, W) else cv2.resize(padded, (w, h), interpolation=cv2.INTER_LINEAR)
        x0, y0 = corners[t]
        out[t] = resized[y0:y0 + ch, x0:x0 + cw]

    horizontal = bool(rng.random() < config.h_flip_prob)
    vertical = bool(rng.random() < config.v_flip_prob)
    out, xy = flip_clip(out, xy, horizontal, vertical)
    visibility &= _inside(xy, 0, 0, cw, ch)
    return out, xy.astype(np.float32), visibility


# --------------------------------------------------------------------------
# The whole pipeline
# --------------------------------------------------------------------------


def augment_clip(frames: np.ndarray, tracks: np.ndarray, visibility: np.ndarray, rng: np.random.Generator,
                 config: AugmentConfig | None = None, crop_size: tuple[int, int] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Augment a training clip as the CoTracker3 reference does: :func:`photometric_augment`, then
    :func:`spatial_augment`.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        tracks: ``(T, N, 2)`` float pixels ``(x, y)``, ``(0, 0)`` the centre of the
            top-left pixel (also where not visible).
        visibility: ``(T, N)`` bool.
        rng: the source of randomness; the result is a deterministic function of
            the inputs and its state.
        config: the augmentation settings (default :class:`AugmentConfig`, the
            reference's Kubric values).
        crop_size: ``(H, W)`` of the output; default ``config.crop_size``, else the input size.

    Returns:
        frames: ``(T, crop_H, crop_W, 3)`` uint8, new.
        tracks: ``(T, N, 2)`` float32 pixels of the output frames; points outside
            the output keep their (out-of-range) coordinates.
        visibility: ``(T, N)`` bool; False where the input was, where an occluder
            covers the point, and where the point lies outside the output.

    Raises:
        InputError: arrays of the wrong shape or dtype.
        ValueError: a ``crop_size`` that is not two positive integers.
    """
    config = config or AugmentConfig()
    _check_clip(frames, tracks, visibility)
    if crop_size is not None:
        crop_size = _check_crop_size(crop_size)
    frames, visibility = photometric_augment(frames, tracks, visibility, rng, config)
    return spatial_augment(frames, tracks, visibility, rng, config, crop_size)
