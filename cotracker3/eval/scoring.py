"""Evaluating point trackers on TAP-Vid style benchmarks.

Any tracker with the predictor API (:class:`~cotracker3.Predictor`,
:class:`~cotracker3.OnlinePredictor`, :class:`~cotracker3.baseline.LucasKanadeTracker`)
is run on each video of a dataset (:mod:`cotracker3.eval.datasets`, or the held-out
synthetic set of :mod:`cotracker3.synthetic`) at the 256x256 evaluation
resolution, with the TAP-Vid queries (``'first'`` or ``'strided'``), and scored
by :func:`cotracker3.eval.tapvid.evaluate_tracks`.

    report = evaluate(load_tracker("baseline"), synthetic_videos())
    print(report.table())
    report.to_json()   # {video: metrics, ..., "<tier>/mean": ..., "mean": ..., "_meta": ...}
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from cotracker3 import synthetic
from cotracker3.baseline import BASELINE, LucasKanadeTracker
from cotracker3.errors import CheckpointError, DatasetError
from cotracker3.eval import tapvid
from cotracker3.eval.datasets import EvalVideo, resize_to_eval
from cotracker3.model import CoTracker3Offline
from cotracker3.predictor import OnlinePredictor, Predictor

logger = logging.getLogger(__name__)

SHORT_KEYS = {"average_jaccard": "AJ", "average_pts_within_thresh": "delta_avg", "occlusion_accuracy": "OA"}
"""The three headline metrics and their names in papers."""


# --------------------------------------------------------------------------
# Trackers
# --------------------------------------------------------------------------


def load_tracker(spec: str, *, device: str | torch.device = "cpu", iters: int | None = None, download: bool = True,
                 dtype: torch.dtype = torch.float32):
    """A tracker from a name: ``"baseline"``, a registry name, or a checkpoint path.

    Args:
        spec: ``"baseline"`` (Lucas-Kanade), a key of :data:`cotracker3.REGISTRY`
            (weights from the cache or downloaded), the path of a checkpoint
            file (offline or online is read from the file, see
            :func:`cotracker3.weights.model_from_checkpoint`), or a training
            run folder (its ``model.pt`` with the sizes the run records).
        device: torch device for the model.
        iters: refinement iterations of the model (default: the model's own, see :class:`Predictor`).
        download: allow downloading registered weights.
        dtype: the model's arithmetic (see :class:`Predictor`); the baseline ignores it.

    Returns:
        ``(tracker, label)``: a :class:`Predictor`, :class:`OnlinePredictor` or
        :class:`LucasKanadeTracker`, and a label for reports.

    Raises:
        CoTrackerError: unknown name, missing or unloadable weights (the
            messages say what to do).
    """
    from cotracker3 import weights

    if spec == BASELINE:
        return LucasKanadeTracker(), BASELINE
    if spec in weights.REGISTRY:
        model = weights.from_pretrained(spec, download=download)
        label = spec
    elif Path(spec).is_file() or (Path(spec) / "model.pt").is_file():
        model = weights.model_from_checkpoint(spec)
        label = str(spec)
    elif any(c in spec for c in "/\\.") or Path(spec).suffix:
        raise CheckpointError(f"checkpoint {spec} does not exist")
    else:
        raise weights.UnknownModelError(
            f"unknown tracker {spec!r}: give '{BASELINE}', a checkpoint path, or one of {', '.join(weights.REGISTRY)}"
        )
    model = model.to(device)
    if isinstance(model, CoTracker3Offline):
        return Predictor(model, iters=iters, dtype=dtype), label
    return OnlinePredictor(model, iters=iters, dtype=dtype), label


def run_tracker(tracker, video: np.ndarray, queries: np.ndarray, backward: bool, *,
                with_score: bool = False) -> tuple[np.ndarray, ...]:
    """Track query points through a video with any tracker of the predictor API.

    Args:
        tracker: :class:`Predictor`, :class:`OnlinePredictor` or
            :class:`LucasKanadeTracker` (or anything called like a Predictor).
        video: ``(T, H, W, 3)`` uint8 RGB.
        queries: ``(Q, 3)`` float32 ``(t, x, y)``, pixels of ``video``.
        backward: also track backwards from each query frame (offline trackers;
            an online tracker cannot and leaves earlier frames at the query).
        with_score: also return the soft visibility the tracker thresholds
            (``TrackingResult.visibility_score``; the hard visibility as 0/1 for
            trackers without one).

    Returns:
        ``tracks`` ``(T, Q, 2)`` float32 pixels and ``visibility`` ``(T, Q)`` bool,
        and with ``with_score`` the ``(T, Q)`` float32 score.
    """
    frames = torch.from_numpy(np.ascontiguousarray(video)).permute(0, 3, 1, 2)[None]
    q = torch.from_numpy(np.asarray(queries, np.float32))[None]
    if isinstance(tracker, OnlinePredictor):
        T, H, W = video.shape[:3]
        tracker.start(q, frame_size=(W, H), num_frames=T)
        tracker.push(frames)
        out = tracker.finish()
    else:
        out = tracker(frames, queries=q, backward_tracking=backward)
    res = out.numpy()
    tracks, vis = res["tracks"].astype(np.float32), res["visibility"].astype(bool)
    if not with_score:
        return tracks, vis
    return tracks, vis, res.get("visibility_score", vis).astype(np.float32)


# --------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------


def scene_to_video(scene: synthetic.SyntheticScene) -> EvalVideo:
    """A rendered synthetic scene as an :class:`EvalVideo` (frames, tracks, visibility)."""
    return EvalVideo(name=scene.name, video=scene.frames, tracks=scene.tracks.astype(np.float32),
                     visibility=scene.visibility.astype(bool))


def synthetic_videos(tiers: list[str] | None = None, videos_per_tier: int = synthetic.EVAL_VIDEOS_PER_TIER,
                     **overrides) -> Iterator[EvalVideo]:
    """The held-out synthetic evaluation set (:func:`cotracker3.synthetic.eval_scenes`), rendered lazily."""
    for scene in synthetic.eval_scenes(tiers, videos_per_tier, **overrides):
        yield scene_to_video(scene)


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------


@dataclass
class EvalReport:
    """Per-video TAP-Vid metrics of one tracker on one dataset.

    Attributes:
        videos: ``{video name: {metric: value}}`` (keys of
            :data:`cotracker3.eval.tapvid.METRIC_KEYS`, plus ``num_queries`` and ``seconds``).
        skipped: ``{video name: reason}`` for videos that could not be scored
            (e.g. no visible point to query); they are not in the means.
        tracker, dataset, query_mode: what was evaluated.
    """

    tracker: str
    dataset: str
    query_mode: str
    videos: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def mean(self) -> dict[str, float]:
        """Mean over the scored videos of each metric (NaN when none was scored)."""
        return _mean(list(self.videos.values()))

    @property
    def groups(self) -> dict[str, dict[str, float]]:
        """Means per group of videos named ``"<group>/<name>"`` (the synthetic tiers); empty otherwise."""
        groups: dict[str, list] = {}
        for name, m in self.videos.items():
            if "/" in name:
                groups.setdefault(name.split("/", 1)[0], []).append(m)
        return {g: _mean(ms) for g, ms in groups.items()}

    def to_json(self) -> dict:
        """``{video: metrics, ..., "<group>/mean": metrics, "mean": metrics, "_meta": {...}}``."""
        out: dict = {name: dict(m) for name, m in self.videos.items()}
        for g, m in self.groups.items():
            out[f"{g}/mean"] = m
        out["mean"] = self.mean
        out["_meta"] = {"tracker": self.tracker, "dataset": self.dataset, "query_mode": self.query_mode,
                        "resolution": list(tapvid.EVAL_RESOLUTION), "skipped": dict(self.skipped)}
        return out

    def table(self) -> str:
        """A plain-text table: one row per video, per group mean, and the mean."""
        keys = list(SHORT_KEYS)
        width = max([len(n) for n in self.videos] + [len("mean"), 12]) + 2
        head = f"{'video':<{width}}" + "".join(f"{SHORT_KEYS[k]:>10}" for k in keys) + f"{'queries':>9}{'seconds':>9}"
        lines = [f"tracker: {self.tracker}   dataset: {self.dataset}   queries: {self.query_mode}", head,
                 "-" * len(head)]

        def row(name, m):
            cells = "".join(f"{100 * m[k]:>10.1f}" for k in keys)
            extra = (f"{int(m['num_queries']):>9d}{m['seconds']:>9.1f}" if "num_queries" in m else "")
            return f"{name:<{width}}{cells}{extra}"

        lines += [row(n, m) for n, m in self.videos.items()]
        lines.append("-" * len(head))
        lines += [row(f"{g}/mean", m) for g, m in self.groups.items()]
        lines.append(row("mean", self.mean))
        for name, why in self.skipped.items():
            lines.append(f"skipped {name}: {why}")
        return "\n".join(lines)


def _mean(ms: list[dict[str, float]]) -> dict[str, float]:
    if not ms:
        return {k: math.nan for k in tapvid.METRIC_KEYS}
    out = tapvid.mean_metrics(ms)
    out["num_queries"] = float(sum(m.get("num_queries", 0) for m in ms))
    out["seconds"] = float(sum(m.get("seconds", 0.0) for m in ms))
    return out


def evaluate_video(tracker, video: EvalVideo, query_mode: str = "first") -> dict[str, float]:
    """Score a tracker on one video at the 256x256 evaluation resolution.

    Args:
        tracker: see :func:`run_tracker`.
        video: frames and ground truth at any resolution (resized here).
        query_mode: ``'first'`` (query each track at its first visible frame,
            score later frames) or ``'strided'`` (query every 5th frame where
            visible, score all other frames; trackers track backwards too).

    Returns:
        The TAP-Vid metrics (:data:`cotracker3.eval.tapvid.METRIC_KEYS`) plus
        ``num_queries`` and ``seconds`` (tracking time).

    Raises:
        DatasetError: fewer than two frames, no visible point to query, or no
            scored frame with a visible point (the metrics would be undefined).
    """
    if video.video.shape[0] < 2:
        raise DatasetError(f"video {video.name} has {video.video.shape[0]} frame(s); tracking needs at least 2")
    v = resize_to_eval(video)
    queries, _ = tapvid.tapvid_queries(v.visibility, v.tracks, query_mode)
    t0 = time.perf_counter()
    tracks, vis = run_tracker(tracker, v.video, queries, backward=query_mode == "strided")
    seconds = time.perf_counter() - t0
    metrics = tapvid.evaluate_tracks(v.tracks, v.visibility, tracks, vis, query_mode)
    metrics["num_queries"] = float(len(queries))
    metrics["seconds"] = seconds
    return metrics


def evaluate(
    tracker,
    videos: Iterable[EvalVideo],
    query_mode: str = "first",
    *,
    tracker_name: str = "",
    dataset_name: str = "",
    progress: Callable[[str, int], None] | None = None,
) -> EvalReport:
    """Score a tracker on every video of a dataset.

    Videos that cannot be scored (no visible point to query, fewer than two
    frames, no scored frame with a visible point) are skipped with a warning
    and listed in :attr:`EvalReport.skipped`; they never count as zeros.

    Args:
        tracker: see :func:`run_tracker`.
        videos: :class:`EvalVideo` items (e.g. :func:`cotracker3.eval.datasets.read_dataset`
            or :func:`synthetic_videos`).
        query_mode: ``'first'`` or ``'strided'``.
        tracker_name, dataset_name: labels for the report.
        progress: optional ``callable(video_name, index)`` called after each video.

    Returns:
        :class:`EvalReport`.
    """
    if query_mode not in ("first", "strided"):
        raise ValueError(f"query_mode must be 'first' or 'strided', got {query_mode!r}")
    report = EvalReport(tracker=tracker_name or type(tracker).__name__, dataset=dataset_name, query_mode=query_mode)
    for i, video in enumerate(videos):
        name = video.name or f"video_{i:04d}"
        if name in report.videos or name in report.skipped:
            name = f"{name}#{i}"
        try:
            report.videos[name] = evaluate_video(tracker, video, query_mode)
        except DatasetError as exc:
            logger.warning("skipping %s: %s", name, exc)
            report.skipped[name] = str(exc)
        if progress is not None:
            progress(name, i)
    return report


# --------------------------------------------------------------------------
# Visibility threshold
# --------------------------------------------------------------------------

CALIBRATION_THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))
"""Candidate thresholds, 0.05 to 0.95."""

CALIBRATION_ITERS = (1, 2, 3, 4, 6)
"""Candidate refinement iterations when a model is calibrated for export (the published predictors use 6)."""


@dataclass
class Calibration:
    """The visibility threshold (and refinement iterations) a model scores best with, and the evidence.

    Attributes:
        threshold: the candidate with the highest mean AJ on the calibration scenes.
        table: ``{threshold: {"average_jaccard": ..., "occlusion_accuracy": ...}}``
            (fractions, means over the scenes) for every candidate, at :attr:`iters`.
        scenes: names of the scenes used.
        iters: the refinement iterations chosen with it (None: not calibrated, the
            tracker's own).
        iters_table: ``{iters: {"threshold": best threshold, "average_jaccard": ...,
            "occlusion_accuracy": ...}}`` for every candidate number of iterations.
    """

    threshold: float
    table: dict[float, dict[str, float]]
    scenes: list[str]
    iters: int | None = None
    iters_table: dict[int, dict[str, float]] | None = None

    def to_json(self) -> dict:
        out = {"threshold": self.threshold, "scenes": self.scenes, "set": "cotracker3.synthetic.calibration_scene",
               "table": {f"{t:.2f}": {k: round(v, 4) for k, v in m.items()} for t, m in self.table.items()}}
        if self.iters is not None:
            out["iters"] = self.iters
            out["iters_table"] = {str(i): {k: round(v, 4) for k, v in m.items()}
                                  for i, m in (self.iters_table or {}).items()}
        return out


def calibration_videos(num: int = 12) -> Iterator[EvalVideo]:
    """The first ``num`` scenes of the calibration set (:func:`cotracker3.synthetic.calibration_scene`:
    camera, objects and speeds drawn per scene as for training, from seeds no training run
    draws) to choose a threshold on; never the held-out evaluation set."""
    for i in range(num):
        yield scene_to_video(synthetic.calibration_scene(i))


def calibrate_visibility(tracker, videos: Iterable[EvalVideo],
                         thresholds: Iterable[float] = CALIBRATION_THRESHOLDS,
                         iterations: Iterable[int] | None = None) -> Calibration:
    """Choose the threshold on a tracker's soft visibility (and optionally its number of
    refinement iterations) that maximises mean AJ.

    A threshold is part of a trained model: the published models use 0.9
    (offline) and 0.6 (online), but a model trained for less time is less sure
    of itself and may score better with another. Each video is tracked once
    (``'first'`` queries, at the evaluation resolution) and scored at every
    candidate threshold.

    Args:
        tracker: a :class:`Predictor` or :class:`OnlinePredictor`.
        videos: scenes with ground truth, disjoint from any set the model will be
            judged on (:func:`calibration_videos`).
        thresholds: candidates in ``(0, 1)``.
        iterations: candidate numbers of refinement iterations (the tracker's ``iters``
            is set to each in turn, and the videos are tracked once per candidate; it
            is restored afterwards). A model trained briefly may refine best with
            fewer iterations than the published 6: each update it makes also moves
            points that were already right. None: the tracker's own, not calibrated.

    Returns:
        :class:`Calibration`.

    Raises:
        DatasetError: no video could be scored.
    """
    if iterations is None:
        return _calibrate_threshold(tracker, videos, thresholds)
    videos, thresholds, own = list(videos), list(thresholds), tracker.iters
    per_iters = {}
    try:
        for k in sorted({int(k) for k in iterations}):
            if k < 1:
                raise ValueError(f"iterations must be at least 1, got {k}")
            tracker.iters = k
            per_iters[k] = _calibrate_threshold(tracker, videos, thresholds)
    finally:
        tracker.iters = own
    best = max(per_iters, key=lambda k: per_iters[k].table[per_iters[k].threshold]["average_jaccard"])
    table = {k: {"threshold": c.threshold, **c.table[c.threshold]} for k, c in per_iters.items()}
    return dataclasses.replace(per_iters[best], iters=best, iters_table=table)


def _calibrate_threshold(tracker, videos: Iterable[EvalVideo], thresholds: Iterable[float]) -> Calibration:
    """:func:`calibrate_visibility` at the tracker's own iterations."""
    thresholds = sorted(float(t) for t in thresholds)
    scores: dict[float, list[dict[str, float]]] = {t: [] for t in thresholds}
    names = []
    for video in videos:
        v = resize_to_eval(video)
        try:
            queries, _ = tapvid.tapvid_queries(v.visibility, v.tracks, "first")
        except DatasetError as exc:
            logger.warning("calibration: skipping %s: %s", video.name, exc)
            continue
        tracks, _, score = run_tracker(tracker, v.video, queries, backward=False, with_score=True)
        try:
            per_threshold = {t: tapvid.evaluate_tracks(v.tracks, v.visibility, tracks, score > t, "first")
                             for t in thresholds}
        except DatasetError as exc:  # no scored frame: the video counts for no threshold
            logger.warning("calibration: skipping %s: %s", video.name, exc)
            continue
        for t, m in per_threshold.items():
            scores[t].append(m)
        names.append(video.name)
    if not names:
        raise DatasetError("no calibration video could be scored")
    table = {t: {k: float(np.mean([m[k] for m in ms])) for k in ("average_jaccard", "occlusion_accuracy")}
             for t, ms in scores.items()}
    best = max(thresholds, key=lambda t: table[t]["average_jaccard"])
    return Calibration(best, table, names)
