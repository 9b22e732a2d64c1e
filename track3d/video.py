"""Streaming video input: video files through PyAV, image folders through OpenCV.

Three public functions read a video, from cheapest to most memory-hungry:

- :func:`probe` reads the header only: size, frame rate, frame count.
- :func:`iter_frames` decodes one frame at a time and yields RGB arrays, so a
  long video never has to fit in memory.
- :func:`read_video` stacks the frames of :func:`iter_frames` into one
  ``(T, H, W, 3)`` array and returns the :class:`VideoInfo` of what it read.

Accepted inputs: any container PyAV (FFmpeg) decodes (mp4, mov, avi, webm,
mkv, gif, ...), or a folder of images (png, jpg, jpeg, bmp, tif, tiff, webp)
taken in natural order (``frame2`` before ``frame10``). Every frame comes out
as RGB ``uint8``: grayscale is replicated to three channels, alpha is
dropped, 16-bit samples are scaled to 8 bits (``round(value / 257)``).

Frame selection (``start``, ``end``, ``stride``) counts frames of the source
in decoding order. Decoding always starts at the first frame and skips up to
``start`` (no seeking): slower for a large ``start``, but exact for every
container, including variable-frame-rate ones.

Orientation: frames come out the way players show them. A video file's
display matrix (what a phone writes for a portrait video: landscape frames
plus "rotate 90") is read from each decoded frame through PyAV
(``VideoFrame.rotation``, counter-clockwise degrees) and undone with an exact
quarter-turn (``numpy.rot90``); an image's EXIF orientation tag (read with
Pillow, values 1-8) is applied the way ``PIL.ImageOps.exif_transpose`` does.
Sizes, pixel coordinates and everything downstream are then in displayed
pixels. ``ignore_rotation=True`` keeps the stored pixels. Rotations that are
not a multiple of 90 degrees are rounded to the nearest quarter turn (with a
warning).

Timestamps: ``iter_frames(..., timestamps=[])`` appends each yielded frame's
presentation time in seconds, counted from the first frame of the source
(``frame.time`` of PyAV; ``index / fps`` for image folders).
:func:`read_video` returns them in ``VideoInfo.timestamps``. A variable
frame rate (phones) keeps its real times; ``fps`` is then the average.

Bit depth and HDR: every frame comes out as 8-bit RGB. Standard-range video
of any bit depth (8, 10, 12-bit) is converted by FFmpeg's swscale (its
colour matrix, rounded to 8 bits). HDR video, PQ (SMPTE ST 2084) or HLG
(ARIB STD-B67) by its transfer characteristic, is tone-mapped rather than
clipped (:func:`hdr_to_sdr`): decoded to 16-bit BT.2020 RGB, turned into
display light (PQ's EOTF; HLG's inverse OETF and its OOTF for a 1000-nit
display), divided by the reference white of ITU-R BT.2408 (203 nits, which
becomes SDR white's mid-tone), compressed by the extended Reinhard curve on
luminance (white point: 10000 nits for PQ, 1000 for HLG, so no highlight
clips), converted to BT.709 primaries and encoded with the sRGB curve.

Resizing (``size`` or ``max_side``) uses OpenCV, ``INTER_AREA`` to shrink
and ``INTER_LINEAR`` to grow. Pixel coordinates follow the project
convention: ``(x, y)`` with ``(0, 0)`` the centre of the top-left pixel.

Every problem with the input raises :class:`track3d.errors.VideoError`
(a ``ValueError``) with a message naming the file and what to do.
"""

from __future__ import annotations

import logging
import math
import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from track3d.errors import VideoError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
)
"""File suffixes (lower case) read as frames when the input is a folder."""

DEFAULT_IMAGE_FPS: float = 30.0
"""Frame rate given to a folder of images unless ``fps=`` says otherwise."""

_DECODE_ERRORS = (av.error.FFmpegError, OSError)


@dataclass(frozen=True)
class VideoInfo:
    """What is known about a video without decoding it all.

    Attributes:
        path: The file or folder it came from.
        width: Frame width in pixels.
        height: Frame height in pixels.
        fps: Frames per second.
        num_frames: The container's frame count, an estimate from its
            duration when the container has no count (webm, mkv), or
            ``None`` when neither is known. For :func:`read_video` it is the
            number of frames returned.
        kind: ``"video"`` for a file decoded by PyAV, ``"images"`` for a
            folder of images.
        rotation: Clockwise degrees (0, 90, 180, 270) the stored frames are
            turned by to show them upright (display matrix of a video, EXIF
            orientation of the first image); 0 with ``ignore_rotation``.
            ``width`` and ``height`` are those of the turned frames.
        orientation: What was applied, in words: ``"none"``,
            ``"display matrix: rotate 90"``, ``"exif 6: rotate 90"``,
            ``"ignored (display matrix: rotate 90)"``, ...
        timestamps: ``(T,)`` float64 seconds of the frames read (only from
            :func:`read_video`), else None.
        variable_fps: The timestamps are unevenly spaced (intervals differ by
            more than 5 % from their median); ``fps`` is then their average.
    """

    path: Path
    width: int
    height: int
    fps: float
    num_frames: int | None
    kind: str
    rotation: int = 0
    orientation: str = "none"
    timestamps: np.ndarray | None = None
    variable_fps: bool = False


# --------------------------------------------------------------------------
# helpers: arguments
# --------------------------------------------------------------------------


def _as_int(value: object, name: str) -> int:
    if isinstance(value, bool):
        raise VideoError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise VideoError(f"{name} must be an integer, got {value!r}") from None


def _check_selection(
    start: int, end: int | None, stride: int
) -> tuple[int, int | None, int]:
    start = _as_int(start, "start")
    stride = _as_int(stride, "stride")
    if start < 0:
        raise VideoError(f"start must be >= 0 (a frame index), got {start}")
    if stride < 1:
        raise VideoError(f"stride must be >= 1 (keep every stride-th frame), got {stride}")
    if end is not None:
        end = _as_int(end, "end")
        if end <= start:
            raise VideoError(
                f"end must be greater than start (end is exclusive), got start={start}, end={end}"
            )
    return start, end, stride


def _check_resize(
    size: tuple[int, int] | None, max_side: int | None
) -> tuple[tuple[int, int] | None, int | None]:
    if size is not None and max_side is not None:
        raise VideoError("pass either size=(W, H) or max_side, not both")
    if size is not None:
        try:
            width, height = size
        except (TypeError, ValueError):
            raise VideoError(f"size must be a pair (width, height), got {size!r}") from None
        width, height = _as_int(width, "size width"), _as_int(height, "size height")
        if width < 1 or height < 1:
            raise VideoError(f"size must be positive (width, height), got {size!r}")
        size = (width, height)
    if max_side is not None:
        max_side = _as_int(max_side, "max_side")
        if max_side < 1:
            raise VideoError(f"max_side must be >= 1 pixel, got {max_side}")
    return size, max_side


def _check_fps(fps: float | None) -> float | None:
    if fps is None:
        return None
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise VideoError(f"fps must be a positive number, got {fps!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise VideoError(f"fps must be a positive number, got {fps!r}")
    return value


def _output_size(
    width: int, height: int, size: tuple[int, int] | None, max_side: int | None
) -> tuple[int, int]:
    """Output ``(width, height)`` for a source of ``width x height``."""
    if size is not None:
        return size
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))
    return width, height


def _resize(frame: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    height, width = frame.shape[:2]
    if (width, height) == out_size:
        return frame
    shrinking = out_size[0] <= width and out_size[1] <= height
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(frame, out_size, interpolation=interpolation)


# --------------------------------------------------------------------------
# helpers: image folders
# --------------------------------------------------------------------------


def _natural_key(name: str) -> tuple:
    """Sort key for which ``frame2`` < ``frame10`` (digits compare as numbers)."""
    parts = re.split(r"(\d+)", name.lower())
    # Split alternates text, number, text, ...: same positions hold same types.
    key = tuple(int(part) if i % 2 else part for i, part in enumerate(parts))
    return key, name


def _list_images(folder: Path) -> list[Path]:
    images = [
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    ]
    if not images:
        raise VideoError(
            f"the folder {folder} contains no images "
            f"({', '.join(sorted(e[1:] for e in IMAGE_EXTENSIONS))}); "
            "put the frames there, or pass the path of a video file instead"
        )
    return sorted(images, key=lambda p: _natural_key(p.name))


def _to_rgb8(image: np.ndarray, source: Path) -> np.ndarray:
    """Any OpenCV image (gray, BGR, BGRA; 8 or 16 bit) to RGB uint8."""
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise VideoError(
            f"{source} has {image.dtype} pixels; only 8-bit and 16-bit images are "
            "supported: convert it (e.g. to 8-bit PNG)"
        )
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise VideoError(
        f"{source} has an unsupported layout {image.shape}; expected gray, RGB or RGBA"
    )


EXIF_ORIENTATION_TAG = 0x0112
"""EXIF tag of an image's orientation (values 1-8; 1 is upright)."""

_EXIF_WORDS = {
    1: "none", 2: "mirror", 3: "rotate 180", 4: "flip", 5: "transpose", 6: "rotate 90",
    7: "transverse", 8: "rotate 270",
}


def exif_orientation(path: str | Path) -> int:
    """The EXIF orientation (1-8) of an image file, 1 when it has none (header read with Pillow)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            value = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return 1  # Unreadable by Pillow: OpenCV reports the damage when it decodes.
    return int(value) if value in _EXIF_WORDS else 1


def apply_exif_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn / mirror ``(H, W, ...)`` stored pixels upright, as ``PIL.ImageOps.exif_transpose`` does.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array, stored orientation.
        orientation: EXIF orientation 1-8 (other values: unchanged).

    Returns:
        A view of ``image`` in the displayed orientation (``(W, H, ...)`` for 5-8).
    """
    if orientation == 2:
        return image[:, ::-1]
    if orientation == 3:
        return image[::-1, ::-1]
    if orientation == 4:
        return image[::-1]
    if orientation == 5:
        return image.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(image, -1)
    if orientation == 7:
        return image[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(image, 1)
    return image


def _imread_quietly(path: Path) -> np.ndarray | None:
    """``cv2.imread`` without OpenCV's own log lines on a damaged file (the caller reports it)."""
    log = cv2.utils.logging
    level = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # UNCHANGED: no EXIF turn by OpenCV.
    finally:
        log.setLogLevel(level)


def _read_image(path: Path, upright: bool = True) -> np.ndarray:
    image = _imread_quietly(path)
    if image is None:
        raise VideoError(
            f"cannot read the image {path} (corrupt or unsupported format); "
            "replace it or remove it from the folder"
        )
    image = _to_rgb8(image, path)
    if upright:
        image = np.ascontiguousarray(apply_exif_orientation(image, exif_orientation(path)))
    return image


def _probe_images(folder: Path, fps: float | None, ignore_rotation: bool = False) -> VideoInfo:
    images = _list_images(folder)
    first = _read_image(images[0], upright=not ignore_rotation)
    tag = exif_orientation(images[0])
    words = "none" if tag == 1 else f"exif {tag}: {_EXIF_WORDS[tag]}"
    if ignore_rotation and tag != 1:
        words = f"ignored ({words})"
    rotation = {6: 90, 3: 180, 8: 270}.get(tag, 0) if not ignore_rotation else 0
    return VideoInfo(
        path=folder,
        width=int(first.shape[1]),
        height=int(first.shape[0]),
        fps=DEFAULT_IMAGE_FPS if fps is None else fps,
        num_frames=len(images),
        kind="images",
        rotation=rotation,
        orientation=words,
    )


def _iter_images(
    info: VideoInfo, start: int, end: int | None, stride: int, out_size: tuple[int, int],
    ignore_rotation: bool = False, timestamps: list | None = None,
) -> Iterator[np.ndarray]:
    images = _list_images(info.path)
    for index in range(len(images))[start:end:stride]:
        path = images[index]
        frame = _read_image(path, upright=not ignore_rotation)
        if timestamps is not None:
            timestamps.append(index / info.fps)
        if frame.shape[:2] != (info.height, info.width):
            raise VideoError(
                f"{path} is {frame.shape[1]}x{frame.shape[0]} but the first image of "
                f"{info.path} is {info.width}x{info.height}; all frames of a folder "
                "must have the same size"
            )
        yield _resize(frame, out_size)


# --------------------------------------------------------------------------
# helpers: video files (PyAV)
# --------------------------------------------------------------------------


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except _DECODE_ERRORS as exc:
        raise VideoError(
            f"cannot open {path} as a video ({exc}); check that it is a video file "
            "(mp4, mov, avi, webm, mkv, gif, ...) and that it is not truncated"
        ) from exc


def _video_stream(container: av.container.InputContainer, path: Path) -> av.VideoStream:
    if not container.streams.video:
        raise VideoError(
            f"{path} has no video stream (audio only or data?); pass a file that "
            "contains video"
        )
    return container.streams.video[0]


def _stream_fps(stream: av.VideoStream, path: Path) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return float(rate)
    logger.warning("%s does not state its frame rate; assuming %g fps", path, DEFAULT_IMAGE_FPS)
    return DEFAULT_IMAGE_FPS


def _frame_count(
    container: av.container.InputContainer, stream: av.VideoStream, fps: float
) -> tuple[int | None, bool]:
    """The container's frame count (exact) or an estimate from the duration."""
    if stream.frames and stream.frames > 0:
        return int(stream.frames), True
    seconds = None
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / av.time_base
    if seconds is None or seconds <= 0:
        return None, False
    return max(1, round(seconds * fps)), False


def _decode(container: av.container.InputContainer, stream: av.VideoStream) -> Iterator:
    """Decoded ``av.VideoFrame`` objects of ``stream`` in order."""
    return container.decode(stream)


def display_rotation(frame: av.VideoFrame) -> int:
    """Clockwise degrees (0, 90, 180, 270) that turn a decoded frame upright.

    PyAV's ``VideoFrame.rotation`` is the display matrix's counter-clockwise
    angle (-90 for a phone's portrait video, whose frames are stored
    landscape); players turn the frame by its opposite. Angles between
    quarter turns are rounded to the nearest one.
    """
    angle = getattr(frame, "rotation", 0) or 0
    clockwise = (-float(angle)) % 360.0
    quarter = int(round(clockwise / 90.0)) % 4 * 90
    if abs(((clockwise - quarter + 180.0) % 360.0) - 180.0) > 1.0:
        logger.warning("display matrix rotates by %.1f degrees; rounded to %d", clockwise, quarter)
    return quarter


def _turn(array: np.ndarray, rotation: int) -> np.ndarray:
    """Turn ``(H, W, ...)`` by ``rotation`` degrees clockwise (a multiple of 90)."""
    return np.ascontiguousarray(np.rot90(array, -(rotation // 90))) if rotation else array


def _probe_video(path: Path, fps: float | None, ignore_rotation: bool = False) -> tuple[VideoInfo, bool]:
    container = _open(path)
    try:
        stream = _video_stream(container, path)
        source_fps = _stream_fps(stream, path)
        num_frames, exact = _frame_count(container, stream, source_fps)
        # The display matrix travels on the decoded frames (PyAV): decode the first one.
        try:
            first = next(iter(_decode(container, stream)))
        except StopIteration:
            raise VideoError(
                f"no frame could be decoded from {path}; the file is empty or corrupt"
            ) from None
        except _DECODE_ERRORS as exc:
            raise VideoError(
                f"no frame could be decoded from {path} ({exc}); the file is corrupt: "
                "re-encode or re-download it"
            ) from exc
        width, height = first.width, first.height
        rotation = display_rotation(first)
        words = "none" if rotation == 0 else f"display matrix: rotate {rotation}"
        if ignore_rotation:
            words = "none" if rotation == 0 else f"ignored ({words})"
            rotation = 0
        if rotation in (90, 270):
            width, height = height, width
        info = VideoInfo(
            path=path,
            width=int(width),
            height=int(height),
            fps=source_fps if fps is None else fps,
            num_frames=num_frames,
            kind="video",
            rotation=rotation,
            orientation=words,
        )
        return info, exact
    finally:
        container.close()


def _iter_video(
    info: VideoInfo, start: int, end: int | None, stride: int, out_size: tuple[int, int],
    timestamps: list | None = None,
) -> Iterator[np.ndarray]:
    path = info.path
    container = _open(path)
    try:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        announced, exact = _frame_count(container, stream, _stream_fps(stream, path))
        frames = _decode(container, stream)
        index = 0  # Source index of the next frame to decode.
        reached_end = False
        size_warned = False
        first_time = None
        while end is None or index < end:
            try:
                frame = next(frames)
            except StopIteration:
                reached_end = True
                break
            except _DECODE_ERRORS as exc:
                if index == 0:
                    raise VideoError(
                        f"no frame could be decoded from {path} ({exc}); the file is "
                        "corrupt or truncated: re-encode or re-download it"
                    ) from exc
                raise VideoError(
                    f"{path} is truncated or corrupt after {index} frames ({exc}); "
                    f"re-encode or re-download it, or pass end={index} to read only "
                    "the frames before the damage"
                ) from exc
            keep = index >= start and (index - start) % stride == 0
            index += 1
            if first_time is None and frame.time is not None:
                first_time = frame.time
            if not keep:
                continue
            if timestamps is not None:
                if frame.time is not None and first_time is not None:
                    timestamps.append(float(frame.time - first_time))
                else:  # No presentation time: the nominal rate's.
                    timestamps.append((index - 1) / info.fps)
            try:
                array = _to_rgb(frame, out_size, info.rotation)
            except _DECODE_ERRORS as exc:
                raise VideoError(
                    f"cannot convert frame {index - 1} of {path} (pixel format "
                    f"{frame.format.name}) to RGB ({exc}); re-encode the video, e.g. "
                    "`ffmpeg -i in -pix_fmt yuv420p out.mp4`"
                ) from exc
            shown = (frame.height, frame.width) if info.rotation in (90, 270) else (frame.width, frame.height)
            if shown != (info.width, info.height) and not size_warned:
                logger.warning(
                    "%s changes frame size mid-stream (%dx%d, first %dx%d); resizing "
                    "every frame to %dx%d",
                    path, *shown, info.width, info.height, *out_size,
                )
                size_warned = True
            yield np.ascontiguousarray(array)
    finally:
        container.close()

    if not reached_end:
        return
    if index == 0:
        raise VideoError(
            f"no frame could be decoded from {path}; the file is empty, truncated or "
            "corrupt: re-encode or re-download it"
        )
    if index <= start:
        raise VideoError(
            f"start={start} is past the end of {path}: it has {index} frames "
            f"(valid start: 0 to {index - 1})"
        )
    if announced is not None:
        missing = announced - index if exact else announced - index - max(2, 0.05 * announced)
        if missing > 0:
            logger.warning(
                "%s announces %s%d frames but only %d could be decoded; the file is "
                "probably truncated",
                path, "" if exact else "about ", announced, index,
            )


TRANSFER_PQ, TRANSFER_HLG = 16, 18
"""FFmpeg's transfer characteristics (``AVColorTransferCharacteristic``) of HDR video."""

HDR_REFERENCE_WHITE_NITS = 203.0
"""Display light of HDR reference white (ITU-R BT.2408)."""

_BT2020_TO_BT709 = np.array([[1.6605, -0.5876, -0.0728],
                             [-0.1246, 1.1329, -0.0083],
                             [-0.0182, -0.1006, 1.1187]], dtype=np.float32)
_BT2020_LUMA = np.array([0.2627, 0.6780, 0.0593], dtype=np.float32)


def _hdr_transfer(frame: av.VideoFrame) -> int | None:
    trc = getattr(frame, "color_trc", None)
    try:
        trc = int(trc) if trc is not None else None
    except (TypeError, ValueError):
        return None
    return trc if trc in (TRANSFER_PQ, TRANSFER_HLG) else None


def hdr_to_sdr(rgb: np.ndarray, transfer: int) -> np.ndarray:
    """Tone-map HDR RGB (BT.2020 primaries, PQ or HLG signal) to 8-bit sRGB / BT.709.

    See the module documentation for the steps; no value is clipped except
    what the BT.2020 to BT.709 gamut conversion leaves outside ``[0, 1]``.

    Args:
        rgb: ``(H, W, 3)`` uint16 non-linear signal (``rgb48`` of FFmpeg).
        transfer: :data:`TRANSFER_PQ` or :data:`TRANSFER_HLG`.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    e = rgb.astype(np.float32) / 65535.0
    if transfer == TRANSFER_PQ:
        m1, m2 = 2610 / 16384, 2523 / 4096 * 128
        c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
        p = np.power(e, 1 / m2)
        nits = 10000.0 * np.power(np.maximum(p - c1, 0) / (c2 - c3 * p), 1 / m1)
        peak = 10000.0
    elif transfer == TRANSFER_HLG:
        a, b, c = 0.17883277, 0.28466892, 0.55991073
        scene = np.where(e <= 0.5, e * e / 3, (np.exp((e - c) / a) + b) / 12)
        ys = np.maximum(scene @ _BT2020_LUMA, 1e-6)[..., None]
        nits = 1000.0 * np.power(ys, 0.2) * scene  # OOTF, gamma 1.2 (1000-nit display)
        peak = 1000.0
    else:
        raise ValueError(f"transfer must be PQ ({TRANSFER_PQ}) or HLG ({TRANSFER_HLG}), got {transfer}")
    x = nits / HDR_REFERENCE_WHITE_NITS
    y = np.maximum(x @ _BT2020_LUMA, 1e-6)[..., None]
    white = peak / HDR_REFERENCE_WHITE_NITS
    mapped = y * (1 + y / (white * white)) / (1 + y)
    linear = np.clip((x * (mapped / y)) @ _BT2020_TO_BT709.T, 0, 1)
    srgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1 / 2.4) - 0.055)
    return np.round(srgb * 255).astype(np.uint8)


def _to_rgb(frame: av.VideoFrame, out_size: tuple[int, int], rotation: int) -> np.ndarray:
    """One decoded frame to upright RGB uint8 at ``out_size`` (HDR tone-mapped after the resize)."""
    transfer = _hdr_transfer(frame)
    if transfer is None:
        return _resize(_turn(frame.to_ndarray(format="rgb24"), rotation), out_size)
    rgb = frame.reformat(format="rgb48le", src_colorspace="bt2020").to_ndarray()
    return hdr_to_sdr(_resize(_turn(rgb, rotation), out_size), transfer)


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise VideoError(f"the video {path} does not exist; check the path")
    return path


def _probe(path: str | Path, fps: float | None, ignore_rotation: bool = False) -> tuple[VideoInfo, bool]:
    """:func:`probe`, plus whether ``num_frames`` is an exact count."""
    fps = _check_fps(fps)
    path = _existing(path)
    if path.is_dir():
        return _probe_images(path, fps, ignore_rotation), True
    return _probe_video(path, fps, ignore_rotation)


def _open_frames(
    path: str | Path,
    start: int,
    end: int | None,
    stride: int,
    size: tuple[int, int] | None,
    max_side: int | None,
    fps: float | None,
    ignore_rotation: bool = False,
    timestamps: list | None = None,
) -> tuple[VideoInfo, bool, Iterator[np.ndarray]]:
    """Check everything that can be checked before decoding; then a frame iterator."""
    start, end, stride = _check_selection(start, end, stride)
    size, max_side = _check_resize(size, max_side)
    info, exact = _probe(path, fps, ignore_rotation)
    if exact and info.num_frames is not None and start >= info.num_frames:
        raise VideoError(
            f"start={start} is past the end of {info.path}: it has {info.num_frames} "
            f"frames (valid start: 0 to {info.num_frames - 1})"
        )
    out_size = _output_size(info.width, info.height, size, max_side)
    if info.kind == "images":
        return info, exact, _iter_images(info, start, end, stride, out_size, ignore_rotation, timestamps)
    return info, exact, _iter_video(info, start, end, stride, out_size, timestamps)


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------


def probe(path: str | Path, *, fps: float | None = None, ignore_rotation: bool = False) -> VideoInfo:
    """Read a video's size, orientation, frame rate and frame count, decoding one frame at most.

    Args:
        path: A video file (anything FFmpeg reads) or a folder of images.
        fps: Frame rate to report instead of the container's; the frame rate
            of an image folder (default :data:`DEFAULT_IMAGE_FPS`).
        ignore_rotation: Report the stored size, not the displayed one.

    Returns:
        The :class:`VideoInfo` of the source (its own size, not resized).

    Raises:
        VideoError: The path is missing, a folder without images, not a video,
            or has no video stream; ``fps`` is not positive.
    """
    return _probe(path, fps, ignore_rotation)[0]


def iter_frames(
    path: str | Path,
    *,
    start: int = 0,
    end: int | None = None,
    stride: int = 1,
    size: tuple[int, int] | None = None,
    max_side: int | None = None,
    fps: float | None = None,
    ignore_rotation: bool = False,
    timestamps: list | None = None,
) -> Iterator[np.ndarray]:
    """Decode a video one frame at a time.

    The path and arguments are checked when this is called; decoding errors
    are raised by the iterator, after the frames before them were yielded.

    Args:
        path: A video file or a folder of images.
        start: Index of the first source frame to keep.
        end: Index of the source frame to stop before (exclusive); ``None``
            reads to the end. An ``end`` past the last frame reads to the end.
        stride: Keep every ``stride``-th frame from ``start``.
        size: Output ``(width, height)``, exactly, aspect ratio not kept.
        max_side: Shrink (never grow) so the longer side is at most this
            many pixels, keeping the aspect ratio. Only one of ``size`` and
            ``max_side``.
        fps: Frame rate of an image folder; accepted for symmetry with
            :func:`read_video` (frames do not depend on it).
        ignore_rotation: Keep the stored pixels: no display matrix or EXIF
            orientation applied.
        timestamps: A list to which the presentation time (seconds from the
            source's first frame) of each yielded frame is appended.

    Returns:
        An iterator of frames, each ``(H, W, 3) uint8`` RGB.

    Shape:
        Each frame is ``(H, W, 3)``, with ``(W, H)`` the output size.

    Raises:
        VideoError: Bad path or arguments (at the call); ``start`` past the
            end, no frame decoded, or a decoding failure (while iterating).
            A file that stops early without a decoding error yields fewer
            frames and logs a warning.
    """
    return _open_frames(path, start, end, stride, size, max_side, fps, ignore_rotation, timestamps)[2]


def read_video(
    path: str | Path,
    *,
    start: int = 0,
    end: int | None = None,
    stride: int = 1,
    size: tuple[int, int] | None = None,
    max_side: int | None = None,
    fps: float | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    ignore_rotation: bool = False,
) -> tuple[np.ndarray, VideoInfo]:
    """Decode a video (or a range of it) into one array.

    Args:
        path: A video file or a folder of images.
        start, end, stride, size, max_side, fps, ignore_rotation: As for :func:`iter_frames`.
        progress: Called as ``progress(frames_read, expected_total)`` after each
            frame; the total is None when the container does not say.

    Returns:
        ``(frames, info)``: the frames, and a :class:`VideoInfo` describing
        them: output width and height, ``fps`` of the source divided by
        ``stride`` (the average of the timestamps when the rate is variable),
        ``num_frames == T``, ``timestamps`` ``(T,)`` seconds.

    Shape:
        frames: ``(T, H, W, 3) uint8``, RGB.

    Raises:
        VideoError: As for :func:`iter_frames`.
    """
    times: list[float] = []
    source, exact, frames = _open_frames(path, start, end, stride, size, max_side, fps, ignore_rotation, times)
    # Fill a preallocated buffer (exact when the count is known) rather than
    # stacking a list, so memory peaks at one copy of the video, not two.
    stop = source.num_frames if end is None else end
    total = None
    if source.num_frames is not None and stop is not None:
        stop = min(stop, source.num_frames) if exact else stop
        total = capacity = max(1, len(range(start, stop, stride)))
    else:
        capacity = 64
    video: np.ndarray | None = None
    count = 0
    for frame in frames:
        if video is None:
            video = np.empty((capacity, *frame.shape), dtype=np.uint8)
        elif count == len(video):
            grown = np.empty((2 * len(video), *frame.shape), dtype=np.uint8)
            grown[:count] = video
            video = grown
        video[count] = frame
        count += 1
        if progress is not None:
            progress(count, total)
    assert video is not None  # The iterator raises rather than yield nothing.
    if count < len(video):
        video = video[:count].copy()
    timestamps = np.asarray(times, dtype=np.float64)
    rate, variable = frame_rate(timestamps, source.fps / stride)
    info = VideoInfo(
        path=source.path,
        width=int(video.shape[2]),
        height=int(video.shape[1]),
        fps=rate if fps is None else source.fps / stride,
        num_frames=count,
        kind=source.kind,
        rotation=source.rotation,
        orientation=source.orientation,
        timestamps=timestamps,
        variable_fps=variable,
    )
    return video, info


def count_frames(path: str | Path) -> int | None:
    """Count a video file's frames by reading its packets (no decoding): for containers
    that state no frame count (webm, mkv, some streams). ``None`` for an image folder
    (its count is exact already) or a file that cannot be read."""
    path = Path(path)
    if path.is_dir():
        return None
    try:
        container = av.open(str(path), mode="r")
    except _DECODE_ERRORS:
        return None
    try:
        if not container.streams.video:
            return None
        count = 0
        for packet in container.demux(container.streams.video[0]):
            if packet.size > 0:  # The final flush packet is empty.
                count += 1
        return count or None
    except _DECODE_ERRORS:
        return None
    finally:
        container.close()


VARIABLE_RATE_TOLERANCE = 0.05
"""Frame intervals that differ from their median by more than this fraction make a rate variable."""


def frame_rate(timestamps: np.ndarray, nominal: float) -> tuple[float, bool]:
    """The frame rate of frames shown at ``timestamps``, and whether it is variable.

    Args:
        timestamps: ``(T,)`` seconds, increasing.
        nominal: The container's rate (of the selected frames); returned for
            an even spacing (it is exact where the average suffers rounding)
            and for fewer than 2 frames.

    Returns:
        ``(fps, variable)``: ``variable`` when an interval differs from the
        median interval by more than :data:`VARIABLE_RATE_TOLERANCE`; ``fps``
        is then ``(T - 1) / (t[-1] - t[0])``, the average rate.
    """
    t = np.asarray(timestamps, dtype=np.float64)
    if len(t) < 2:
        return float(nominal), False
    steps = np.diff(t)
    median = float(np.median(steps))
    if not np.isfinite(steps).all() or median <= 0 or t[-1] <= t[0]:
        return float(nominal), False
    variable = bool(np.max(np.abs(steps - median)) > VARIABLE_RATE_TOLERANCE * median)
    if not variable:
        return float(nominal), False
    return float((len(t) - 1) / (t[-1] - t[0])), True
