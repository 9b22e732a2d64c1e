"""COLMAP's own pipeline on the held-out synthetic scenes, as a baseline.

For every scene of the chosen tier, the rendered frames go through COLMAP as
pycolmap runs it on any video: SIFT features (CPU), sequential matching,
incremental mapping, one camera shared by all frames. No tracks, no depth, no
ground-truth intrinsics. Printed per scene and as a mean over the tier:

* registered frames, camera ATE after Sim3 alignment (in % of the scene
  extent), mean relative rotation error between consecutive frames (degrees),
  COLMAP's 3D points and models,
* wall time of rendering the scene, of writing its frames as PNG, and of each
  COLMAP stage (extract, match, map).

    python benchmarks/colmap_sift.py                           # moving_camera, 2 scenes
    python benchmarks/colmap_sift.py --tier fast_motion --scenes 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

import recon
from recon.colmap import colmap_log_level
from cotracker3 import synthetic


def colmap_sift(frames: np.ndarray, *, camera_model: str = "SIMPLE_RADIAL", overlap: int = 10,
                num_threads: int = 2, workdir: str | None = None) -> dict:
    """Camera poses of a video from COLMAP's SIFT extraction, sequential matching and incremental mapping.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        camera_model: COLMAP camera model of the one camera shared by all frames.
        overlap: each frame is matched to the next ``overlap`` frames (and, as
            COLMAP's sequential matcher does by default, to quadratically spaced later ones).
        num_threads: CPU threads of every stage. With more than one, geometric
            verification and mapping depend on thread scheduling and weak videos can
            give different models run to run; 1 is repeatable.
        workdir: empty or new folder to keep the PNGs (``images/``), ``database.db``
            and the models (``sparse/``); default: a temporary folder, removed afterwards.

    Returns:
        ``cam_from_world``: ``(T, 4, 4)`` float64 OpenCV world-to-camera poses, NaN
        for frames COLMAP did not register; ``registered``: ``(T,)`` bool;
        ``seconds``: wall time of extraction + matching + mapping; ``stages``:
        ``{"extract", "match", "map"}`` seconds; ``write_seconds``: writing the PNGs
        (not in ``seconds``); ``num_points``: 3D points of the model with the most
        registered frames (the one returned); ``num_models``: models COLMAP made.

    Raises:
        ValueError: ``frames`` is not a ``(T, H, W, 3)`` uint8 array.
        FileExistsError: ``workdir`` already holds a ``database.db``.
    """
    import pycolmap

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
    with tempfile.TemporaryDirectory(prefix="colmap-sift-") as tmp:
        root = Path(workdir or tmp)
        images, database, sparse = root / "images", root / "database.db", root / "sparse"
        if database.exists():
            raise FileExistsError(f"{database} exists; pass an empty workdir (COLMAP would add to the old database)")
        images.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        for t, frame in enumerate(frames):
            cv2.imwrite(str(images / f"{t:06d}.png"), frame[..., ::-1])
        write_seconds = time.perf_counter() - t0

        reader = pycolmap.ImageReaderOptions()
        reader.camera_model = camera_model
        extraction = pycolmap.FeatureExtractionOptions()
        extraction.num_threads = num_threads
        matching = pycolmap.FeatureMatchingOptions()
        matching.num_threads = num_threads
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = overlap
        pairing.num_threads = num_threads
        mapping = pycolmap.IncrementalPipelineOptions()
        mapping.num_threads = num_threads
        mapping.random_seed = 0  # repeatable with one thread
        stages = {}
        with colmap_log_level(3):  # errors too: a failure shows as 0 models
            t0 = time.perf_counter()
            pycolmap.extract_features(database, images, camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader,
                                      extraction_options=extraction, device=pycolmap.Device.cpu)
            stages["extract"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            pycolmap.match_sequential(database, matching_options=matching, pairing_options=pairing,
                                      device=pycolmap.Device.cpu)
            stages["match"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            sparse.mkdir(exist_ok=True)
            models = pycolmap.incremental_mapping(database, images, sparse, mapping)
            stages["map"] = time.perf_counter() - t0

    cam_from_world = np.full((len(frames), 4, 4), np.nan)
    rec = max(models.values(), key=lambda r: r.num_reg_images(), default=None)
    for image in rec.images.values() if rec is not None else []:
        if image.has_pose:
            pose = np.eye(4)
            pose[:3] = image.cam_from_world().matrix()
            cam_from_world[int(Path(image.name).stem)] = pose
    return {
        "cam_from_world": cam_from_world,
        "registered": np.isfinite(cam_from_world).all(axis=(1, 2)),
        "seconds": sum(stages.values()),
        "stages": stages,
        "write_seconds": write_seconds,
        "num_points": rec.num_points3D() if rec is not None else 0,
        "num_models": len(models),
    }


def evaluate_scene(scene, overlap: int, num_threads: int) -> dict:
    out = colmap_sift(scene.frames, overlap=overlap, num_threads=num_threads)
    cams = recon.camera_errors(out["cam_from_world"], scene.cam_from_world)
    return {"registered": out["registered"].mean(), "frames": f"{out['registered'].sum()}/{len(scene.frames)}",
            "ate_pct": 100 * cams["ate"] / scene.scene_extent, "rpe_deg": cams["rpe_rot_deg"],
            "points": out["num_points"], "models": out["num_models"], "write": out["write_seconds"],
            **out["stages"], "colmap": out["seconds"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tier", default="moving_camera", choices=list(synthetic.EVAL_TIERS))
    ap.add_argument("--scenes", type=int, default=2)
    ap.add_argument("--overlap", type=int, default=10, help="sequential matching overlap, frames")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads of every COLMAP stage (1: repeatable)")
    args = ap.parse_args(argv)
    times = ("render", "write", "extract", "match", "map", "colmap")
    print(f"{'scene':22s}{'frames':>8}{'ATE %':>8}{'RPE deg':>9}{'points':>8}{'models':>7}"
          + "".join(f"{k + ' s':>10}" for k in times))
    rows = []
    t0 = time.perf_counter()
    for scene in synthetic.eval_scenes([args.tier], args.scenes, num_points=600):
        r = {"render": time.perf_counter() - t0, **evaluate_scene(scene, args.overlap, args.threads)}
        rows.append(r)
        print(f"{scene.name:22s}{r['frames']:>8}{r['ate_pct']:>8.3f}{r['rpe_deg']:>9.3f}{r['points']:>8}"
              f"{r['models']:>7}" + "".join(f"{r[k]:>10.2f}" for k in times))
        t0 = time.perf_counter()
    mean = {k: np.nanmean([r[k] for r in rows]) for k in ("registered", "ate_pct", "rpe_deg", *times)}
    print(f"{args.tier + ' mean':22s}{100 * mean['registered']:>7.0f}%{mean['ate_pct']:>8.3f}{mean['rpe_deg']:>9.3f}"
          f"{'':>15}" + "".join(f"{mean[k]:>10.2f}" for k in times))


if __name__ == "__main__":
    main()
