"""Readers of the published point-tracking evaluation datasets.

Each reader yields :class:`EvalVideo` objects in our convention: frames
``(T, H, W, 3)`` uint8 RGB at the resolution stored in the files, tracks
``(T, N, 2)`` float32 in pixels of those frames with ``(0, 0)`` the centre of
the top-left pixel, visibility ``(T, N)`` bool. Pass a video through
:func:`resize_to_eval` to get the 256x256 frames and coordinates the TAP-Vid
metrics are defined on.

The formats, as published:

* **TAP-Vid DAVIS** (``tapvid_davis.pkl``): one pickle of a dict
  ``video name -> {'video', 'points', 'occluded'}`` with ``'video'``
  ``(T, H, W, 3)`` uint8 RGB, ``'points'`` ``(N, T, 2)`` float ``(x, y)``
  normalised to ``[0, 1]`` by the frame size from the image corner, and
  ``'occluded'`` ``(N, T)`` bool (True = occluded).
* **TAP-Vid RGB-Stacking** (``tapvid_rgb_stacking.pkl``): one pickle of a
  *list* of such dicts (no names).
* **TAP-Vid Kinetics**: a folder of pickle shards named
  ``NNNN_of_MMMM.pkl`` (``0000_of_0010.pkl`` ...), each a list of such dicts
  whose ``'video'`` holds the frames as JPEG-encoded bytes (a numpy array of
  ``bytes`` or a list of them); ``'points'`` is float64.
* **RoboTAP**: a folder of pickles ``robotap_split*.pkl``, each a dict
  ``video name -> {'video', 'points', 'occluded'}`` as for DAVIS.
* **Dynamic Replica**: ``<root>/<split>/frame_annotations_<split>.jgz``, a
  gzipped JSON list of frame annotations (``'sequence_name'``,
  ``'frame_number'``, ``'camera_name'`` ``'left'``/``'right'``, ``'image'``
  ``{'path', 'size': [H, W]}``, ``'trajectories'`` ``{'path'}``, paths
  relative to ``<root>/<split>``); each left-camera frame has a torch file of
  trajectories with ``'traj_2d'`` ``(N, 3)`` (the first two columns are the
  pixel ``(x, y)``), ``'verts_inds_vis'`` ``(N,)`` bool, and usually ``'img'``
  ``(H, W, 3)`` uint8 RGB.

The TAP-Vid readers convert coordinates with
:func:`cotracker3.eval.tapvid.tapvid_to_pixels` (``px = norm * size - 0.5``).

Security: the TAP-Vid and RoboTAP files are Python pickles, and loading a
pickle can execute arbitrary code. Only read files from a trusted source (the
official downloads). Detection (:func:`detect_format`) only inspects pickles
with :mod:`pickletools` and never executes them; the Dynamic Replica torch
files are loaded with ``torch.load(..., weights_only=True)``, which does not
execute code either.

Every structural problem (missing file, empty or unreadable file, wrong
container, missing key, inconsistent shapes) raises
:class:`~cotracker3.errors.DatasetError` naming the file and the problem.
Readers are generators: a file is opened when iteration reaches it, and
errors in its content surface then.
"""

from __future__ import annotations

import gzip
import json
import logging
import pickle
import pickletools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cotracker3.errors import DatasetError
from cotracker3.eval.tapvid import EVAL_RESOLUTION, pixels_to_tapvid, tapvid_to_pixels

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("davis", "rgb_stacking", "kinetics", "robotap", "dynamic_replica")
"""Names accepted by :func:`read_dataset` and returned by :func:`detect_format`."""

KINETICS_SHARD_GLOB = "*_of_*.pkl"
"""Kinetics shards in a folder (the published ones are ``0000_of_0010.pkl`` ...)."""

ROBOTAP_GLOB = "robotap*.pkl"
"""RoboTAP pickles in a folder (the published ones are ``robotap_split*.pkl``)."""

_TAPVID_KEYS = ("video", "points", "occluded")
_SHARD_NAME = re.compile(r"\d+_of_\d+")


@dataclass
class EvalVideo:
    """One evaluation video with its ground-truth tracks, in our convention.

    Attributes:
        name: video name (the dataset's, or ``<file stem>_<index>`` where the
            format has none).
        video: ``(T, H, W, 3)`` uint8 RGB frames.
        tracks: ``(T, N, 2)`` float32 pixels ``(x, y)`` of ``video``, ``(0, 0)``
            the centre of the top-left pixel.
        visibility: ``(T, N)`` bool, True where the point is visible.
    """

    name: str
    video: np.ndarray
    tracks: np.ndarray
    visibility: np.ndarray

    def __post_init__(self) -> None:
        video, tracks, visibility = self.video, self.tracks, self.visibility
        if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
            raise ValueError(f"video must be (T, H, W, 3) uint8, got {video.shape} {video.dtype}")
        if tracks.ndim != 3 or tracks.shape[0] != video.shape[0] or tracks.shape[-1] != 2:
            raise ValueError(f"tracks must be (T, N, 2) with T = {video.shape[0]}, got {tracks.shape}")
        if visibility.shape != tracks.shape[:2] or visibility.dtype != np.bool_:
            raise ValueError(
                f"visibility must be (T, N) = {tracks.shape[:2]} bool, got {visibility.shape} {visibility.dtype}"
            )

    @property
    def image_size(self) -> tuple[int, int]:
        """``(width, height)`` of the frames, as :func:`~cotracker3.eval.tapvid.evaluate_tracks` takes it."""
        return int(self.video.shape[2]), int(self.video.shape[1])


# ---------------------------------------------------------------------------
# TAP-Vid pickles
# ---------------------------------------------------------------------------


def _existing(path, *, file: bool = False) -> Path:
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or directory")
    if file and path.is_dir():
        raise DatasetError(f"{path}: expected a file, got a directory")
    return path


def _load_pickle(path: Path) -> object:
    """Unpickle ``path`` (this executes code from the file: trusted files only)."""
    try:
        if path.stat().st_size == 0:
            raise DatasetError(f"{path}: empty file")
        with open(path, "rb") as f:
            return pickle.load(f)
    except DatasetError:
        raise
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc
    except (
        pickle.UnpicklingError,
        EOFError,
        AttributeError,
        ImportError,
        IndexError,
        KeyError,
        TypeError,
        ValueError,
        UnicodeDecodeError,
    ) as exc:
        raise DatasetError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from exc


def _decode_frames(frames, where: str) -> np.ndarray:
    """``'video'`` as stored: a uint8 array, or a sequence of encoded images."""
    if isinstance(frames, np.ndarray) and frames.dtype == np.uint8:
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
            raise DatasetError(f"{where}: 'video' must be (T, H, W, 3) uint8 with T >= 1, got shape {frames.shape}")
        return frames
    encoded = isinstance(frames, np.ndarray) and frames.dtype.kind in "SO" and frames.ndim == 1
    encoded = encoded or (isinstance(frames, (list, tuple)) and all(isinstance(f, (bytes, bytearray)) for f in frames))
    if not encoded or len(frames) == 0:
        described = f"array {frames.shape} {frames.dtype}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise DatasetError(
            f"{where}: 'video' must be a (T, H, W, 3) uint8 array or a non-empty list of JPEG bytes, got {described}"
        )
    decoded = []
    for i, data in enumerate(frames):
        if not isinstance(data, (bytes, bytearray)):
            raise DatasetError(f"{where}: frame {i} of 'video' is {type(data).__name__}, not encoded bytes")
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if image is None:
            raise DatasetError(f"{where}: frame {i} of 'video' is not a decodable image ({len(data)} bytes)")
        if decoded and image.shape != decoded[0].shape:
            raise DatasetError(
                f"{where}: frame {i} of 'video' is {image.shape[1]}x{image.shape[0]}, frame 0 is "
                f"{decoded[0].shape[1]}x{decoded[0].shape[0]}"
            )
        decoded.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    return np.stack(decoded)


def _tapvid_video(example, name: str, where: str) -> EvalVideo:
    """One TAP-Vid ``{'video', 'points', 'occluded'}`` dict -> :class:`EvalVideo`."""
    if not isinstance(example, Mapping):
        raise DatasetError(f"{where}: expected a dict with keys {list(_TAPVID_KEYS)}, got {type(example).__name__}")
    missing = [key for key in _TAPVID_KEYS if key not in example]
    if missing:
        raise DatasetError(f"{where}: missing key(s) {missing} (has {sorted(map(str, example))})")
    points = np.asarray(example["points"])
    occluded = np.asarray(example["occluded"])
    if points.ndim != 3 or points.shape[-1] != 2 or points.dtype.kind not in "fiu":
        raise DatasetError(f"{where}: 'points' must be (N, T, 2) numbers, got {points.shape} {points.dtype}")
    if occluded.ndim != 2:
        raise DatasetError(f"{where}: 'occluded' must be (N, T), got shape {occluded.shape}")
    if occluded.dtype != np.bool_:
        if occluded.dtype.kind not in "fiu" or not np.isin(occluded, (0, 1)).all():
            raise DatasetError(f"{where}: 'occluded' must be boolean, got {occluded.dtype}")
        occluded = occluded.astype(bool)
    if occluded.shape != points.shape[:2]:
        raise DatasetError(
            f"{where}: 'points' {points.shape} and 'occluded' {occluded.shape} disagree on (N, T) "
            f"({points.shape[0]} vs {occluded.shape[0]} tracks, {points.shape[1]} vs {occluded.shape[1]} frames)"
        )
    video = _decode_frames(example["video"], where)
    if video.shape[0] != points.shape[1]:
        raise DatasetError(f"{where}: 'video' has {video.shape[0]} frames but 'points' has {points.shape[1]}")
    height, width = video.shape[1:3]
    pixels = tapvid_to_pixels(points.astype(np.float64), width, height)
    return EvalVideo(
        name=name,
        video=video,
        tracks=np.ascontiguousarray(np.transpose(pixels, (1, 0, 2)), dtype=np.float32),
        visibility=np.ascontiguousarray(~occluded.T),
    )


def _iter_named(data: dict, path: Path) -> Iterator[EvalVideo]:
    """Videos of a ``name -> example`` dict, dropping each one once yielded."""
    for key in list(data):
        yield _tapvid_video(data.pop(key), str(key), f"{path} [{key!r}]")


def _iter_listed(data: list, path: Path) -> Iterator[EvalVideo]:
    """Videos of a list of examples, named ``<stem>_<index>``, dropping each one once yielded."""
    for i in range(len(data)):
        example, data[i] = data[i], None
        yield _tapvid_video(example, f"{path.stem}_{i:04d}", f"{path} [{i}]")


def _dict_file(path: Path, what: str) -> Iterator[EvalVideo]:
    data = _load_pickle(path)
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a dict of videos ({what}), got {type(data).__name__}")
    logger.info("%s: %d videos", path, len(data))
    yield from _iter_named(data, path)


def read_davis(path) -> Iterator[EvalVideo]:
    """Read TAP-Vid DAVIS (``tapvid_davis.pkl``).

    The file is a pickle: loading it runs code from it, so only read the
    official file or another trusted one.

    Args:
        path: the pickle of a dict ``video name -> {'video', 'points', 'occluded'}``.

    Returns:
        Iterator of :class:`EvalVideo`, in the file's order, named by the keys.

    Raises:
        DatasetError: missing, empty or unreadable file, not a dict, or a video
            of the wrong structure (raised while iterating, except for a
            missing path).
    """
    return _dict_file(_existing(path, file=True), "TAP-Vid DAVIS")


def read_rgb_stacking(path) -> Iterator[EvalVideo]:
    """Read TAP-Vid RGB-Stacking (``tapvid_rgb_stacking.pkl``).

    The file is a pickle: loading it runs code from it, so only read the
    official file or another trusted one.

    Args:
        path: the pickle of a list of ``{'video', 'points', 'occluded'}`` dicts.

    Returns:
        Iterator of :class:`EvalVideo` named ``<file stem>_<index>`` (index on
        4 digits).

    Raises:
        DatasetError: missing, empty or unreadable file, not a list, or a
            video of the wrong structure.
    """
    path = _existing(path, file=True)

    def videos() -> Iterator[EvalVideo]:
        data = _load_pickle(path)
        if not isinstance(data, list):
            raise DatasetError(f"{path}: expected a list of videos (TAP-Vid RGB-Stacking), got {type(data).__name__}")
        logger.info("%s: %d videos", path, len(data))
        yield from _iter_listed(data, path)

    return videos()


def _files(path: Path, pattern: str, what: str) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.glob(pattern) if p.is_file())
    if not files:
        raise DatasetError(f"{path}: no {what} file matching {pattern!r} in this directory")
    return files


def read_kinetics(path) -> Iterator[EvalVideo]:
    """Read TAP-Vid Kinetics: one shard, or every shard of a folder.

    Shards are read one at a time (a shard is loaded whole: pickles cannot be
    streamed) and each video's JPEG frames are decoded when it is yielded.
    Shards are pickles: loading them runs code from them, so only read the
    official files or other trusted ones.

    Args:
        path: a shard (pickle of a list of ``{'video', 'points', 'occluded'}``
            dicts, frames JPEG-encoded; a dict of them is accepted too), or a
            folder of shards matching :data:`KINETICS_SHARD_GLOB`, read in name
            order.

    Returns:
        Iterator of :class:`EvalVideo` named ``<shard stem>_<index>``, e.g.
        ``0000_of_0010_0017`` (or by key for a dict shard).

    Raises:
        DatasetError: missing path, folder without shards, unreadable shard,
            wrong container, undecodable frame or a video of the wrong
            structure.
    """
    files = _files(_existing(path), KINETICS_SHARD_GLOB, "TAP-Vid Kinetics shard")

    def videos() -> Iterator[EvalVideo]:
        for shard in files:
            data = _load_pickle(shard)
            logger.info("%s: %d videos", shard, len(data) if isinstance(data, (list, dict)) else 0)
            if isinstance(data, dict):
                yield from _iter_named(data, shard)
            elif isinstance(data, list):
                yield from _iter_listed(data, shard)
            else:
                raise DatasetError(f"{shard}: expected a list of videos (TAP-Vid Kinetics), got {type(data).__name__}")
            del data

    return videos()


def read_robotap(path) -> Iterator[EvalVideo]:
    """Read RoboTAP: one pickle, or every ``robotap*.pkl`` of a folder.

    The files are pickles: loading them runs code from them, so only read the
    official files or other trusted ones.

    Args:
        path: a pickle of a dict ``video name -> {'video', 'points',
            'occluded'}`` (same structure as DAVIS), or a folder of them
            matching :data:`ROBOTAP_GLOB`, read in name order, one at a time.

    Returns:
        Iterator of :class:`EvalVideo` named by the keys.

    Raises:
        DatasetError: missing path, folder without RoboTAP pickles, unreadable
            file, not a dict, or a video of the wrong structure.
    """
    files = _files(_existing(path), ROBOTAP_GLOB, "RoboTAP")

    def videos() -> Iterator[EvalVideo]:
        for file in files:
            yield from _dict_file(file, "RoboTAP")

    return videos()


# ---------------------------------------------------------------------------
# Dynamic Replica
# ---------------------------------------------------------------------------


def _dynamic_replica_annotations(path: Path, split: str) -> Path:
    if path.is_file():
        return path
    name = f"frame_annotations_{split}.jgz"
    for candidate in (path / name, path / split / name):
        if candidate.is_file():
            return candidate
    found = sorted(path.glob("frame_annotations_*.jgz"))
    if len(found) == 1:
        return found[0]
    raise DatasetError(
        f"{path}: no Dynamic Replica annotations: expected {name} here or in {split}/"
        + (f" (found {[p.name for p in found]})" if found else "")
    )


def _load_json_gz(path: Path) -> object:
    try:
        with gzip.open(path, "rt", encoding="utf8") as f:
            return json.load(f)
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not a gzipped JSON file ({type(exc).__name__}: {exc})") from exc


def _field(frame: Mapping, key: str, kind: type, where: str):
    value = frame.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DatasetError(f"{where}: {key!r} must be {kind.__name__}, got {value!r}")
    return value


def _sequences(annotations, jgz: Path) -> dict[str, list[Mapping]]:
    """Left-camera frame annotations grouped by sequence, sorted by frame number."""
    if not isinstance(annotations, list):
        raise DatasetError(f"{jgz}: expected a JSON list of frame annotations, got {type(annotations).__name__}")
    if not annotations:
        raise DatasetError(f"{jgz}: no frame annotation")
    for i, frame in enumerate(annotations):
        if not isinstance(frame, dict):
            raise DatasetError(f"{jgz}: frame annotation {i} is {type(frame).__name__}, not an object")
    has_cameras = any("camera_name" in frame for frame in annotations)
    sequences: dict[str, list[Mapping]] = {}
    for i, frame in enumerate(annotations):
        if has_cameras and frame.get("camera_name") != "left":
            continue  # trajectories exist for the left view only
        where = f"{jgz} [frame annotation {i}]"
        sequence = _field(frame, "sequence_name", str, where)
        _field(frame, "frame_number", int, where)
        sequences.setdefault(sequence, []).append(frame)
    if not sequences:
        raise DatasetError(f"{jgz}: no frame of the left camera")
    for sequence, frames in sequences.items():
        frames.sort(key=lambda f: f["frame_number"])
        numbers = [f["frame_number"] for f in frames]
        if len(set(numbers)) != len(numbers):
            raise DatasetError(f"{jgz}: sequence {sequence!r} has repeated frame numbers")
    return sequences


def _relative_path(frame: Mapping, key: str, where: str) -> str:
    entry = frame.get(key)
    if not isinstance(entry, Mapping) or not isinstance(entry.get("path"), str):
        raise DatasetError(f"{where}: {key!r} must be an object with a 'path', got {entry!r}")
    return entry["path"]


def _dynamic_replica_frame(frame: Mapping, base: Path, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image (H, W, 3) uint8 RGB, traj_2d (N, 2) float32, visible (N,) bool) of one annotated frame."""
    import torch

    traj_path = base / _relative_path(frame, "trajectories", where)
    try:
        traj = torch.load(traj_path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise DatasetError(f"{traj_path}: trajectory file not found ({where})") from exc
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        raise DatasetError(
            f"{traj_path}: not a readable torch file with weights_only=True ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(traj, Mapping) or "traj_2d" not in traj or "verts_inds_vis" not in traj:
        keys = sorted(traj) if isinstance(traj, Mapping) else type(traj).__name__
        raise DatasetError(f"{traj_path}: expected a dict with 'traj_2d' and 'verts_inds_vis', got {keys}")
    traj_2d = np.asarray(traj["traj_2d"])
    visible = np.asarray(traj["verts_inds_vis"])
    if traj_2d.ndim != 2 or traj_2d.shape[1] < 2 or visible.shape != traj_2d.shape[:1]:
        raise DatasetError(
            f"{traj_path}: 'traj_2d' must be (N, >=2) and 'verts_inds_vis' (N,); got {traj_2d.shape} and "
            f"{visible.shape}"
        )
    if "img" in traj:
        image = np.asarray(traj["img"])
        source = f"{traj_path} ['img']"
    else:
        image_path = base / _relative_path(frame, "image", where)
        bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if bgr is None:
            raise DatasetError(f"{image_path}: missing or unreadable image ({where})")
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        source = str(image_path)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise DatasetError(f"{source}: image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    return image, traj_2d[:, :2].astype(np.float32), visible.astype(bool)


def read_dynamic_replica(path, split: str = "valid") -> Iterator[EvalVideo]:
    """Read the 2D trajectories of Dynamic Replica, one sequence at a time.

    Only the left camera has trajectories, so only its frames are read. Frame
    images come from the ``'img'`` entry of the trajectory file when present
    (as co-tracker reads them), else from the annotation's image path. The 2D
    trajectories are taken as pixel coordinates with ``(0, 0)`` the centre of
    the top-left pixel (as co-tracker uses them, unconverted). A point is
    visible where ``'verts_inds_vis'`` says so *and* it lies inside
    ``[0, W - 1] x [0, H - 1]`` (co-tracker's evaluation rule); positions are
    kept as stored. A sequence holds all the mesh vertices seen in it (tens of
    thousands of tracks): subsample them before tracking.

    Args:
        path: the ``frame_annotations_<split>.jgz`` file, the folder holding it
            (``<root>/<split>``) or the dataset root ``<root>``.
        split: split name used to find the annotations in a folder.

    Returns:
        Iterator of :class:`EvalVideo`, one per sequence (named by
        ``'sequence_name'``), frames in ``'frame_number'`` order.

    Raises:
        DatasetError: no annotations found, not gzipped JSON, wrong structure
            (not a list of objects, missing or mistyped fields, repeated frame
            numbers, no left-camera frame), missing or unreadable trajectory or
            image files, or frames of a sequence disagreeing on the number of
            tracks or the image size.
    """
    jgz = _dynamic_replica_annotations(_existing(path), split)

    def videos() -> Iterator[EvalVideo]:
        sequences = _sequences(_load_json_gz(jgz), jgz)
        logger.info("%s: %d sequences", jgz, len(sequences))
        for sequence, frames in sequences.items():
            images, positions, visibility = [], [], []
            for frame in frames:
                where = f"{jgz} [sequence {sequence!r}, frame {frame['frame_number']}]"
                image, traj_2d, visible = _dynamic_replica_frame(frame, jgz.parent, where)
                if images and (image.shape != images[0].shape or traj_2d.shape != positions[0].shape):
                    raise DatasetError(
                        f"{where}: image {image.shape} and {traj_2d.shape[0]} tracks, but the sequence's first frame "
                        f"has image {images[0].shape} and {positions[0].shape[0]} tracks"
                    )
                images.append(image)
                positions.append(traj_2d)
                visibility.append(visible)
            video = np.stack(images)
            tracks = np.stack(positions)
            height, width = video.shape[1:3]
            x, y = tracks[..., 0], tracks[..., 1]
            inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
            yield EvalVideo(name=sequence, video=video, tracks=tracks, visibility=np.stack(visibility) & inside)

    return videos()


# ---------------------------------------------------------------------------
# Detection, dispatch, resizing
# ---------------------------------------------------------------------------


def _peek_pickle(path: Path) -> tuple[str | None, bool | None]:
    """Top-level container of a pickle (``'dict'``/``'list'``), and for a list
    whether its first video's frames are encoded bytes; by reading opcodes with
    :mod:`pickletools`, which never executes the pickle."""
    container = None
    after_video = False
    try:
        with open(path, "rb") as f:
            for count, (opcode, arg, _) in enumerate(pickletools.genops(f)):
                if count > 100_000:
                    break
                if container is None:
                    if opcode.name in ("EMPTY_DICT", "DICT"):
                        return "dict", None
                    if opcode.name in ("EMPTY_LIST", "LIST"):
                        container = "list"
                    continue
                if arg == "video":
                    after_video = True
                elif after_video and isinstance(arg, (bytes, bytearray)) and len(arg) > 16:
                    return container, True  # a list of encoded frames
                elif after_video and isinstance(arg, str) and re.fullmatch(r"[SO]\d*|u1", arg):
                    return container, arg != "u1"  # dtype of a numpy 'video' array
    except (ValueError, EOFError, OSError) as exc:
        # Before a decision: a stream of opcodes that breaks down is not a pickle.
        raise DatasetError(f"{path}: not a pickle ({type(exc).__name__}: {exc})") from exc
    return container, None


def detect_format(path) -> str:
    """Which dataset a file or folder holds, from names and structure.

    Folders: ``frame_annotations_*.jgz`` here or one level down ->
    ``'dynamic_replica'``; Kinetics shards (``*_of_*.pkl``) -> ``'kinetics'``;
    ``robotap*.pkl`` -> ``'robotap'``. Files: ``.jgz`` -> ``'dynamic_replica'``;
    a name like ``0000_of_0010`` -> ``'kinetics'``; a name containing
    ``robotap``, ``davis`` or ``stacking`` -> that dataset; otherwise the
    pickle's opcodes are inspected without executing it: a dict is
    ``'davis'`` (RoboTAP files have the same structure and read the same), a
    list with JPEG frames ``'kinetics'``, another list ``'rgb_stacking'``.

    Args:
        path: file or folder.

    Returns:
        One of :data:`FORMATS`.

    Raises:
        DatasetError: missing path, empty file, a folder with none of the
            files above, or a file that is not a pickle of a dict or list.
    """
    path = _existing(path)
    if path.is_dir():
        if any(path.glob("frame_annotations_*.jgz")) or any(path.glob("*/frame_annotations_*.jgz")):
            return "dynamic_replica"
        if any(path.glob(KINETICS_SHARD_GLOB)):
            return "kinetics"
        if any(path.glob(ROBOTAP_GLOB)):
            return "robotap"
        raise DatasetError(
            f"{path}: no dataset recognised in this directory (looked for frame_annotations_*.jgz, "
            f"{KINETICS_SHARD_GLOB}, {ROBOTAP_GLOB})"
        )
    name = path.name.lower()
    if name.endswith(".jgz"):
        return "dynamic_replica"
    if _SHARD_NAME.search(name):
        return "kinetics"
    for hint, format_ in (("robotap", "robotap"), ("davis", "davis"), ("stacking", "rgb_stacking")):
        if hint in name:
            return format_
    if path.stat().st_size == 0:
        raise DatasetError(f"{path}: empty file")
    container, encoded = _peek_pickle(path)
    if container == "dict":
        return "davis"
    if container == "list":
        return "kinetics" if encoded else "rgb_stacking"
    raise DatasetError(f"{path}: not a pickle of a dict or list of videos: cannot tell its format")


_READERS = {
    "davis": read_davis,
    "rgb_stacking": read_rgb_stacking,
    "kinetics": read_kinetics,
    "robotap": read_robotap,
    "dynamic_replica": read_dynamic_replica,
}


def read_dataset(path, format: str | None = None) -> Iterator[EvalVideo]:
    """Read any supported dataset, detecting its format unless given.

    Pickle formats execute code from the files when loaded: only read trusted
    files (see the module docstring).

    Args:
        path: file or folder, as the format's reader takes it.
        format: one of :data:`FORMATS`, or None to call :func:`detect_format`.

    Returns:
        Iterator of :class:`EvalVideo`.

    Raises:
        ValueError: unknown ``format``.
        DatasetError: as the reader, or detection, raises it.
    """
    if format is None:
        format = detect_format(path)
        logger.info("%s: detected format %r", path, format)
    if format not in _READERS:
        raise ValueError(f"format must be one of {FORMATS} or None, got {format!r}")
    return _READERS[format](path)


def _check_resolution(size) -> tuple[int, int]:
    if (
        not isinstance(size, Sequence)
        or len(size) != 2
        or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        raise ValueError(f"size must be (height, width) positive integers, got {size!r}")
    return int(size[0]), int(size[1])


def resize_to_eval(v: EvalVideo, size: tuple[int, int] = EVAL_RESOLUTION) -> EvalVideo:
    """The video at the TAP-Vid evaluation resolution, tracks mapped to match.

    Frames are resized with OpenCV: ``INTER_AREA`` when no side grows, else
    ``INTER_LANCZOS4``. tapnet resizes with PIL's antialiased Lanczos filter
    (``mediapy.resize_video``); on natural images these two choices are the
    closest OpenCV filters to it (mean absolute difference about 1-1.4 grey
    levels when shrinking, under 1 when enlarging), so frames are close to but
    not bit-identical with tapnet's. Coordinates go through the normalised
    TAP-Vid frame, ``px' = (px + 0.5) * size' / size - 0.5`` (the image
    corners stay aligned), exactly as tapnet scales normalised points.

    Args:
        v: a video in our convention.
        size: ``(height, width)`` of the output, 256x256 by default.

    Returns:
        A new :class:`EvalVideo` (the same object when already at ``size``);
        visibility is unchanged.

    Shapes:
        video ``(T, H, W, 3)`` -> ``(T, *size, 3)``; tracks ``(T, N, 2)`` ->
        same shape.

    Raises:
        ValueError: ``size`` is not two positive integers.
    """
    out_height, out_width = _check_resolution(size)
    height, width = v.video.shape[1:3]
    if (height, width) == (out_height, out_width):
        return v
    interpolation = cv2.INTER_AREA if out_height <= height and out_width <= width else cv2.INTER_LANCZOS4
    video = np.stack([cv2.resize(frame, (out_width, out_height), interpolation=interpolation) for frame in v.video])
    normalised = pixels_to_tapvid(v.tracks.astype(np.float64), width, height)
    tracks = tapvid_to_pixels(normalised, out_width, out_height).astype(np.float32)
    return EvalVideo(name=v.name, video=video, tracks=tracks, visibility=v.visibility.copy())
