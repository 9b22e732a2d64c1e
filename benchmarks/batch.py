"""``track3d batch`` against a loop of ``track3d reconstruct``, and Ray's overhead per task.

Cuts ``--clips`` short clips (``--frames`` frames, longer side ``--side`` px) from the
videos of ``--videos`` (default ../shared/videos, beside the repository; round robin,
clips of one video overlapping by half), then prints:

* **sequential**: wall time of one ``track3d reconstruct CLIP --out ...`` process per
  clip, one after the other (what a shell loop over the files does; each process
  uses every core for torch and COLMAP);
* **batch**: wall time of one ``track3d batch CLIPS --out ... --cpus-per-task C``
  (a local Ray started and stopped by the command; cores / C tasks at once, C
  threads each), and the sum of its tasks' own seconds (``batch.json``);
* **Ray overhead**: ``ray.init`` of a local Ray (no dashboard), the first task
  (a new worker process starts), the round trip of a no-op task (mean of
  ``--noop`` sequential ``ray.get(f.remote())``), and ``ray.shutdown``.

Both runs use the same options (``--grid``, the default tracker: the published weights
where cached, else the shipped embedded model; ``TRACK3D_OFFLINE=1`` is set so that
nothing is downloaded) and write into a fresh temporary folder.

    python benchmarks/batch.py                    # 8 clips of 24 frames, 2 workers
    python benchmarks/batch.py --clips 4 --frames 12 --grid 10

Nothing else should run on the machine meanwhile (wrap it in ``flock`` where CPUs are shared).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def cut_clips(videos: list[Path], n_clips: int, frames: int, side: int, folder: Path) -> list[Path]:
    """``n_clips`` clips of ``frames`` frames, round robin over ``videos``, each starting ``frames // 2``
    after the last one cut from the same video (clips of one video overlap by half)."""
    clips = []
    for k in range(n_clips):
        source = videos[k % len(videos)]
        start = (k // len(videos)) * (frames // 2)
        out = folder / f"{source.stem}_{k:02d}.mp4"
        written = 0
        with av.open(str(source)) as inp, av.open(str(out), "w") as container:
            stream = None
            for i, frame in enumerate(inp.decode(video=0)):
                if i < start:
                    continue
                img = frame.to_ndarray(format="rgb24")
                s = side / max(img.shape[:2])
                img = cv2.resize(img, (int(img.shape[1] * s) // 2 * 2, int(img.shape[0] * s) // 2 * 2),
                                 interpolation=cv2.INTER_AREA)
                if stream is None:
                    stream = container.add_stream("libx264", rate=24)
                    stream.width, stream.height, stream.pix_fmt = img.shape[1], img.shape[0], "yuv420p"
                container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
                written += 1
                if written == frames:
                    break
            if stream is not None:
                container.mux(stream.encode())
        if written < frames:
            raise SystemExit(f"{source} has fewer than {start + frames} frames; use fewer --clips or --frames")
        clips.append(out)
    return clips


def track3d_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "track3d.cli", "-q", *args]


def ray_overhead(noop: int) -> dict:
    """Seconds: local Ray start, first task (a worker starts), no-op round trip, shutdown."""
    import ray

    t0 = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False, object_store_memory=256 * 1024 * 1024)
    t_init = time.perf_counter() - t0

    @ray.remote(num_cpus=1)
    def nothing():
        return None

    t0 = time.perf_counter()
    ray.get(nothing.remote())
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(noop):
        ray.get(nothing.remote())
    t_noop = (time.perf_counter() - t0) / noop
    ray.get([nothing.remote() for _ in range(int(ray.cluster_resources().get("CPU", 1)))])  # every worker up
    t0 = time.perf_counter()
    ray.get([nothing.remote() for _ in range(noop)])
    t_many = (time.perf_counter() - t0) / noop
    t0 = time.perf_counter()
    ray.shutdown()
    return {"init_s": t_init, "first_task_s": t_first, "noop_round_trip_ms": 1e3 * t_noop,
            "noop_submitted_together_ms": 1e3 * t_many, "shutdown_s": time.perf_counter() - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=Path, default=REPO.parent / "shared" / "videos")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--grid", type=int, default=20)
    parser.add_argument("--cpus-per-task", type=float, default=1.0)
    parser.add_argument("--noop", type=int, default=200, help="no-op tasks for the round trip")
    args = parser.parse_args()

    os.environ.setdefault("TRACK3D_OFFLINE", "1")
    videos = sorted(args.videos.glob("*.mp4"))
    if not videos:
        raise SystemExit(f"no .mp4 in {args.videos}")
    print(f"machine: {os.cpu_count()} CPUs; {args.clips} clips of {args.frames} frames, longer side {args.side} px, "
          f"--grid {args.grid}, from {', '.join(v.name for v in videos)}")
    with tempfile.TemporaryDirectory(prefix="t3d-bench-") as tmp:
        tmp = Path(tmp)
        (tmp / "clips").mkdir()
        clips = cut_clips(videos, args.clips, args.frames, args.side, tmp / "clips")
        common = ["--grid", str(args.grid)]

        t0 = time.perf_counter()
        per_clip = []
        for clip in clips:
            t1 = time.perf_counter()
            subprocess.run(track3d_command("reconstruct", str(clip), "--out", str(tmp / "seq" / clip.stem), *common),
                           check=True, capture_output=True)
            per_clip.append(time.perf_counter() - t1)
        sequential = time.perf_counter() - t0
        print(f"sequential: {sequential:.1f} s wall for {len(clips)} clips "
              f"({np.mean(per_clip):.1f} s per 'track3d reconstruct' process, min {min(per_clip):.1f}, "
              f"max {max(per_clip):.1f})")

        t0 = time.perf_counter()
        done = subprocess.run(track3d_command("batch", *map(str, clips), "--out", str(tmp / "batch"),
                                              "--cpus-per-task", f"{args.cpus_per_task:g}", *common),
                              capture_output=True, text=True)
        batch_wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"track3d batch failed ({done.returncode}): {done.stderr[-2000:]}")
        record = json.loads((tmp / "batch" / "batch.json").read_text())
        task_s = [e["seconds"] for e in record["inputs"]]
        workers = int((os.cpu_count() or 1) // args.cpus_per_task)
        print(f"batch: {batch_wall:.1f} s wall for {len(clips)} clips with {workers} workers of "
              f"{args.cpus_per_task:g} CPU (tasks: {sum(task_s):.1f} s in all, {np.mean(task_s):.1f} s each "
              f"inside the workers); speed-up over sequential x{sequential / batch_wall:.2f}")
        frames = {Path(e["out"]).name: (e["registered_frames"], e["frames"]) for e in record["inputs"]}
        seq = {c.stem: json.loads((tmp / "seq" / c.stem / "summary.json").read_text()) for c in clips}
        print("registered frames (sequential / batch): " + ", ".join(
            f"{name} {seq[name]['registered_frames']}/{reg}" for name, (reg, _) in sorted(frames.items())))

    overhead = ray_overhead(args.noop)
    print(f"Ray overhead: local start (ray.init) {overhead['init_s']:.2f} s, first task (new worker) "
          f"{overhead['first_task_s']:.2f} s, no-op round trip {overhead['noop_round_trip_ms']:.2f} ms "
          f"({overhead['noop_submitted_together_ms']:.2f} ms each when {args.noop} are submitted together), "
          f"shutdown {overhead['shutdown_s']:.2f} s")


if __name__ == "__main__":
    main()
