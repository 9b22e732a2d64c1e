"""Memory of offline tracking: how much a call needs, and how to cut the work to fit a budget.

The offline model holds, for the whole call, the feature pyramid of every frame
and one token per point and frame for its transformer. Everything else it
computes a chunk at a time: the correlations of ``chunk_point_frames``
point-frames, the transformer blocks on ``chunk_tokens`` tokens, the encoder on
``encoder_frames`` frames. Small chunks keep the working memory small and suit a
CPU's caches; on a GPU they turn into thousands of tiny kernels, so there the
chunks grow as large as the memory allows (:func:`plan_chunks`). When even the
smallest chunks do not fit, the points are tracked in batches that share the
pyramid (as the reference's dense mode does): each batch sees only its own
points through the transformer's cross-track attention, so results then differ
slightly from one call with every point.

Chunk sizes do not change results (beyond float rounding); point batches do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

#: ``(point-frames, tokens, encoder frames)`` per chunk on a CPU, largest first: the first fits
#: its caches (on this project's 2-core CPU larger chunks are no faster); the smaller ones are
#: for small memory budgets.
CPU_CHUNKS = ((1024, 4096, 1), (256, 1024, 1), (64, 256, 1))
#: Chunk sizes tried on a GPU, largest first; the largest whose estimate fits the budget is
#: used. Measured on an H200 at 100 frames x 100x100 points (../shared/design/MEASUREMENTS.md):
#: 1024 / 4096 took 18 s, 16384 / 65536 7.8 s and 131072 / 1048576 7.2 s in float32.
GPU_CHUNKS = (
    (131072, 1048576, 32),
    (65536, 262144, 32),
    (16384, 65536, 16),
    (4096, 16384, 8),
) + CPU_CHUNKS
#: Fraction of the budget the estimate may fill (allocator slack, the caller's own tensors).
SAFETY = 0.85
#: Smallest batch of points tracked together when points are split to fit.
MIN_POINT_BATCH = 256
#: Floats alive per point-frame besides the tokens: the estimates, their updates, the
#: displacements being encoded, the outputs and the backward pass's merged copies.
FLOATS_PER_POINT_FRAME = 24


_SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str | int | None, name: str = "size") -> int | None:
    """``"8G"``, ``"512M"``, ``"1.5GiB"`` or a number of bytes to bytes (None stays None).

    Raises:
        ValueError: not a positive size (the message names ``name``).
    """
    if text is None or isinstance(text, int):
        if isinstance(text, int) and text <= 0:
            raise ValueError(f"{name} must be a positive size like 8G or 512M, got {text}")
        return text
    t = str(text).strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in _SIZE_UNITS else ""
    try:
        value = float(t[: len(t) - len(unit)]) * _SIZE_UNITS[unit]
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{name} must be a positive size like 8G or 512M, got {text!r}")
    return int(value)


def element_size(dtype: torch.dtype) -> int:
    """Bytes per stored feature and token under a predictor precision (16-bit under autocast)."""
    return 2 if dtype in (torch.bfloat16, torch.float16) else 4


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes that can still be allocated on ``device``, or None when unknown.

    A GPU reports its free memory; on a CPU it is ``MemAvailable`` of
    ``/proc/meminfo``, capped by the cgroup (container) limit when there is one.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        free = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read())
        if limit != "max":
            free = min(free, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(free, 0)


def correlation_chunk(points: int, frames: int, point_frames: int) -> tuple[int, int]:
    """``(points, frames)`` of one chunk of correlations, as
    :meth:`cotracker3.model.CoTracker3.input_tokens` cuts them: at least 256 points (or
    all), by as many frames as ``point_frames`` allows (at least one)."""
    n = min(points, max(256, point_frames // max(frames, 1)))
    return n, max(1, min(frames, point_frames // n))


def tracking_memory(model, frames: int, points: int, iters: int = 6, dtype: torch.dtype = torch.float32, *,
                    point_frames: int | None = None, tokens: int | None = None,
                    encoder_frames: int = 1) -> int:
    """Estimated peak bytes an offline model call allocates to track ``points`` through
    ``frames`` frames without autograd (as the predictors run it).

    On top of the model's weights and the caller's video: the feature pyramid, every
    point's query patch features and one token per point (and virtual track) and frame,
    all 16-bit under reduced precision (autocast's 16-bit copies of the weights, 50 MB for
    the published model, did not show in measured peaks and are not counted);
    :data:`FLOATS_PER_POINT_FRAME` floats per point and frame; and the largest working
    memory of one chunk (activations 16-bit under reduced precision): the encoder on ``encoder_frames`` frames, one chunk of
    correlations and input tokens, or a transformer block on one chunk of tokens.
    Chunk sizes default to the model's (``chunk_point_frames``,
    ``updateformer.chunk_tokens``). ``iters`` does not change the peak (each iteration
    reuses the last one's memory); it is kept for callers that pass it.
    """
    del iters
    point_frames = model.chunk_point_frames if point_frames is None else point_frames
    former = model.updateformer
    tokens = former.chunk_tokens if tokens is None else tokens
    H, W = model.model_resolution
    h, w = H // model.stride, W // model.stride
    elem = element_size(dtype)
    D = former.input_transform.out_features
    hidden = former.time_blocks[0].mlp.fc1.out_features
    V = former.num_virtual_tracks
    C = model.latent_dim
    size = 2 * model.corr_radius + 2
    K = (size - 1) ** 2
    levels = sum(4.0**-level for level in range(model.corr_levels))

    pyramid = frames * h * w * C * levels * elem
    token_buffer = frames * (points + V) * D * elem
    # every point's query patch features, per level (kept for the whole call)
    support = points * model.corr_levels * (2 * model.corr_radius + 1) ** 2 * C * elem
    small = frames * points * FLOATS_PER_POINT_FRAME * 4
    encoder = encoder_frames * (6 * (C // 2) * (H // 2) * (W // 2) * elem + 3 * H * W * 4)

    n, s = correlation_chunk(points, frames, point_frames)
    # gathered features, their products with the query patch and the blend, the MLP and the
    # input projection: activations, 16-bit under autocast
    per_point_frame = (size * size * C + 3 * size * size * K
                       + 2 * model.corr_mlp.fc1.out_features + 2 * model.input_dim + D) * elem
    corr = n * s * per_point_frame

    rows = min(max(1, tokens // max(frames, 1)), points + V)  # tracks per time-block call
    steps = min(max(1, tokens // (points + V)), frames)  # frames per space-block call
    block_tokens = max(rows * frames, steps * (points + V))
    # Attention is fused (scaled_dot_product_attention): no frames x frames scores are stored.
    block = block_tokens * (6 * D + 2 * hidden) * elem
    return int(pyramid + token_buffer + support + small + max(encoder, corr, block))


@dataclass(frozen=True)
class ChunkPlan:
    """How an offline call is cut to fit its memory budget.

    Attributes:
        point_frames: point-frames per chunk of correlations.
        tokens: tokens per transformer-block call.
        encoder_frames: frames per encoder call.
        point_batch: points tracked together in one model call (``points``: all at once),
            the shared (support) points included.
        shared: points tracked in every batch (a support grid).
        frames, points: the call's size (support points included).
        estimate: estimated peak bytes (:func:`tracking_memory` of one batch).
        budget: the bytes the plan had to fit, or None when unknown (no limit).
    """

    point_frames: int
    tokens: int
    encoder_frames: int
    point_batch: int
    frames: int
    points: int
    shared: int
    estimate: int
    budget: int | None

    @property
    def batches(self) -> int:
        """Model calls the points are split into (1: all points together)."""
        return math.ceil((self.points - self.shared) / max(1, self.point_batch - self.shared))

    def describe(self) -> str:
        """One line for logs: chunk sizes, batches, estimate against budget."""
        budget = "no known limit" if self.budget is None else f"{self.budget / 2**30:.1f} GiB"
        split = "" if self.batches == 1 else f", points in {self.batches} batches of {self.point_batch}"
        return (f"{self.points} points x {self.frames} frames: chunks of {self.point_frames} point-frames, "
                f"{self.tokens} tokens, {self.encoder_frames} encoder frames{split}; about "
                f"{self.estimate / 2**30:.2f} GiB of {budget}")


def plan_chunks(model, frames: int, points: int, *, dtype: torch.dtype = torch.float32,
                device: torch.device | str = "cpu", budget: int | None = None,
                extra: int = 0, shared: int = 0,
                ladder: tuple[tuple[int, int, int], ...] | None = None) -> ChunkPlan | None:
    """The chunk sizes (and, as a last resort, point batches) for an offline call.

    The first chunk sizes of the device's list (:data:`CPU_CHUNKS` on a CPU,
    :data:`GPU_CHUNKS` on a GPU) whose estimate fits :data:`SAFETY` of the budget are
    taken. When none fits with every point in one call, the points are split into
    the fewest equal batches (of at least :data:`MIN_POINT_BATCH` points, unless two
    batches are already smaller) that fit, with the largest chunks that fit them; the
    ``shared`` points (a support grid) join every batch.

    Args:
        model: the offline model.
        frames, points: the call's size.
        dtype: the predictor's precision.
        device: where the model runs.
        budget: bytes the call may use; None: no known limit (the largest chunks of
            the device's list).
        extra: bytes the call needs besides the tracking (e.g. a second copy of the
            finest pyramid level for backward tracking, a video still to be decoded).
            shared: how many of ``points`` are tracked in every batch when points are split.
        ladder: the chunk sizes to choose from, largest first (default: the device's list).

    Returns:
        The plan, or None when nothing fits (the smallest batch and chunks exceed the budget).
    """
    if ladder is None:
        ladder = GPU_CHUNKS if torch.device(device).type == "cuda" else CPU_CHUNKS
    limit = None if budget is None else SAFETY * budget

    def plan(chunks, batch):
        need = tracking_memory(model, frames, batch, dtype=dtype, point_frames=chunks[0], tokens=chunks[1],
                               encoder_frames=chunks[2]) + extra
        return ChunkPlan(*chunks, point_batch=batch, frames=frames, points=points, shared=shared, estimate=need,
                         budget=budget)

    if limit is None:
        return plan(ladder[0], points)
    own = points - shared
    for batches in range(1, max(2, math.ceil(own / MIN_POINT_BATCH)) + 1):
        batch = points if batches == 1 else math.ceil(own / batches) + shared
        if plan(ladder[-1], batch).estimate > limit:
            continue  # not even the smallest chunks fit: more batches
        for chunks in ladder:
            p = plan(chunks, batch)
            if p.estimate <= limit:
                return p
    return None


def memory_advice(model, frames: int, points: int, need: int, free: int, dtype: torch.dtype = torch.float32) -> str:
    """The message of a :class:`~cotracker3.errors.MemoryEstimateError`: what an offline run
    would need, what is available, and what the online mode would need instead."""
    online = tracking_memory(model, 16, points, dtype=dtype)  # one 16-frame window of the same sizes
    return (f"tracking {points} points through {frames} frames offline needs about {need / 2**30:.1f} GiB of "
            f"memory, but {free / 2**30:.1f} GiB are available. The online (sliding-window) mode needs about "
            f"{online / 2**30:.1f} GiB whatever the length of the video: use OnlinePredictor "
            "(track3d track --online), or track fewer frames or points")
