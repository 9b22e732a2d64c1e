"""recon.reconstruct on the held-out synthetic scenes, fed ground-truth tracks,
side by side with COLMAP's own pipeline on the same rendered frames.

For every scene of the chosen tiers, the true 2D tracks get Gaussian noise
(``--noise`` px) and a share of their visibility flags flipped (``--flip``),
then :func:`recon.reconstruct` runs with the rendered depth maps (used for the
moving points only). The tracks are sampled uniformly over the visible
surfaces by default, as a grid of query points samples a video
(``--dynamic-fraction 0.5`` gives the tracking evaluation set's mover-heavy
sampling). Printed per scene and per tier:

* registered frames, tracks too short to use, camera ATE after Sim3 alignment
  (in % of the scene extent), mean relative rotation error between
  consecutive frames (degrees),
* static/moving separation F1 over the used tracks (moving = positive class),
* median 3D error of moving points with depth given (% of the scene extent),
* wall time of ``reconstruct``;
* for COLMAP (``benchmarks/colmap_sift.py``: SIFT extraction, sequential
  matching, incremental mapping, from the frames alone): registered frames,
  ATE, RPE and wall time, both on the same CPU threads.

    python benchmarks/reconstruction.py                      # all tiers, 5 scenes each
    python benchmarks/reconstruction.py --tiers moving_camera --scenes 2 --no-colmap

Then, per tier and per kind of mover (``SyntheticScene.object_motion``: the
evaluation tiers' random rigid movers ``rigid``, and the ``movers_3d`` tier's
``slide`` (rigid, constant velocity), ``circle`` (rigid, accelerating, at
constant height), ``fly`` (rigid, accelerating in mid-air: no prior decides)
and ``cloth`` (non-rigid, waving in place)): the median 3D error of the moving
points (% of the extent; points moving in truth and in the reconstruction)
without depth, with ``affine_disparity`` depth (the rendered depth as inverse
depth with a random scale and shift per frame and 2% noise per pixel) and with
metric depth; the triangulated-mean fallback's error (:func:`recon.dynamic.hovering`)
without depth; without depth, the error and mean reliability of the rigid movers
whose scale a prior decided (``status.moving_groups``) and of the other points;
the points of movers taken as static (output as still points) and their error;
and per tier, the Spearman rank correlation between reliability and minus the
relative error (3D error over the true distance to the camera: what reliability
predicts, :func:`recon.dynamic.reliability_from_error`), over the moving points
and over every used track (static and moving), in each condition; and the same
over all tiers together.

    python benchmarks/reconstruction.py --tiers movers_3d --no-colmap --cost
    python benchmarks/reconstruction.py --tiers movers_3d --no-colmap --cost --no-split-test
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import time
import warnings

import numpy as np
from scipy.stats import spearmanr

import recon
from cotracker3 import synthetic
from recon.dynamic import hovering
from recon.geometry import align_poses

from colmap_sift import colmap_sift  # noqa: E402 (benchmarks/ is the script's folder)


DEPTH_CONDITIONS = ("none", "affine_disparity", "metric")
"""Depth given to recon.reconstruct in the moving-points table."""


def relative_disparity(depth: np.ndarray, rng: np.random.Generator, noise: float = 0.02) -> np.ndarray:
    """What a monocular depth network gives: inverse depth with a random scale and shift per frame
    and ``noise`` relative Gaussian noise per pixel (the sky, at infinite depth, gets the shift)."""
    inv = np.where(np.isfinite(depth) & (depth > 0), 1.0 / depth, 0.0)
    T = len(depth)
    level = np.median(inv[inv > 0]) if (inv > 0).any() else 1.0
    a = rng.uniform(0.5, 2.0, T)[:, None, None] / level
    b = rng.uniform(0.0, 0.5, T)[:, None, None]
    return (a * inv * (1 + noise * rng.standard_normal(depth.shape)) + b).astype(np.float32)


def _point_errors(rec, scene, relative: bool = False) -> np.ndarray:
    """``(N,)`` median over frames of each track's 3D error / extent (NaN where never placed); with
    ``relative``, of its error / its true distance to the camera (what reliability predicts)."""
    ok = rec.registered
    err = np.full(len(rec.used), np.nan)
    if ok.sum() < 3 or rec.status.cameras != "solved":
        return err
    s, R, t = align_poses(rec.cam_from_world[ok], scene.cam_from_world[ok])
    world = s * rec.trajectories @ R.T + t
    dist = np.linalg.norm(world - scene.trajectories, axis=-1)
    if relative:
        centres = -np.einsum("tji,tj->ti", scene.cam_from_world[:, :3, :3], scene.cam_from_world[:, :3, 3])
        dist = dist / np.linalg.norm(scene.trajectories - centres[:, None], axis=-1)
    else:
        dist = dist / scene.scene_extent
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(dist, axis=0)


def _decided(rec) -> np.ndarray:
    """``(N,)`` bool: the track belongs to a rigid mover whose scale a prior (or depth) decided."""
    decided = {g["group"] for g in rec.status.moving_groups if g["decided"]}
    return np.isin(rec.groups, list(decided)) & np.isin(rec.moving_kind, ["rigid", "depth"])


def evaluate_scene(scene, noise: float, flip: float, seed: int = 0, mapper: str = "incremental",
                   movers: bool = True, split_test: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    tracks = scene.tracks + rng.normal(0, noise, scene.tracks.shape)
    vis = scene.visibility ^ (rng.random(scene.visibility.shape) < flip)
    W, H = scene.config.width, scene.config.height
    t0 = time.perf_counter()
    rec = recon.reconstruct(tracks, vis, (W, H), depth=scene.depth,
                            options=recon.ReconOptions(mapper=mapper, split_test=split_test))
    seconds = time.perf_counter() - t0
    extent = scene.scene_extent
    cams = recon.camera_errors(rec.cam_from_world, scene.cam_from_world)
    # F1 over the tracks recon used (the rest are too short: listed as unused).
    truth, pred = scene.is_dynamic & rec.used, rec.is_dynamic
    f1 = 2 * (truth & pred).sum() / max(truth.sum() + pred.sum(), 1)
    # Orientations and centres: a pan then walk has nearly collinear centres, which alone leave the
    # rotation about their line free.
    err = _point_errors(rec, scene)
    both = truth & pred
    dyn_err = float(np.nanmedian(err[both])) if np.isfinite(err[both]).any() else np.nan
    out = {
        "cameras": rec.status.cameras,
        "registered": f"{rec.status.registered[0]}/{rec.status.registered[1]}",
        "unused": int((~rec.used).sum()),
        "ate_pct": 100 * cams["ate"] / extent,
        "rpe_deg": cams["rpe_rot_deg"],
        "f1": float(f1),
        "dyn_err_pct": 100 * dyn_err,
        "seconds": seconds,
    }
    if movers:
        out["movers"] = moving_points(scene, tracks, vis, rec, err, rng, mapper, split_test)
    return out


def moving_points(scene, tracks, vis, rec_metric, err_metric, rng, mapper, split_test=True) -> dict:
    """Per kind of mover and depth condition: the moving points' errors (and, without depth, the
    fallback's error and the reliabilities); per condition, the tracks' errors and reliabilities."""
    W, H = scene.config.width, scene.config.height
    kinds = scene.object_motion[scene.object_id]
    recs = {"metric": (rec_metric, err_metric)}
    for cond in ("none", "affine_disparity"):
        depth = None if cond == "none" else relative_disparity(scene.depth, rng)
        opts = recon.ReconOptions(mapper=mapper, depth_kind="metric" if cond == "none" else cond, split_test=split_test)
        rec = recon.reconstruct(tracks, vis, (W, H), depth=depth, options=opts)
        recs[cond] = (rec, _point_errors(rec, scene))
    rec0 = recs["none"][0]
    fallback = np.full(len(kinds), np.nan)
    if rec0.status.cameras == "solved":
        ok = rec0.registered
        s, R, t = align_poses(rec0.cam_from_world[ok], scene.cam_from_world[ok])
        mean = s * hovering(tracks, vis & rec0.used[None], rec0.K[0], rec0.cam_from_world) @ R.T + t
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            fallback = np.nanmedian(np.linalg.norm(mean - scene.trajectories, axis=-1), axis=0) / scene.scene_extent
    out = {"kinds": {}, "tracks": {}}
    for cond, (rec, err) in recs.items():
        rel_err = _point_errors(rec, scene, relative=True)
        use = rec.used & np.isfinite(rel_err)
        moving = use & scene.is_dynamic & rec.is_dynamic
        out["tracks"][cond] = {"all": (rel_err[use], rec.reliability[use]),
                               "moving": (rel_err[moving], rec.reliability[moving])}
    decided = _decided(rec0)
    for k in sorted(set(kinds[scene.is_dynamic])):
        row = {}
        for cond, (rec, err) in recs.items():
            sel = (kinds == k) & scene.is_dynamic & rec.is_dynamic
            row[cond] = err[sel]
            if cond == "none":
                row["fallback"] = fallback[sel]
                row["reliability"] = rec.reliability[sel]
                row["decided"] = decided[sel]
                # Moving in truth, taken as static: they are output as still points.
                row["as_static"] = err[(kinds == k) & scene.is_dynamic & rec.used & ~rec.is_dynamic]
        out["kinds"][k] = row
    return out


def print_movers(tier: str, rows: list[dict]) -> None:
    """The moving-points table of one tier (from the scenes' ``moving_points``)."""
    print(f"\n{tier}: moving points in 3D (median error, % of the extent; without depth also split into rigid "
          "movers whose scale was decided and the others, with their mean reliability)")
    print(f"{'kind':10s}{'points':>7}{'none':>8}{'aff.disp':>9}{'metric':>8}{'fallback':>9}"
          f"{'decided':>9}{'error':>7}{'reliab.':>8}{'others':>8}{'error':>7}{'reliab.':>8}{'static':>8}{'error':>7}")
    kinds = sorted({k for r in rows for k in r["kinds"]})
    for k in kinds:
        cat = {c: np.concatenate([r["kinds"][k][c] for r in rows if k in r["kinds"]])
               for c in (*DEPTH_CONDITIONS, "fallback", "reliability", "decided", "as_static")}
        med = {c: 100 * np.nanmedian(v) if np.isfinite(v).any() else np.nan for c, v in cat.items()}
        line = (f"{k:10s}{len(cat['none']):>7}{med['none']:>8.3f}{med['affine_disparity']:>9.3f}{med['metric']:>8.3f}"
                f"{med['fallback']:>9.3f}")
        for part in (cat["decided"], ~cat["decided"]):
            err, rel = cat["none"][part], cat["reliability"][part]
            e = 100 * np.nanmedian(err) if np.isfinite(err).any() else np.nan
            line += f"{int(part.sum()):>9}{e:>7.3f}{np.mean(rel) if len(rel) else np.nan:>8.2f}"
        print(line + f"{len(cat['as_static']):>8}{med['as_static']:>7.3f}")
    print_spearman(rows)


def print_spearman(rows: list[dict]) -> None:
    """Spearman correlation of reliability with minus the relative error, per depth condition, over
    the moving points and over all used tracks of the scenes' ``moving_points``."""
    for which, label in (("moving", "moving points"), ("all", "all used tracks")):
        rho = []
        for c in DEPTH_CONDITIONS:
            err = np.concatenate([r["tracks"][c][which][0] for r in rows])
            rel = np.concatenate([r["tracks"][c][which][1] for r in rows])
            rho.append(spearmanr(rel, -err).statistic if len(err) > 2 else np.nan)
        print(f"Spearman(reliability, -relative error), {label:16s}" + "".join(
            f"{c}: {v:.2f}  " for c, v in zip(DEPTH_CONDITIONS, rho)))


def _row(name: str, r: dict, c: dict | None) -> str:
    line = (f"{name:22s}{r['cameras']:>9}{r['registered']:>7}{r['unused']:>7}{r['ate_pct']:>8.3f}{r['rpe_deg']:>8.3f}"
            f"{r['f1']:>7.3f}{r['dyn_err_pct']:>9.3f}{r['seconds']:>7.2f}")
    if c is not None:
        line += f"  |{c['frames']:>7}{c['ate_pct']:>8.3f}{c['rpe_deg']:>8.3f}{c['seconds']:>7.2f}"
    return line


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiers", nargs="+", default=list(synthetic.RECON_TIERS))
    ap.add_argument("--scenes", type=int, default=synthetic.EVAL_VIDEOS_PER_TIER)
    ap.add_argument("--points", type=int, default=600, help="ground-truth tracks per scene")
    ap.add_argument("--noise", type=float, default=0.5, help="Gaussian noise on the tracks, px")
    ap.add_argument("--flip", type=float, default=0.1, help="share of visibility flags flipped")
    ap.add_argument("--dynamic-fraction", type=float, default=None,
                    help="share of tracks sampled on moving objects (default: the tier's own: surfaces sampled "
                         "uniformly, as a grid of query points does, except mover_dominated's 60%%)")
    ap.add_argument("--cost", nargs="*", type=int, default=[40, 80, 160, 320], metavar="FRAMES",
                    help="cost series: reconstruct one moving-camera scene with --cost-points tracks at these "
                         "frame counts (none: skip)")
    ap.add_argument("--cost-points", type=int, default=2200)
    ap.add_argument("--mapper", choices=("incremental", "global"), default="incremental",
                    help="COLMAP mapper of recon.reconstruct (ReconOptions.mapper)")
    ap.add_argument("--no-colmap", action="store_true", help="skip COLMAP's SIFT pipeline")
    ap.add_argument("--no-movers", action="store_true", help="skip the moving-points table (two more "
                    "reconstructions per scene: without depth and with affine_disparity depth)")
    ap.add_argument("--colmap-threads", type=int, default=2, help="CPU threads of COLMAP's pipeline")
    ap.add_argument("--no-split-test", dest="split_test", action="store_false",
                    help="ReconOptions(split_test=False): without the test that finds movers sliding along the "
                         "epipolar lines by their tracks' halves (on by default)")
    args = ap.parse_args(argv)
    logging.getLogger("recon").setLevel(logging.WARNING)
    warnings.simplefilter("ignore", RuntimeWarning)  # means over scenes where nothing was measured are NaN
    share = "tier's share" if args.dynamic_fraction is None else f"{100 * args.dynamic_fraction:.0f}%"
    print(f"mapper: {args.mapper}" + ("" if args.split_test else ", split test off"))
    print(f"{args.points} tracks per scene ({share} sampled on movers), noise "
          f"{args.noise} px, {100 * args.flip:.0f}% visibility flipped; ATE in % of the scene extent, RPE in "
          "degrees, dyn err: moving points with depth, % of the extent")
    head = (f"{'scene':22s}{'cameras':>9}{'frames':>7}{'unused':>7}{'ATE %':>8}{'RPE':>8}{'F1':>7}{'dyn err':>9}"
            f"{'s':>7}")
    if not args.no_colmap:
        head += f"  |{'COLMAP':>7}{'ATE %':>8}{'RPE':>8}{'s':>7}"
    print(head)
    keys = ("ate_pct", "rpe_deg", "f1", "dyn_err_pct", "seconds")
    mover_rows = {}
    for tier in args.tiers:
        rows, crows = [], []
        extra = {} if args.dynamic_fraction is None else {"dynamic_point_fraction": args.dynamic_fraction}
        scenes = synthetic.recon_scenes([tier], args.scenes, num_points=args.points, **extra)
        for scene in scenes:
            r = evaluate_scene(scene, args.noise, args.flip, mapper=args.mapper, movers=not args.no_movers,
                               split_test=args.split_test)
            c = None if args.no_colmap else evaluate_colmap(scene, args.colmap_threads)
            rows.append(r)
            crows += [c] if c else []
            print(_row(scene.name, r, c))
        mean = {k: np.nanmean([r[k] for r in rows]) for k in keys}
        full = sum(r["registered"].split("/")[0] == r["registered"].split("/")[1] for r in rows)
        mean.update(cameras="", registered=f"{full}/{len(rows)}", unused=round(np.mean([r["unused"] for r in rows])))
        cmean = None
        if crows:
            cmean = {k: np.nanmean([c[k] for c in crows]) for k in ("ate_pct", "rpe_deg", "seconds")}
            reg = sum(c["registered"] for c in crows) / sum(c["total"] for c in crows)
            cmean["frames"] = f"{100 * reg:.0f}%"
        print(_row(f"{tier} mean", mean, cmean))
        if not args.no_movers:
            mover_rows[tier] = [r["movers"] for r in rows]
    for tier, mrows in mover_rows.items():
        print_movers(tier, mrows)
    if len(mover_rows) > 1:
        print("\nall tiers together:")
        print_spearman([r for mrows in mover_rows.values() for r in mrows])
    if args.cost:
        cost_series(args.cost, args.cost_points, args.noise, args.flip, args.mapper)


def cost_series(frame_counts: list[int], points: int, noise: float, flip: float, mapper: str = "incremental") -> None:
    """Wall time of ``recon.reconstruct`` (and of its stages) as the video gets longer."""
    print(f"\ncost: one moving_camera scene (seed of moving_camera/00), {points} tracks; the camera's sweep "
          "grows with the length (x1 at 40 frames, x2 at 320)")
    print(f"{'frames':>7}{'tracks':>8}{'frames ok':>10}{'ATE %':>8}{'RPE':>8}{'sep s':>8}{'cam s':>8}{'total s':>9}"
          f"{'x prev':>8}")
    prev = None
    for T in frame_counts:
        cfg = dataclasses.replace(synthetic.RECON_TIERS["moving_camera"], num_frames=T, num_points=points,
                                  camera_speed=1 + math.log2(max(T, 40) / 40) / 3)
        scene = synthetic.render_scene(cfg, synthetic.recon_seed("moving_camera", 0), name=f"cost/{T}")
        rng = np.random.default_rng(0)
        tracks = scene.tracks + rng.normal(0, noise, scene.tracks.shape)
        vis = scene.visibility ^ (rng.random(scene.visibility.shape) < flip)
        t0 = time.perf_counter()
        rec = recon.reconstruct(tracks, vis, (scene.config.width, scene.config.height),
                                options=recon.ReconOptions(mapper=mapper))
        seconds = time.perf_counter() - t0
        cams = recon.camera_errors(rec.cam_from_world, scene.cam_from_world)
        ratio = "" if prev is None else f"{seconds / prev:.2f}"
        tm = rec.status.timings
        print(f"{T:>7}{points:>8}{rec.status.registered[0]:>6}/{T:<3}{100 * cams['ate'] / scene.scene_extent:>8.3f}"
              f"{cams['rpe_rot_deg']:>8.3f}{tm.get('separation', 0):>8.1f}{tm.get('cameras', 0):>8.1f}"
              f"{seconds:>9.1f}{ratio:>8}")
        prev = seconds


def evaluate_colmap(scene, threads: int) -> dict:
    out = colmap_sift(scene.frames, num_threads=threads)
    cams = recon.camera_errors(out["cam_from_world"], scene.cam_from_world)
    reg = int(out["registered"].sum())
    return {"frames": f"{reg}/{len(scene.frames)}", "registered": reg, "total": len(scene.frames),
            "ate_pct": 100 * cams["ate"] / scene.scene_extent, "rpe_deg": cams["rpe_rot_deg"],
            "seconds": out["seconds"]}


if __name__ == "__main__":
    main()
