"""2D tracking of a video file: ``track3d.track(...)`` and ``track3d track``.

One typed configuration, :class:`TrackOptions`, is both the keyword
arguments of :func:`track` and the options of the ``track3d track`` command
(its field docs are the ``--help`` text).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import cotracker3
from cotracker3.baseline import BASELINE, LucasKanadeTracker
from cotracker3 import memory
from cotracker3.errors import MemoryEstimateError, QueryError, WeightsUnavailableError
from cotracker3.predictor import check_queries
from track3d import io, video as video_io
from track3d.errors import Track3DError, VideoError

logger = logging.getLogger(__name__)


def _opt(default, help: str, **meta):
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class TrackOptions:
    """How to track a video. Every field is also a ``track3d track`` option."""

    grid: int = _opt(20, "points per side of a regular grid of queries at --grid-frame (ignored with --queries)")
    grid_frame: int = _opt(0, "frame index (of the selected frames) the grid points start from")
    queries: str | None = _opt(
        None, "file of query rows 't x y' (.npy, .txt or .csv): frame index of the selected frames, "
        "then pixels of the source video; replaces the grid"
    )
    model: str | None = _opt(
        None, "registered weights name (cotracker3-offline, cotracker3-online, *-kubric), or 'baseline' "
        "for the classical Lucas-Kanade tracker (no weights needed); "
        "default: cotracker3-online with --online, else cotracker3-offline"
    )
    checkpoint: str | None = _opt(None, "path of a checkpoint file to load instead of the registry's weights")
    online: bool = _opt(False, "stream the video through the online (sliding-window) model: memory stays flat "
                        "(the same as --mode online)")
    mode: str = _opt(
        "auto", "offline: the whole video at once (best tracks); online: streamed through the sliding-window "
        "model (memory stays flat); auto: offline when the memory estimate fits the memory available, else "
        "online, with a notice (needs the default weights: with --model/--checkpoint auto means offline)",
        choices=("auto", "offline", "online"))
    ignore_rotation: bool = _opt(False, "read the stored pixels: ignore the video's display matrix (phone "
                                 "rotation) and images' EXIF orientation")
    backward: bool = _opt(False, "also track backwards in time from each query frame (offline model)")
    start: int = _opt(0, "first frame of the source video to use")
    end: int | None = _opt(None, "frame of the source video to stop before (default: the end)")
    stride: int = _opt(1, "use every STRIDE-th frame")
    max_side: int | None = _opt(None, "shrink frames so their longer side is at most this many pixels while reading")
    iters: int | None = _opt(None, "refinement iterations of the model (default: the model's own: 6 for the "
                             "published models, the calibrated number for the embedded one)")
    precision: str = _opt(
        "float32", "arithmetic of the model: float32 (exact), bfloat16 (mixed precision: faster on CPUs with "
        "bfloat16 instructions and on GPUs, less memory, tracks within a small fraction of a pixel of float32; "
        "see the README's figures) or float16 (GPU only)", choices=("float32", "bfloat16", "float16"),
    )
    device: str = _opt("auto", "torch device: cpu, cuda, cuda:1, ... or auto")
    max_memory: str | None = _opt(
        None, "memory the offline model may use, e.g. 8G or 512M (default: what the device has free); its "
        "chunk sizes follow it, and if even the smallest chunks do not fit, points are tracked in batches"
    )
    download: bool = _opt(True, "download missing weights (set TRACK3D_OFFLINE=1 to forbid)", cli=False)


@dataclass
class Tracks:
    """A 2D tracking result, unbatched, in the source video's pixels.

    Attributes:
        tracks: ``(T, N, 2)`` float32 pixels ``(x, y)``, ``(0, 0)`` the centre of the
            top-left pixel of the source video (before any ``max_side`` shrink).
        visibility: ``(T, N)`` bool.
        confidence: ``(T, N)`` float32 in ``[0, 1]``.
        queries: ``(N, 3)`` float32 ``(t, x, y)``: frame index of the tracked
            frames, pixels of the source video.
        fps: frames per second of the tracked frames (source fps / stride; the
            average of ``timestamps`` when the rate is variable).
        frame_size: ``(W, H)`` of the source video as displayed (its display
            matrix or EXIF orientation applied, unless ``ignore_rotation``).
        frame_indices: ``(T,)`` int64, index in the source video of each tracked frame.
        source: the video path.
        model: the weights name or checkpoint path used.
        timings: seconds spent per stage.
        timestamps: ``(T,)`` float64 presentation time of each tracked frame, seconds
            from the source's first frame.
        fps_variable: the frame rate is variable (:func:`track3d.video.frame_rate`).
        orientation: what was done to show the frames upright (``VideoInfo.orientation``).
        mode: ``"offline"`` or ``"online"``: how the points were tracked.
        notices: what the user should know (e.g. auto mode chose online).
    """

    tracks: np.ndarray
    visibility: np.ndarray
    confidence: np.ndarray
    queries: np.ndarray
    fps: float
    frame_size: tuple[int, int]
    frame_indices: np.ndarray
    source: str = ""
    model: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    timestamps: np.ndarray | None = None
    fps_variable: bool = False
    orientation: str = "none"
    mode: str = "offline"
    notices: list[str] = field(default_factory=list)

    def save(self, path: str | Path) -> Path:
        """Write ``tracks.npz`` (see :func:`track3d.io.save_tracks`) into a folder or file."""
        return io.save_tracks(
            path,
            tracks=self.tracks,
            visibility=self.visibility,
            confidence=self.confidence,
            queries=self.queries,
            fps=self.fps,
            frame_size=self.frame_size,
            frame_indices=self.frame_indices,
            **({} if self.timestamps is None else {"timestamps": np.asarray(self.timestamps, np.float64)}),
        )


def read_queries(path: str | Path) -> np.ndarray:
    """Read query rows ``(t, x, y)`` from ``.npy``, or whitespace / comma separated text.

    Returns:
        ``(N, 3)`` float32.

    Raises:
        QueryError: the file is missing, unreadable, or not N rows of 3 numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise QueryError(f"queries file {path} does not exist")
    try:
        if path.suffix == ".npy":
            q = np.load(path, allow_pickle=False)
        else:
            text = path.read_text().replace(",", " ")
            rows = [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
            q = np.array(rows, dtype=np.float64)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise QueryError(f"cannot read queries from {path}: {exc}") from None
    q = np.asarray(q, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != 3 or len(q) == 0:
        raise QueryError(f"{path} must hold rows of 't x y' (N x 3 numbers), got shape {q.shape}")
    return q


def resolve_device(device: str) -> torch.device:
    """``auto`` means CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise Track3DError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise Track3DError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return dev


def load_tracker(options: TrackOptions) -> tuple[torch.nn.Module, str]:
    """Build the model the options name and load its weights. Returns ``(model, label)``."""
    name = options.model or ("cotracker3-online" if options.online else "cotracker3-offline")
    if name == BASELINE:
        if options.online or options.checkpoint:
            raise Track3DError("the baseline tracker takes no --checkpoint and runs on the whole video: "
                               "drop --online / --checkpoint")
        return LucasKanadeTracker(), BASELINE
    cfg = cotracker3.weights.get_config(name)
    if cfg.offline == options.online:
        kind = "online" if options.online else "offline"
        raise Track3DError(f"model {name!r} is an {'offline' if cfg.offline else 'online'} model; "
                           f"pick an {kind} one or {'drop' if options.online else 'add'} --online")
    model = cotracker3.from_pretrained(name, checkpoint=options.checkpoint, download=options.download)
    return model, options.checkpoint or name


FALLBACK_NOTICE = "CoTracker3 weights are not available"
"""Start of the notice given (and logged at once) when another tracker stands in for CoTracker3."""


def tracker_or_embedded(opts: TrackOptions, notices: list[str] | None = None) -> tuple[torch.nn.Module, str]:
    """:func:`load_tracker`; the shipped embedded model when the default weights are missing.

    The notice saying so is logged and appended to ``notices``.

    Raises:
        WeightsUnavailableError: the weights are missing and the embedded model cannot stand in
            (a model or checkpoint was named, ``--online``, or no embedded model ships).
    """
    from cotracker3 import embedded
    from cotracker3.errors import WeightsUnavailableError

    try:
        return load_tracker(opts)
    except WeightsUnavailableError as exc:
        if opts.model is not None or opts.checkpoint is not None or opts.online or not embedded.available():
            raise
        notice = (f"{FALLBACK_NOTICE} ({str(exc).splitlines()[0]}); tracked with the project's embedded model "
                  "instead (smaller, trained on synthetic videos). Put the published weights in place (see "
                  "'track3d models') for better tracks.")
        logger.warning(notice)
        if notices is not None:
            notices.append(notice)
        return embedded.load(), embedded.NAME


def track(
    video: str | Path,
    options: TrackOptions | None = None,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    model: torch.nn.Module | str | None = None,
    **kwargs,
) -> Tracks:
    """Track points through a video file.

    Args:
        video: a video file (mp4, mov, avi, webm, gif, ...) or a folder of images.
        options: a :class:`TrackOptions`; or give its fields as keyword arguments,
            e.g. ``track3d.track("v.mp4", grid=30, online=True)``.
        progress: optional ``callable(stage, done, total)`` for progress bars.
        model: an already loaded CoTracker3 model (skips weight loading), or a
            weights name (``"baseline"``, ``"embedded"``, a registry name), which is
            :attr:`TrackOptions.model`.

    Returns:
        :class:`Tracks`, in the source video's pixels.

    Raises:
        VideoError, QueryError, CheckpointError, WeightsUnavailableError: bad input
            (all subclasses of ``track3d.errors.USER_ERRORS``).
    """
    if isinstance(model, str):  # a name, as on the command line
        kwargs["model"], model = model, None
    opts = dataclasses.replace(options or TrackOptions(), **kwargs)
    if opts.queries is None and opts.grid < 1:
        raise QueryError(f"--grid must be a positive number of points per side, got {opts.grid}")
    if opts.iters is not None and opts.iters < 1:
        raise Track3DError(f"iters must be at least 1, got {opts.iters}")
    if opts.precision not in ("float32", "bfloat16", "float16"):
        raise Track3DError(f"precision must be float32, bfloat16 or float16, got {opts.precision!r}")
    if opts.mode not in ("auto", "offline", "online"):
        raise Track3DError(f"--mode must be auto, offline or online, got {opts.mode!r}")
    if opts.online and opts.mode == "offline":
        raise Track3DError("--online and --mode offline contradict each other: give one")
    if opts.mode == "online":
        opts = dataclasses.replace(opts, online=True)
    dtype = getattr(torch, opts.precision)
    max_memory = parse_size(opts.max_memory, "--max-memory")
    timings: dict[str, float] = {}
    notices: list[str] = []
    info = video_io.probe(video, ignore_rotation=opts.ignore_rotation)
    read_kw = dict(start=opts.start, end=opts.end, stride=opts.stride, max_side=opts.max_side,
                   ignore_rotation=opts.ignore_rotation)
    queries = read_queries(opts.queries) if opts.queries else None
    if opts.online and opts.backward:
        raise Track3DError("--backward needs the whole video: it works with the offline model only")

    t0 = time.perf_counter()
    device = resolve_device(opts.device)
    check_precision(opts.precision, device)
    if model is None:
        model, label = tracker_or_embedded(opts, notices)
    else:
        label = BASELINE if isinstance(model, LucasKanadeTracker) else type(model).__name__
    baseline = isinstance(model, LucasKanadeTracker)
    if baseline and opts.online:
        raise Track3DError("the baseline tracker runs on the whole video: drop --online")
    if not baseline:
        model = model.to(device)
    timings["load_model"] = time.perf_counter() - t0

    notify = progress or (lambda *a: None)
    # The model sees its own resolution only: frames larger than it are shrunk while they are decoded,
    # one at a time, so memory does not grow with the source resolution (tracks come back in source pixels).
    size = tracker_read_size(info.width, info.height, getattr(model, "model_resolution", None))
    if size is not None and opts.max_side is None:
        read_kw["size"] = size
    batches = 1
    if not opts.online:
        pred = model if baseline else cotracker3.Predictor(model, iters=opts.iters, dtype=dtype,
                                                           max_memory=max_memory)
        may_switch = (opts.mode == "auto" and not baseline and opts.model is None and opts.checkpoint is None
                      and not opts.backward)
        try:
            batches = 1 if baseline else _check_offline_memory(pred, info, read_kw, opts, queries, video)
        except MemoryEstimateError as exc:
            if not may_switch:
                raise
            t0 = time.perf_counter()
            try:
                model, label = load_tracker(dataclasses.replace(opts, online=True))
            except WeightsUnavailableError:
                raise exc from None  # No online weights to fall back on: the estimate's advice stands.
            notice = (f"the whole video does not fit in memory offline ({str(exc).splitlines()[0]}); "
                      "--mode auto tracks it online (streamed, memory stays flat) instead")
            logger.warning(notice)
            notices.append(notice)
            opts = dataclasses.replace(opts, online=True)
            model = model.to(device)
            timings["load_model"] += time.perf_counter() - t0

    t0 = time.perf_counter()
    times: list[float] = []
    if opts.online:
        result, frame_hw, n_frames = _track_online(video, read_kw, opts, queries, info, model, notify, times)
        timings["track"] = time.perf_counter() - t0
    else:
        frames, read_info = _read_all(video, read_kw, notify)
        times = list(read_info.timestamps)
        timings["read_video"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        frame_hw, n_frames = frames.shape[1:3], len(frames)
        q = None if queries is None else _to_read_pixels(queries, info, frame_hw, n_frames)
        total = (pred.iters if not baseline else 1) * (2 if opts.backward else 1) * batches
        done = [0]

        def on_iter(i, n):
            done[0] += 1
            notify("refine", done[0], total)

        if not baseline:
            model.progress = on_iter
        try:
            video_t = torch.from_numpy(frames).permute(0, 3, 1, 2)[None]
            del frames
            if q is None:
                _check_grid_frame(opts.grid_frame, n_frames)
                result = pred(video_t, grid_size=opts.grid, grid_query_frame=opts.grid_frame,
                              backward_tracking=opts.backward)
            else:
                result = pred(video_t, queries=q, backward_tracking=opts.backward)
        finally:
            if not baseline:
                model.progress = None
        timings["track"] = time.perf_counter() - t0

    out = result.numpy()
    # Back to the source video's pixels (reading may have shrunk the frames).
    H, W = frame_hw
    back = np.array([(info.width - 1) / max(W - 1, 1), (info.height - 1) / max(H - 1, 1)], dtype=np.float32)
    out["tracks"] = out["tracks"] * back
    out["queries"][:, 1:] *= back
    timestamps = np.asarray(times[:n_frames], dtype=np.float64)
    fps, variable = video_io.frame_rate(timestamps, float(info.fps) / opts.stride)
    return Tracks(
        tracks=out["tracks"].astype(np.float32),
        visibility=out["visibility"].astype(bool),
        confidence=out["confidence"].astype(np.float32),
        queries=out["queries"].astype(np.float32),
        fps=fps,
        frame_size=(info.width, info.height),
        frame_indices=opts.start + opts.stride * np.arange(n_frames, dtype=np.int64),
        source=str(video),
        model=label,
        timings=timings,
        timestamps=timestamps if len(timestamps) == n_frames else None,
        fps_variable=variable,
        orientation=info.orientation,
        mode="online" if opts.online else "offline",
        notices=notices,
    )


def _check_offline_memory(pred: cotracker3.Predictor, info, read_kw, opts: TrackOptions, queries, video=None) -> int:
    """Before decoding: fail with the estimate and the online suggestion if the whole-video
    run cannot fit in memory (decoded frames included); else the number of point batches
    the run will take (1 unless memory is short). A video that states no frame count has
    its packets counted first (:func:`track3d.video.count_frames`, no decoding).

    Raises:
        MemoryEstimateError: nothing fits (see ``cotracker3.Predictor.check_memory``).
    """
    n_frames = _expected_frames(info, read_kw)
    if info.num_frames is None and video is not None:
        counted = video_io.count_frames(video)
        if counted:
            n_frames = _expected_frames(dataclasses.replace(info, num_frames=counted), read_kw)
    if n_frames < 2:
        return 1  # unknown length (or too short, reported when reading)
    width, height = video_io._output_size(info.width, info.height, read_kw.get("size"), opts.max_side)
    support = 0 if queries is None else pred.support_grid_size**2
    points = opts.grid**2 if queries is None else len(queries) + support
    plan = pred.check_memory(n_frames, points, opts.backward, video_bytes=n_frames * width * height * 3,
                             shared=support)
    return plan.batches


def tracker_read_size(width: int, height: int, model_resolution) -> tuple[int, int] | None:
    """``(W, H)`` to decode a ``width x height`` video at for a model working at
    ``model_resolution`` ``(H, W)``: each side shrunk to the model's where larger (the
    predictor resizes to exactly that anyway), or None to keep the frames as they are
    (no model resolution, e.g. the baseline tracker, or a video no larger than it)."""
    if model_resolution is None:
        return None
    model_h, model_w = (int(v) for v in model_resolution)
    if width <= model_w and height <= model_h:
        return None
    return min(width, model_w), min(height, model_h)


def parse_size(text: str | int | None, name: str = "size") -> int | None:
    """``"8G"``, ``"512M"``, ``"1.5GiB"`` or a number of bytes to bytes (None stays None).

    Raises:
        Track3DError: not a positive size.
    """
    try:
        return memory.parse_size(text, name)
    except ValueError as e:
        raise Track3DError(str(e)) from None


def _check_grid_frame(frame: int, n_frames: int) -> None:
    if not 0 <= frame < n_frames:
        raise QueryError(f"--grid-frame {frame} is outside the {n_frames} selected frames")


def _to_read_pixels(queries: np.ndarray, info, frame_hw, n_frames) -> np.ndarray:
    """Source-pixel queries to the pixels of the frames as read (after max_side)."""
    H, W = frame_hw
    q = check_queries(queries, 1, n_frames, info.width, info.height, "cpu")[0].numpy()
    q[:, 1] *= (W - 1) / max(info.width - 1, 1)
    q[:, 2] *= (H - 1) / max(info.height - 1, 1)
    return q


def _read_all(video, read_kw, notify):
    frames, info = video_io.read_video(video, **read_kw, progress=lambda n, total: notify("read", n, total or 0))
    if len(frames) < 2:
        raise VideoError(f"{video}: {len(frames)} frame(s) selected; tracking needs at least 2")
    return frames, info


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX, as oneDNN sees it)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse bfloat16 on a CPU without bfloat16 instructions, before anything runs.

    There oneDNN emulates it: measured on an AVX2-only CPU (torch 2.13), one 384x512 frame through
    the encoder took 150 s in bfloat16 against 0.4 s in float32.
    """
    if precision == "bfloat16" and device.type == "cpu" and not cpu_has_bfloat16():
        raise Track3DError("--precision bfloat16 needs a GPU or a CPU with bfloat16 instructions (AVX512-BF16 or "
                           "AMX); this CPU would emulate it hundreds of times slower than float32: use float32")


def _expected_frames(info, read_kw) -> int:
    if info.num_frames is None:
        return 0
    end = info.num_frames if read_kw["end"] is None else min(read_kw["end"], info.num_frames)
    return max(0, len(range(read_kw["start"], end, read_kw["stride"])))


def _track_online(video, read_kw, opts, queries, info, model, notify, times):
    pred = cotracker3.OnlinePredictor(model, iters=opts.iters, dtype=getattr(torch, opts.precision))
    frames = video_io.iter_frames(video, **read_kw, timestamps=times)
    first = next(frames, None)
    if first is None:
        raise VideoError(f"{video}: no frame selected")
    H, W = first.shape[:2]
    total = _expected_frames(info, read_kw)
    if queries is not None:
        q = _to_read_pixels(queries, info, (H, W), total or 2**31)
        pred.start(queries=q, frame_size=(W, H), num_frames=total or None)
    else:
        pred.start(grid_size=opts.grid, grid_query_frame=opts.grid_frame, frame_size=(W, H),
                   num_frames=total or None)
    count = 0

    def counted():
        nonlocal count
        for f in itertools.chain([first], frames):
            count += 1
            notify("track", count, total)
            yield f

    result = None
    for result in pred.track(counted()):
        pass
    if count < 2:
        raise VideoError(f"{video}: {count} frame(s) selected; tracking needs at least 2")
    return result, (H, W), count


OVERLAY_MAX_SIDE = 1280
"""Longer side (pixels) of ``overlay.mp4`` at most: larger videos are drawn shrunk, so writing
the overlay of a 4K video costs what a 720p one does."""


def write_overlay(path: str | Path, source: str | Path, tracks: np.ndarray, visibility: np.ndarray, fps: float, *,
                  frame_size: tuple[int, int], start: int = 0, end: int | None = None, stride: int = 1,
                  ignore_rotation: bool = False, max_side: int | None = OVERLAY_MAX_SIDE) -> Path:
    """Draw ``tracks`` on the frames of ``source`` (decoded again, one at a time) into an mp4.

    Args:
        tracks: ``(T, N, 2)`` float32 pixels ``(x, y)`` of frames of ``frame_size`` ``(W, H)``.
        visibility: ``(T, N)`` bool.
        start, end, stride, ignore_rotation: the frame selection the tracks were made from.
        max_side: the overlay's longer side at most (None: the video's own size); tracks are scaled to it.
    """
    from viz.overlay import write_overlay_video

    W, H = frame_size
    size = video_io._output_size(W, H, None, max_side)
    scale = np.array([(size[0] - 1) / max(W - 1, 1), (size[1] - 1) / max(H - 1, 1)], dtype=np.float32)
    frames = video_io.iter_frames(source, start=start, end=end, stride=stride, ignore_rotation=ignore_rotation,
                                  size=None if size == (W, H) else size)
    write_overlay_video(path, frames, np.asarray(tracks, np.float32) * scale, visibility, fps=fps)
    return Path(path)


TRACK_SUMMARY_FILE = "summary.json"
"""What a tracking result folder says about itself (written last, inside the atomic folder)."""


def save_track_folder(
    result: Tracks,
    out_dir: str | Path,
    options: TrackOptions,
    *,
    overlay: bool = True,
    overwrite: bool = False,
    on_write: Callable[[str], None] | None = None,
) -> dict:
    """Write a tracking result folder, atomically (:func:`track3d.io.atomic_output_dir`).

    The folder holds ``tracks.npz`` (:func:`track3d.io.save_tracks`, with
    ``frame_indices``), ``overlay.mp4`` (the tracked frames with the tracks
    drawn, read again from ``result.source``, its longer side at most
    :data:`OVERLAY_MAX_SIDE`) unless ``overlay`` is false, and
    ``summary.json``: ``source``, ``model``, ``frames``, ``tracks``, ``fps``,
    ``fps_variable``, ``frame_size``, ``orientation`` (what made the frames
    upright), ``mode`` (offline or online), ``notices``, ``timings`` (seconds
    per stage), ``options`` and ``files``.
    It appears complete or not at all.

    Args:
        result: the :class:`Tracks` of :func:`track`.
        out_dir: the folder; it must not exist (or be empty) unless ``overwrite``.
        options: the options ``result`` was tracked with (frame selection for the
            overlay, recorded in the summary).
        overlay: also write ``overlay.mp4``.
        overwrite: replace an existing folder.
        on_write: optional ``callable(file_name)`` after each file is written
            inside the temporary folder.

    Returns:
        The summary written to ``summary.json``.

    Raises:
        OutputError: ``out_dir`` exists (and not ``overwrite``) or is not a folder.
    """
    notify = on_write or (lambda name: None)
    with io.atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        result.save(tmp / io.TRACKS_FILE)
        notify(io.TRACKS_FILE)
        if overlay:
            t0 = time.perf_counter()
            write_overlay(tmp / "overlay.mp4", result.source, result.tracks, result.visibility, result.fps,
                          frame_size=result.frame_size, start=options.start, end=options.end, stride=options.stride,
                          ignore_rotation=options.ignore_rotation)
            result.timings["overlay"] = time.perf_counter() - t0
            notify("overlay.mp4")
        T, N = result.visibility.shape
        summary = {
            "source": str(result.source), "model": result.model, "frames": int(T), "tracks": int(N),
            "fps": float(result.fps), "fps_variable": bool(result.fps_variable),
            "frame_size": [int(v) for v in result.frame_size], "orientation": result.orientation,
            "mode": result.mode, "notices": list(result.notices),
            "visible": round(float(np.mean(result.visibility)), 4) if result.visibility.size else 0.0,
            "timings": {k: round(float(v), 3) for k, v in result.timings.items()},
            "options": {k: v for k, v in dataclasses.asdict(options).items() if k != "download"},
        }
        summary["files"] = sorted(p.name for p in tmp.iterdir()) + [TRACK_SUMMARY_FILE]
        io.write_json_atomic(tmp / TRACK_SUMMARY_FILE, summary)
    return summary
