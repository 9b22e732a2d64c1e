"""Training speed: optimiser steps per minute with 0 and N data-loader workers (and batch sizes).

Runs ``cotracker3.train.loop.train`` (the configuration ``track3d train`` builds) for a few
steps per setting, one setting after the other in this process, and prints steps per minute
in the steady state (from the end of the first step to the end of the last, so that model
building and the workers' start are left out), clips per minute, and the share of the step
the training process spent waiting for its data (``data_seconds`` of the log).

    python benchmarks/train_steps.py --steps 30 --workers 0 2
    python benchmarks/train_steps.py --device cuda --size published --batch-size 1 8 --workers 0 8

Measure with nothing else running: on a 2-core machine, worker processes and the
training process share the same two cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cotracker3.embedded import SMALL_MODEL
from cotracker3.train.loop import TrainConfig, resolve_device, train


def run(args: argparse.Namespace, workers: int, batch: int) -> dict:
    model = dict(SMALL_MODEL) if args.size == "small" else dict(model_resolution=(256, 256), window_len=24)
    if args.size == "published" and args.resolution:
        model["model_resolution"] = tuple(args.resolution)
    config = TrainConfig(steps=args.steps, num_points=args.points, iters=args.iters, model=model, bf16=args.bf16,
                         seed=args.seed, log_every=1, checkpoint_every=10 ** 9, batch_size=batch, workers=workers,
                         device=args.device)
    ends: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train(config, Path(tmp) / "run", resume=False, progress=lambda step, steps, items: ends.append(time.perf_counter()))
        total = time.perf_counter() - t0
        log = [json.loads(x) for x in (Path(tmp) / "run" / "log.jsonl").read_text().splitlines() if '"step"' in x]
    steady = [x for x in log if x.get("step", 0) > 1 and "seconds" in x]
    per_step = (ends[-1] - ends[0]) / (len(ends) - 1)
    data = statistics.fmean(x["data_seconds"] for x in steady)
    step_s = statistics.fmean(x["seconds"] for x in steady)
    return {"workers": workers, "batch": batch, "steps_per_min": 60 / per_step, "clips_per_min": 60 * batch / per_step,
            "data_share": data / step_s, "data_s": data, "total_s": total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="steps per setting (default: 30)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="worker counts (default: 0 2)")
    ap.add_argument("--batch-size", type=int, nargs="+", default=[1], help="batch sizes (default: 1)")
    ap.add_argument("--size", choices=("small", "published"), default="small")
    ap.add_argument("--resolution", type=int, nargs=2, metavar=("H", "W"), help="model resolution (published size)")
    ap.add_argument("--points", type=int, default=128)
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast (as the embedded model was trained)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# {args.size} model, {args.points} points, {args.iters} iterations, bf16={args.bf16}, {args.steps} steps "
          f"per setting, on {name}, torch {torch.__version__}")
    print(f"{'batch':>5} {'workers':>7} {'steps/min':>9} {'clips/min':>9} {'data share':>10} {'total s':>8}")
    for batch in args.batch_size:
        for workers in args.workers:
            r = run(args, workers, batch)
            print(f"{r['batch']:>5} {r['workers']:>7} {r['steps_per_min']:>9.1f} {r['clips_per_min']:>9.1f} "
                  f"{100 * r['data_share']:>9.1f}% {r['total_s']:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
