"""The ``track3d`` command line.

Each sub-command is a thin layer over a Python function: ``track3d track``
over :func:`track3d.track` (options from :class:`track3d.tracking.TrackOptions`),
``track3d eval`` over :func:`cotracker3.eval.scoring.evaluate`, ``track3d models``
over the weight registry. Mistakes in the input give a
one-line error and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

logger = logging.getLogger("track3d")


def _add_options(parser: argparse.ArgumentParser, options_cls, *, only_given: dict | None = None) -> None:
    """One ``--flag`` per dataclass field, help from the field's metadata.

    ``only_given`` (used by ``batch``, whose options belong to one of several tasks): a mapping
    task name -> options class; the flags then default to nothing (an option not given is not
    set, and the task's own default applies), and the help says which tasks take each option and
    their defaults.
    """
    for f in dataclasses.fields(options_cls):
        if f.metadata.get("cli") is False:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        tasks = {}
        if only_given is not None:
            tasks = {name: next((g.default for g in dataclasses.fields(cls) if g.name == f.name), dataclasses.MISSING)
                     for name, cls in only_given.items()}
            tasks = {name: d for name, d in tasks.items() if d is not dataclasses.MISSING}
            if len(tasks) < len(only_given):
                help_text += f" ({', '.join(tasks)} only)"
        if f.type in ("bool", bool):
            parser.add_argument(flag, action="store_true", help=help_text,
                                default=argparse.SUPPRESS if only_given is not None else f.default)
            continue
        kind = {"int": int, "int | None": int, "float": float, "float | None": float, "str": str,
                "str | None": str}.get(str(f.type), str)
        default = f.default
        suffix = f" (default: {default})" if default is not None else ""
        if only_given is not None:
            if len(set(map(repr, tasks.values()))) > 1:
                suffix = " (default: " + ", ".join(f"{d} for {name}" for name, d in tasks.items()) + ")"
            default = argparse.SUPPRESS
        choices = f.metadata.get("choices")
        parser.add_argument(flag, type=kind, default=default, help=help_text + suffix, choices=choices,
                            metavar="{" + ",".join(choices) + "}" if choices else f.name.upper())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``track3d`` (all sub-commands)."""
    from track3d.tracking import TrackOptions

    parser = argparse.ArgumentParser(
        prog="track3d",
        description="Turn an ordinary video into tracks of the points in it (CoTracker3).",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, only errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "track",
        help="track points through a video; writes tracks.npz and overlay.mp4",
        description="Track a grid of points (or the points of --queries) through a video with CoTracker3 "
        "and write OUT/tracks.npz (tracks, visibility, confidence, queries, fps, frame size) and "
        "OUT/overlay.mp4 (the video with tracks drawn: filled dots where visible, rings where occluded). "
        "Weights are looked up in the cache (TRACK3D_CACHE, default ~/.cache/track3d) and downloaded "
        "if missing, unless --checkpoint is given.",
    )
    p.add_argument("video", help="video file (mp4, mov, avi, webm, mkv, gif) or folder of images")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist, see --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--no-overlay", action="store_true", help="do not write overlay.mp4")
    _add_options(p, TrackOptions)
    p.set_defaults(func=cmd_track)

    e = sub.add_parser(
        "eval",
        help="score a tracker on a TAP-Vid style dataset or the synthetic set (AJ, delta_avg, OA)",
        description="Run a tracker on every video of DATASET at 256x256 with the TAP-Vid queries and print "
        "the TAP-Vid metrics per video and their mean (average Jaccard AJ, average position accuracy "
        "delta_avg, occlusion accuracy OA; in percent). DATASET is 'synthetic' (the held-out synthetic "
        "set, rendered on the fly, in tiers), or a path in one of the published formats: TAP-Vid DAVIS "
        "(.pkl dict), RGB-Stacking (.pkl list), Kinetics (folder of .pkl shards), RoboTAP (folder of "
        ".pkl), Dynamic Replica (dataset root). Pickle files can run code when loaded: only evaluate "
        "files from a source you trust.",
    )
    e.add_argument("dataset", help="'synthetic' or the path of a dataset")
    e.add_argument("--tracker", required=True, metavar="NAME_OR_PATH",
                   help="'baseline' (Lucas-Kanade), a registered weights name (see 'track3d models'), "
                   "a checkpoint file, or a training run folder ('track3d train --out')")
    e.add_argument("--json", metavar="OUT", help="also write the per-video metrics and their 'mean' to this JSON file")
    e.add_argument("--query-mode", choices=("first", "strided"), default="first",
                   help="TAP-Vid query sampling: first visible frame of each track, or every 5th visible "
                   "frame (default: first)")
    e.add_argument("--format", default=None, metavar="FORMAT",
                   help="dataset format (davis, rgb_stacking, kinetics, robotap, dynamic_replica); "
                   "default: detected from the path")
    e.add_argument("--tiers", nargs="+", metavar="TIER",
                   help="synthetic tiers to run (default: all: static_camera moving_camera heavy_occlusion "
                   "fast_motion)")
    e.add_argument("--videos-per-tier", type=int, default=None, metavar="N",
                   help="synthetic scenes per tier (default: the published set's 5)")
    e.add_argument("--max-videos", type=int, default=None, metavar="N", help="stop after N videos")
    e.add_argument("--iters", type=int, default=None,
                   help="refinement iterations of the model (default: the model's own: 6 for the published "
                   "models, the calibrated number for the embedded one)")
    e.add_argument("--precision", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="arithmetic of the model: float32 (default), bfloat16 (mixed precision) or float16 (GPU)")
    e.add_argument("--device", default="auto", help="torch device: cpu, cuda, ... or auto (default: auto)")
    e.set_defaults(func=cmd_eval)

    from track3d.reconstruction import ReconstructOptions

    r = sub.add_parser(
        "reconstruct",
        help="track a video and reconstruct it in 3D: cameras, static cloud, moving trajectories",
        description="Track a grid of points through VIDEO (CoTracker3 with the published weights; when they "
        "cannot be had, with a warning, the project's small embedded model shipped in the package, or the "
        "classical Lucas-Kanade baseline where no embedded model ships or with --online), separate static from "
        "moving points (by rigid motion groups: the static scene need not hold most tracks), solve the "
        "cameras (COLMAP bundle adjustment on the tracks; rotation-only where the camera only turns, as in a "
        "pan, with the centre held fixed), triangulate the static points and place the "
        "moving ones per frame (with depth maps when given: --depth, or --depth-model to compute them), each "
        "with a reliability (--min-reliability hides the less reliable ones in the 3D views). Writes OUT/: "
        "reconstruction.npz (every array), colmap/ (the COLMAP model), "
        "points.ply (static cloud, coloured), dynamic.glb (moving points per frame), recording.rrd (Rerun; "
        "open with 'track3d view OUT'), overlay.mp4 (tracks drawn) and summary.json (timings, counts, "
        "warnings, rotation-only and unsolved frames). Geometry that cannot be solved (a still camera, frames "
        "without static points) is reported in summary.json, and the rest is still written.",
    )
    r.add_argument("video", help="video file (mp4, mov, avi, webm, mkv, gif) or folder of images")
    r.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist, see --overwrite)")
    r.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    r.add_argument("--no-viz", action="store_true", help="do not write recording.rrd and overlay.mp4")
    _add_options(r, ReconstructOptions)
    r.set_defaults(func=cmd_reconstruct)

    v = sub.add_parser(
        "view",
        help="open a result folder (or .rrd file) in the Rerun viewer",
        description="Open DIR/recording.rrd (written by 'track3d reconstruct') in the Rerun viewer. With --web, "
        "serve Rerun's web viewer on 127.0.0.1 instead and print its address (Ctrl-C stops it).",
    )
    v.add_argument("path", metavar="DIR", help="result folder, or a .rrd file")
    v.add_argument("--web", action="store_true", help="serve the web viewer on 127.0.0.1 and print the address")
    v.add_argument("--port", type=int, default=9090, help="web viewer (HTTP) port with --web (default: 9090)")
    v.add_argument("--grpc-port", type=int, default=9876, help="port of the data stream with --web (default: 9876)")
    v.set_defaults(func=cmd_view)

    smp = sub.add_parser(
        "sample",
        help="render a synthetic sample video to try the other commands on",
        description="Render a video of a synthetic room (textured walls and objects, some of them moving) "
        "seen by a moving camera, with the project's own scene engine, and write it as an mp4. No "
        "download: 'track3d sample sample.mp4 && track3d reconstruct sample.mp4 --out out/' runs the "
        "whole pipeline on a fresh machine.",
    )
    smp.add_argument("out", metavar="OUT.mp4", help="video file to write")
    smp.add_argument("--tier", default="moving_camera",
                     help="scene kind: static_camera, moving_camera, heavy_occlusion, fast_motion (default: moving_camera)")
    smp.add_argument("--seed", type=int, default=0, help="scene seed (default: 0)")
    smp.add_argument("--frames", type=int, default=32, help="number of frames (default: 32)")
    smp.add_argument("--size", default="384x288", metavar="WxH", help="frame size (default: 384x288)")
    smp.add_argument("--fps", type=float, default=24.0, help="frame rate (default: 24)")
    smp.set_defaults(func=cmd_sample)

    tr = sub.add_parser(
        "train",
        help="train a CoTracker3 model on synthetic videos (supervised, as the paper's Kubric stage)",
        description="Train the offline CoTracker3 architecture on clips of the synthetic scene engine with the "
        "reference's losses, augmentations, AdamW + one-cycle schedule and gradient clipping. OUT holds "
        "checkpoint.pt (resumed automatically when the command is run again), model.pt (the weights) and "
        "log.jsonl (losses per step, metrics per evaluation). Ctrl-C saves a checkpoint first.",
    )
    tr.add_argument("--out", required=True, metavar="DIR", help="run folder (created; an existing run is resumed)")
    tr.add_argument("--steps", type=int, default=2000, help="optimiser steps (default: 2000)")
    tr.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (default: 5e-4)")
    tr.add_argument("--points", type=int, default=128, help="tracks per clip (default: 128)")
    tr.add_argument("--iters", type=int, default=4, help="refinement iterations while training (default: 4)")
    tr.add_argument("--size", choices=("small", "published"), default="small",
                    help="model sizes: 'small' (about 2.6 M parameters, CPU-trainable) or the published ones")
    tr.add_argument("--init", metavar="CKPT", help="start from these weights")
    tr.add_argument("--init-tracks", choices=("query", "baseline"), default="query",
                    help="where the model's refinement starts: 'query' (the published models: every frame at "
                    "the query point) or 'baseline' (the Lucas-Kanade baseline's tracks and visibility, which "
                    "the model learns to correct; the embedded model is trained so) (default: query)")
    tr.add_argument("--eval-every", type=int, default=0, help="evaluate on the synthetic set every N steps (0: never)")
    tr.add_argument("--still-prob", type=float, default=0.25, metavar="P",
                    help="share of clips whose augmentation keeps scale and crop still, so still cameras stay "
                    "still (default: 0.25; 0: the reference, where every clip drifts)")
    tr.add_argument("--seed", type=int, default=0, help="seed of everything random (default: 0)")
    tr.add_argument("--fresh", action="store_true", help="do not resume: start over in OUT")
    tr.add_argument("--bf16", action="store_true", help="bfloat16 autocast in the forward pass (mixed precision)")
    tr.add_argument("--online", action="store_true",
                    help="train the online (sliding-window) model, every window supervised (default: offline)")
    _add_training_device_options(tr, workers=True)
    tr.add_argument("--export-embedded", metavar="DIR", nargs="?", const="",
                    help="when training ends, evaluate on the synthetic set and write the model as the embedded "
                    "model (16-bit weights and provenance.json) into DIR (default: inside the package)")
    tr.set_defaults(func=cmd_train, interrupted="a checkpoint was saved: run the same command again to resume")

    pl = sub.add_parser(
        "pseudo-label",
        help="fine-tune a trained model on unlabelled real videos labelled by teacher trackers",
        description="The paper's second stage: clips of the videos in VIDEOS are tracked by a teacher drawn at "
        "random per step (from --teacher: 'self' = the starting student, frozen; 'baseline' = Lucas-Kanade; a "
        "checkpoint path; a registered name), from SIFT keypoints of the clip's first quarter; the points "
        "the teacher sees with visibility > 0.9 supervise the student, whose visibility/confidence head stays "
        "frozen (learning rate 5e-5, gradient clipping at 10). OUT is resumable like 'track3d train'. At scale, label "
        "the videos once beforehand ('track3d batch VIDEOS --task track --model TEACHER --out labels/TEACHER', on a "
        "Ray cluster) and train from those tracks with --labels labels/TEACHER (repeatable) instead of VIDEOS.",
    )
    pl.add_argument("videos", metavar="VIDEOS", nargs="?",
                    help="folder of unlabelled videos (searched recursively); not with --labels")
    pl.add_argument("--labels", action="append", metavar="DIR",
                    help="train from precomputed teacher tracks instead of running teachers in the loop: the --out "
                    "folder of 'track3d batch VIDEOS --task track --model TEACHER' (repeat for several teachers; "
                    "one is drawn per step, then one of its videos); --teacher does not apply")
    pl.add_argument("--init", required=True, metavar="CKPT", help="the student's starting weights (a synthetic-trained model.pt)")
    pl.add_argument("--out", required=True, metavar="DIR", help="run folder (an existing run is resumed)")
    pl.add_argument("--teacher", action="append", metavar="SPEC",
                    help="a teacher (repeat for a pool): self, baseline, a checkpoint or a registered name "
                    "(default: self and baseline)")
    pl.add_argument("--steps", type=int, default=1000, help="optimiser steps (default: 1000)")
    pl.add_argument("--lr", type=float, default=5e-5, help="peak learning rate (default: 5e-5)")
    pl.add_argument("--points", type=int, default=128, help="queries per clip (default: 128)")
    pl.add_argument("--clip-len", type=int, default=24, help="frames per clip (default: 24)")
    pl.add_argument("--self-refresh", type=int, default=0,
                    help="replace the 'self' teacher by the current student every N steps (self-training; 0: never)")
    pl.add_argument("--seed", type=int, default=0, help="seed of everything random (default: 0)")
    pl.add_argument("--fresh", action="store_true", help="do not resume: start over in OUT")
    pl.add_argument("--bf16", action="store_true", help="bfloat16 autocast in the student's forward pass")
    _add_training_device_options(pl, workers=False)
    pl.add_argument("--eval-every", type=int, default=0,
                    help="evaluate on the synthetic set every N steps (0: never)")
    pl.add_argument("--export-embedded", metavar="DIR", nargs="?", const="",
                    help="when fine-tuning ends, evaluate on the synthetic set and write the student as the "
                    "embedded model, with the provenance of both stages, into DIR (default: inside the package)")
    pl.set_defaults(func=cmd_pseudo_label, interrupted="a checkpoint was saved: run the same command again to resume")

    from track3d.batch import BATCH_FILE, TASKS

    b = sub.add_parser(
        "batch",
        help="reconstruct (or track) many videos as Ray tasks, on this machine or a cluster; resumable",
        description="Run 'track3d reconstruct' (or, with --task track, 'track3d track') on every INPUT, each as one "
        "Ray task, and write one result folder per video, OUT/<name>/ (the file name; '-' and a hash of the path "
        "where two inputs share a name), exactly as the single commands would, atomically. A complete result "
        "already in OUT is skipped, so running the same command again resumes a batch; Ctrl-C stops the workers "
        "and leaves no half-written folder. A corrupt or unreadable video fails its task with the message the "
        "single command gives, and the batch goes on; a worker that dies (killed, out of memory) is retried. "
        f"OUT/{BATCH_FILE} records every input (status done, skipped or failed, error, seconds, frames, registered "
        "frames, Ray node) and is rewritten as tasks finish. Exit code: 0 when every input is done or skipped, 1 "
        "when one failed, 2 for usage errors. Every option of 'reconstruct' (and of 'track') applies to every input.",
    )
    b.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="a video file, a folder (its videos, searched recursively, and folders of images, each "
                   "one video), or a text file (.txt, .lst, .list) listing such paths, one a line")
    b.add_argument("--out", required=True, metavar="DIR", help="output folder: DIR/<name>/ per video and "
                   f"DIR/{BATCH_FILE} (created; an existing one is resumed)")
    b.add_argument("--task", choices=TASKS, default="reconstruct",
                   help="what to run on each video: 'reconstruct' (default) or 'track' (2D tracks only, e.g. a "
                   "teacher's pseudo-labels for 'track3d pseudo-label --labels')")
    b.add_argument("--overwrite", action="store_true", help="redo every video, replacing complete results")
    b.add_argument("--no-viz", "--no-overlay", dest="no_viz", action="store_true",
                   help="do not write recording.rrd and overlay.mp4 (--task track: overlay.mp4)")
    b.add_argument("--address", metavar="ADDRESS",
                   help="run on this Ray cluster (HOST:PORT printed by 'ray start --head', or 'auto' for the one "
                   "started on this machine); default: $RAY_ADDRESS where it is set, else a local Ray started for the "
                   "batch and stopped after it")
    b.add_argument("--cpus-per-task", type=float, default=None, metavar="N",
                   help="CPUs reserved per task, and its threads (torch, OpenCV, OpenMP, COLMAP); tasks run at once: the "
                   "cluster's CPUs / N (default: 1; with GPU tasks, the CPUs shared among the GPUs)")
    b.add_argument("--gpus-per-task", type=float, default=None, metavar="N",
                   help="GPUs reserved per task (fractions share a GPU) (default: 1 where the cluster has GPUs, "
                   "else 0)")
    b.add_argument("--retries", type=int, default=2, metavar="N",
                   help="run a task again up to N times when its worker process dies (killed, out of memory); "
                   "bad input is not retried (default: 2)")
    b.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="stop a task that runs longer than this and record it as failed (default: no limit)")
    _add_options(b, ReconstructOptions, only_given={"reconstruct": ReconstructOptions, "track": TrackOptions})
    b.set_defaults(func=cmd_batch)

    m = sub.add_parser("models", help="list the registered CoTracker3 weights and whether they are cached",
                       description="List the registered weights, where they come from and where they are cached.")
    m.set_defaults(func=cmd_models)
    return parser


class _Progress:
    """tqdm bars per stage, or nothing when quiet / not a terminal-friendly run."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bars = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            unit = {"read": "frame", "track": "frame", "depth": "frame", "refine": "iter",
                    "write": "file"}.get(stage, "step")
            bar = self.bars[stage] = tqdm(total=total or None, desc=stage, unit=unit, leave=False)
        bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars = {}


def cmd_track(args: argparse.Namespace) -> int:
    """``track3d track``: track, then write the result folder atomically."""
    from track3d import io
    from track3d.tracking import TrackOptions, save_track_folder, track

    opts = TrackOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrackOptions)
                           if hasattr(args, f.name)})
    out_dir = Path(args.out)
    io.check_output_dir(out_dir, overwrite=args.overwrite)
    progress = _Progress(not args.quiet)
    t0 = time.perf_counter()
    try:
        result = track(args.video, opts, progress=progress)
    finally:
        progress.close()
    summary = save_track_folder(result, out_dir, opts, overlay=not args.no_overlay, overwrite=args.overwrite)
    logger.info("tracked %d points through %d frames in %.1f s (%.0f%% visible) with %s",
                summary["tracks"], summary["frames"], time.perf_counter() - t0, 100 * summary["visible"],
                result.model)
    print(f"wrote {out_dir}/tracks.npz" + ("" if args.no_overlay else f" and {out_dir}/overlay.mp4")
          + " and summary.json")
    return EXIT_OK


def cmd_reconstruct(args: argparse.Namespace) -> int:
    """``track3d reconstruct``: track, reconstruct, write the result folder atomically."""
    from track3d import io
    from track3d.reconstruction import ReconstructOptions, reconstruct, stages_dir
    from track3d.tracking import FALLBACK_NOTICE

    opts = ReconstructOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ReconstructOptions)
                                 if hasattr(args, f.name)})
    io.check_output_dir(args.out, overwrite=args.overwrite)
    progress = _Progress(not args.quiet)
    kept = stages_dir(args.out)  # Finished stages, reused by a rerun after a failure or Ctrl-C.
    try:
        result = reconstruct(args.video, opts, progress=progress, resume_dir=kept)
        result.save(args.out, overwrite=args.overwrite, viz=not args.no_viz, progress=progress)
    finally:
        progress.close()
    shutil.rmtree(kept, ignore_errors=True)
    if result.summary.get("reused"):
        print(f"reused from an earlier run: {', '.join(result.summary['reused'])}")
    s = result.summary
    print(f"{s['frames']} frames, {s['tracks']} tracks ({s['model']}): cameras {s['cameras']} "
          f"({s['registered_frames']}/{s['frames']} frames"
          + (f", {len(s['rotation_only_frames'])} rotation-only" if s.get("rotation_only_frames") else "")
          + f"), {s['static_points']} static points, "
          f"{s['moving_tracks']} moving tracks"
          + (f" ({int(result.shown_moving().sum())} shown with reliability >= {opts.min_reliability:g})"
             if opts.min_reliability > 0 else "")
          + (f", depth from {_depth_source(s['depth'])}" if s.get("depth") else ""))
    for warning in s["warnings"]:
        if not warning.startswith(FALLBACK_NOTICE):  # that one was logged before tracking started
            print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {args.out}/ ({', '.join(s['files'])})")
    return EXIT_OK


def cmd_batch(args: argparse.Namespace) -> int:
    """``track3d batch``: many videos as Ray tasks; ``batch.json``, a summary table, exit code 0/1."""
    from track3d.batch import BatchReport, run_batch
    from track3d.reconstruction import ReconstructOptions

    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(ReconstructOptions) if hasattr(args, f.name)}
    _checkpoint_on_sigterm()  # a polite kill stops the batch as Ctrl-C does
    bar = None

    def progress(record, finished, total):
        nonlocal bar
        if args.quiet:
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, desc=args.task, unit="video", leave=False)
        bar.update(finished - bar.n)
        if record is not None and record["status"] == "failed":
            bar.write(f"failed: {record['input']}: {record['error']}", file=sys.stderr)

    try:
        report = run_batch(args.inputs, args.out, task=args.task, options=options, viz=not args.no_viz,
                           address=args.address, cpus_per_task=args.cpus_per_task, gpus_per_task=args.gpus_per_task,
                           retries=args.retries, timeout=args.timeout, overwrite=args.overwrite,
                           verbose=args.verbose > 0, progress=progress)
    except KeyboardInterrupt as exc:
        if bar is not None:
            bar.close()
        report = exc.args[0] if exc.args and isinstance(exc.args[0], BatchReport) else None
        if report is not None:
            print(report.table())
        print("track3d: interrupted; the finished results are kept and no partial folder is left: run the same "
              "command again to go on", file=sys.stderr)
        return EXIT_INTERRUPTED
    if bar is not None:
        bar.close()
    print(report.table())
    print(f"wrote {report.out_dir}/batch.json")
    return EXIT_ERROR if report.failed else EXIT_OK


def _depth_source(depth: dict) -> str:
    """``summary["depth"]`` in words: where the maps came from and what they hold."""
    where = depth.get("model") if depth.get("source") == "model" else depth.get("path")
    return f"{depth.get('source')} {where} ({depth.get('kind')})"


def cmd_view(args: argparse.Namespace) -> int:
    """``track3d view``: the Rerun viewer (native, or web on 127.0.0.1) on a saved recording."""
    import subprocess
    from urllib.parse import quote

    from track3d.errors import ResultError

    path = Path(args.path)
    rrd = path / "recording.rrd" if path.is_dir() else path
    if not rrd.is_file():
        raise ResultError(f"no Rerun recording at {rrd} (was the result written with --no-viz?)")
    command = [sys.executable, "-m", "rerun", str(rrd)]
    if args.web:
        command += ["--serve-web", "--bind", "127.0.0.1", "--web-viewer-port", str(args.port),
                    "--port", str(args.grpc_port)]
        address = (f"http://127.0.0.1:{args.port}/?url=" + quote(f"rerun+http://127.0.0.1:{args.grpc_port}/proxy", safe=""))
        print(f"serving the Rerun web viewer on 127.0.0.1: open {address} (Ctrl-C to stop)", flush=True)
    return subprocess.call(command)


def cmd_sample(args: argparse.Namespace) -> int:
    """``track3d sample``: render a synthetic scene and write it as a video."""
    from cotracker3 import synthetic
    from track3d.errors import Track3DError
    from viz.overlay import write_video

    try:
        W, H = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise Track3DError(f"--size must be WxH, e.g. 512x384, got {args.size!r}") from None
    if args.tier not in synthetic.EVAL_TIERS:
        raise Track3DError(f"unknown --tier {args.tier!r}; tiers: {', '.join(synthetic.EVAL_TIERS)}")
    if args.frames < 2 or min(W, H) < 16:
        raise Track3DError("a sample needs at least 2 frames of at least 16x16 pixels")
    cfg = dataclasses.replace(synthetic.EVAL_TIERS[args.tier], num_frames=args.frames, width=W, height=H,
                              num_points=1)
    scene = synthetic.render_scene(cfg, args.seed)
    write_video(args.out, iter(scene.frames), fps=args.fps, num_frames=len(scene.frames))
    print(f"wrote {args.out} ({args.frames} frames, {W}x{H}, {args.tier}, seed {args.seed})")
    return EXIT_OK


def _checkpoint_on_sigterm() -> None:
    """A polite kill (SIGTERM) stops a training command like Ctrl-C: a checkpoint is saved first."""
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def _add_training_device_options(parser: argparse.ArgumentParser, *, workers: bool) -> None:
    """``--device`` and ``--batch-size`` of ``train`` and ``pseudo-label`` (``--workers`` for ``train``)."""
    parser.add_argument("--device", default="auto",
                        help="where to train: auto (a CUDA GPU when there is one, else the CPU), cpu, cuda or cuda:K; "
                        "under torchrun each process takes the GPU of its LOCAL_RANK (default: auto)")
    parser.add_argument("--batch-size", type=int, default=1, metavar="B",
                        help="clips per optimiser step (under torchrun: over all processes together, a multiple "
                        "of their count); the clips of a step share its length, their losses are averaged "
                        "(default: 1)")
    if workers:
        parser.add_argument("--workers", type=int, default=0, metavar="N",
                            help="processes rendering the synthetic scenes ahead of the training step (0: in the "
                            "training process); the clips do not depend on N, so a run resumes exactly whatever "
                            "it is (default: 0)")


def _rank() -> int:
    """This process's rank under ``torchrun`` (0 otherwise)."""
    return int(os.environ.get("RANK", "0"))


def cmd_train(args: argparse.Namespace) -> int:
    """``track3d train``: supervised training on the synthetic engine, resumable."""
    from cotracker3.embedded import SMALL_MODEL
    from cotracker3.train.loop import TrainConfig, TrainingError, train

    model = dict(SMALL_MODEL) if args.size == "small" else dict(model_resolution=(256, 256), window_len=24)
    if args.init_tracks == "baseline":
        if args.online:
            raise TrainingError("--init-tracks baseline is for the offline model; the online model starts each "
                                "window from the last one")
        model["initialisation"] = "baseline"
    config = TrainConfig(steps=args.steps, lr=args.lr, num_points=args.points, iters=args.iters, model=model,
                         init=args.init, eval_every=args.eval_every, seed=args.seed, bf16=args.bf16,
                         online=args.online, augment=dict(still_prob=args.still_prob), batch_size=args.batch_size,
                         workers=args.workers, device=args.device)
    return _run_training(args, "train", lambda progress: train(config, args.out, resume=not args.fresh,
                                                               progress=progress))


def _run_training(args: argparse.Namespace, label: str, run) -> int:
    """What ``train`` and ``pseudo-label`` share: checkpoint on SIGTERM, a progress bar,
    then optionally the embedded export. ``run(progress)`` runs the loop."""
    _checkpoint_on_sigterm()
    progress = _Progress(not args.quiet and _rank() == 0)
    try:
        run(lambda step, steps, items: progress(label, step, steps))
    finally:
        progress.close()
    if _rank() != 0:  # under torchrun, process 0 reports and exports
        return EXIT_OK
    print(f"wrote {args.out}/model.pt (log: {args.out}/log.jsonl)")
    if args.export_embedded is not None:
        _export_embedded(args.out, args.export_embedded or None)
    return EXIT_OK


def _export_embedded(run_dir: str, dest: str | None) -> None:
    """Choose a finished run's visibility threshold on calibration scenes, evaluate it on the
    synthetic set (5 scenes per tier) with that threshold, and write it as the embedded model
    (:func:`cotracker3.train.export.export_run`)."""
    import shlex

    from cotracker3.train.export import export_run

    dest, metrics = export_run(run_dir, dest, command=shlex.join(["track3d", *sys.argv[1:]]))
    print(f"wrote the embedded model to {dest} (mean AJ {metrics.get('mean', {}).get('average_jaccard')})")


def cmd_pseudo_label(args: argparse.Namespace) -> int:
    """``track3d pseudo-label``: real-video fine-tuning from teacher labels, resumable."""
    from cotracker3.embedded import SMALL_MODEL
    from cotracker3.train.loop import run_architecture
    from cotracker3.train.pseudo_label import PseudoLabelConfig, finetune

    from track3d.errors import Track3DError

    if (args.videos is None) == (args.labels is None):
        raise Track3DError("give a folder of VIDEOS (teachers run in the loop) or --labels DIR (precomputed), "
                           "not both")
    if args.labels and args.teacher:
        raise Track3DError("--teacher does not apply with --labels: the labels name their teacher")
    labels = None
    if args.labels:
        from track3d.batch import load_labels

        labels = load_labels(args.labels)
    # The student keeps the architecture of the run it starts from (sizes, initialisation).
    model = run_architecture(args.init) or dict(SMALL_MODEL)
    config = PseudoLabelConfig(model=model, steps=args.steps, lr=args.lr, num_points=args.points, clip_len=args.clip_len,
                               min_clip_len=min(args.clip_len, max(2, args.clip_len // 2)),
                               teachers=args.teacher or ["self", "baseline"], self_refresh=args.self_refresh,
                               init=args.init, seed=args.seed, bf16=args.bf16, eval_every=args.eval_every,
                               batch_size=args.batch_size, device=args.device)
    return _run_training(args, "fine-tune", lambda progress: finetune(config, args.videos, args.out,
                                                                      resume=not args.fresh, progress=progress,
                                                                      labels=labels))


def cmd_eval(args: argparse.Namespace) -> int:
    """``track3d eval``: TAP-Vid metrics of a tracker on a dataset."""
    import itertools

    import torch

    from cotracker3 import synthetic
    from cotracker3.eval import datasets, scoring
    from track3d import io
    from track3d.errors import OutputError, Track3DError
    from track3d.tracking import check_precision, resolve_device

    json_path = Path(args.json) if args.json else None
    if json_path is not None and not json_path.parent.is_dir():
        raise OutputError(f"cannot write {json_path}: folder {json_path.parent} does not exist")
    if args.iters is not None and args.iters < 1:
        raise Track3DError(f"--iters must be at least 1, got {args.iters}")
    if args.max_videos is not None and args.max_videos < 1:
        raise Track3DError(f"--max-videos must be at least 1, got {args.max_videos}")
    device = resolve_device(args.device)
    check_precision(args.precision, device)
    tracker, label = scoring.load_tracker(args.tracker, device=device, iters=args.iters,
                                             dtype=getattr(torch, args.precision))
    if args.dataset == "synthetic":
        unknown = [t for t in args.tiers or [] if t not in synthetic.EVAL_TIERS]
        if unknown:
            raise Track3DError(f"unknown tier {unknown[0]!r}; tiers: {', '.join(synthetic.EVAL_TIERS)}")
        per_tier = args.videos_per_tier or synthetic.EVAL_VIDEOS_PER_TIER
        if per_tier < 1:
            raise Track3DError(f"--videos-per-tier must be at least 1, got {per_tier}")
        videos = scoring.synthetic_videos(args.tiers, per_tier)
        total = len(args.tiers or synthetic.EVAL_TIERS) * per_tier
    else:
        if args.tiers or args.videos_per_tier:
            raise Track3DError("--tiers and --videos-per-tier apply to the 'synthetic' dataset only")
        videos = datasets.read_dataset(args.dataset, args.format)
        total = None
    if args.max_videos:
        videos = itertools.islice(videos, args.max_videos)
        total = min(total, args.max_videos) if total else args.max_videos
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="eval", unit="video", leave=False)
    try:
        report = scoring.evaluate(tracker, videos, args.query_mode, tracker_name=label,
                                     dataset_name=args.dataset, progress=(lambda *a: bar.update(1)) if bar else None)
    finally:
        if bar is not None:
            bar.close()
    if not report.videos:
        raise Track3DError(f"no video of {args.dataset} could be scored"
                           + "".join(f"; {n}: {why}" for n, why in list(report.skipped.items())[:3]))
    print(report.table())
    if json_path is not None:
        io.write_json_atomic(json_path, report.to_json())
        print(f"wrote {json_path}")
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    """``track3d models``: the weight registry and the cache."""
    from cotracker3.weights import REGISTRY, cache_dir

    ckpt_dir = cache_dir() / "checkpoints"
    print(f"cache: {ckpt_dir}")
    from cotracker3 import embedded

    for name, cfg in REGISTRY.items():
        cached = "cached" if (ckpt_dir / cfg.filename).is_file() else "not cached"
        if name == embedded.NAME:
            cached = "shipped" if embedded.available() else "not shipped"
        kind = "offline" if cfg.offline else "online"
        print(f"  {name:28s} {kind:8s} {cfg.filename:22s} {cached:11s} {cfg.url}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``track3d`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    level = logging.WARNING if args.quiet else (logging.INFO if args.verbose < 2 else logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from track3d.errors import USER_ERRORS

    try:
        return args.func(args)
    except USER_ERRORS as exc:
        print(f"track3d: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"track3d: interrupted; {getattr(args, 'interrupted', 'no output was written')}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        print("track3d: error: out of memory; try --online, fewer frames (--end/--stride), "
              "a smaller --grid or --max-side", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
