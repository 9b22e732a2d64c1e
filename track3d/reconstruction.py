"""The main job: a video in, cameras, a static point cloud and 3D trajectories out.

``track3d.reconstruct("video.mp4", grid=50)`` tracks a grid of points
(:func:`track3d.track`), lifts the tracks into 3D (:func:`recon.reconstruct`)
and returns a :class:`Result`; ``Result.save(dir)`` writes the result folder,
``track3d.load(dir)`` reads it back. ``track3d reconstruct VIDEO --out DIR``
is the same as a command.

The result folder:

===================== ==========================================================
``reconstruction.npz`` every array (table in :class:`Result`), frame size and fps
``colmap/``            the COLMAP model (cameras, images, points3D), when solved
``points.ply``         the static point cloud, coloured from the video, with
                       Open3D's statistical outliers removed and normals (if any)
``dynamic.glb``        the moving points, one point cloud node per frame (if any;
                       only those with reliability >= ``min_reliability``)
``recording.rrd``      a Rerun recording on a ``frame`` timeline (moving points
                       coloured by reliability, the same ones shown)
``overlay.mp4``        the video with the tracks drawn (longer side at most 1280 px)
``summary.json``       timings and peak memory per stage (each stage's own peak
                       on Linux: ``peak_memory_per_stage``), counts, warnings,
                       ``orientation``, ``fps_variable``, ``mode``, and
                       ``reused``: the stages a resumed run took from disk
===================== ==========================================================

It is written into a temporary folder beside ``DIR`` and renamed at the end:
an interrupted run never leaves a folder that looks complete. Finished stages
(the tracks first) are kept meanwhile in ``.DIR.partial`` beside it
(:class:`StageCache`): run the same command again after a failure or Ctrl-C and
they are reused; a changed option invalidates the stages it affects.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from track3d import io, video as video_io
from track3d.depth import DEFAULT_MODEL as DEFAULT_DEPTH_MODEL
from track3d.errors import OutputError, ResultError, Track3DError
from track3d.tracking import FALLBACK_NOTICE, TrackOptions, Tracks, _opt, track, tracker_or_embedded

logger = logging.getLogger(__name__)

DEPTH_KINDS = ("metric", "affine", "affine_disparity")
"""What depth maps can hold (``recon.ReconOptions.depth_kind``)."""

RESULT_FILE = "reconstruction.npz"
SUMMARY_FILE = "summary.json"
FORMAT_VERSION = 1


@dataclass
class ReconstructOptions(TrackOptions):
    """How to reconstruct a video: the tracking options plus these. Every field
    is also a ``track3d reconstruct`` option."""

    grid: int = _opt(30, "points per side of a regular grid of queries at --grid-frame (ignored with --queries)")
    intrinsics: str | None = _opt(
        None, "known camera intrinsics, kept fixed: 'fx,fy,cx,cy' in pixels of the source video ((0,0) the "
        "centre of the top-left pixel), or a .npy/.txt file holding the 3x3 matrix; default: the focal "
        "length is estimated")
    depth: str | None = _opt(
        None, "folder of per-frame depth maps, one per tracked frame or per source frame, in name order, "
        "each covering the whole frame at any resolution (all maps the same): .npy float arrays or 16-bit "
        ".png; what they hold is --depth-kind; used to place the moving points")
    depth_kind: str = _opt(
        "metric", "what the --depth maps hold: 'metric' (camera z up to one scale for the whole video: an "
        "RGB-D sensor), 'affine' (z up to a scale and shift per frame) or 'affine_disparity' (1/z up to a "
        "scale and shift per frame: what monocular depth networks output); the relative kinds are fitted "
        "frame by frame to the static points. --depth-model sets it itself", choices=DEPTH_KINDS)
    depth_model: str | None = _opt(
        None, "compute the depth maps with this monocular depth network instead of --depth: 'default' "
        f"({DEFAULT_DEPTH_MODEL}), another Hugging Face name, or a local folder (save_pretrained); "
        "needs pip install 'track3d[depth]'; downloaded into the Hugging Face cache on first use "
        "(HF_HUB_OFFLINE=1: cache only); its relative inverse depth is used as 'affine_disparity'")
    min_track_length: int = _opt(3, "tracks visible in fewer frames are not reconstructed")
    mapper: str = _opt("incremental", "COLMAP mapper for the cameras: 'incremental' or 'global' (COLMAP 4's "
                       "global mapper); see the README's measurements", choices=("incremental", "global"))
    tail: int = _opt(10, "frames of trajectory tail drawn behind moving points in the Rerun recording")
    min_reliability: float = _opt(
        0.0, "hide moving points whose reliability (0..1, how well their 3D is determined) is below this in "
        "recording.rrd and dynamic.glb; reconstruction.npz keeps every point")
    threads: int | None = _opt(None, "CPU threads of COLMAP's mapper (None: all cores); 'track3d batch' sets it to "
                               "each task's CPU share", cli=False)


@dataclass
class Result:
    """Cameras, static points and 3D trajectories of a video.

    Arrays (all in ``reconstruction.npz`` under these names):

    ================= =========== ======= ======================================
    name              shape       dtype   meaning
    ================= =========== ======= ======================================
    ``tracks``        (T, N, 2)   float32 pixels (x, y) of the source video,
                                          (0, 0) the centre of the top-left pixel
    ``visibility``    (T, N)      bool    the point is seen in the frame
    ``confidence``    (T, N)      float32 tracking confidence in [0, 1]
    ``queries``       (N, 3)      float32 (t, x, y) each track started from
    ``frame_indices`` (T,)        int64   index of each tracked frame in the video
    ``cam_from_world``(T, 4, 4)   float64 OpenCV poses (x right, y down, z
                                          forward), NaN where not solved
    ``K``             (T, 3, 3)   float64 intrinsics in the same pixels (NaN: unknown)
    ``registered``    (T,)        bool    the frame has a pose
    ``trajectories``  (T, N, 3)   float64 world position of every track per frame,
                                          NaN where unknown (static: constant)
    ``is_dynamic``    (N,)        bool    the point moves on its own
    ``used``          (N,)        bool    the track was long enough to use
    ``reliability``   (N,)        float64 [0, 1], how well its 3D is determined
    ``points``        (M, 3)      float64 the static point cloud (world units)
    ``point_tracks``  (M,)        int64   the track of each static point
    ``colors``        (N, 3)      uint8   each track's colour in the video
    ``camera_kind``   (T,)        str     how each frame's camera was solved:
                                          full, rotation (rotation-only, centre
                                          held fixed), identity (still), none
    ``groups``        (N,)        int64   rigid motion group: 0 the static scene,
                                          1, 2, ... rigid movers, -1 none
    ``moving_kind``   (N,)        str     how each moving point was placed in
                                          3D: rigid, depth, carried, line,
                                          hovering ("" for the others; see
                                          ``recon.dynamic``)
    ================= =========== ======= ======================================

    World units are those of the reconstruction (arbitrary scale without
    depth maps or known geometry). ``summary`` holds the timings, counts and
    warnings; ``source`` the video path.
    """

    arrays: dict[str, np.ndarray]
    fps: float
    frame_size: tuple[int, int]
    summary: dict
    source: str = ""
    colmap_model: object = None

    def __getattr__(self, name: str):
        arrays = self.__dict__.get("arrays", {})
        if name in arrays:
            return arrays[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @property
    def static_colors(self) -> np.ndarray:
        """``(M, 3)`` uint8 colours of the static points."""
        return self.arrays["colors"][self.arrays["point_tracks"]]

    def shown_moving(self, min_reliability: float | None = None) -> np.ndarray:
        """``(N,)`` bool: the moving tracks shown in the recording, ``dynamic.glb`` and
        :meth:`point_cloud`: those whose ``reliability`` is at least ``min_reliability``
        (default: the ``min_reliability`` option the result was made with, else 0)."""
        threshold = self._min_reliability(min_reliability)
        reliability = self.arrays.get("reliability")
        if reliability is None or threshold <= 0:
            return self.is_dynamic.copy()
        return self.is_dynamic & (np.nan_to_num(np.asarray(reliability, np.float64)) >= threshold)

    def _min_reliability(self, value: float | None) -> float:
        if value is None:
            value = self.summary.get("options", {}).get("min_reliability", 0.0)
        value = float(value)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"min_reliability must be in [0, 1], got {value}")
        return value

    def point_cloud(self, frame: int | None = None, *, clean: bool = False, min_reliability: float | None = None):
        """An Open3D point cloud: the static points, plus the moving points at ``frame`` if given.

        Args:
            frame: index of a tracked frame (0..T-1), or None for the static cloud only.
            clean: remove statistical outliers (Open3D) from the static points.
            min_reliability: leave out moving points less reliable than this
                (default: the result's ``min_reliability`` option; see :meth:`shown_moving`).
        """
        from viz.clouds import point_cloud

        points, colors = self.points, self.static_colors
        if frame is not None:
            T = len(self.tracks)
            if not -T <= frame < T:
                raise IndexError(f"frame {frame} is out of range for {T} tracked frames")
            moving = self.shown_moving(min_reliability) & np.isfinite(self.trajectories[frame]).all(-1)
            points = np.concatenate([points, self.trajectories[frame, moving]])
            colors = np.concatenate([colors, np.broadcast_to(np.array([230, 60, 40], np.uint8), (moving.sum(), 3))])
        return point_cloud(points, colors, remove_outliers=clean)

    def to_rerun(self, path: str | Path | None = None, *, frames: bool = True,
                 min_reliability: float | None = None) -> Path:
        """Write a Rerun recording (``.rrd``); open it with ``rerun FILE`` or ``track3d view``.

        Moving points are coloured by their reliability (red 0, amber 0.5, green 1;
        :func:`viz.recording.write_recording`).

        Args:
            path: where to write it (default: a new temporary file).
            frames: include the video frames (read again from :attr:`source`).
            min_reliability: hide moving points less reliable than this (default:
                the result's ``min_reliability`` option; see :meth:`shown_moving`).
        """
        from viz.recording import write_recording

        if path is None:
            path = Path(tempfile.mkdtemp(prefix="track3d-")) / "recording.rrd"
        return write_recording(
            path, tracks=self.tracks, visibility=self.visibility, is_dynamic=self.is_dynamic,
            cam_from_world=self.cam_from_world, K=self.K, points=self.points, point_colors=self.static_colors,
            trajectories=self.trajectories, frame_size=self.frame_size, fps=self.fps,
            frames=self._frames() if frames else None, tail=int(self.summary.get("options", {}).get("tail", 10)),
            camera_kind=self.arrays.get("camera_kind"),
            unsolved={int(t): r for t, r in self.summary.get("unsolved_frames", {}).items()},
            reliability=self.arrays.get("reliability"), min_reliability=self._min_reliability(min_reliability),
            timestamps=self.arrays.get("timestamps"))

    def export(self, path: str | Path, *, min_reliability: float | None = None) -> Path:
        """Write one part of the result, chosen by the extension of ``path``.

        ``.npz`` the arrays (every point); ``.ply`` the static cloud; ``.glb`` the
        moving points per frame; ``.rrd`` a Rerun recording; ``.json`` the summary;
        ``.mp4`` the video with tracks drawn; a path without extension: the COLMAP
        model. ``min_reliability`` (default: the result's option) hides the less
        reliable moving points in ``.glb`` and ``.rrd`` (:meth:`shown_moving`).
        """
        from viz import clouds

        path = Path(path)
        ext = path.suffix.lower()
        path.parent.mkdir(parents=True, exist_ok=True)
        if ext == ".npz":
            return _save_arrays(path, self)
        if ext == ".ply":
            return clouds.write_ply(path, self.points, self.static_colors)
        if ext == ".glb":
            return clouds.write_dynamic_glb(path, self.trajectories, self.shown_moving(min_reliability),
                                            self.colors, frame_indices=self.frame_indices)
        if ext == ".rrd":
            return self.to_rerun(path, min_reliability=min_reliability)
        if ext == ".json":
            return io.write_json_atomic(path, self.summary)
        if ext == ".mp4":
            from track3d.tracking import write_overlay

            self._frames()  # Checks that the video is there.
            idx = self.frame_indices
            return write_overlay(path, self.source, self.tracks, self.visibility, self.fps,
                                 frame_size=self.frame_size, start=int(idx[0]), end=int(idx[-1]) + 1,
                                 stride=int(idx[1] - idx[0]) if len(idx) > 1 else 1,
                                 ignore_rotation=bool(self.summary.get("options", {}).get("ignore_rotation")))
        if ext == "":
            return self._export_colmap(path)
        raise OutputError(f"cannot export to {path.name}: use .npz, .ply, .glb, .rrd, .json, .mp4 or a folder "
                          "(COLMAP model)")

    def save(self, path: str | Path, *, overwrite: bool = False, viz: bool = True,
             progress: Callable[[str, int, int], None] | None = None) -> Path:
        """Write the result folder (see the module documentation), atomically.

        Args:
            path: the folder; it must not exist unless ``overwrite``.
            viz: also write ``recording.rrd`` and ``overlay.mp4`` (they read the video again).
            progress: optional ``callable(stage, done, total)``.

        Raises:
            OutputError: ``path`` exists (and not ``overwrite``) or is not a folder.
        """
        notify = progress or (lambda *a: None)
        stages = ["arrays", "colmap", "points", "dynamic"] + (["recording", "overlay"] if viz else [])
        timings = self.summary.setdefault("timings", {}).setdefault("write", {})
        write_peak = StagePeak()
        with io.atomic_output_dir(path, overwrite=overwrite) as tmp:
            for done, stage in enumerate(stages):
                notify("write", done, len(stages))
                t0 = time.perf_counter()
                if stage == "arrays":
                    _save_arrays(tmp / RESULT_FILE, self)
                elif stage == "colmap" and self.colmap_model is not None:
                    self._export_colmap(tmp / "colmap")
                elif stage == "points" and len(self.points):
                    from viz.clouds import write_ply

                    write_ply(tmp / "points.ply", self.points, self.static_colors, remove_outliers=True, normals=True)
                elif stage == "dynamic" and np.isfinite(self.trajectories[:, self.shown_moving()]).any():
                    self.export(tmp / "dynamic.glb")
                elif stage == "recording":
                    self.to_rerun(tmp / "recording.rrd")
                elif stage == "overlay":
                    self.export(tmp / "overlay.mp4")
                timings[stage] = round(time.perf_counter() - t0, 3)
            notify("write", len(stages), len(stages))
            self.summary.setdefault("peak_memory_mb", {})["write"] = round(write_peak.stop(), 1)
            self.summary["files"] = sorted(p.name for p in tmp.iterdir()) + [SUMMARY_FILE]
            io.write_json_atomic(tmp / SUMMARY_FILE, self.summary)
        return Path(path)

    def _export_colmap(self, path: Path) -> Path:
        if self.colmap_model is None:
            raise OutputError("no COLMAP model: the cameras were not solved "
                              f"({self.summary.get('cameras', 'unknown')})")
        from recon.colmap import write_model

        return write_model(self.colmap_model, path)

    def _frames(self):
        if not self.source or not Path(self.source).exists():
            raise ResultError(f"the video {self.source!r} is needed to draw frames but cannot be found")
        idx = self.frame_indices
        stride = int(idx[1] - idx[0]) if len(idx) > 1 else 1
        ignore = bool(self.summary.get("options", {}).get("ignore_rotation", False))
        return video_io.iter_frames(self.source, start=int(idx[0]), end=int(idx[-1]) + 1, stride=stride,
                                    ignore_rotation=ignore)


def _save_arrays(path: Path, result: Result) -> Path:
    return io.save_tracks(path, fps=result.fps, frame_size=result.frame_size,
                          format_version=np.int64(FORMAT_VERSION),
                          **{k: v for k, v in result.arrays.items()})


def load(path: str | Path) -> Result:
    """Read a result folder written by :meth:`Result.save` (or ``track3d reconstruct``).

    Raises:
        ResultError: not a result folder, or a file in it is damaged.
    """
    path = Path(path)
    if not (path / RESULT_FILE).is_file():
        raise ResultError(f"{path} is not a track3d result folder (no {RESULT_FILE})")
    arrays = io.load_tracks(path / RESULT_FILE)
    missing = [k for k in ("cam_from_world", "trajectories", "is_dynamic", "points", "point_tracks", "colors")
               if k not in arrays]
    if missing:
        raise ResultError(f"{path / RESULT_FILE} lacks {', '.join(missing)}: not a reconstruction result")
    fps, frame_size = float(arrays.pop("fps")), tuple(int(v) for v in arrays.pop("frame_size"))
    arrays.pop("format_version", None)
    try:
        summary = json.loads((path / SUMMARY_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ResultError(f"cannot read {path / SUMMARY_FILE}: {exc}") from None
    model = None
    if (path / "colmap").is_dir():
        import pycolmap

        model = pycolmap.Reconstruction(str(path / "colmap"))
    return Result(arrays=arrays, fps=fps, frame_size=frame_size, summary=summary,
                  source=summary.get("source", ""), colmap_model=model)


def read_intrinsics(spec: str) -> np.ndarray:
    """``'fx,fy,cx,cy'`` or a ``.npy`` / text file holding a 3x3 matrix -> ``(3, 3)``."""
    path = Path(spec)
    try:
        if path.suffix.lower() == ".npy" and path.is_file():
            K = np.load(path, allow_pickle=False)
        elif path.is_file():
            K = np.loadtxt(path, delimiter=None if "," not in path.read_text() else ",")
        else:
            fx, fy, cx, cy = (float(v) for v in spec.split(","))
            K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    except (ValueError, OSError) as exc:
        raise Track3DError(f"--intrinsics must be 'fx,fy,cx,cy' or a file with a 3x3 matrix; "
                           f"cannot read {spec!r}: {exc}") from None
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise Track3DError(f"--intrinsics must be a 3x3 camera matrix with positive focal lengths, got {K.tolist()}")
    return K


def read_depth_folder(folder: str | Path, frame_indices: np.ndarray, n_source: int | None,
                      frame_size: tuple[int, int] | None = None) -> np.ndarray:
    """Per-frame depth maps ``(T, h, w)`` float32 for the tracked frames.

    The folder holds one map per tracked frame, or one per source frame (then
    the tracked ones are picked), in natural name order: ``.npy`` arrays or
    16-bit ``.png`` images. Each map covers the whole frame at any resolution
    (all maps the same, at least 2x2): :mod:`recon` samples it at the matching
    position. Zero, NaN or inf mean unknown. ``frame_size`` (the video's
    ``(W, H)``) is only named in messages.
    """
    import cv2

    folder = Path(folder)
    if not folder.is_dir():
        raise Track3DError(f"--depth {folder} is not a folder")
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in (".npy", ".png")),
                   key=lambda p: video_io._natural_key(p.name))
    T = len(frame_indices)
    if len(files) == T:
        chosen = files
    elif n_source is not None and len(files) == n_source:
        chosen = [files[i] for i in frame_indices]
    else:
        raise Track3DError(f"--depth {folder} holds {len(files)} maps (.npy/.png); expected one per tracked "
                           f"frame ({T})" + (f" or per source frame ({n_source})" if n_source else ""))
    maps = None
    for t, p in enumerate(chosen):
        m = np.load(p, allow_pickle=False) if p.suffix.lower() == ".npy" else cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if m is None or np.asarray(m).ndim != 2:
            raise Track3DError(f"depth map {p} must be one channel (H, W), got "
                               f"{'an unreadable file' if m is None else np.asarray(m).shape}")
        if not (np.issubdtype(m.dtype, np.number) and not np.iscomplexobj(m)):
            raise Track3DError(f"depth map {p} must hold real numbers, got {m.dtype}")
        if min(m.shape) < 2:
            raise Track3DError(f"depth map {p} is {m.shape[1]}x{m.shape[0]}: at least 2x2 is needed")
        if maps is None:
            maps = np.empty((T, *m.shape), np.float32)  # float32: a long video's maps are large
        elif m.shape != maps.shape[1:]:
            video = f" (the video is {frame_size[0]}x{frame_size[1]})" if frame_size else ""
            raise Track3DError(f"depth map {p} is {m.shape[1]}x{m.shape[0]}, the first map "
                               f"{chosen[0].name} is {maps.shape[2]}x{maps.shape[1]}{video}: all maps must "
                               "have one size")
        maps[t] = m
    return maps


class StagePeak:
    """The peak resident memory of one stage, in MB.

    On Linux the kernel's high-water mark (``VmHWM``) is reset at the start
    (writing ``5`` to ``/proc/self/clear_refs``) and read at the end, so each
    stage reports its own peak. Where that is not possible (other systems,
    a restricted ``/proc``) it falls back to the process's running maximum
    (``ru_maxrss``), and :attr:`per_stage` is False.
    """

    def __init__(self) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.per_stage = _hwm_mb() is not None
        except OSError:
            self.per_stage = False

    def stop(self) -> float:
        """The peak since construction (or the running maximum, see above)."""
        if self.per_stage:
            value = _hwm_mb()
            if value is not None:
                return value
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def _hwm_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


def _load_depth_model(opts: ReconstructOptions):
    """The :class:`track3d.depth.DepthEstimator` of ``--depth-model``, on the tracker's device
    and in its precision."""
    import torch

    from track3d.depth import DepthEstimator
    from track3d.tracking import check_precision, resolve_device

    device = resolve_device(opts.device)
    check_precision(opts.precision, device)
    return DepthEstimator.from_pretrained(opts.depth_model, device=device, download=opts.download,
                                          dtype=getattr(torch, opts.precision))


def _resolve_tracker(opts: ReconstructOptions, warnings: list[str]):
    """The tracker the options name (or the embedded model, see :func:`tracker_or_embedded`); the
    classical baseline when neither can be had for the default."""
    from cotracker3.baseline import LucasKanadeTracker
    from cotracker3.errors import WeightsUnavailableError

    try:
        return tracker_or_embedded(opts, warnings)
    except WeightsUnavailableError as exc:
        if opts.model is not None or opts.checkpoint is not None:
            raise
        warnings.append(f"{FALLBACK_NOTICE} ({str(exc).splitlines()[0]}); tracked with the classical "
                        "Lucas-Kanade baseline instead, which is less accurate. Put the weights in place "
                        "(see 'track3d models') for better tracks.")
        logger.warning(warnings[-1])
        return LucasKanadeTracker(), "baseline"


STAGES_FORMAT = 1
"""Version of the files :class:`StageCache` keeps; a change invalidates older ones."""


def stages_dir(out_dir: str | Path) -> Path:
    """Where ``track3d reconstruct --out DIR`` keeps finished stages until ``DIR`` is written:
    ``.DIR.partial`` beside it (hidden, removed once the result folder is complete)."""
    out_dir = Path(out_dir)
    return out_dir.with_name(f".{out_dir.name}.partial")


def _video_identity(video: str | Path) -> dict:
    """What identifies a video's content cheaply: resolved path, sizes and modification times."""
    path = Path(video).resolve()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        return {"path": str(path), "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]}
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _key(payload: dict) -> str:
    import hashlib

    text = json.dumps({"format": STAGES_FORMAT, **payload}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class StageCache:
    """Finished stages of one reconstruction, kept on disk so a rerun skips them (hloc's model).

    Each stage ``NAME`` is two files in ``folder``: ``NAME.npz`` (its arrays) and
    ``NAME.json`` (``key`` and metadata), the JSON written last, so a stage
    interrupted while being saved is simply absent. A stage is reused only when its
    ``key`` (a hash of the video's identity and every option it depends on) matches:
    a changed option invalidates the stages it affects, and those after them.
    ``folder=None`` keeps nothing.
    """

    def __init__(self, folder: str | Path | None):
        self.folder = None if folder is None else Path(folder)
        self.reused: list[str] = []

    def load(self, name: str, key: str) -> tuple[dict[str, np.ndarray], dict] | None:
        """The arrays and metadata of stage ``name`` if it was saved under ``key``, else None."""
        if self.folder is None:
            return None
        try:
            meta = json.loads((self.folder / f"{name}.json").read_text())
            if meta.get("key") != key:
                return None
            with np.load(self.folder / f"{name}.npz", allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, KeyError):
            return None  # Missing or damaged: computed again.
        self.reused.append(name)
        logger.info("reusing the %s stage kept in %s", name, self.folder)
        return arrays, meta

    def save(self, name: str, key: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Keep stage ``name`` (arrays, then metadata) under ``key``."""
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{name}.tmp.npz"
        np.savez(tmp, **arrays)
        tmp.replace(self.folder / f"{name}.npz")
        io.write_json_atomic(self.folder / f"{name}.json", {**meta, "key": key})


def _tracks_to_stage(tracked: Tracks, track_resolution) -> tuple[dict, dict]:
    arrays = {"tracks": tracked.tracks, "visibility": tracked.visibility, "confidence": tracked.confidence,
              "queries": tracked.queries, "frame_indices": tracked.frame_indices}
    if tracked.timestamps is not None:
        arrays["timestamps"] = np.asarray(tracked.timestamps, np.float64)
    meta = {"fps": tracked.fps, "fps_variable": tracked.fps_variable, "frame_size": list(tracked.frame_size),
            "orientation": tracked.orientation, "mode": tracked.mode, "notices": tracked.notices,
            "model": tracked.model, "source": tracked.source, "timings": tracked.timings,
            "track_resolution": list(track_resolution) if track_resolution else None}
    return arrays, meta


def _tracks_from_stage(arrays: dict, meta: dict) -> tuple[Tracks, tuple[int, int] | None]:
    tracked = Tracks(tracks=arrays["tracks"], visibility=arrays["visibility"], confidence=arrays["confidence"],
                     queries=arrays["queries"], fps=float(meta["fps"]), frame_size=tuple(meta["frame_size"]),
                     frame_indices=arrays["frame_indices"], source=meta["source"], model=meta["model"],
                     timings={}, timestamps=arrays.get("timestamps"), fps_variable=bool(meta["fps_variable"]),
                     orientation=meta["orientation"], mode=meta["mode"], notices=list(meta["notices"]))
    resolution = meta.get("track_resolution")
    return tracked, (tuple(resolution) if resolution else None)


TRACK_STAGE_OPTIONS = tuple(f.name for f in dataclasses.fields(TrackOptions) if f.name != "download")
"""Options whose change invalidates the kept tracking stage (and so every later one)."""

DEPTH_STAGE_OPTIONS = ("depth_model", "precision", "device")
"""Options (besides the tracking ones) whose change invalidates kept depth maps of --depth-model."""


def reconstruct(
    video: str | Path,
    options: ReconstructOptions | None = None,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    resume_dir: str | Path | None = None,
    **kwargs,
) -> Result:
    """Track a video and reconstruct it in 3D.

    Args:
        video: a video file or a folder of images.
        options: a :class:`ReconstructOptions`; or its fields as keyword
            arguments, e.g. ``track3d.reconstruct("v.mp4", grid=50, depth="depth/")``.
        progress: optional ``callable(stage, done, total)`` for progress bars.
        resume_dir: a folder to keep finished stages in (:class:`StageCache`: the
            tracks, depth maps from ``--depth-model`` and track colours); a later
            call with the same video and options reuses them instead of computing
            them again, and ``summary["reused"]`` lists those reused. ``track3d
            reconstruct --out DIR`` uses :func:`stages_dir` and deletes it once
            ``DIR`` is written. None: keep nothing.

    Returns:
        :class:`Result`. Geometry that cannot be solved (a still or rotating
        camera, too few static tracks) is no error: ``result.summary["cameras"]``
        and ``["warnings"]`` say what was not solved, and unknown values are NaN.

    Raises:
        VideoError, QueryError, CheckpointError, Track3DError: bad input.
    """
    import recon
    from cotracker3.baseline import LucasKanadeTracker
    from viz.clouds import sample_colors

    opts = dataclasses.replace(options or ReconstructOptions(), **kwargs)
    notify = progress or (lambda *a: None)
    warnings: list[str] = []
    memory: dict[str, float] = {}
    K = read_intrinsics(opts.intrinsics) if opts.intrinsics else None
    info = video_io.probe(video, ignore_rotation=opts.ignore_rotation)
    if opts.depth and opts.depth_model:
        raise Track3DError("--depth and --depth-model are two sources of depth maps: give one")
    if opts.depth and not Path(opts.depth).is_dir():
        raise Track3DError(f"--depth {opts.depth} is not a folder")
    if opts.depth_kind not in DEPTH_KINDS:
        raise Track3DError(f"--depth-kind must be one of {', '.join(DEPTH_KINDS)}, got {opts.depth_kind!r}")
    if not 0.0 <= opts.min_reliability <= 1.0:
        raise Track3DError(f"--min-reliability must be in [0, 1], got {opts.min_reliability}")
    timings: dict[str, float] = {}
    cache = StageCache(resume_dir)
    identity = _video_identity(video)
    track_key = _key({"video": identity, "track": {k: getattr(opts, k) for k in TRACK_STAGE_OPTIONS}})
    depth_key = _key({"track": track_key, "depth": {k: getattr(opts, k) for k in DEPTH_STAGE_OPTIONS}})
    kept_tracks = cache.load("track", track_key)
    kept_depth = cache.load("depth", depth_key) if opts.depth_model else None

    depth_net = None
    if opts.depth_model and kept_depth is None:  # Loaded before tracking: missing weights stop the run early.
        t0 = time.perf_counter()
        depth_net = _load_depth_model(opts)
        timings["load_depth_model"] = time.perf_counter() - t0

    peak = StagePeak()
    if kept_tracks is not None:
        tracked, track_resolution = _tracks_from_stage(*kept_tracks)
        label = tracked.model
        warnings += [n for n in kept_tracks[1]["notices"] if n not in warnings]
    else:
        model, label = _resolve_tracker(opts, warnings)
        if isinstance(model, LucasKanadeTracker) and opts.online:
            warnings.append("the baseline tracker reads the whole video: --online is ignored")
            opts = dataclasses.replace(opts, online=False, mode="offline")
        tracked = track(video, opts, progress=progress, model=model)
        tracked.model = label
        warnings += [n for n in tracked.notices if n not in warnings]
        # Pixel thresholds are relative to the resolution the tracker worked at (a model's input size).
        resolution = getattr(model, "model_resolution", None)
        track_resolution = (int(resolution[1]), int(resolution[0])) if resolution is not None else None
        del model  # The tracker's memory (a GPU's too) for what follows.
        cache.save("track", track_key, *_tracks_to_stage(tracked, track_resolution))
    memory["track"] = peak.stop()
    T, N = tracked.visibility.shape
    read_kw = dict(start=opts.start, end=opts.end, stride=opts.stride, ignore_rotation=opts.ignore_rotation)

    depth, depth_info = None, None
    t0 = time.perf_counter()
    peak = StagePeak()
    if opts.depth:
        depth = read_depth_folder(opts.depth, tracked.frame_indices, info.num_frames, tracked.frame_size)
        depth_info = {"source": "folder", "path": str(opts.depth), "kind": opts.depth_kind}
    elif kept_depth is not None:
        depth = kept_depth[0]["depth"]
        depth_info = {k: kept_depth[1][k] for k in ("source", "model", "kind")}
        opts = dataclasses.replace(opts, depth_kind=depth_info["kind"])
    elif depth_net is not None:
        # The frames the tracker saw, decoded again a batch at a time (full size: the network resizes).
        frames = video_io.iter_frames(video, **read_kw)
        depth = depth_net.estimate(frames, num_frames=T, progress=lambda done, total: notify("depth", done, total))
        opts = dataclasses.replace(opts, depth_kind=depth_net.kind)
        depth_info = {"source": "model", "model": depth_net.name, "kind": depth_net.kind}
        del depth_net
        cache.save("depth", depth_key, {"depth": depth}, depth_info)
    if depth is not None:
        depth_info["map_size"] = [int(depth.shape[2]), int(depth.shape[1])]
        timings["depth"] = time.perf_counter() - t0
        memory["depth"] = peak.stop()

    t0 = time.perf_counter()
    peak = StagePeak()
    rec = recon.reconstruct(tracked.tracks, tracked.visibility, tracked.frame_size, confidence=tracked.confidence,
                            intrinsics=K, depth=depth,
                            options=recon.ReconOptions(min_track_length=opts.min_track_length,
                                                       track_resolution=track_resolution, mapper=opts.mapper,
                                                       depth_kind=opts.depth_kind,
                                                       num_threads=opts.threads or -1),
                            progress=progress)
    del depth
    t_recon = time.perf_counter() - t0
    memory["reconstruct"] = peak.stop()

    t0 = time.perf_counter()
    peak = StagePeak()
    kept_colors = cache.load("colors", track_key)
    if kept_colors is not None:
        colors = kept_colors[0]["colors"]
    else:
        frames = video_io.iter_frames(video, **read_kw)
        colors = sample_colors(frames, tracked.tracks, tracked.visibility)
        cache.save("colors", track_key, {"colors": colors}, {})
    t_colors = time.perf_counter() - t0
    memory["colors"] = peak.stop()

    status = rec.status
    warnings += [m for m in status.messages if m.startswith("warning") or "could not be registered" in m]
    if status.cameras != "solved":
        why = [m for m in status.messages if m.startswith(("cameras not solved", "the camera"))]
        warnings.append(f"cameras {status.cameras}: " + "; ".join(why or status.messages[-1:]))
    arrays = {"tracks": tracked.tracks, "visibility": tracked.visibility, "confidence": tracked.confidence,
              "queries": tracked.queries, "frame_indices": tracked.frame_indices, **rec.arrays(),
              "colors": colors}
    if tracked.timestamps is not None:
        arrays["timestamps"] = np.asarray(tracked.timestamps, np.float64)
    summary = {
        "track3d_version": _version(),
        "source": str(video),
        "model": label,
        "frames": T, "tracks": N, "frame_size": list(tracked.frame_size), "fps": tracked.fps,
        "fps_variable": bool(tracked.fps_variable), "orientation": tracked.orientation, "mode": tracked.mode,
        "cameras": status.cameras,
        "registered_frames": status.registered[0],
        "rotation_only_frames": list(status.rotation_frames),
        "unsolved_frames": {str(t): reason for t, reason in status.unsolved.items()},
        "track_resolution": list(track_resolution) if track_resolution else None,
        "focal": status.focal,
        "static_tracks": status.static_tracks, "moving_tracks": status.moving_tracks,
        "unused_tracks": status.unused_tracks, "static_points": int(len(rec.points)),
        "moving_3d": status.moving_3d,
        "depth": depth_info,
        "mean_reprojection_error_px": None if not np.isfinite(status.mean_reprojection_error)
        else round(status.mean_reprojection_error, 4),
        "timings": {**{k: round(v, 3) for k, v in (timings | tracked.timings).items()},
                    "reconstruct": {k: round(v, 3) for k, v in status.timings.items()} | {"total": round(t_recon, 3)},
                    "colors": round(t_colors, 3)},
        "peak_memory_mb": {k: round(v, 1) for k, v in memory.items()},
        "peak_memory_per_stage": peak.per_stage,
        "reused": list(cache.reused),
        "messages": list(status.messages),
        "warnings": warnings,
        "options": {k: v for k, v in dataclasses.asdict(opts).items() if k != "download"},
    }
    return Result(arrays=arrays, fps=tracked.fps, frame_size=tracked.frame_size, summary=summary,
                  source=str(video), colmap_model=rec.colmap_model)


def _version() -> str:
    """The installed track3d's version, from the package metadata (``pyproject.toml``);
    ``"unknown"`` when it is run from a source tree that was never installed."""
    try:
        return importlib.metadata.version("track3d")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
