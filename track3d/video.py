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
    """

    path: Path
    width: int
    height: int
    fps: float
    num_frames: int | None
    kind: str


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


def _read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise VideoError(
            f"cannot read the image {path} (corrupt or unsupported format); "
            "replace it or remove it from the folder"
        )
    return _to_rgb8(image, path)


def _probe_images(folder: Path, fps: float | None) -> VideoInfo:
    images = _list_images(folder)
    first = _read_image(images[0])
    return VideoInfo(
        path=folder,
        width=int(first.shape[1]),
        height=int(first.shape[0]),
        fps=DEFAULT_IMAGE_FPS if fps is None else fps,
        num_frames=len(images),
        kind="images",
    )


def _iter_images(
    info: VideoInfo, start: int, end: int | None, stride: int, out_size: tuple[int, int]
) -> Iterator[np.ndarray]:
    images = _list_images(info.path)
    for path in images[start:end:stride]:
        frame = _read_image(path)
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


def _probe_video(path: Path, fps: float | None) -> tuple[VideoInfo, bool]:
    container = _open(path)
    try:
        stream = _video_stream(container, path)
        source_fps = _stream_fps(stream, path)
        num_frames, exact = _frame_count(container, stream, source_fps)
        width, height = stream.codec_context.width, stream.codec_context.height
        if width <= 0 or height <= 0:  # Header without a size: decode one frame.
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
        info = VideoInfo(
            path=path,
            width=int(width),
            height=int(height),
            fps=source_fps if fps is None else fps,
            num_frames=num_frames,
            kind="video",
        )
        return info, exact
    finally:
        container.close()


def _iter_video(
    info: VideoInfo, start: int, end: int | None, stride: int, out_size: tuple[int, int]
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
            if not keep:
                continue
            try:
                array = frame.to_ndarray(format="rgb24")
            except _DECODE_ERRORS as exc:
                raise VideoError(
                    f"cannot convert frame {index - 1} of {path} (pixel format "
                    f"{frame.format.name}) to RGB ({exc}); re-encode the video, e.g. "
                    "`ffmpeg -i in -pix_fmt yuv420p out.mp4`"
                ) from exc
            if array.shape[:2] != (info.height, info.width) and not size_warned:
                logger.warning(
                    "%s changes frame size mid-stream (%dx%d, first %dx%d); resizing "
                    "every frame to %dx%d",
                    path, array.shape[1], array.shape[0], info.width, info.height, *out_size,
                )
                size_warned = True
            yield np.ascontiguousarray(_resize(array, out_size))
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


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise VideoError(f"the video {path} does not exist; check the path")
    return path


def _probe(path: str | Path, fps: float | None) -> tuple[VideoInfo, bool]:
    """:func:`probe`, plus whether ``num_frames`` is an exact count."""
    fps = _check_fps(fps)
    path = _existing(path)
    if path.is_dir():
        return _probe_images(path, fps), True
    return _probe_video(path, fps)


def _open_frames(
    path: str | Path,
    start: int,
    end: int | None,
    stride: int,
    size: tuple[int, int] | None,
    max_side: int | None,
    fps: float | None,
) -> tuple[VideoInfo, bool, Iterator[np.ndarray]]:
    """Check everything that can be checked before decoding; then a frame iterator."""
    start, end, stride = _check_selection(start, end, stride)
    size, max_side = _check_resize(size, max_side)
    info, exact = _probe(path, fps)
    if exact and info.num_frames is not None and start >= info.num_frames:
        raise VideoError(
            f"start={start} is past the end of {info.path}: it has {info.num_frames} "
            f"frames (valid start: 0 to {info.num_frames - 1})"
        )
    out_size = _output_size(info.width, info.height, size, max_side)
    if info.kind == "images":
        return info, exact, _iter_images(info, start, end, stride, out_size)
    return info, exact, _iter_video(info, start, end, stride, out_size)


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------


def probe(path: str | Path, *, fps: float | None = None) -> VideoInfo:
    """Read a video's size, frame rate and frame count without decoding it.

    Args:
        path: A video file (anything FFmpeg reads) or a folder of images.
        fps: Frame rate to report instead of the container's; the frame rate
            of an image folder (default :data:`DEFAULT_IMAGE_FPS`).

    Returns:
        The :class:`VideoInfo` of the source (its own size, not resized).

    Raises:
        VideoError: The path is missing, a folder without images, not a video,
            or has no video stream; ``fps`` is not positive.
    """
    return _probe(path, fps)[0]


def iter_frames(
    path: str | Path,
    *,
    start: int = 0,
    end: int | None = None,
    stride: int = 1,
    size: tuple[int, int] | None = None,
    max_side: int | None = None,
    fps: float | None = None,
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
    return _open_frames(path, start, end, stride, size, max_side, fps)[2]


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
) -> tuple[np.ndarray, VideoInfo]:
    """Decode a video (or a range of it) into one array.

    Args:
        path: A video file or a folder of images.
        start, end, stride, size, max_side, fps: As for :func:`iter_frames`.
        progress: Called as ``progress(frames_read, expected_total)`` after each
            frame; the total is None when the container does not say.

    Returns:
        ``(frames, info)``: the frames, and a :class:`VideoInfo` describing
        them: output width and height, ``fps`` of the source divided by
        ``stride``, ``num_frames == T``.

    Shape:
        frames: ``(T, H, W, 3) uint8``, RGB.

    Raises:
        VideoError: As for :func:`iter_frames`.
    """
    source, exact, frames = _open_frames(path, start, end, stride, size, max_side, fps)
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
    info = VideoInfo(
        path=source.path,
        width=int(video.shape[2]),
        height=int(video.shape[1]),
        fps=source.fps / stride,
        num_frames=count,
        kind=source.kind,
    )
    return video, info
