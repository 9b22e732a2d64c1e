"""Render time of the synthetic scene engine.

Prints the wall time of :func:`cotracker3.synthetic.render_scene` per
configuration (median of several seeds, after one warm-up render), with the
number of torch threads in use.

    python benchmarks/render.py                      # 24 frames, 256x256, each tier
    python benchmarks/render.py --frames 48 --size 384 512 --supersample 1
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from cotracker3 import synthetic


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))
    ap.add_argument("--points", type=int, default=256)
    ap.add_argument("--supersample", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=5, help="scenes timed per tier")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    H, W = args.size
    print(f"torch threads: {torch.get_num_threads()}; {args.frames} frames {W}x{H}, "
          f"{args.points} points, supersample {args.supersample}")
    synthetic.render_scene(synthetic.SceneConfig(num_frames=2, height=32, width=32), 0)  # warm-up
    for tier, base in synthetic.EVAL_TIERS.items():
        cfg = dataclasses.replace(base, num_frames=args.frames, height=H, width=W,
                                  num_points=args.points, supersample=args.supersample)
        times = []
        for i in range(args.seeds):
            t0 = time.perf_counter()
            synthetic.render_scene(cfg, synthetic.eval_seed(tier, i % synthetic.EVAL_VIDEOS_PER_TIER) + i)
            times.append(time.perf_counter() - t0)
        print(f"{tier:16s} median {statistics.median(times):.3f} s   max {max(times):.3f} s   "
              f"({args.frames / statistics.median(times):.1f} frames/s)")


if __name__ == "__main__":
    main()
