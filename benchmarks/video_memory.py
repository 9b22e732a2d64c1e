"""Peak memory of ``track3d reconstruct`` against the source resolution (issue 21).

Makes two clips of the same frames, one at 3840x2160 (4K) and one at 1280x720,
from the first ``--frames`` frames of ``--video`` (resized with OpenCV, H.264
yuv420p through PyAV), runs ``track3d reconstruct CLIP --grid G --out DIR`` on
each in a fresh Python process, and prints each run's peak resident memory
(the child's ``ru_maxrss``), its wall time and the 4K / 720p ratio.

    python benchmarks/video_memory.py [--video V] [--frames 30] [--grid 20] [--extra ARGS...]

With no weights in the cache the embedded model tracks (what a new user gets).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2

RUNNER = """
import resource, sys
from track3d.cli import main
code = main(["-q", "reconstruct", *sys.argv[1:]])
print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "CODE", code)
"""

SIZES = {"4K": (3840, 2160), "720p": (1280, 720)}


def make_clip(source: Path, size: tuple[int, int], frames: int, path: Path) -> Path:
    with av.open(str(source)) as src, av.open(str(path), "w") as dst:
        stream = dst.add_stream("libx264", rate=30, options={"crf": "18"})
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i, frame in enumerate(src.decode(video=0)):
            if i == frames:
                break
            rgb = cv2.resize(frame.to_ndarray(format="rgb24"), size, interpolation=cv2.INTER_CUBIC)
            dst.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        dst.mux(stream.encode())
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default="/work/shared/videos/apple.mp4")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--grid", type=int, default=20)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more reconstruct arguments")
    args = parser.parse_args()
    peaks = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, size in SIZES.items():
            clip = make_clip(Path(args.video), size, args.frames, tmp / f"{name}.mp4")
            t0 = time.perf_counter()
            run = subprocess.run([sys.executable, "-c", RUNNER, str(clip), "--grid", str(args.grid),
                                  "--out", str(tmp / f"out-{name}"), *args.extra],
                                 capture_output=True, text=True, check=False)
            wall = time.perf_counter() - t0
            line = [ln for ln in run.stdout.splitlines() if ln.startswith("PEAK_KB")]
            if not line:
                sys.exit(f"{name}: the run failed:\n{run.stderr[-2000:]}")
            peaks[name] = int(line[0].split()[1]) / 1024
            print(f"{name:>5} {size[0]}x{size[1]}, {args.frames} frames, --grid {args.grid}: "
                  f"peak {peaks[name]:7.0f} MB, {wall:6.1f} s")
    print(f"4K / 720p peak memory: {peaks['4K'] / peaks['720p']:.2f}x")


if __name__ == "__main__":
    main()
