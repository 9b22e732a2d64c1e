"""Memory of the online predictor while a long video streams through it.

    python benchmarks/online_memory.py ../shared/videos/bear.mp4
    python benchmarks/online_memory.py VIDEO --frames 1000 --grid 30 --dtype bfloat16 --report 100 500 1000

The video's frames (resized to ``--height`` rows, keeping the aspect ratio; 480
by default) are looped back and forth until ``--frames`` have been pushed, 8
at a time, into the published online configuration (16-frame windows, frames
resized to 384x512, 6 iterations) with a ``--grid`` x ``--grid`` grid from
frame 0. Only the video's own frames are held in memory (a few dozen), never
the looped stream. Weights are a seeded random initialisation: the arithmetic,
hence time and memory, do not depend on the weight values.

Printed at each ``--report`` frame: the resident memory at that moment
(``/proc/self/statm``), the peak so far (``ru_maxrss``), seconds since the
first frame, and the frames per second so far. Memory is flat when the
figures at frame 100 and frame 1000 agree; the returned tracks grow by
``grid**2 * 13`` bytes per frame (coordinates, visibility, confidence), about
12 KB per frame for a 30x30 grid.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from collections.abc import Iterator

import cv2
import numpy as np
import torch


def looped(frames: np.ndarray, count: int) -> Iterator[np.ndarray]:
    """``count`` frames going back and forth over ``frames`` (no frame repeated at the turns)."""
    order = np.concatenate([np.arange(len(frames)), np.arange(len(frames) - 2, 0, -1)])
    for i in range(count):
        yield frames[order[i % len(order)]]


def resident_mb() -> float:
    """Current resident set size of this process in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    """Peak resident set size of this process so far in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video")
    p.add_argument("--frames", type=int, default=1000, help="frames to stream (default: 1000)")
    p.add_argument("--grid", type=int, default=30, help="grid side (default: 30)")
    p.add_argument("--height", type=int, default=480, help="frame rows after resizing (default: 480)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--iters", type=int, default=6, help="refinement iterations per window (default: 6)")
    p.add_argument("--report", type=int, nargs="+", default=[100, 500, 1000],
                   help="print memory at the first push reaching each of these frame counts (frames go in 8 at "
                   "a time; default: 100 500 1000)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import cotracker3
    from track3d.video import read_video

    clip, _ = read_video(args.video)
    h, w = clip.shape[1:3]
    width = int(round(w * args.height / h / 2)) * 2
    clip = np.stack([cv2.resize(f, (width, args.height), interpolation=cv2.INTER_AREA) for f in clip])

    torch.manual_seed(0)
    model = cotracker3.build_model("cotracker3-online").eval()
    pred = cotracker3.OnlinePredictor(model, iters=args.iters, dtype=getattr(torch, args.dtype))
    pred.start(grid_size=args.grid, frame_size=(width, args.height), num_frames=args.frames)
    print(f"{torch.get_num_threads()} threads, {args.dtype}, {args.frames} frames of {width}x{args.height} "
          f"(looping {len(clip)} frames of {args.video}), {args.grid}x{args.grid} grid, {args.iters} iterations; "
          f"resident before the first frame {resident_mb():.0f} MB")
    print(f"{'frames':>7} {'resident MB':>12} {'peak MB':>8} {'seconds':>8} {'frames/s':>8}", flush=True)
    reports = sorted(set(args.report))
    t0 = time.perf_counter()
    pushed = 0
    batch = []
    result = None
    for frame in looped(clip, args.frames):
        batch.append(torch.from_numpy(frame).permute(2, 0, 1))
        if len(batch) < 8 and pushed + len(batch) < args.frames:
            continue
        pred.push(torch.stack(batch)[None])
        pushed += len(batch)
        batch = []
        if pushed == args.frames:
            result = pred.finish()
        if reports and pushed >= reports[0]:
            while reports and pushed >= reports[0]:
                reports.pop(0)
            wall = time.perf_counter() - t0
            print(f"{pushed:>7} {resident_mb():12.0f} {peak_mb():8.0f} {wall:8.0f} {pushed / wall:8.2f}",
                  flush=True)
    print(f"tracks returned: {tuple(result.tracks.shape)}; visible share {result.visibility.float().mean():.2f}")


if __name__ == "__main__":
    main()
