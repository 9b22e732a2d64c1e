"""Result files and folders, written atomically.

- :func:`atomic_output_dir` gives a temporary folder beside the target to
  write a whole result folder into, and renames it onto the target only when
  everything succeeded: a crash or Ctrl-C never leaves a folder that looks
  complete, and an existing result is never overwritten by accident.
- :func:`save_tracks` / :func:`load_tracks` write and read ``tracks.npz``,
  the 2D tracking result:

  ============== =========== ======= =========================================
  key            shape       dtype   meaning
  ============== =========== ======= =========================================
  ``tracks``     (T, N, 2)   float32 positions in pixels, (x, y), (0, 0) the
                                     centre of the top-left pixel
  ``visibility`` (T, N)      bool    True where the point is visible
  ``confidence`` (T, N)      float32 tracking confidence in [0, 1]
  ``queries``    (N, 3)      float32 (t, x, y): frame index, then pixels
  ``fps``        ()          float64 frame rate of the tracked frames
  ``frame_size`` (2,)        int64   (width, height) of the tracked frames
  ============== =========== ======= =========================================

  plus any extra arrays the caller passes. ``track3d track`` and
  ``reconstruct`` add:

  ================= ======= ======= ======================================
  key               shape   dtype   meaning
  ================= ======= ======= ======================================
  ``frame_indices`` (T,)    int64   index in the source video of each
                                    tracked frame
  ``timestamps``    (T,)    float64 presentation time of each tracked
                                    frame, seconds from the source's
                                    first frame (absent when not every
                                    tracked frame has one)
  ================= ======= ======= ======================================

  Files load with ``allow_pickle=False``: they never execute code.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from track3d.errors import OutputError, ResultError

logger = logging.getLogger(__name__)

TRACKS_FILE = "tracks.npz"
"""File name :func:`save_tracks` uses when given a folder."""

REQUIRED_KEYS: tuple[str, ...] = (
    "tracks",
    "visibility",
    "confidence",
    "queries",
    "fps",
    "frame_size",
)
"""Keys every ``tracks.npz`` holds."""


def _is_nonempty_dir(path: Path) -> bool:
    with os.scandir(path) as entries:
        return any(True for _ in entries)


def _sibling(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}-{secrets.token_hex(4)}")


@contextmanager
def atomic_output_dir(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Write a result folder so that it appears complete or not at all.

    Yields a new empty temporary folder ``.<name>.tmp-<random>`` beside
    ``path``. When the ``with`` block ends normally, the temporary folder is
    renamed to ``path`` (an old ``path`` is first moved aside, then deleted).
    When the block raises (including ``KeyboardInterrupt``), the temporary
    folder is deleted, ``path`` is left as it was, and the exception
    propagates.

    Args:
        path: The result folder to create. Its parent is created if needed.
        overwrite: Replace an existing non-empty folder at ``path``. An
            existing empty folder is always replaced.

    Yields:
        The temporary folder to write into.

    Raises:
        OutputError: ``path`` exists and is not a folder, or is a non-empty
            folder and ``overwrite`` is false (checked on entry, and again
            before the rename).
    """
    path = Path(path)
    _check_target(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        temporary = _sibling(path, "tmp")
        try:
            temporary.mkdir()  # Honours the umask, unlike tempfile.mkdtemp.
            break
        except FileExistsError:
            continue
    try:
        yield temporary
        _check_target(path, overwrite)
        _replace_dir(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    logger.debug("wrote result folder %s", path)


def check_output_dir(path: str | Path, *, overwrite: bool = False) -> None:
    """Fail early, before long work, if :func:`atomic_output_dir` would refuse ``path``.

    Raises:
        OutputError: as :func:`atomic_output_dir`.
    """
    _check_target(Path(path), overwrite)


def _check_target(path: Path, overwrite: bool) -> None:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise OutputError(
            f"{path} exists and is not a folder; remove it or choose another output folder"
        )
    if path.is_dir() and not overwrite and _is_nonempty_dir(path):
        raise OutputError(
            f"the output folder {path} already exists and is not empty; choose another "
            "folder, or pass overwrite=True (--overwrite) to replace it"
        )


def _replace_dir(source: Path, target: Path) -> None:
    """Rename ``source`` onto ``target``; an existing ``target`` is moved aside first."""
    if not target.exists():
        os.replace(source, target)
        return
    old = _sibling(target, "old")
    os.replace(target, old)
    try:
        os.replace(source, target)
    except BaseException:
        os.replace(old, target)  # Put the previous result back.
        raise
    shutil.rmtree(old, ignore_errors=True)


def _validate(arrays: dict[str, np.ndarray], error: type[Exception], source: str) -> None:
    """Check the shapes and dtypes of the required arrays (already converted)."""
    for key, kinds in (
        ("tracks", "fiu"), ("confidence", "fiu"), ("queries", "fiu"), ("fps", "fiu"),
        ("frame_size", "iu"), ("visibility", "b"),
    ):
        if arrays[key].dtype.kind not in kinds:
            expected = {"b": "boolean", "iu": "integer"}.get(kinds, "numeric")
            raise error(f"{source}{key} must be {expected}, got {arrays[key].dtype}")
    tracks = arrays["tracks"]
    if tracks.ndim != 3 or tracks.shape[2] != 2:
        raise error(f"{source}tracks must have shape (T, N, 2), got {tracks.shape}")
    num_steps, num_points = tracks.shape[:2]
    for key in ("visibility", "confidence"):
        if arrays[key].shape != (num_steps, num_points):
            raise error(
                f"{source}{key} must have shape (T, N) = ({num_steps}, {num_points}) like "
                f"tracks, got {arrays[key].shape}"
            )
    if arrays["queries"].shape != (num_points, 3):
        raise error(
            f"{source}queries must have shape (N, 3) = ({num_points}, 3), rows (t, x, y), "
            f"got {arrays['queries'].shape}"
        )
    fps = arrays["fps"]
    if fps.shape != () or not np.isfinite(fps) or fps <= 0:
        raise error(f"{source}fps must be one positive number, got {fps!r}")
    frame_size = arrays["frame_size"]
    if frame_size.shape != (2,) or (frame_size < 1).any():
        raise error(
            f"{source}frame_size must be (width, height), two positive integers, "
            f"got {frame_size!r}"
        )


def _tracks_file(path: str | Path) -> Path:
    path = Path(path)
    return path / TRACKS_FILE if path.is_dir() else path


def save_tracks(
    path: str | Path,
    *,
    tracks: np.ndarray,
    visibility: np.ndarray,
    confidence: np.ndarray,
    queries: np.ndarray,
    fps: float,
    frame_size: tuple[int, int],
    **extra: np.ndarray,
) -> Path:
    """Write a 2D tracking result to a compressed ``.npz``.

    The file is written beside its final name and renamed at the end, so a
    reader never sees half a file.

    Args:
        path: The file to write, or an existing folder (then
            ``<folder>/tracks.npz``). An existing file is replaced.
        tracks: Positions in pixels, ``(x, y)``; NaN where unknown.
        visibility: True where the point is visible (boolean).
        confidence: Tracking confidence.
        queries: ``(t, x, y)`` per track: frame index, then pixels.
        fps: Frame rate of the tracked frames.
        frame_size: ``(width, height)`` of the tracked frames in pixels.
        **extra: More arrays to store under their keyword names (numeric or
            string arrays; no Python objects).

    Returns:
        The path of the written file.

    Shape:
        tracks: ``(T, N, 2)``, stored float32. visibility: ``(T, N)`` bool.
        confidence: ``(T, N)``, stored float32. queries: ``(N, 3)``, stored
        float32. fps: stored as a float64 scalar. frame_size: ``(2,)``,
        stored int64.

    Raises:
        ValueError: A shape or type is wrong (the message says which).
    """
    visibility = np.asarray(visibility)
    if visibility.dtype != np.bool_:
        raise ValueError(
            f"visibility must be a boolean array, got {visibility.dtype}; threshold it "
            "first (e.g. visibility > 0.5)"
        )
    frame_size_array = np.asarray(frame_size)
    if frame_size_array.dtype.kind not in "iu" or frame_size_array.shape != (2,):
        raise ValueError(
            f"frame_size must be (width, height), two integers, got {frame_size!r}"
        )
    try:
        arrays = {
            "tracks": np.asarray(tracks, dtype=np.float32),
            "visibility": visibility,
            "confidence": np.asarray(confidence, dtype=np.float32),
            "queries": np.asarray(queries, dtype=np.float32),
            "fps": np.asarray(fps, dtype=np.float64),
            "frame_size": frame_size_array.astype(np.int64),
        }
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot convert the tracking arrays to numbers: {exc}") from exc
    _validate(arrays, ValueError, "")
    for key, value in extra.items():
        value = np.asarray(value)
        if value.dtype.hasobject:
            raise ValueError(
                f"extra array {key!r} holds Python objects, which cannot be loaded "
                "without pickle; pass a numeric or string array"
            )
        arrays[key] = value

    path = _tracks_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _sibling(path, "tmp")
    try:
        with open(temporary, "wb") as file:
            np.savez_compressed(file, **arrays)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    logger.debug("wrote %s (%d frames, %d tracks)", path, *arrays["tracks"].shape[:2])
    return path


def load_tracks(path: str | Path) -> dict[str, np.ndarray]:
    """Read a file written by :func:`save_tracks`.

    Args:
        path: The ``.npz`` file, or a folder holding ``tracks.npz``.

    Returns:
        Every array in the file by key: at least ``tracks``, ``visibility``,
        ``confidence``, ``queries``, ``fps`` (0-d) and ``frame_size``, with
        the shapes and dtypes listed in :func:`save_tracks`.

    Raises:
        ResultError: The file is missing, is not an ``.npz`` archive, needs
            pickle, or lacks a required key or has a wrong shape.
    """
    path = _tracks_file(path)
    if not path.is_file():
        raise ResultError(f"the tracks file {path} does not exist; check the path")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ResultError(
            f"cannot read {path} as a tracks .npz archive ({exc}); "
            "it is corrupt or was not written by track3d.io.save_tracks"
        ) from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ResultError(
            f"{path} is a single .npy array, not a tracks .npz archive; "
            "write results with track3d.io.save_tracks"
        )
    try:
        with loaded:
            arrays = {key: loaded[key] for key in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ResultError(
            f"cannot read the arrays of {path} ({exc}); it is corrupt or holds "
            "Python objects (pickle), which track3d does not load"
        ) from exc
    missing = [key for key in REQUIRED_KEYS if key not in arrays]
    if missing:
        raise ResultError(
            f"{path} lacks the key(s) {', '.join(missing)} (it has: "
            f"{', '.join(sorted(arrays)) or 'nothing'}); it was not written by "
            "track3d.io.save_tracks"
        )
    _validate(arrays, ResultError, f"{path}: ")
    return arrays


def write_json_atomic(path: str | Path, data) -> Path:
    """Write ``data`` as indented JSON; the file appears complete or not at all.

    NaN values are written as ``NaN`` (what Python's json reads back).

    Raises:
        OutputError: the folder does not exist or cannot be written.
    """
    import json

    path = Path(path)
    temporary = _sibling(path, "tmp")
    try:
        temporary.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
