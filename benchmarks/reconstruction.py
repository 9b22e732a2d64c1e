"""recon.reconstruct on the held-out synthetic scenes, fed ground-truth tracks.

For every scene of the chosen tiers, the true 2D tracks get Gaussian noise
(``--noise`` px) and a share of their visibility flags flipped (``--flip``),
then :func:`recon.reconstruct` runs with the rendered depth maps (for the
moving points) and without them. Printed per scene and per tier:

* registered frames, camera ATE after Sim3 alignment (in % of the scene
  extent), mean relative rotation error between consecutive frames (degrees),
* static/moving separation F1 (moving = positive class),
* median 3D error of moving points with depth given (% of the scene extent),
* wall time.

    python benchmarks/reconstruction.py                      # all tiers, 5 scenes each
    python benchmarks/reconstruction.py --tiers moving_camera --scenes 2
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

import recon
from cotracker3 import synthetic
from recon.geometry import camera_centres, umeyama


def evaluate_scene(scene, noise: float, flip: float, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    tracks = scene.tracks + rng.normal(0, noise, scene.tracks.shape)
    vis = scene.visibility ^ (rng.random(scene.visibility.shape) < flip)
    W, H = scene.config.width, scene.config.height
    t0 = time.perf_counter()
    rec = recon.reconstruct(tracks, vis, (W, H), depth=scene.depth)
    seconds = time.perf_counter() - t0
    extent = scene.scene_extent
    cams = recon.camera_errors(rec.cam_from_world, scene.cam_from_world)
    truth, pred = scene.is_dynamic, rec.is_dynamic
    f1 = 2 * (truth & pred).sum() / max(truth.sum() + pred.sum(), 1)
    dyn_err = np.nan
    ok = rec.registered
    if ok.sum() >= 3 and rec.status.cameras == "solved":
        s, R, t = umeyama(camera_centres(rec.cam_from_world[ok]), camera_centres(scene.cam_from_world[ok]))
        world = s * rec.trajectories @ R.T + t
        both = truth & pred
        err = np.linalg.norm(world[:, both] - scene.trajectories[:, both], axis=-1)
        if np.isfinite(err).any():
            dyn_err = float(np.nanmedian(err)) / extent
    return {
        "cameras": rec.status.cameras,
        "registered": f"{rec.status.registered[0]}/{rec.status.registered[1]}",
        "ate_pct": 100 * cams["ate"] / extent,
        "rpe_deg": cams["rpe_rot_deg"],
        "f1": float(f1),
        "dyn_err_pct": 100 * dyn_err,
        "seconds": seconds,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiers", nargs="+", default=list(synthetic.EVAL_TIERS))
    ap.add_argument("--scenes", type=int, default=synthetic.EVAL_VIDEOS_PER_TIER)
    ap.add_argument("--points", type=int, default=600, help="ground-truth tracks per scene")
    ap.add_argument("--noise", type=float, default=0.5, help="Gaussian noise on the tracks, px")
    ap.add_argument("--flip", type=float, default=0.1, help="share of visibility flags flipped")
    args = ap.parse_args(argv)
    logging.getLogger("recon").setLevel(logging.WARNING)
    print(f"{args.points} tracks per scene, noise {args.noise} px, {100 * args.flip:.0f}% visibility flipped")
    head = f"{'scene':22s}{'cameras':>10}{'frames':>8}{'ATE %':>8}{'RPE deg':>9}{'F1':>7}{'dyn err %':>11}{'s':>7}"
    print(head)
    for tier in args.tiers:
        rows = []
        for scene in synthetic.eval_scenes([tier], args.scenes, num_points=args.points):
            r = evaluate_scene(scene, args.noise, args.flip)
            rows.append(r)
            print(f"{scene.name:22s}{r['cameras']:>10}{r['registered']:>8}{r['ate_pct']:>8.3f}{r['rpe_deg']:>9.3f}"
                  f"{r['f1']:>7.3f}{r['dyn_err_pct']:>11.3f}{r['seconds']:>7.1f}")
        mean = {k: np.nanmean([r[k] for r in rows]) for k in ("ate_pct", "rpe_deg", "f1", "dyn_err_pct", "seconds")}
        full = sum(r["registered"].split("/")[0] == r["registered"].split("/")[1] for r in rows)
        print(f"{tier + ' mean':22s}{'':>10}{f'{full}/{len(rows)} all':>8}{mean['ate_pct']:>8.3f}{mean['rpe_deg']:>9.3f}"
              f"{mean['f1']:>7.3f}{mean['dyn_err_pct']:>11.3f}{mean['seconds']:>7.1f}")


if __name__ == "__main__":
    main()
