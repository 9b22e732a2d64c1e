"""Offline predictor speed and memory, ours beside the reference implementation.

    python benchmarks/inference.py ../shared/videos/apple.mp4
    python benchmarks/inference.py VIDEO --cases 24x20 50x50 100x30 --dtypes float32 bfloat16 \\
        --reference PATH/TO/co-tracker
    python benchmarks/inference.py VIDEO --device cuda --cases 50x50 100x100 300x100 1000x100 \\
        --reference PATH/TO/co-tracker --max-memory 24G   # the GPU table of the issue

Each case ``FRAMESxGRID`` tracks a GRID x GRID grid from frame 0 through the
first FRAMES frames of the video (looped back and forth when it is shorter),
with the published offline configuration (frames resized to 384x512, 6
iterations), from the same weights: a seeded random initialisation saved to a
temporary file, since what is timed does not depend on the weight values
(``--recipe-weights``: the parity fixtures' recipe weights, whose outputs amplify
rounding far more, for the deviation of reduced precision).
Every run is a fresh subprocess, so its peak resident memory (``ru_maxrss``)
is its own; frames are decoded before the clock starts.

Printed per run: wall seconds, peak memory (and what the call added to the
resident memory it started with), point-frames per second, the
arithmetic done (multiply-adds counted by ``torch.utils.flop_counter`` on our
model, the same algorithm as the reference's) divided by the wall time, and
that rate as a fraction of this machine's dense matmul rate in the same
precision (4096x4096 on the CPU, 8192x8192 on a GPU, measured first), the chunk
plan the predictor chose (cotracker3.memory) and its memory estimate against the
measured peak. On a GPU (``--device cuda``) time is taken with CUDA
synchronisation and the peak is ``torch.cuda.max_memory_allocated`` minus what
was allocated before the call; the reference gets its frames on the GPU, ours
leaves them on the host (it moves them as it encodes, inside the timed call);
``--no-tf32`` turns TF32 off for matmuls and cuDNN (parity conditions). Given
``--reference``, a checkout of
facebookresearch/co-tracker, each case also runs the reference predictor and
prints our speed-up, our peak memory as a fraction of its peak, and the
maximum and median distance between the two sets of tracks; bfloat16 runs are
compared with our float32 run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ITERS = 6
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# --------------------------------------------------------------------------- worker (one run per process)


def load_frames(video: str, frames: int) -> np.ndarray:
    """The first ``frames`` frames, looping back and forth over the video if it is shorter.

    Decoded with track3d's reader (PyAV), or with OpenCV where PyAV is missing (the GPU
    machines); a ``.npy`` file of ``(T, H, W, 3)`` uint8 RGB frames is read as it is."""
    if video.endswith(".npy"):
        clip = np.load(video)
    else:
        try:
            from track3d.video import read_video

            clip, _ = read_video(video)
        except ImportError:
            clip = _read_with_opencv(video)
    order = np.concatenate([np.arange(len(clip)), np.arange(len(clip) - 2, 0, -1)])
    return clip[np.resize(order, frames)]


def _read_with_opencv(video: str) -> np.ndarray:
    import cv2

    cap = cv2.VideoCapture(video)
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    if not frames:
        raise SystemExit(f"cannot read {video}")
    return np.stack(frames)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _start(device: str) -> float:
    """Memory before the call: resident MiB on the CPU, allocated MiB on a GPU (peak reset)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    return resident_mb()


def run_ours(video: torch.Tensor, grid: int, weights: str, dtype: torch.dtype, device: str, chunks=None,
             max_memory=None):
    import cotracker3

    model = cotracker3.build_model("cotracker3-offline")
    cotracker3.load_checkpoint(model, weights)
    pred = cotracker3.Predictor(model.eval().to(device), iters=ITERS, dtype=dtype, chunks=chunks,
                                max_memory=max_memory)
    # The video stays on the host: the predictor moves frames to the device as it encodes them
    # (the transfer is inside the timed call).
    before = _start(device)
    t0 = time.perf_counter()
    out = pred(video, grid_size=grid)
    _sync(device)
    wall = time.perf_counter() - t0
    plan = pred.last_plan
    return wall, out.tracks[0].cpu().numpy(), out.visibility[0].cpu().numpy(), before, plan


def run_reference(video: torch.Tensor, grid: int, weights: str, reference: str, device: str):
    sys.path.insert(0, reference)
    from cotracker.predictor import CoTrackerPredictor

    pred = CoTrackerPredictor(checkpoint=weights, offline=True, window_len=60).to(device)
    video = video.float().to(device)
    before = _start(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        tracks, vis = pred(video, grid_size=grid)
    _sync(device)
    return time.perf_counter() - t0, tracks[0].cpu().numpy(), vis[0].cpu().numpy(), before, None


def resident_mb() -> float:
    """Current resident set size of this process in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(args) -> None:
    if args.no_tf32:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    frames = load_frames(args.video, args.frames)
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)[None]
    if args.worker == "reference":
        wall, tracks, vis, before, plan = run_reference(video, args.grid, args.weights, args.reference, args.device)
    else:
        chunks = tuple(int(c) for c in args.chunks.split(",")) if args.chunks else None
        wall, tracks, vis, before, plan = run_ours(video, args.grid, args.weights, DTYPES[args.dtype], args.device,
                                                   chunks, parse_bytes(args.max_memory))
    np.savez(args.save, tracks=tracks, visibility=vis)
    if args.device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall_s": wall, "peak_mb": peak, "before_mb": before, "frame_size": list(frames.shape[1:3]),
                      "estimate_mb": None if plan is None else plan.estimate / 2**20,
                      "plan": None if plan is None else plan.describe()}))


def parse_bytes(text: str | None) -> int | None:
    """``"24G"``, ``"512M"`` or a number of bytes; None stays None."""
    from cotracker3.memory import parse_size

    return parse_size(text, "--max-memory")


# --------------------------------------------------------------------------- driver


def matmul_rate(dtype: torch.dtype, device: str = "cpu", repeats: int = 5) -> float:
    """Dense square matmul rate of the device in GFLOP/s (best of ``repeats``; 4096 on a CPU,
    8192 on a GPU, TF32 as the process has it)."""
    n = 8192 if device == "cuda" else 4096
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    a @ b
    best = min(_timed(lambda: a @ b, device) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn, device: str = "cpu") -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def model_flops(frames: int, points: int) -> float:
    """Floating-point operations of one offline predictor call (2 per multiply-add).

    Counted on small inputs at the published resolution and extrapolated: an
    encoder cost per frame, a refinement cost per frame and iteration that does
    not depend on the points (the virtual tracks), and one per point, frame and
    iteration (attention across time, quadratic in frames, is under 2% here).
    """
    from torch.utils.flop_counter import FlopCounterMode

    import cotracker3

    model = cotracker3.build_model("cotracker3-offline").eval()
    H, W = model.model_resolution

    def count(t: int, n: int, iters: int) -> int:
        video = torch.zeros(1, t, 3, H, W)
        queries = torch.zeros(1, n, 3)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(video, queries, iters)
        return counter.get_total_flops()

    base = count(2, 8, 1)
    per_point = (count(2, 16, 1) - base) / (2 * 8)  # per point, frame and iteration
    per_frame_iter = (count(2, 8, 2) - base - 2 * 8 * per_point) / 2
    per_frame = (base - 2 * per_frame_iter - 2 * 8 * per_point) / 2
    return frames * per_frame + frames * ITERS * (per_frame_iter + points * per_point)


def spawn(kind: str, args, case: tuple[int, int], dtype: str, weights: str, save: str) -> dict:
    frames, grid = case
    cmd = [sys.executable, __file__, args.video, "--worker", kind, "--frames", str(frames), "--grid", str(grid),
           "--dtype", dtype, "--weights", weights, "--save", save, "--device", args.device]
    if args.reference:
        cmd += ["--reference", args.reference]
    for flag in ("chunks", "max_memory"):
        if getattr(args, flag):
            cmd += ["--" + flag.replace("_", "-"), getattr(args, flag)]
    if args.no_tf32:
        cmd.append("--no-tf32")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        print(f"{kind} {dtype} {frames}x{grid}^2 failed:\n{proc.stderr[-2000:]}", flush=True)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def added(run: dict) -> float:
    """MiB the tracking call added to the process's peak: its peak minus the resident memory
    just before the call (interpreter, libraries, weights and decoded frames are the same on
    both sides and not counted)."""
    return max(run["peak_mb"] - run["before_mb"], 0.0)


def deviation(a: str, b: str) -> tuple[float, float]:
    """Maximum and median distance in pixels between two runs' tracks."""
    d = np.linalg.norm(np.load(a)["tracks"] - np.load(b)["tracks"], axis=-1)
    return float(d.max()), float(np.median(d))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video")
    p.add_argument("--cases", nargs="+", default=["24x20", "50x50", "100x30"],
                   help="FRAMESxGRID cases (default: 24x20 50x50 100x30)")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=list(DTYPES))
    p.add_argument("--reference", default=None, help="a checkout of facebookresearch/co-tracker to run beside ours")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where both sides run (default: cpu)")
    p.add_argument("--chunks", default=None, help="fixed chunk sizes POINT_FRAMES,TOKENS,ENCODER_FRAMES for "
                   "our runs (default: chosen from the memory budget)")
    p.add_argument("--max-memory", default=None, help="memory budget of our runs, e.g. 24G (default: free memory)")
    p.add_argument("--recipe-weights", action="store_true",
                   help="the parity fixtures' recipe weights (tests/recipe_weights.py) instead of the model's seeded "
                        "initialisation: outputs that amplify rounding, a harder test of reduced precision")
    p.add_argument("--no-tf32", action="store_true", help="TF32 off for matmuls and cuDNN (GPU parity conditions)")
    # worker mode (internal)
    p.add_argument("--worker", choices=["ours", "reference"], help=argparse.SUPPRESS)
    p.add_argument("--frames", type=int, help=argparse.SUPPRESS)
    p.add_argument("--grid", type=int, help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    p.add_argument("--save", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.worker:
        return worker(args)

    import cotracker3

    cases = [tuple(int(v) for v in c.lower().split("x")) for c in args.cases]
    if args.no_tf32:
        torch.backends.cuda.matmul.allow_tf32 = False
    rates = {d: matmul_rate(DTYPES[d], args.device) for d in args.dtypes}
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"{where}; dense matmul: " + ", ".join(f"{d} {r:.0f} GFLOP/s" for d, r in rates.items()))
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        weights = f"{tmp}/weights.pth"
        model = cotracker3.build_model("cotracker3-offline")
        if args.recipe_weights:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from recipe_weights import recipe_parameters

            model.load_state_dict(recipe_parameters("offline"), strict=False)
        torch.save(model.state_dict(), weights)
        head = (f"{'case':>10} {'run':>18} {'wall s':>8} {'peak MB':>8} {'added MB':>8} {'pt-fr/s':>8} "
                f"{'GFLOP/s':>8} {'% matmul':>8} {'speed-up':>8} {'mem frac':>8} {'add frac':>8} {'max dev':>8} "
                f"{'med dev':>8} {'est/add':>8}")
        print(head)
        arithmetic = {case: model_flops(case[0], case[1] ** 2) for case in cases}
        for frames, grid in cases:
            flops = arithmetic[frames, grid]
            label = f"{frames}x{grid}^2"
            ref = None
            if args.reference:
                ref = spawn("reference", args, (frames, grid), "float32", weights, f"{tmp}/ref.npz")
                if ref:
                    print(f"{label:>10} {'reference float32':>18} {ref['wall_s']:8.2f} {ref['peak_mb']:8.0f} "
                          f"{added(ref):8.0f} {frames * grid * grid / ref['wall_s']:8.0f} "
                          f"{flops / ref['wall_s'] / 1e9:8.1f} "
                          f"{100 * flops / ref['wall_s'] / 1e9 / rates.get('float32', float('nan')):8.1f}", flush=True)
            for dtype in args.dtypes:
                out = spawn("ours", args, (frames, grid), dtype, weights, f"{tmp}/{dtype}.npz")
                if out is None:
                    continue
                gflops = flops / out["wall_s"] / 1e9
                row = (f"{label:>10} {'ours ' + dtype:>18} {out['wall_s']:8.2f} {out['peak_mb']:8.0f} "
                       f"{added(out):8.0f} {frames * grid * grid / out['wall_s']:8.0f} {gflops:8.1f} "
                       f"{100 * gflops / rates[dtype]:8.1f}")
                if ref:
                    row += (f" {ref['wall_s'] / out['wall_s']:8.2f} {out['peak_mb'] / ref['peak_mb']:8.2f}"
                            f" {added(out) / max(added(ref), 1e-9):8.2f}")
                else:
                    row += f" {'-':>8} {'-':>8} {'-':>8}"
                against = f"{tmp}/ref.npz" if ref and dtype == "float32" else (
                    f"{tmp}/float32.npz" if dtype != "float32" and "float32" in args.dtypes else None)
                if against and os.path.exists(against):
                    row += " {:8.4f} {:8.4f}".format(*deviation(f"{tmp}/{dtype}.npz", against))
                else:
                    row += f" {'-':>8} {'-':>8}"
                row += f" {out['estimate_mb'] / max(added(out), 1e-9):8.2f}"
                print(row, flush=True)
                print(f"{'':>10} plan: {out['plan']}", flush=True)
        print("arithmetic per case (counted on our model): "
              + ", ".join(f"{f}x{g}^2 {v / 1e12:.1f} TFLOP" for (f, g), v in arithmetic.items()))


if __name__ == "__main__":
    main()
