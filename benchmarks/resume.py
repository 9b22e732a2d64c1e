"""``track3d reconstruct`` interrupted after tracking, then run again: how long each run takes.

The first run is stopped as Ctrl-C would stop it, right after the tracking stage
(``recon.reconstruct`` raises ``KeyboardInterrupt``); the second run, the same
command, reuses the kept tracks (``summary.json``'s ``reused``). A third run into a
fresh folder, from scratch, is the reference.

    python benchmarks/resume.py [--video V] [--end 30] [--grid 20]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import recon
from track3d.cli import main


def run(args: list[str]) -> tuple[int, float]:
    t0 = time.perf_counter()
    code = main(["-q", "reconstruct", *args])
    return code, time.perf_counter() - t0


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default="/work/shared/videos/apple.mp4")
    parser.add_argument("--end", type=int, default=30)
    parser.add_argument("--grid", type=int, default=20)
    a = parser.parse_args()
    real = recon.reconstruct
    with tempfile.TemporaryDirectory() as tmp:
        common = [a.video, "--end", str(a.end), "--grid", str(a.grid), "--no-viz"]

        def interrupt(*args, **kwargs):
            raise KeyboardInterrupt

        recon.reconstruct = interrupt
        code, first = run(common + ["--out", f"{tmp}/out"])
        recon.reconstruct = real
        print(f"first run, interrupted after tracking: exit {code}, {first:.1f} s")
        code, second = run(common + ["--out", f"{tmp}/out"])
        summary = json.loads(Path(f"{tmp}/out/summary.json").read_text())
        print(f"second run (same command): exit {code}, {second:.1f} s, reused {summary['reused']}")
        code, scratch = run(common + ["--out", f"{tmp}/fresh"])
        print(f"from scratch: exit {code}, {scratch:.1f} s")


if __name__ == "__main__":
    cli()
