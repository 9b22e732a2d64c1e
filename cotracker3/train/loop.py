"""Supervised training of CoTracker3 (offline or online) on synthetic videos, as the reference trains on Kubric.

One step: a clip of random length is cut from a scene of the synthetic
engine (:func:`cotracker3.synthetic.training_scene`), augmented
(:mod:`cotracker3.train.augment`: colour jitter, blur, eraser occluders that mark the
points they cover occluded, scale and crop jitter, flips), and every kept
track is queried at a random frame where it is visible (the reference's
``random`` query sampling). The offline model tracks the queries through the
whole clip with ``iters`` refinement iterations, and every iteration is
supervised (:func:`cotracker3.train.losses.cotracker_losses`); the online model runs
its sliding windows and every window is supervised on its frames. AdamW with a
one-cycle learning rate (5% warm-up, cosine annealing, no momentum cycling)
and gradient clipping at norm 1, as the reference.

Everything a step draws (scene, clip, augmentation, points, queries) comes
from ``(seed, step)`` alone, so a run resumed from its last checkpoint goes on
exactly as if it had not stopped.

The run folder holds ``checkpoint.pt`` (model, optimiser, schedule, step and
the configuration; loaded with ``weights_only=True``), ``model.pt`` (the
weights alone, for :func:`cotracker3.weights.model_from_checkpoint`-style
loading) and ``log.jsonl`` (one JSON line per logged step and per evaluation).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from cotracker3 import synthetic
from cotracker3.baseline import initial_tracks
from cotracker3.embedded import SMALL_MODEL
from cotracker3.errors import CheckpointError, CoTrackerError
from cotracker3.model import CoTracker3Offline, CoTracker3Online, as_float32
from cotracker3.train.augment import AugmentConfig, augment_clip
from cotracker3.train.losses import cotracker_losses

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.pt"
LOG = "log.jsonl"


class TrainingError(CoTrackerError, ValueError):
    """A training run cannot start or resume (bad configuration, damaged checkpoint)."""


@dataclass
class TrainConfig:
    """A supervised training run.

    Attributes:
        steps: optimiser steps in all (the one-cycle schedule spans them).
        lr: peak learning rate (the reference's default, 5e-4).
        weight_decay: AdamW weight decay (the reference's default, 1e-5).
        clip: gradient norm clipping.
        iters: refinement iterations during training (the reference: 4).
        num_points: tracks supervised per clip.
        min_frames, max_frames: clip length range (random per step, as the
            reference's random sequence length for the offline model).
        scene: the engine's scene configuration (frames, size, points).
        model: keyword arguments of :class:`cotracker3.model.CoTracker3Offline`.
        augment: :class:`cotracker3.train.augment.AugmentConfig` fields. The default
            keeps a quarter of the clips' scale and crop still (``still_prob``,
            not in the reference), as the engine keeps a quarter of its cameras
            still: otherwise every training clip moves and the model never
            learns that points can stand still.
        scene_reuse: steps that draw clips from the same rendered scene (rendering
            costs about a second per scene).
        seed: seed of everything random.
        log_every, checkpoint_every: steps between log lines and checkpoints.
        eval_every: steps between evaluations on the held-out synthetic set (0: never).
        eval_videos_per_tier: scenes per tier in those evaluations.
        init: optional checkpoint to start from (weights only).
        online: train the online (sliding-window) model: every window is
            supervised on its frames, for the tracks whose query frame it has reached.
        bf16: run the forward pass under bfloat16 autocast (the reference trains in
            mixed precision; on CPUs with bfloat16 instructions about twice as fast);
            the losses are computed in float32.
    """

    steps: int = 2000
    lr: float = 5e-4
    weight_decay: float = 1e-5
    clip: float = 1.0
    iters: int = 4
    num_points: int = 128
    min_frames: int = 8
    max_frames: int = 24
    scene: dict = field(default_factory=lambda: dict(num_frames=24, height=256, width=256, num_points=384))
    model: dict = field(default_factory=lambda: dict(SMALL_MODEL))
    augment: dict = field(default_factory=lambda: dict(still_prob=0.25))
    scene_reuse: int = 4
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 50
    eval_every: int = 0
    eval_videos_per_tier: int = 2
    init: str | None = None
    online: bool = False
    bf16: bool = False

    def check(self) -> None:
        if self.steps < 1 or self.iters < 1 or self.num_points < 1 or self.scene_reuse < 1:
            raise TrainingError("steps, iters, num_points and scene_reuse must be at least 1")
        if not 2 <= self.min_frames <= self.max_frames <= self.scene.get("num_frames", 24):
            raise TrainingError(f"need 2 <= min_frames <= max_frames <= the scene's frames, got "
                                f"{self.min_frames}, {self.max_frames}, {self.scene.get('num_frames', 24)}")


def build_model(config: TrainConfig) -> CoTracker3Offline | CoTracker3Online:
    model = (CoTracker3Online if config.online else CoTracker3Offline)(**config.model)
    if config.init:
        from cotracker3.weights import load_state_dict_file

        state = load_state_dict_file(config.init)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise TrainingError(f"{config.init} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def make_sample(config: TrainConfig, step: int, scene: synthetic.SyntheticScene | None = None):
    """The training clip of ``step``: ``(video (1, L, 3, H, W) float 0..255, queries (1, N, 3),
    tracks (1, L, N, 2), visibility (1, L, N) bool)``, or None when no track is visible."""
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(1, step)))
    if scene is None:
        scene = training_scene(config, step)
    T = len(scene.frames)
    L = int(rng.integers(config.min_frames, min(config.max_frames, T) + 1))
    t0 = int(rng.integers(0, T - L + 1))
    H, W = config.model.get("model_resolution", (256, 256))
    frames, tracks, vis = augment_clip(scene.frames[t0:t0 + L], scene.tracks[t0:t0 + L].astype(np.float32),
                                       scene.visibility[t0:t0 + L], rng, AugmentConfig(**config.augment),
                                       crop_size=(H, W))
    seen = np.flatnonzero(vis.any(0))
    if len(seen) == 0:
        return None
    keep = rng.choice(seen, size=min(config.num_points, len(seen)), replace=False)
    tracks, vis = tracks[:, keep], vis[:, keep]
    qt = np.array([rng.choice(np.flatnonzero(vis[:, n])) for n in range(len(keep))])
    queries = np.concatenate([qt[:, None], tracks[qt, np.arange(len(keep))]], 1).astype(np.float32)
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()[None]
    return video, torch.from_numpy(queries)[None], torch.from_numpy(tracks)[None], torch.from_numpy(vis)[None]


def forward_train(model, video, queries, iters: int, bf16: bool):
    """``model.forward_train``, under bfloat16 autocast if ``bf16``, with every output
    back in float32 (the losses are computed in float32). A model that refines the
    Lucas-Kanade baseline's tracks (``initialisation="baseline"``) starts from them
    (:func:`cotracker3.baseline.initial_tracks` on the clip, in float32)."""
    kwargs = {}
    if getattr(model, "initialisation", None) is not None:
        kwargs["init"] = initial_tracks(video, queries)
    with torch.autocast(video.device.type, dtype=torch.bfloat16, enabled=bf16):
        outputs = model.forward_train(video, queries, iters, **kwargs)
    return as_float32(outputs)


def step_losses(outputs, queries, tracks, vis, *, online: bool):
    """The losses of one forward pass (float32 outputs of :func:`forward_train`): over
    the whole clip for the offline model; for the online one, the mean over its
    windows, each on its own frames and on the tracks whose query frame the window
    has reached."""
    if not online:
        return cotracker_losses(outputs, tracks, vis)
    per_window = []
    for start, outs in outputs:
        L = outs[0].coords.shape[1]
        reached = (queries[..., 0] < start + L)[:, None, :].expand(-1, L, -1)
        per_window.append(cotracker_losses(outs, tracks[:, start:start + L], vis[:, start:start + L],
                                           valid=reached))
    terms = {k: torch.stack([getattr(w, k) for w in per_window]).mean()
             for k in ("visible", "occluded", "visibility", "confidence")}
    return type(per_window[0])(**terms)


def training_scene(config: TrainConfig, step: int) -> synthetic.SyntheticScene:
    """The rendered scene that ``step`` draws its clip from."""
    cfg = dataclasses.replace(synthetic.SceneConfig(), **config.scene)
    return synthetic.training_scene(config.seed, step // config.scene_reuse, cfg)


def _optimiser(model, config: TrainConfig):
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, eps=1e-8)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=config.steps + 100, pct_start=0.05,
                                                cycle_momentum=False, anneal_strategy="cos")
    return opt, sched


def _save(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(f"cannot resume from {path}: the checkpoint is damaged ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200]}); delete it to start over") from None
    if not isinstance(ckpt, dict) or not {"model", "optimizer", "scheduler", "step", "config"} <= set(ckpt):
        raise CheckpointError(f"cannot resume from {path}: not a training checkpoint of this project")
    return ckpt


def load_run_model(run_dir: str | Path) -> CoTracker3Offline | CoTracker3Online:
    """The model of a run folder, built with the sizes its checkpoint records, in eval mode."""
    ckpt = _load_checkpoint(Path(run_dir) / CHECKPOINT)
    model = (CoTracker3Online if ckpt["config"].get("online") else CoTracker3Offline)(**ckpt["config"]["model"])
    model.load_state_dict(ckpt["model"])
    return model.eval()


def run_architecture(weights: str | Path) -> dict | None:
    """The model sizes (:class:`CoTracker3Offline` keyword arguments, ``initialisation``
    included) recorded by the run whose ``model.pt`` is ``weights``, or None when
    ``weights`` is not in a run folder."""
    from cotracker3.weights import _training_run_config

    config = _training_run_config(Path(weights).expanduser())
    return None if config is None else dict(config["model"])


def evaluate_model(model, videos_per_tier: int, iters: int | None = None) -> dict:
    """AJ, delta_avg and OA (percent) per tier and overall on the held-out synthetic set
    (``iters``: the model's own by default, see :class:`cotracker3.predictor.Predictor`)."""
    from cotracker3.eval.scoring import evaluate, synthetic_videos
    from cotracker3.predictor import Predictor

    model.eval()
    with torch.no_grad():
        report = evaluate(Predictor(model, iters=iters), synthetic_videos(None, videos_per_tier))
    model.train()
    out = {k: {m: round(100 * v, 2) for m, v in ms.items() if m in ("average_jaccard", "average_pts_within_thresh",
                                                                       "occlusion_accuracy")}
           for k, ms in report.to_json().items() if k.endswith("mean")}
    return out


def train(config: TrainConfig, out_dir: str | Path, *, resume: bool = True,
          progress: Callable[[int, int, dict], None] | None = None) -> Path:
    """Train (or go on training) the offline model; returns the run folder.

    Args:
        config: :class:`TrainConfig`; when resuming, the saved configuration is used.
        out_dir: the run folder (created).
        resume: go on from ``out_dir/checkpoint.pt`` if it exists.
        progress: optional ``callable(step, steps, losses)`` after each step.

    Raises:
        TrainingError, CheckpointError: a bad configuration or a damaged checkpoint.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = 0
    ckpt_path = out / CHECKPOINT
    if resume and ckpt_path.exists():
        ckpt = _load_checkpoint(ckpt_path)
        config = TrainConfig(**ckpt["config"])
        config.init = None
    config.check()
    torch.manual_seed(config.seed)
    model = build_model(config)
    opt, sched = _optimiser(model, config)
    if resume and ckpt_path.exists():
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        start = int(ckpt["step"])
        logger.info("resuming %s at step %d of %d", out, start, config.steps)
    model.train()
    scene, scene_index = None, -1

    def checkpoint(done: int, wall_s: float) -> None:
        _save(ckpt_path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                          "step": done, "config": dataclasses.asdict(config), "wall_s": wall_s})
        _save(out / WEIGHTS, model.state_dict())

    def run_step(step: int) -> dict | None:
        nonlocal scene, scene_index
        t0 = time.perf_counter()
        if step // config.scene_reuse != scene_index:
            scene, scene_index = training_scene(config, step), step // config.scene_reuse
        sample = make_sample(config, step, scene)
        if sample is None:
            return None
        video, queries, tracks, vis = sample
        outputs = forward_train(model, video, queries, config.iters, config.bf16)
        losses = step_losses(outputs, queries, tracks, vis, online=config.online)
        opt.zero_grad(set_to_none=True)
        losses.total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        opt.step()
        sched.step()
        return {"items": losses.items(), "grad_norm": round(float(grad_norm), 4), "lr": sched.get_last_lr()[0],
                "frames": int(video.shape[1]), "points": int(queries.shape[1]),
                "seconds": round(time.perf_counter() - t0, 3)}

    run_steps(out, start, config, run_step, checkpoint, lambda: evaluate_model(model, config.eval_videos_per_tier),
              progress, wall_before=float(ckpt.get("wall_s", 0.0)) if start else 0.0)
    return out


def run_steps(out: Path, start: int, config, run_step: Callable[[int], dict | None],
              checkpoint: Callable[[int, float], None], evaluate: Callable[[], dict],
              progress: Callable[[int, int, dict], None] | None, wall_before: float = 0.0) -> None:
    """The loop every training stage shares: steps ``start .. config.steps - 1``.

    ``run_step(step)`` does one optimiser step and returns its log record (with
    the losses under ``"items"``), or None for a skipped step. Log lines go to
    ``out/log.jsonl`` every ``config.log_every`` steps (and at the first),
    checkpoints every ``config.checkpoint_every`` steps and at the end,
    evaluations every ``config.eval_every`` steps. Ctrl-C saves a checkpoint
    of every finished step before propagating. ``checkpoint(done, wall_s)``
    receives the run's wall time so far: ``wall_before`` (the earlier sessions
    of a resumed run) plus this one's.
    """
    done = start
    t0 = time.perf_counter()

    def wall() -> float:
        return round(wall_before + time.perf_counter() - t0, 1)

    with open(out / LOG, "a") as log:
        try:
            for step in range(start, config.steps):
                record = run_step(step)
                done = step + 1
                if record is not None:
                    items = record.pop("items")
                    if (step + 1) % config.log_every == 0 or step == start:
                        log.write(json.dumps({"step": step + 1, **{k: round(v, 5) for k, v in items.items()},
                                              **record}) + "\n")
                        log.flush()
                    if progress:
                        progress(step + 1, config.steps, items)
                if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
                    checkpoint(step + 1, wall())
                if config.eval_every and (step + 1) % config.eval_every == 0:
                    log.write(json.dumps({"step": step + 1, "eval": evaluate()}) + "\n")
                    log.flush()
        except KeyboardInterrupt:
            checkpoint(done, wall())  # every finished step is kept: resuming goes on from here
            logger.warning("interrupted: checkpoint saved at step %d of %d", done, config.steps)
            raise
