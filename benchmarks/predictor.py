"""Wall time and peak memory of the offline (or online) predictor on a video.

    python benchmarks/predictor.py ../shared/videos/apple.mp4 --grid 20
    python benchmarks/predictor.py VIDEO --grid 30 --frames 100 --online

Prints one line of figures. Weights are the registry's when cached (or
--checkpoint), else a random initialisation: the arithmetic, hence the time
and memory, do not depend on the weight values. Frames are decoded first and
not counted; the predictor call is what is timed. Peak memory is the process's
peak resident set size (ru_maxrss), which includes the decoded video.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

import cotracker3
from track3d.video import read_video


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video")
    p.add_argument("--grid", type=int, default=20)
    p.add_argument("--frames", type=int, default=None, help="use the first N frames (default: all)")
    p.add_argument("--online", action="store_true")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--save", default=None, help="write tracks/visibility to this .npz")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    frames, info = read_video(args.video, end=args.frames)
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)[None]
    name = "cotracker3-online" if args.online else "cotracker3-offline"
    model = cotracker3.build_model(name)
    if args.checkpoint:
        cotracker3.load_checkpoint(model, args.checkpoint)
    model.eval()

    t0 = time.perf_counter()
    with torch.no_grad():
        if args.online:
            pred = cotracker3.OnlinePredictor(model)
            pred.start(grid_size=args.grid, frame_size=(info.width, info.height))
            for i in range(0, video.shape[1], pred.step):
                pred.push(video[:, i : i + pred.step])
            out = pred.finish()
        else:
            out = cotracker3.Predictor(model)(video, grid_size=args.grid)
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    T, N = out.visibility.shape[1:]
    print(f"{'online' if args.online else 'offline'} predictor: {T} frames {info.width}x{info.height}, "
          f"{N} points, {torch.get_num_threads()} threads: {wall:.1f} s, peak RSS {peak_mb:.0f} MB, "
          f"{T * N / wall:.0f} point-frames/s")
    if args.save:
        np.savez(args.save, tracks=out.tracks[0].numpy(), visibility=out.visibility[0].numpy())


if __name__ == "__main__":
    main()
