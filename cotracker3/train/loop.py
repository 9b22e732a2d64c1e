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
from torch import Tensor

from cotracker3 import synthetic
from cotracker3.baseline import initial_tracks
from cotracker3.embedded import SMALL_MODEL
from cotracker3.errors import CheckpointError, CoTrackerError
from cotracker3.model import CoTracker3Offline, CoTracker3Online, as_float32
from cotracker3.train.augment import AugmentConfig, augment_clip
from cotracker3.train.losses import Losses, cotracker_losses

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
        batch_size: clips per optimiser step, over all processes together (the global
            batch). The clips of a step share one length (drawn per step); each clip's
            losses are averaged over its own points, then the clips' losses are averaged,
            so a batch's gradient is the mean of its clips' single-clip gradients.
        workers: processes rendering scenes and cutting clips ahead of the training
            step (:class:`torch.utils.data.DataLoader` workers; 0: in the training process).
            What a step receives depends on ``(seed, step)`` alone, whatever the count.
        device: ``"auto"`` (CUDA when available, else the CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:K"``. Not part of what a run is: a resumed run may change it.
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
    batch_size: int = 1
    workers: int = 0
    device: str = "auto"

    def check(self) -> None:
        if self.steps < 1 or self.iters < 1 or self.num_points < 1 or self.scene_reuse < 1 or self.batch_size < 1:
            raise TrainingError("steps, iters, num_points, scene_reuse and batch_size must be at least 1")
        if self.workers < 0:
            raise TrainingError(f"workers must be 0 or more, got {self.workers}")
        resolve_device(self.device)
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


def resolve_device(device: str) -> torch.device:
    """The torch device of a ``--device`` value: ``"auto"`` (CUDA when available, else the
    CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:K"``.

    Raises:
        TrainingError: an unknown value, or CUDA asked for where there is none.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device != "cpu" and device != "cuda" and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise TrainingError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:K")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"device {device!r} asked for, but torch sees no CUDA GPU here: use --device cpu")
    return torch.device(device)


def _clip_rngs(config: TrainConfig, step: int, clip: int) -> tuple[int, np.random.Generator]:
    """The clip length of ``step`` (shared by its clips) and the generator of clip ``clip``.

    Clip 0 draws from the step's own stream, right after the length, so a batch of one
    draws exactly what a step drew before batches existed."""
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(1, step)))
    L = int(rng.integers(config.min_frames, min(config.max_frames, config.scene.get("num_frames", 24)) + 1))
    if clip:
        rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(1, step, clip)))
    return L, rng


def scene_index(config: TrainConfig, step: int, clip: int = 0) -> int:
    """The index (in :func:`cotracker3.synthetic.training_scene`) of the scene that clip
    ``clip`` of ``step`` is cut from: ``scene_reuse`` consecutive clips of the run share one."""
    return (step * config.batch_size + clip) // config.scene_reuse


def make_sample(config: TrainConfig, step: int, scene: synthetic.SyntheticScene | None = None, clip: int = 0):
    """Clip ``clip`` (of ``config.batch_size``) of ``step``: ``(video (1, L, 3, H, W) float
    0..255, queries (1, N, 3), tracks (1, L, N, 2), visibility (1, L, N) bool)``, or None
    when no track is visible. Drawn from ``(seed, step, clip)`` alone."""
    L, rng = _clip_rngs(config, step, clip)
    if scene is None:
        scene = training_scene(config, step, clip)
    T = len(scene.frames)
    L = min(L, T)
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


def collate_clips(samples: list) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Stack clips of different lengths and point counts into one batch, padded.

    Args:
        samples: :func:`make_sample` outputs (batch of one each).

    Returns:
        ``video (B, T, 3, H, W)`` (a shorter clip repeats its last frame),
        ``queries (B, N, 3)`` (a clip with fewer points repeats its first query),
        ``tracks (B, T, N, 2)``, ``visibility (B, T, N)`` and ``valid (B, T, N)`` bool:
        False on the padded frames and points, which no loss counts.
    """
    T = max(s[0].shape[1] for s in samples)
    N = max(s[1].shape[1] for s in samples)
    videos, queries, tracks, vis, valid = [], [], [], [], []
    for video, q, tr, v in samples:
        t, n = video.shape[1], q.shape[1]
        frames = torch.arange(T).clamp(max=t - 1)
        points = torch.arange(N).where(torch.arange(N) < n, torch.zeros((), dtype=torch.long))
        videos.append(video[:, frames])
        queries.append(q[:, points])
        tracks.append(tr[:, frames][:, :, points])
        vis.append(v[:, frames][:, :, points])
        valid.append(((torch.arange(T) < t)[:, None] & (torch.arange(N) < n)[None, :])[None])
    return tuple(torch.cat(x) for x in (videos, queries, tracks, vis, valid))


def clip_outputs(outputs, b: int, *, online: bool = False):
    """Clip ``b``'s part (batch of one) of a batch's :func:`forward_train` outputs: per
    iteration (and, ``online``, per ``(start, window outputs)``) every tensor field cut to ``b:b+1``."""
    def one(outs):
        return [type(o)(*(x[b:b + 1] if isinstance(x, Tensor) else x for x in o)) for o in outs]
    return [(start, one(outs)) for start, outs in outputs] if online else one(outputs)


def batch_losses(outputs, queries: Tensor, tracks: Tensor, vis: Tensor, valid: Tensor, *, online: bool):
    """The losses of a batch: each clip's losses (:func:`step_losses`, over its valid
    frames and points only), averaged over the clips. A batch's gradient is then the
    mean of its clips' single-clip gradients."""
    per_clip = [step_losses(clip_outputs(outputs, b, online=online), queries[b:b + 1], tracks[b:b + 1],
                            vis[b:b + 1], online=online, valid=valid[b:b + 1])
                for b in range(queries.shape[0])]
    return Losses.mean(per_clip)


class TrainForward(torch.nn.Module):
    """``model.forward_train`` as a module's ``forward``, which is what
    :class:`torch.nn.parallel.DistributedDataParallel` wraps."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, video: Tensor, queries: Tensor, iters: int, **kwargs):
        """:meth:`CoTracker3Offline.forward_train` (or the online model's) of the wrapped model."""
        return self.model.forward_train(video, queries, iters, **kwargs)


def forward_train(model, video, queries, iters: int, bf16: bool, *, call: Callable | None = None):
    """``model.forward_train``, under bfloat16 autocast if ``bf16``, with every output
    back in float32 (the losses are computed in float32). A model that refines the
    Lucas-Kanade baseline's tracks (``initialisation="baseline"``) starts from them
    (:func:`cotracker3.baseline.initial_tracks` on the clip, in float32). ``call``: what
    runs the forward pass instead of ``model.forward_train`` (a distributed wrapper of
    :class:`TrainForward`)."""
    kwargs = {}
    if getattr(model, "initialisation", None) is not None:
        kwargs["init"] = initial_tracks(video, queries)
    with torch.autocast(video.device.type, dtype=torch.bfloat16, enabled=bf16):
        outputs = (call or model.forward_train)(video, queries, iters, **kwargs)
    return as_float32(outputs)


def step_losses(outputs, queries, tracks, vis, *, online: bool, valid: Tensor | None = None):
    """The losses of one forward pass (float32 outputs of :func:`forward_train`): over
    the whole clip for the offline model; for the online one, the mean over its
    windows, each on its own frames and on the tracks whose query frame the window
    has reached. ``valid (B, T, N)`` bool: the frames and points that count (default: all)."""
    if not online:
        return cotracker_losses(outputs, tracks, vis, valid=valid)
    per_window = []
    for start, outs in outputs:
        L = outs[0].coords.shape[1]
        reached = (queries[..., 0] < start + L)[:, None, :].expand(-1, L, -1)
        if valid is not None:
            reached = reached & valid[:, start:start + L].bool()
        per_window.append(cotracker_losses(outs, tracks[:, start:start + L], vis[:, start:start + L],
                                           valid=reached))
    return Losses.mean(per_window)


def training_scene(config: TrainConfig, step: int, clip: int = 0) -> synthetic.SyntheticScene:
    """The rendered scene that clip ``clip`` of ``step`` is cut from (:func:`scene_index`)."""
    cfg = dataclasses.replace(synthetic.SceneConfig(), **config.scene)
    return synthetic.training_scene(config.seed, scene_index(config, step, clip), cfg)


class StepClips(torch.utils.data.Dataset):
    """The clips of every step, one item per step: item ``step`` is the list of this
    process's share of the step's clips (:func:`make_sample` outputs, None for a clip
    without a visible track).

    With ``world`` processes (distributed training), process ``rank`` gets clips
    ``rank * B / world .. (rank + 1) * B / world - 1`` of the global batch ``B``, so the
    clips of a step are the same however the batch is split. Every item depends on
    ``(seed, step)`` alone; a worker keeps the last scene it rendered, which clips of
    the same scene reuse (the scene is the same whichever worker renders it).
    """

    def __init__(self, config: TrainConfig, rank: int = 0, world: int = 1):
        if config.batch_size % world:
            raise TrainingError(f"the batch of {config.batch_size} clips does not split evenly over {world} "
                                "processes: use a multiple of the process count")
        self.config = config
        share = config.batch_size // world
        self.clips = range(rank * share, (rank + 1) * share)
        self._scene: tuple[int, synthetic.SyntheticScene] | None = None

    def __len__(self) -> int:
        return self.config.steps

    def scene(self, step: int, clip: int) -> synthetic.SyntheticScene:
        index = scene_index(self.config, step, clip)
        if self._scene is None or self._scene[0] != index:
            self._scene = (index, training_scene(self.config, step, clip))
        return self._scene[1]

    def __getitem__(self, step: int) -> list:
        return [make_sample(self.config, step, self.scene(step, clip), clip) for clip in self.clips]


def _as_is(item):
    return item


def step_loader(config: TrainConfig, start: int, rank: int = 0, world: int = 1) -> torch.utils.data.DataLoader:
    """Steps ``start .. config.steps - 1`` of :class:`StepClips`, in order, rendered by
    ``config.workers`` worker processes (each prefetches two steps)."""
    return torch.utils.data.DataLoader(StepClips(config, rank, world), batch_size=None,
                                       sampler=range(start, config.steps), num_workers=config.workers,
                                       collate_fn=_as_is)


def _optimiser(model, config: TrainConfig):
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, eps=1e-8)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=config.steps + 100, pct_start=0.05,
                                                cycle_momentum=False, anneal_strategy="cos")
    return opt, sched


def _save(path: Path, payload: dict) -> None:
    """Write ``payload`` atomically, every tensor in it on the CPU (a checkpoint written on a GPU
    loads anywhere)."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(_on_cpu(payload), tmp)
    os.replace(tmp, path)


def _on_cpu(obj):
    """``obj`` with every tensor in its dicts, lists and tuples moved to the CPU."""
    if isinstance(obj, Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        out = type(obj)((k, _on_cpu(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # a module's state_dict keeps its version records
            out._metadata = obj._metadata
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_on_cpu(v) for v in obj)
    return obj


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


def distributed_setup(device: torch.device) -> tuple[int, int, torch.device, bool]:
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` in the environment), if any.

    Returns:
        ``(rank, world, device, started)``: this process's rank and the process count
        (0 and 1 outside ``torchrun``), its device (``cuda:LOCAL_RANK`` on GPUs) and
        whether this call started the group (and should end it). The backend is NCCL
        on GPUs and gloo on CPUs.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device, False
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    started = not dist.is_initialized()
    if started:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device, started


def train(config: TrainConfig, out_dir: str | Path, *, resume: bool = True,
          progress: Callable[[int, int, dict], None] | None = None) -> Path:
    """Train (or go on training) the offline model; returns the run folder.

    Under ``torchrun`` (several processes, on one machine or several), every process
    runs this function: the model is wrapped in
    :class:`torch.nn.parallel.DistributedDataParallel`, each process draws its share
    of the global batch of ``config.batch_size`` clips (:class:`StepClips`), gradients
    are averaged across processes, and process 0 alone writes checkpoints, the log
    and evaluations; every process resumes from the same checkpoint.

    Args:
        config: :class:`TrainConfig`; when resuming, the saved configuration is used
            (except ``device`` and ``workers``, which are this session's).
        out_dir: the run folder (created; shared by every process).
        resume: go on from ``out_dir/checkpoint.pt`` if it exists.
        progress: optional ``callable(step, steps, losses)`` after each step (process 0).

    Raises:
        TrainingError, CheckpointError: a bad configuration or a damaged checkpoint.
    """
    import torch.distributed as dist

    config.check()
    rank, world, device, started = distributed_setup(resolve_device(config.device))
    try:
        return _train(config, Path(out_dir), resume, progress, rank, world, device)
    finally:
        if started:
            dist.destroy_process_group()


def _train(config: TrainConfig, out: Path, resume: bool, progress, rank: int, world: int,
           device: torch.device) -> Path:
    import torch.distributed as dist

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    if world > 1:
        dist.barrier()
    start = 0
    ckpt_path = out / CHECKPOINT
    if resume and ckpt_path.exists():
        ckpt = _load_checkpoint(ckpt_path)
        session = dict(device=config.device, workers=config.workers)
        config = TrainConfig(**{**ckpt["config"], **session})
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
    model.to(device)
    _optimiser_to(opt, device)
    model.train()
    call = None
    if world > 1:
        call = torch.nn.parallel.DistributedDataParallel(
            TrainForward(model), device_ids=[device.index] if device.type == "cuda" else None)
    batches = iter(step_loader(config, start, rank, world))

    def checkpoint(done: int, wall_s: float) -> None:
        if rank == 0:
            _save(ckpt_path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                              "scheduler": sched.state_dict(), "step": done, "config": dataclasses.asdict(config),
                              "wall_s": wall_s})
            _save(out / WEIGHTS, model.state_dict())
        if world > 1:
            dist.barrier()

    def evaluate() -> dict:
        metrics = evaluate_model(model, config.eval_videos_per_tier) if rank == 0 else {}
        if world > 1:
            dist.barrier()
        return metrics

    def run_step(step: int) -> dict | None:
        t0 = time.perf_counter()
        samples = next(batches)
        t_data = time.perf_counter() - t0
        usable = all(s is not None for s in samples)
        if world > 1:  # a step is skipped on every process if any clip of the global batch is unusable
            flag = torch.tensor([float(usable)], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            usable = bool(flag.item())
        if not usable:
            return None
        video, queries, tracks, vis, valid = (x.to(device) for x in collate_clips(samples))
        outputs = forward_train(model, video, queries, config.iters, config.bf16, call=call)
        losses = batch_losses(outputs, queries, tracks, vis, valid, online=config.online)
        opt.zero_grad(set_to_none=True)
        losses.total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        opt.step()
        sched.step()
        return {"items": losses.items(), "grad_norm": round(float(grad_norm), 4), "lr": sched.get_last_lr()[0],
                "frames": int(video.shape[1]), "points": int(queries.shape[1]), "clips": len(samples) * world,
                "data_seconds": round(t_data, 3), "seconds": round(time.perf_counter() - t0, 3)}

    run_steps(out, start, config, run_step, checkpoint, evaluate, progress if rank == 0 else None,
              wall_before=float(ckpt.get("wall_s", 0.0)) if start else 0.0, write_log=rank == 0)
    return out


def _optimiser_to(opt: torch.optim.Optimizer, device: torch.device) -> None:
    """Move an optimiser's state (loaded on the CPU) to ``device``."""
    for state in opt.state.values():
        for k, v in state.items():
            if isinstance(v, Tensor) and k != "step":
                state[k] = v.to(device)


def run_steps(out: Path, start: int, config, run_step: Callable[[int], dict | None],
              checkpoint: Callable[[int, float], None], evaluate: Callable[[], dict],
              progress: Callable[[int, int, dict], None] | None, wall_before: float = 0.0,
              write_log: bool = True) -> None:
    """The loop every training stage shares: steps ``start .. config.steps - 1``.

    ``run_step(step)`` does one optimiser step and returns its log record (with
    the losses under ``"items"``), or None for a skipped step. Log lines go to
    ``out/log.jsonl`` every ``config.log_every`` steps (and at the first),
    checkpoints every ``config.checkpoint_every`` steps and at the end,
    evaluations every ``config.eval_every`` steps. Ctrl-C saves a checkpoint
    of every finished step before propagating. ``checkpoint(done, wall_s)``
    receives the run's wall time so far: ``wall_before`` (the earlier sessions
    of a resumed run) plus this one's. ``write_log=False`` (the processes other than
    the first of a distributed run) writes no log lines.
    """
    done = start
    t0 = time.perf_counter()

    def wall() -> float:
        return round(wall_before + time.perf_counter() - t0, 1)

    with open(out / LOG if write_log else os.devnull, "a") as log:
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
