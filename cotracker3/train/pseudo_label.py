"""Fine-tuning CoTracker3 on real, unlabelled videos with teacher pseudo-labels.

The second training stage of CoTracker3 (Karaev et al., 2024): a student
trained on synthetic videos (:mod:`cotracker3.train.loop`) goes on learning from
real videos that have no ground truth. For each step:

1. a clip is cut from a random video of the folder (random length in
   ``[min_clip_len, clip_len]``, random temporal stride of 1 to 3 frames when
   the video is long enough: the reference's random sequence length and
   random frame rate) and resized to the student's resolution;
2. query points are SIFT keypoints of frames in the first quarter of the clip
   (:func:`sift_queries`); when SIFT finds too few, uniformly drawn queries are
   used and the whole sample is masked out of the loss, as the reference does;
3. one teacher, drawn at random from the pool, tracks the queries
   (:func:`pseudo_label`); its tracks are the targets, and a point counts as
   visible where the teacher's visibility probability exceeds 0.9;
4. the student tracks the same queries, and every refinement iteration is
   supervised with the track terms of :func:`cotracker3.train.losses.cotracker_losses`:
   Huber on points the teacher sees, L1 on the others (not for the
   Lucas-Kanade teacher, whose positions of lost points are interpolated
   guesses: the reference likewise trains only on visible points for its
   non-CoTracker teacher, TAPIR). The visibility and confidence terms are not
   trained on (the reference does not either) and the head that predicts
   them, ``updateformer.vis_conf_head``, is frozen; both terms are still
   logged against the teacher's labels as a diagnostic.

Teachers (:attr:`PseudoLabelConfig.teachers`) are tracker specs:
``"baseline"`` (:class:`cotracker3.baseline.LucasKanadeTracker`), a checkpoint
path (loaded with the student's architecture when it fits, otherwise as a
published-size model by :func:`cotracker3.eval.scoring.load_tracker`), a
registry name, or ``"self"``: a frozen copy of the student. By default
(``self_refresh=0``) that copy is the *initial* student, as in the reference,
where the offline CoTracker3 teacher is the very checkpoint the student
starts from; with ``self_refresh=K`` it is replaced by the current student
every ``K`` steps (self-training).

Optimisation follows the reference's real-data run: AdamW (weight decay
1e-5), learning rate 5e-5 on a one-cycle schedule with no warm-up
(``pct_start=0``, cosine decay over ``steps + 100``), gradient clipping at
norm 10.

Everything a step draws (video, clip, stride, queries, teacher) comes from
``(seed, step)`` alone, so a run resumed from its checkpoint goes on exactly as
if it had not stopped. The run folder follows :func:`cotracker3.train.loop.train`:
``checkpoint.pt`` (model, optimiser, schedule, step, configuration and the
``"self"`` teacher's weights), ``model.pt`` (weights only) and ``log.jsonl``.

Precomputed labels (``labels=`` of :func:`finetune`; ``track3d pseudo-label --labels DIR``): instead of
running teachers in the loop, each step draws a teacher among those that labelled videos, one of its
:class:`LabelledVideo` s (tracks a teacher computed once over the whole video, e.g. by ``track3d batch
--task track --model TEACHER`` on a cluster), a clip as above, and queries among the labelled tracks
visible in the clip's first quarter (:func:`label_sample`); the rest of the step is the same. Labels
use the visibility the teacher wrote (its own threshold), not the 0.9 filter of the loop.

Videos are decoded with PyAV from their first frame (no seeking: exact for
every container, slow for long videos; cut long videos into short files).

Where this differs from the reference (``train_on_real_data.py``,
``get_sift_sampled_pts`` in ``cotracker/models/core/model_utils.py``):

- videos shorter than ``clip_len`` are skipped (the reference plays them back
  and forth until long enough); clips are resized to the student's
  resolution (the reference crops windows of 384x512);
- SIFT keypoints keep their sub-pixel positions (the reference truncates them
  to integers), are detected on grey frames, one per position (SIFT repeats a
  position once per orientation), a frame drawn twice is searched once for
  twice the quota (the reference would repeat its points), the quota per draw
  is ``ceil(num / 8)`` (the reference's ``num // 8`` never reaches ``num``
  when ``num`` is not a multiple of 8), and ``num`` of the keypoints are
  chosen at random (the reference keeps the first ``num``);
- model teachers track the queries along with the predictor's 6x6 support
  grid (the reference adds 100 random points for its offline teacher), and
  track backwards from the query frames too;
- a masked-out sample (SIFT failed, or the teacher returned non-finite
  tracks) is not labelled at all: the teacher is not run for it.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from cotracker3.baseline import LucasKanadeTracker
from cotracker3.errors import CheckpointError, CoTrackerError, DatasetError, InputError, QueryError
from cotracker3.model import CoTracker3Offline
from cotracker3.predictor import OnlinePredictor, Predictor
from cotracker3.train.losses import Losses, cotracker_losses
from cotracker3.train.loop import (CHECKPOINT, SMALL_MODEL, WEIGHTS, TrainingError, _load_checkpoint, _optimiser_to,
                                 _save, clip_outputs, collate_clips, evaluate_model, forward_train, resolve_device,
                                 run_steps)

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".webm", ".mkv")
"""File suffixes (lower case) that :func:`list_videos` considers."""

VISIBILITY_FILTER = 0.9
"""A teacher's visibility probability above which a pseudo-label counts as visible (the reference's ``vis_g > 0.9``)."""

SIFT_FRAMES = 8
"""Frame draws per clip for SIFT queries (the reference's ``num_sampled_frames``)."""

SIFT_SPAN = 0.25
"""SIFT query frames are drawn from ``[0, int(SIFT_SPAN * T)]`` (the reference's ``sampling_length_percent``)."""

MAX_STRIDE = 4
"""Random temporal stride: ``1 <= stride < min(MAX_STRIDE, frames // clip length)`` (the reference's random
frame rate)."""

FROZEN = ("updateformer.vis_conf_head",)
"""Parameter name prefixes frozen during fine-tuning: the visibility / confidence head."""

BASELINE = "baseline"
SELF = "self"


class VideoTooShortError(DatasetError):
    """A video has fewer frames than the clip asked of it."""


# --------------------------------------------------------------------------
# Videos
# --------------------------------------------------------------------------


def _av_errors():
    import av

    return (av.error.FFmpegError, OSError)


def _frame_count(path: Path) -> int:
    """Frames of a readable video: the container's count, else its video packets.

    Raises:
        DatasetError: the file cannot be opened, has no video stream or no
            decodable frame.
    """
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DatasetError(f"{path} has no video stream")
            stream = container.streams.video[0]
            if next(iter(container.decode(stream)), None) is None:
                raise DatasetError(f"no frame of {path} could be decoded")
            if stream.frames and stream.frames > 0:
                return int(stream.frames)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return sum(1 for packet in container.demux(stream) if packet.size)
    except _av_errors() as exc:
        raise DatasetError(f"cannot read {path} ({type(exc).__name__}: {exc})") from exc


def _scan_videos(folder: str | Path) -> list[tuple[Path, int]]:
    """``(path, frame count)`` of every readable video under ``folder``, sorted by path."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"video folder {folder} does not exist (or is not a folder)")
    candidates = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    found, reasons = [], []
    for path in candidates:
        try:
            found.append((path, _frame_count(path)))
        except DatasetError as exc:
            logger.warning("skipping %s", exc)
            reasons.append(str(exc))
    if not found:
        why = (f"none of its {len(candidates)} candidate files could be read (first: {reasons[0]})" if candidates
               else f"it holds no file ending in {', '.join(VIDEO_EXTENSIONS)}")
        raise DatasetError(f"no readable video in {folder}: {why}; put real videos there to fine-tune on")
    return found


def list_videos(folder: str | Path) -> list[Path]:
    """The readable videos in a folder (searched recursively), sorted by path.

    A file counts when its suffix is one of :data:`VIDEO_EXTENSIONS` (any
    case), PyAV opens it, it has a video stream and its first frame decodes.
    Unreadable files are skipped with a warning.

    Raises:
        DatasetError: the folder does not exist, or holds no readable video.
    """
    return [path for path, _ in _scan_videos(folder)]


def _resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    H, W = size
    if frame.shape[:2] == (H, W):
        return frame
    shrink = H < frame.shape[0] and W < frame.shape[1]
    return cv2.resize(frame, (W, H), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def read_clip(path: str | Path, start: int, length: int, size: tuple[int, int] = (256, 256), *,
              step: int = 1) -> np.ndarray:
    """Frames ``start, start + step, ...`` (``length`` of them) of a video, resized.

    Args:
        path: a video file PyAV can decode.
        start: index of the first frame (decoding order, from 0).
        length: frames in the clip.
        size: ``(H, W)`` of the output frames (``cv2.resize``: ``INTER_AREA``
            to shrink, ``INTER_LINEAR`` otherwise).
        step: temporal stride between the clip's frames.

    Returns:
        ``(length, H, W, 3)`` uint8 RGB.

    Raises:
        VideoTooShortError: the video ends before the clip's last frame.
        DatasetError: the video cannot be opened or decoded.
        ValueError: ``start < 0``, ``length < 1``, ``step < 1`` or a bad ``size``.
    """
    import av

    if start < 0 or length < 1 or step < 1:
        raise ValueError(f"need start >= 0, length >= 1 and step >= 1, got {start}, {length}, {step}")
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (H, W) with positive sides, got {size}")
    path = Path(path)
    last = start + (length - 1) * step
    frames, decoded = [], 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DatasetError(f"{path} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for index, frame in enumerate(container.decode(stream)):
                decoded = index + 1
                if index >= start and (index - start) % step == 0:
                    frames.append(_resize(frame.to_ndarray(format="rgb24"), tuple(size)))
                    if len(frames) == length:
                        break
    except _av_errors() as exc:
        raise DatasetError(f"cannot decode {path} ({type(exc).__name__}: {exc})") from exc
    if len(frames) < length:
        raise VideoTooShortError(f"{path} has {decoded} frames; a clip of {length} frames from frame {start} "
                                 f"every {step} needs {last + 1}")
    return np.stack(frames)


# --------------------------------------------------------------------------
# Queries and pseudo-labels
# --------------------------------------------------------------------------


def _check_video(frames, name: str = "frames") -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InputError(f"{name} must be (T, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
    if frames.shape[0] < 1 or min(frames.shape[1:3]) < 2:
        raise InputError(f"{name} must have at least one frame of at least 2x2 pixels, got {frames.shape}")
    return frames


def _strongest_keypoints(grey: np.ndarray, k: int) -> list[tuple[float, float]]:
    """Positions of the ``k`` strongest SIFT keypoints of an image, distinct positions only."""
    keypoints = sorted(cv2.SIFT_create().detect(grey, None), key=lambda kp: -kp.response)
    chosen, seen = [], set()
    for kp in keypoints:
        key = (round(kp.pt[0], 2), round(kp.pt[1], 2))  # one position per orientation duplicate
        if key not in seen:
            seen.add(key)
            chosen.append(kp.pt)
            if len(chosen) == k:
                break
    return chosen


def sift_queries(frames: np.ndarray, num: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Query points at SIFT keypoints of frames in the first quarter of a clip.

    :data:`SIFT_FRAMES` (8) frame indices are drawn uniformly, with
    replacement, from ``[0, int(0.25 * T)]``; each draw contributes the
    ``ceil(num / 8)`` strongest keypoints (by SIFT response) of its frame (a
    frame drawn twice contributes twice as many, all distinct). When there are
    at least ``num`` of them, ``num`` are chosen at random. Otherwise SIFT
    failed (flat or blurred frames): ``num`` queries are drawn uniformly over
    the whole clip (frames ``[0, T-1]``, pixels ``[0, W-1] x [0, H-1]``), and
    the caller must mask the sample out of the loss.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        num: queries wanted (>= 1).
        rng: the source of randomness.

    Returns:
        ``(queries, ok)``: ``(num, 3)`` float32 ``(t, x, y)`` (frame index,
        pixels, ``(0, 0)`` the centre of the top-left pixel), and whether SIFT
        found enough keypoints.

    Raises:
        InputError: ``frames`` is not ``(T, H, W, 3)`` uint8.
        QueryError: ``num < 1``.
    """
    frames = _check_video(frames)
    if num < 1:
        raise QueryError(f"num must be at least 1, got {num}")
    T, H, W = frames.shape[:3]
    drawn = rng.integers(0, int(T * SIFT_SPAN) + 1, size=SIFT_FRAMES)
    quota = math.ceil(num / SIFT_FRAMES)
    points = []
    for t in np.unique(drawn):
        grey = cv2.cvtColor(np.ascontiguousarray(frames[t]), cv2.COLOR_RGB2GRAY)
        points += [(float(t), x, y) for x, y in _strongest_keypoints(grey, quota * int((drawn == t).sum()))]
    if len(points) >= num:
        pts = np.asarray(points, np.float32)[np.sort(rng.choice(len(points), num, replace=False))]
        pts[:, 1] = pts[:, 1].clip(0, W - 1)
        pts[:, 2] = pts[:, 2].clip(0, H - 1)
        return pts, True
    logger.debug("SIFT found %d of %d keypoints: uniform queries", len(points), num)
    t = rng.integers(0, T, size=num).astype(np.float32)
    xy = rng.uniform(0, 1, size=(num, 2)) * np.array([W - 1, H - 1])
    return np.concatenate([t[:, None], xy], 1).astype(np.float32), False


def _filtered(teacher):
    """The teacher with the pseudo-label visibility filter as its visibility threshold."""
    if isinstance(teacher, Predictor) and teacher.visibility_threshold != VISIBILITY_FILTER:
        return Predictor(teacher.model, iters=teacher.iters, visibility_threshold=VISIBILITY_FILTER,
                         support_grid_size=teacher.support_grid_size)
    if isinstance(teacher, OnlinePredictor) and teacher.visibility_threshold != VISIBILITY_FILTER:
        return OnlinePredictor(teacher.model, iters=teacher.iters, visibility_threshold=VISIBILITY_FILTER)
    return teacher


def pseudo_label(video: np.ndarray, queries: np.ndarray, teacher, *, backward: bool = True
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A teacher's tracks of the queries, with visibility filtered at :data:`VISIBILITY_FILTER`.

    An offline model teacher (:class:`~cotracker3.Predictor`) counts a point as
    visible where its visibility probability exceeds 0.9, as the reference. An
    online one (:class:`~cotracker3.OnlinePredictor`) thresholds
    visibility x confidence at 0.9 (stricter than visibility alone). The
    Lucas-Kanade baseline's visibility is boolean and used as is.

    Args:
        video: ``(L, H, W, 3)`` uint8 RGB, ``L >= 2``.
        queries: ``(N, 3)`` ``(t, x, y)``, pixels of ``video``.
        teacher: a tracker of the predictor API (see
            :func:`cotracker3.eval.scoring.run_tracker`).
        backward: also track backwards from the query frames (trackers that
            can; an online teacher cannot).

    Returns:
        ``tracks`` ``(L, N, 2)`` float32 pixels ``(x, y)`` and ``visible``
        ``(L, N)`` bool.

    Raises:
        InputError, QueryError: bad video or queries.
    """
    from cotracker3.eval.scoring import run_tracker

    video = _check_video(video, "video")
    if video.shape[0] < 2:
        raise InputError(f"video must have at least 2 frames to track, got {video.shape[0]}")
    tracks, visible = run_tracker(_filtered(teacher), video, np.asarray(queries, np.float32), backward=backward)
    return tracks.astype(np.float32), visible.astype(bool)


@dataclass
class LabelledVideo:
    """A teacher's tracks of one whole video, computed beforehand.

    Attributes:
        video: the video file the tracks were computed on.
        teacher: the teacher's name (``"baseline"`` for Lucas-Kanade, whose
            positions of lost points are not trained on; a weights name or path).
        num_frames: ``T``, the tracked frames.
        load: ``callable() -> dict`` with ``tracks`` ``(T, N, 2)`` float pixels
            ``(x, y)`` of the source video (``(0, 0)`` the centre of the top-left
            pixel), ``visibility`` ``(T, N)`` bool, ``frame_indices`` ``(T,)``
            (source frame of each tracked frame, evenly spaced) and
            ``frame_size`` ``(W, H)`` of the source video. Called once per step
            that uses the video, so that a large label set is never all in memory.
        read: optional ``callable(start, length, step) -> (length, H, W, 3)`` uint8 RGB,
            the source frames ``start, start + step, ...`` at full size (for videos
            :func:`read_clip` cannot read, such as folders of images); raises
            :class:`~cotracker3.errors.DatasetError` when it cannot. Default:
            :func:`read_clip` on ``video``.
    """

    video: Path
    teacher: str
    num_frames: int
    load: Callable[[], dict]
    read: Callable[[int, int, int], np.ndarray] | None = None


def plan_label_step(config: PseudoLabelConfig, step: int, labels: list[LabelledVideo], clip: int = 0) -> StepPlan:
    """Draw the teacher, video and clip of a step on precomputed labels (from ``(seed, step)`` alone).

    The teacher is drawn uniformly among ``config.teachers`` (those that labelled the
    videos), then one of its videos, then the clip as :func:`plan_step` does; ``video``
    indexes ``labels``, ``start`` and ``stride`` count tracked frames of the labels.
    ``clip``: which clip of the step's batch (its own draws from ``(seed, step, clip)``;
    the length is clip 0's).
    """
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(3, step, clip) if clip else (3, step)))
    teacher = int(rng.integers(len(config.teachers)))
    mine = [i for i, lv in enumerate(labels) if lv.teacher == config.teachers[teacher]]
    video = mine[int(rng.integers(len(mine)))]
    n = labels[video].num_frames
    length = int(rng.integers(config.min_clip_len, config.clip_len + 1))
    if clip:
        length = plan_label_step(config, step, labels).length
    top = min(MAX_STRIDE, n // length)
    stride = int(rng.integers(1, top)) if config.random_stride and top > 1 else 1
    start = int(rng.integers(0, n - (length - 1) * stride))
    return StepPlan(video, start, length, stride, teacher, rng)


def label_sample(labelled: LabelledVideo, plan: StepPlan, num: int, size: tuple[int, int]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """The clip, queries and targets of a step on precomputed labels.

    The clip's frames are the tracked frames ``plan.start, plan.start + plan.stride, ...``
    (``plan.length`` of them), read from the video and resized to ``size``; the label
    tracks are scaled to the same pixels. Queries are drawn among the tracks visible
    in the clip's first quarter (frames ``[0, int(0.25 * L)]``, as the SIFT queries),
    each at one of its visible frames there, ``num`` of them at most. With no such
    track the sample must be masked out (``ok`` false; uniform queries, as
    :func:`sift_queries`).

    Args:
        labelled: the video and its labels.
        plan: the step's draw (:func:`plan_label_step`).
        num: queries wanted.
        size: ``(H, W)`` of the student's input.

    Returns:
        ``(clip, queries, tracks, visible, ok)``: ``(L, H, W, 3)`` uint8, ``(n, 3)``
        float32 ``(t, x, y)``, ``(L, n, 2)`` float32, ``(L, n)`` bool, and whether the
        sample is usable.

    Raises:
        DatasetError: the labels do not fit the video (frame indices not evenly
            spaced, arrays of different lengths) or the video cannot be read.
    """
    arrays = labelled.load()
    tracks, visibility = np.asarray(arrays["tracks"], np.float32), np.asarray(arrays["visibility"], bool)
    frame_indices = np.asarray(arrays["frame_indices"], np.int64)
    W, H = (int(v) for v in arrays["frame_size"])
    if not (len(tracks) == len(visibility) == len(frame_indices)) or tracks.ndim != 3:
        raise DatasetError(f"the labels of {labelled.video} do not fit together: tracks {tracks.shape}, "
                           f"visibility {visibility.shape}, frame_indices {frame_indices.shape}")
    base = int(frame_indices[1] - frame_indices[0]) if len(frame_indices) > 1 else 1
    if base < 1 or (len(frame_indices) > 1 and not (np.diff(frame_indices) == base).all()):
        raise DatasetError(f"the labels of {labelled.video} are not on evenly spaced frames")
    index = plan.start + plan.stride * np.arange(plan.length)
    first, step = int(frame_indices[plan.start]), plan.stride * base
    if labelled.read is None:
        clip = read_clip(labelled.video, first, plan.length, size, step=step)
    else:
        frames = _check_video(labelled.read(first, plan.length, step), f"the frames of {labelled.video}")
        if len(frames) != plan.length:
            raise VideoTooShortError(f"{labelled.video} gave {len(frames)} frames from frame {first} every {step}; "
                                     f"the labels need {plan.length}")
        clip = np.stack([_resize(f, tuple(size)) for f in frames])
    h, w = size
    scale = np.array([(w - 1) / max(W - 1, 1), (h - 1) / max(H - 1, 1)], np.float32)
    target, seen = tracks[index] * scale, visibility[index]
    L = plan.length
    window = seen[: int(SIFT_SPAN * L) + 1] & np.isfinite(target[: int(SIFT_SPAN * L) + 1]).all(-1)
    candidates = np.flatnonzero(window.any(0))
    rng = plan.rng
    if len(candidates) == 0:
        t = rng.integers(0, L, size=num).astype(np.float32)
        xy = rng.uniform(0, 1, size=(num, 2)) * np.array([w - 1, h - 1])
        queries = np.concatenate([t[:, None], xy], 1).astype(np.float32)
        return clip, queries, np.broadcast_to(queries[None, :, 1:], (L, num, 2)).copy(), np.zeros((L, num), bool), False
    chosen = np.sort(rng.choice(candidates, min(num, len(candidates)), replace=False))
    frames = np.array([rng.choice(np.flatnonzero(window[:, n])) for n in chosen])
    queries = np.concatenate([frames[:, None].astype(np.float32), target[frames, chosen]], 1).astype(np.float32)
    target = np.nan_to_num(target[:, chosen])
    return clip, queries, np.ascontiguousarray(target, np.float32), seen[:, chosen] & np.isfinite(
        tracks[index][:, chosen]).all(-1), True


# --------------------------------------------------------------------------
# Configuration, models, teachers
# --------------------------------------------------------------------------


@dataclass
class PseudoLabelConfig:
    """A fine-tuning run on real videos with pseudo-labels.

    Attributes:
        steps: optimiser steps in all (the schedule spans ``steps + 100``, as the reference).
        lr: peak learning rate (the reference's real-data run: 5e-5).
        weight_decay: AdamW weight decay (the reference's default, 1e-5).
        clip: gradient norm clipping (the reference's real-data run: 10).
        iters: refinement iterations of the student during training (the reference: 4).
        num_points: queries per clip (the reference: 384; fewer on a CPU).
        clip_len, min_clip_len: clip length range in frames, drawn per step
            (the reference: 80 frames, the offline model on random lengths
            from half of it).
        random_stride: draw a temporal stride per clip (the reference's random frame rate).
        teachers: tracker specs, one drawn per step: ``"baseline"``, ``"self"``,
            a checkpoint path or a registry name.
        self_refresh: ``"self"`` teacher: 0 keeps the initial student; ``K``
            replaces it by the current student every ``K`` steps.
        teacher_iters: refinement iterations of model teachers.
        model: keyword arguments of :class:`cotracker3.model.CoTracker3Offline`
            (the student; its ``model_resolution`` is the clips' size).
        init: checkpoint the student starts from (required: a model trained on
            synthetic videos; not needed to resume).
        seed: seed of everything random.
        log_every, checkpoint_every: steps between log lines and checkpoints.
        eval_every: steps between evaluations on the held-out synthetic set (0: never).
        eval_videos_per_tier: scenes per tier in those evaluations.
        bf16: run the student's forward pass under bfloat16 autocast (the losses
            are computed in float32), as :class:`cotracker3.train.loop.TrainConfig`.
        batch_size: clips per optimiser step. The clips of a step share its length
            (clip 0's); each draws its own video, start, stride and teacher from
            ``(seed, step, clip)``, is padded to the step's largest point count and
            masked in the losses, and the clips' losses are averaged.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:K"`` (see
            :func:`cotracker3.train.loop.resolve_device`): where the student and the
            model teachers run. Not part of what a run is: a resumed run may change it.
    """

    steps: int = 1000
    lr: float = 5e-5
    weight_decay: float = 1e-5
    clip: float = 10.0
    iters: int = 4
    num_points: int = 128
    clip_len: int = 24
    min_clip_len: int = 12
    random_stride: bool = True
    teachers: list[str] = field(default_factory=lambda: [SELF, BASELINE])
    self_refresh: int = 0
    teacher_iters: int = 6
    model: dict = field(default_factory=lambda: dict(SMALL_MODEL))
    init: str | None = None
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 50
    eval_every: int = 0
    eval_videos_per_tier: int = 2
    bf16: bool = False
    batch_size: int = 1
    device: str = "auto"

    def check(self, *, need_init: bool = True) -> None:
        if min(self.steps, self.iters, self.num_points, self.teacher_iters, self.batch_size) < 1:
            raise TrainingError("steps, iters, num_points, teacher_iters and batch_size must be at least 1")
        resolve_device(self.device)
        if self.log_every < 1 or self.checkpoint_every < 1 or self.self_refresh < 0 or self.eval_every < 0:
            raise TrainingError("log_every and checkpoint_every must be at least 1, self_refresh and eval_every >= 0")
        if not 2 <= self.min_clip_len <= self.clip_len:
            raise TrainingError(f"need 2 <= min_clip_len <= clip_len, got {self.min_clip_len}, {self.clip_len}")
        if not self.teachers or not all(isinstance(t, str) and t for t in self.teachers):
            raise TrainingError(f"teachers must be a non-empty list of tracker specs, got {self.teachers!r}")
        if need_init and not self.init:
            raise TrainingError("init is required: the checkpoint of a student trained on synthetic videos "
                                "(e.g. the model.pt of a cotracker3.train.loop run)")


def _resolution(config: PseudoLabelConfig) -> tuple[int, int]:
    return tuple(config.model.get("model_resolution", (256, 256)))


def _student(config: PseudoLabelConfig) -> CoTracker3Offline:
    model = CoTracker3Offline(**config.model)
    if config.init:
        from cotracker3.weights import load_checkpoint

        load_checkpoint(model, config.init)
    return model


def freeze_heads(model: torch.nn.Module) -> list[str]:
    """Freeze the visibility / confidence head (:data:`FROZEN`); returns the names frozen."""
    frozen = [n for n, p in model.named_parameters() if n.startswith(FROZEN)]
    for name, param in model.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
    return frozen


def _frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    twin = copy.deepcopy(model).eval()
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


def load_teacher(spec: str, config: PseudoLabelConfig, student: CoTracker3Offline | None = None, *,
                 device: str | torch.device = "cpu"):
    """A teacher tracker from its spec (see :attr:`PseudoLabelConfig.teachers`).

    ``"self"`` wraps ``student`` itself (pass a frozen copy). A checkpoint path
    is loaded with the student's architecture when it fits, otherwise as a
    published-size model. Model teachers run on ``device``.

    Raises:
        TrainingError: unknown name (the message lists what is accepted).
        CheckpointError: a checkpoint that does not exist or fits no model.
    """
    from cotracker3 import weights
    from cotracker3.eval.scoring import load_tracker

    if spec == BASELINE:
        return LucasKanadeTracker()
    if spec == SELF:
        if student is None:
            raise TrainingError("the 'self' teacher needs the student model")
        return Predictor(student, iters=config.teacher_iters, visibility_threshold=VISIBILITY_FILTER)
    if spec in weights.REGISTRY:
        return load_tracker(spec, iters=config.teacher_iters, device=device)[0]
    path = Path(spec).expanduser()
    if path.is_file():
        try:
            model = weights.load_checkpoint(CoTracker3Offline(**config.model), path).to(device)
            return Predictor(model, iters=config.teacher_iters, visibility_threshold=VISIBILITY_FILTER)
        except CheckpointError as own:
            try:
                return load_tracker(str(path), iters=config.teacher_iters, device=device)[0]
            except CoTrackerError as published:
                raise CheckpointError(f"teacher {path} fits neither the student's architecture ({own}) nor a "
                                      f"published one ({published})") from None
    if any(c in spec for c in "/\\") or path.suffix:
        raise CheckpointError(f"teacher checkpoint {spec} does not exist")
    raise TrainingError(f"unknown teacher {spec!r}: give '{BASELINE}', '{SELF}', a checkpoint path, or one of "
                        f"{', '.join(weights.REGISTRY)}")


# --------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------


@dataclass
class StepPlan:
    """What step ``step`` draws (from ``(seed, step)`` alone)."""

    video: int
    start: int
    length: int
    stride: int
    teacher: int
    rng: np.random.Generator  # continues with the queries


def plan_step(config: PseudoLabelConfig, step: int, frame_counts: list[int], clip: int = 0) -> StepPlan:
    """Draw the video, clip and teacher of a step; ``frame_counts`` of the usable videos.
    ``clip``: which clip of the step's batch (its own draws from ``(seed, step, clip)``;
    the length is clip 0's, so the clips of a step share it)."""
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(2, step, clip) if clip else (2, step)))
    video = int(rng.integers(len(frame_counts)))
    n = frame_counts[video]
    length = int(rng.integers(config.min_clip_len, config.clip_len + 1))
    if clip:
        length = plan_step(config, step, frame_counts).length
    top = min(MAX_STRIDE, n // length)
    stride = int(rng.integers(1, top)) if config.random_stride and top > 1 else 1
    start = int(rng.integers(0, n - (length - 1) * stride))
    teacher = int(rng.integers(len(config.teachers)))
    return StepPlan(video, start, length, stride, teacher, rng)


def _optimiser(params, config: PseudoLabelConfig):
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, eps=1e-8)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=config.steps + 100, pct_start=0.0,
                                                cycle_momentum=False, anneal_strategy="cos")
    return opt, sched


def _config_from(saved: dict) -> PseudoLabelConfig:
    return PseudoLabelConfig(**{**saved, "teachers": list(saved["teachers"])})


def _usable_labels(labels: list[LabelledVideo], clip_len: int) -> list[LabelledVideo]:
    """The labelled videos with a clip's frames, sorted (video, teacher) so that steps do not depend on
    the order they were found in."""
    if not labels:
        raise DatasetError("no precomputed labels were given; label videos first (track3d batch --task track)")
    usable = []
    for lv in sorted(labels, key=lambda lv: (str(lv.video), lv.teacher)):
        if lv.num_frames < clip_len:
            logger.warning("skipping the labels of %s: %d frames, shorter than a clip (%d)", lv.video,
                           lv.num_frames, clip_len)
        else:
            usable.append(lv)
    if not usable:
        raise DatasetError(f"no labelled video has the {clip_len} frames of a clip (longest: "
                           f"{max(lv.num_frames for lv in labels)}); lower clip_len or label longer videos")
    return usable


def finetune(config: PseudoLabelConfig, videos_folder: str | Path | None, out_dir: str | Path, *,
             resume: bool = True, progress: Callable[[int, int, dict], None] | None = None,
             labels: list[LabelledVideo] | None = None) -> Path:
    """Fine-tune (or go on fine-tuning) the offline student on real videos; returns the run folder.

    Args:
        config: :class:`PseudoLabelConfig`; when resuming, the saved configuration is used.
        videos_folder: folder of real videos (see :func:`list_videos`); videos
            shorter than ``config.clip_len`` frames are skipped with a warning.
            Unused (may be None) with ``labels``.
        out_dir: the run folder (created).
        resume: go on from ``out_dir/checkpoint.pt`` if it exists.
        progress: optional ``callable(step, steps, losses)`` after each step.
        labels: train from these precomputed teacher tracks instead of running
            teachers in the loop (``config.teachers`` becomes the teachers that
            made them; ``self_refresh`` does not apply). See :func:`label_sample`.

    Raises:
        TrainingError: a bad configuration or an unknown teacher.
        CheckpointError: a damaged run checkpoint, a missing or unfitting init / teacher checkpoint.
        DatasetError: no readable video, or none with ``clip_len`` frames.
    """
    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT
    ckpt = _load_checkpoint(ckpt_path) if resume and ckpt_path.exists() else None
    if ckpt is not None:
        config = _config_from({**ckpt["config"], "device": config.device})
    device = resolve_device(config.device)
    if labels is not None:
        labels = _usable_labels(labels, config.clip_len)
        config = dataclasses.replace(config, teachers=sorted({lv.teacher for lv in labels}), self_refresh=0)
    elif videos_folder is None:
        raise DatasetError("give a folder of videos, or precomputed labels")
    config.check(need_init=ckpt is None)

    student = _student(dataclasses.replace(config, init=None) if ckpt is not None else config).to(device)
    frozen = freeze_heads(student)
    teacher_model = _frozen_copy(student) if SELF in config.teachers and labels is None else None
    if labels is None:
        teachers = [load_teacher(spec, config, teacher_model, device=device) for spec in config.teachers]
        scanned = _scan_videos(videos_folder)
        videos = [(p, n) for p, n in scanned if n >= config.clip_len]
        for path, n in scanned:
            if n < config.clip_len:
                logger.warning("skipping %s: %d frames, shorter than a clip (%d)", path, n, config.clip_len)
        if not videos:
            raise DatasetError(f"no video in {videos_folder} has the {config.clip_len} frames of a clip "
                               f"(longest: {max(n for _, n in scanned)}); lower clip_len or add longer videos")
    else:
        teachers = []
        videos = [(lv.video, lv.num_frames) for lv in labels]

    params = [p for p in student.parameters() if p.requires_grad]
    opt, sched = _optimiser(params, config)
    start = 0
    if ckpt is not None:
        student.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        if teacher_model is not None:
            teacher_model.load_state_dict(ckpt["teacher"])
        _optimiser_to(opt, device)
        start = int(ckpt["step"])
        logger.info("resuming %s at step %d of %d", out, start, config.steps)
    logger.info("fine-tuning on %d videos, teachers %s, frozen %s", len(videos), config.teachers, frozen)
    out.mkdir(parents=True, exist_ok=True)
    student.train()
    size = _resolution(config)
    counts = [n for _, n in videos]

    def checkpoint(done: int, wall_s: float) -> None:
        payload = {"model": student.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                   "step": done, "config": dataclasses.asdict(config), "wall_s": wall_s,
                   "videos": [f"{p.name} ({n} frames)" for p, n in videos]}
        if teacher_model is not None:
            payload["teacher"] = teacher_model.state_dict()
        _save(ckpt_path, payload)
        _save(out / WEIGHTS, student.state_dict())

    def sample(step: int, clip: int):
        """Clip ``clip`` of ``step``: ``(video (1, L, 3, H, W), queries (1, N, 3), tracks (1, L, N, 2),
        visible (1, L, N), ok, teacher spec, record)``, or None when its frames could not be read."""
        plan = (plan_step(config, step, counts, clip) if labels is None
                else plan_label_step(config, step, labels, clip))
        path = videos[plan.video][0]
        spec = config.teachers[plan.teacher]
        if labels is not None:
            try:
                frames, queries, tracks, visible, ok = label_sample(labels[plan.video], plan, config.num_points, size)
            except DatasetError as exc:
                logger.warning("step %d, clip %d skipped: %s", step + 1, clip + 1, exc)
                return None
            L, N = len(frames), len(queries)
        else:
            try:
                frames = read_clip(path, plan.start, plan.length, size, step=plan.stride)
            except DatasetError as exc:
                logger.warning("step %d, clip %d skipped: %s", step + 1, clip + 1, exc)
                return None
            queries, ok = sift_queries(frames, config.num_points, plan.rng)
            L, N = len(frames), len(queries)
            if ok:
                tracks, visible = pseudo_label(frames, queries, teachers[plan.teacher])
                if not np.isfinite(tracks).all():
                    logger.warning("step %d: teacher %s gave non-finite tracks; sample masked out", step + 1, spec)
                    ok = False
            if not ok:  # the reference's failed sample: trained on, with an all-zero loss mask (no teacher run)
                tracks = np.broadcast_to(queries[None, :, 1:], (L, N, 2)).copy()
                visible = np.zeros((L, N), bool)
        record = {"teacher": spec, ("labels" if labels is not None else "sift"): ok, "video": path.name,
                  "start": plan.start, "stride": plan.stride, "frames": L, "points": N,
                  "teacher_visible": round(float(visible.mean()), 4)}
        video_t = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()[None]
        return (video_t, torch.from_numpy(queries)[None], torch.from_numpy(tracks)[None],
                torch.from_numpy(visible)[None], ok, spec, record)

    def run_step(step: int) -> dict | None:
        """One optimiser step; its log record, or None when no clip of the step could be read."""
        t0 = time.perf_counter()
        if teacher_model is not None and config.self_refresh and step > 0 and step % config.self_refresh == 0:
            teacher_model.load_state_dict(student.state_dict())
        clips = [c for c in (sample(step, clip) for clip in range(config.batch_size)) if c is not None]
        if not clips:
            return None
        video, queries, tracks, visible, valid = (x.to(device) for x in collate_clips([c[:4] for c in clips]))
        outputs = forward_train(student, video, queries, config.iters, config.bf16)
        per_clip = [cotracker_losses(clip_outputs(outputs, b), tracks[b:b + 1], visible[b:b + 1],
                                     valid[b:b + 1] & clips[b][4], train_on_occluded=clips[b][5] != BASELINE)
                    for b in range(len(clips))]
        losses = Losses.mean(per_clip)
        objective = losses.visible + losses.occluded
        opt.zero_grad(set_to_none=True)
        objective.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.clip)
        opt.step()
        sched.step()
        items = {"loss": float(objective.detach()), "visible": float(losses.visible.detach()),
                 "occluded": float(losses.occluded.detach())}
        if any(c[4] for c in clips):  # diagnostics of the frozen head against the teacher's labels
            items.update(visibility=float(losses.visibility.detach()), confidence=float(losses.confidence.detach()))
        record = {"items": items, "grad_norm": round(float(grad_norm), 4), "lr": sched.get_last_lr()[0],
                  **clips[0][6], "seconds": round(time.perf_counter() - t0, 3)}
        if config.batch_size > 1:
            record["clips"] = len(clips)
            record["batch"] = [c[6] for c in clips]
        return record

    run_steps(out, start, config, run_step, checkpoint,
              lambda: evaluate_model(student, config.eval_videos_per_tier), progress,
              wall_before=float(ckpt.get("wall_s", 0.0)) if ckpt is not None else 0.0)
    return out
