"""Tests of track3d.video: formats, frame selection, resizing, pixel formats, errors.

Every test writes its own small videos (PyAV) or image folders (OpenCV) into
``tmp_path``. Frame ``i`` of the synthetic videos is a solid grey of level
``LEVEL0 + STEP * i``, so its index is recoverable from the decoded frame
within the codec's error (a few levels; the tolerance is half a step).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

import track3d.video as video
from track3d.errors import VideoError
from track3d.video import VideoInfo, iter_frames, probe, read_video

LEVEL0, STEP = 20, 20
NUM_FRAMES, WIDTH, HEIGHT, FPS = 10, 64, 48, 10
SHARED_VIDEOS = Path(__file__).resolve().parents[3] / "shared" / "videos"


def _has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:
        return False


def _level_frames(n: int = NUM_FRAMES, width: int = WIDTH, height: int = HEIGHT) -> list[np.ndarray]:
    return [np.full((height, width, 3), LEVEL0 + STEP * i, np.uint8) for i in range(n)]


def _noise_frames(n: int, width: int = WIDTH, height: int = HEIGHT) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(n)]


def _write(
    path: Path,
    frames: list[np.ndarray],
    codec: str = "libx264",
    *,
    fps: int = FPS,
    pix_fmt: str = "yuv420p",
    container_options: dict[str, str] | None = None,
) -> Path:
    if not _has_encoder(codec):
        pytest.skip(f"encoder {codec} is not available in this PyAV build")
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def _indices(frames: np.ndarray) -> list[int]:
    """Frame indices encoded by the grey levels (checks each frame is near a level)."""
    means = frames.reshape(len(frames), -1).mean(axis=1)
    indices = np.round((means - LEVEL0) / STEP).astype(int)
    error = np.abs(means - (LEVEL0 + STEP * indices))
    assert (error < STEP / 2 - 2).all(), means
    return indices.tolist()


# --------------------------------------------------------------------------
# formats
# --------------------------------------------------------------------------

FORMATS = [
    ("mp4", "libx264", "yuv420p"),
    ("avi", "mpeg4", "yuv420p"),
    ("mov", "mpeg4", "yuv420p"),
    ("mkv", "libx264", "yuv420p"),
    ("webm", "libvpx-vp9", "yuv420p"),
    ("webm", "libvpx", "yuv420p"),
    ("gif", "gif", "rgb8"),
]


@pytest.mark.parametrize(("suffix", "codec", "pix_fmt"), FORMATS, ids=[f"{s}-{c}" for s, c, _ in FORMATS])
def test_formats_probe_and_read(tmp_path, suffix, codec, pix_fmt):
    path = _write(tmp_path / f"clip.{suffix}", _level_frames(), codec, pix_fmt=pix_fmt)

    info = probe(path)
    assert info == VideoInfo(path, WIDTH, HEIGHT, pytest.approx(FPS), NUM_FRAMES, "video")

    frames, read_info = read_video(path)
    assert frames.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3)
    assert frames.dtype == np.uint8 and frames.flags.c_contiguous
    assert _indices(frames) == list(range(NUM_FRAMES))
    assert read_info.num_frames == NUM_FRAMES
    assert read_info.fps == pytest.approx(FPS)


def test_colour_channels_are_rgb_and_not_flipped(tmp_path):
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[:, : WIDTH // 2] = (230, 20, 20)  # Red on the left,
    image[: HEIGHT // 2, WIDTH // 2 :] = (20, 20, 230)  # blue at the top right.
    path = _write(tmp_path / "rgb.mp4", [image] * 3, pix_fmt="yuv444p")
    frame = next(iter_frames(path))
    assert np.abs(frame[HEIGHT // 2, 5].astype(int) - (230, 20, 20)).max() < 12
    assert np.abs(frame[5, WIDTH - 5].astype(int) - (20, 20, 230)).max() < 12
    assert frame[HEIGHT - 5, WIDTH - 5].max() < 12


def test_iter_frames_streams_one_frame_at_a_time(tmp_path):
    path = _write(tmp_path / "clip.mp4", _level_frames())
    frames = iter_frames(path)
    assert isinstance(frames, Iterator)
    first = next(frames)
    assert first.shape == (HEIGHT, WIDTH, 3) and first.dtype == np.uint8
    assert _indices(first[None]) == [0]
    frames.close()  # Stopping early closes the container without error.


@pytest.mark.parametrize(
    ("codec", "pix_fmt", "suffix"), [("libx264", "yuv444p", "mp4"), ("mpeg4", "yuv420p", "avi")]
)
def test_odd_frame_size(tmp_path, codec, pix_fmt, suffix):
    path = _write(tmp_path / f"odd.{suffix}", _level_frames(4, 33, 25), codec, pix_fmt=pix_fmt)
    info = probe(path)
    assert (info.width, info.height) == (33, 25)
    frames, _ = read_video(path)
    assert frames.shape == (4, 25, 33, 3)
    assert _indices(frames) == [0, 1, 2, 3]


# --------------------------------------------------------------------------
# frame selection and resizing
# --------------------------------------------------------------------------


def test_start_end_stride(tmp_path):
    path = _write(tmp_path / "clip.mp4", _level_frames())
    frames, info = read_video(path, start=2, end=9, stride=3)
    assert _indices(frames) == [2, 5, 8]
    assert info.num_frames == 3
    assert info.fps == pytest.approx(FPS / 3)
    assert _indices(np.stack(list(iter_frames(path, start=7)))) == [7, 8, 9]
    assert _indices(np.stack(list(iter_frames(path, end=2)))) == [0, 1]
    # An end past the last frame reads to the end.
    assert _indices(read_video(path, start=8, end=100)[0]) == [8, 9]


def test_read_video_reports_progress(tmp_path):
    path = _write(tmp_path / "clip.mp4", _level_frames())
    calls = []
    frames, _ = read_video(path, start=2, end=9, stride=3, progress=lambda n, total: calls.append((n, total)))
    # Frames 2, 5, 8 are selected: three calls, each with the known total of 3.
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert len(frames) == 3


def test_selection_on_a_container_without_frame_count(tmp_path):
    path = _write(tmp_path / "clip.mkv", _level_frames())
    frames, info = read_video(path, start=1, stride=4)
    assert _indices(frames) == [1, 5, 9]
    assert info.num_frames == 3


@pytest.mark.parametrize(
    ("kwargs", "shape"),
    [
        ({"size": (40, 30)}, (30, 40)),
        ({"size": (100, 20)}, (20, 100)),
        ({"max_side": 32}, (24, 32)),
        ({"max_side": 1000}, (HEIGHT, WIDTH)),
    ],
)
def test_resize(tmp_path, kwargs, shape):
    path = _write(tmp_path / "clip.mp4", _level_frames(3))
    frames, info = read_video(path, **kwargs)
    assert frames.shape == (3, *shape, 3)
    assert (info.height, info.width) == shape
    assert _indices(frames) == [0, 1, 2]
    assert probe(path).width == WIDTH  # probe reports the source size.


def test_resize_uses_area_when_shrinking(tmp_path):
    stripes = np.zeros((8, 8, 3), np.uint8)
    stripes[:, ::2] = 200  # Alternating columns: INTER_AREA averages them to 100.
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "0.png"), stripes)
    frames, _ = read_video(folder, size=(4, 4))
    assert np.all(frames == 100)


# --------------------------------------------------------------------------
# image folders
# --------------------------------------------------------------------------


def _folder(tmp_path: Path, images: dict[str, np.ndarray]) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir(exist_ok=True)
    for name, image in images.items():
        assert cv2.imwrite(str(folder / name), image)
    return folder


def test_folder_natural_order_and_fps(tmp_path):
    names = ["frame10.png", "frame2.png", "frame1.png", "frame0.png"]
    levels = {"frame0.png": 0, "frame1.png": 1, "frame2.png": 2, "frame10.png": 3}
    folder = _folder(
        tmp_path, {n: np.full((HEIGHT, WIDTH, 3), LEVEL0 + STEP * levels[n], np.uint8) for n in names}
    )
    (folder / "notes.txt").write_text("ignored")

    info = probe(folder)
    assert info == VideoInfo(folder, WIDTH, HEIGHT, 30.0, 4, "images")
    assert probe(folder, fps=12.5).fps == 12.5

    frames, read_info = read_video(folder, stride=2, fps=24)
    assert _indices(frames) == [0, 2]
    assert read_info.fps == 12.0 and read_info.kind == "images"
    assert _indices(read_video(folder, start=1, end=3)[0]) == [1, 2]


def test_folder_pixel_formats(tmp_path):
    gray = np.full((5, 7), 77, np.uint8)
    bgra = np.zeros((5, 7, 4), np.uint8)
    bgra[..., :] = (10, 20, 30, 0)  # B, G, R, fully transparent alpha (dropped).
    gray16 = np.full((5, 7), 65535, np.uint16)
    gray16[0, 0] = 257 * 100 + 200  # 100.78 in 8 bits: rounds to 101 (truncation gives 100).
    bgr16 = np.zeros((5, 7, 3), np.uint16)
    bgr16[...] = (257 * 10, 257 * 20, 257 * 30)
    folder = _folder(
        tmp_path, {"a.png": gray, "b.png": bgra, "c.png": gray16, "d.tif": bgr16, "e.bmp": gray}
    )
    frames, info = read_video(folder)
    assert frames.shape == (5, 5, 7, 3) and frames.dtype == np.uint8
    assert (info.width, info.height) == (7, 5)
    assert np.all(frames[0] == 77)
    assert np.all(frames[1] == (30, 20, 10))
    assert np.all(frames[2, 1:] == 255) and np.all(frames[2, 0, 0] == 101)
    assert np.all(frames[3] == (30, 20, 10))
    assert np.all(frames[4] == 77)


def test_folder_with_odd_size_and_jpeg(tmp_path):
    folder = _folder(tmp_path, {f"{i}.jpg": np.full((25, 33, 3), LEVEL0 + STEP * i, np.uint8) for i in range(3)})
    frames, info = read_video(folder)
    assert frames.shape == (3, 25, 33, 3)
    assert _indices(frames) == [0, 1, 2]


def test_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoError, match="contains no images"):
        probe(empty)
    (empty / "readme.txt").write_text("no frames here")
    with pytest.raises(VideoError, match="contains no images"):
        read_video(empty)

    folder = _folder(tmp_path, {"0.png": np.zeros((4, 4, 3), np.uint8), "1.png": np.zeros((5, 4, 3), np.uint8)})
    with pytest.raises(VideoError, match="same size"):
        read_video(folder)

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "0.png").write_text("not a png")
    with pytest.raises(VideoError, match="cannot read the image"):
        read_video(broken)


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------


def test_missing_path(tmp_path):
    missing = tmp_path / "nope.mp4"
    for call in (probe, read_video, iter_frames):  # iter_frames checks at the call.
        with pytest.raises(VideoError, match="does not exist") as info:
            call(missing)
        assert "nope.mp4" in str(info.value)
    assert issubclass(VideoError, ValueError)


@pytest.mark.parametrize("content", [b"this is not a video\n", b""], ids=["text", "empty"])
def test_not_a_video(tmp_path, content):
    path = tmp_path / "fake.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoError, match="cannot open .*fake.mp4 as a video"):
        probe(path)
    with pytest.raises(VideoError, match="as a video"):
        read_video(path)


def test_no_video_stream(tmp_path):
    path = tmp_path / "audio.wav"
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(VideoError, match="no video stream"):
        probe(path)


def test_truncated_mp4_without_index(tmp_path):
    # The mp4 index (moov) is written last: half a file cannot even be opened.
    path = _write(tmp_path / "clip.mp4", _noise_frames(20))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match="truncated"):
        read_video(path)


def test_truncated_mp4_with_index_first(tmp_path, caplog):
    # With the index first, the file announces 20 frames and the data stops
    # halfway. FFmpeg either reports the damage (VideoError) or stops early
    # (fewer frames and a warning), depending on its threading; never silent.
    path = _write(
        tmp_path / "clip.mp4", _noise_frames(20), container_options={"movflags": "faststart"}
    )
    assert probe(path).num_frames == 20
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    caplog.set_level(logging.WARNING, logger="track3d.video")
    try:
        frames, info = read_video(path)
    except VideoError as exc:
        assert "truncated or corrupt" in str(exc) or "no frame could be decoded" in str(exc)
    else:
        assert 0 < len(frames) < 20 and info.num_frames == len(frames)
        assert "announces 20 frames" in caplog.text


def test_truncated_mkv_warns(tmp_path, caplog):
    path = _write(tmp_path / "clip.mkv", _noise_frames(20))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    caplog.set_level(logging.WARNING, logger="track3d.video")
    frames, info = read_video(path)
    assert 0 < len(frames) < 20
    assert "probably truncated" in caplog.text and "clip.mkv" in caplog.text


def _fake_decode(real_count: int, error: Exception | None):
    real_decode = video._decode

    def decode(container, stream):
        for i, frame in enumerate(real_decode(container, stream)):
            if i == real_count:
                break
            yield frame
        if error is not None:
            raise error

    return decode


def test_decode_failure_mid_stream(tmp_path, monkeypatch):
    path = _write(tmp_path / "clip.mp4", _level_frames())
    error = av.error.InvalidDataError(1094995529, "simulated damage")
    monkeypatch.setattr(video, "_decode", _fake_decode(3, error))
    frames = iter_frames(path)
    assert _indices(np.stack([next(frames) for _ in range(3)])) == [0, 1, 2]
    with pytest.raises(VideoError, match=r"truncated or corrupt after 3 frames"):
        next(frames)
    with pytest.raises(VideoError, match="end=3"):
        read_video(path)


def test_zero_frames_decoded(tmp_path, monkeypatch):
    path = _write(tmp_path / "clip.mp4", _level_frames())
    monkeypatch.setattr(video, "_decode", _fake_decode(0, None))
    with pytest.raises(VideoError, match="no frame could be decoded"):
        read_video(path)
    monkeypatch.setattr(video, "_decode", _fake_decode(0, av.error.InvalidDataError(1, "bad")))
    with pytest.raises(VideoError, match="no frame could be decoded"):
        read_video(path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": -1}, "start must be >= 0"),
        ({"stride": 0}, "stride must be >= 1"),
        ({"start": 5, "end": 5}, "end must be greater than start"),
        ({"start": 5, "end": 2}, "end must be greater than start"),
        ({"start": 1.5}, "start must be an integer"),
        ({"size": (32, 24), "max_side": 10}, "not both"),
        ({"size": (0, 24)}, "size must be positive"),
        ({"size": 32}, "size must be a pair"),
        ({"max_side": 0}, "max_side must be >= 1"),
        ({"fps": 0}, "fps must be a positive number"),
    ],
)
def test_invalid_arguments(tmp_path, kwargs, message):
    path = _write(tmp_path / "clip.mp4", _level_frames(2))
    with pytest.raises(VideoError, match=message):
        iter_frames(path, **kwargs)  # Raised at the call, before iterating.


def test_start_past_the_end(tmp_path):
    path = _write(tmp_path / "clip.mp4", _level_frames())
    with pytest.raises(VideoError, match=f"start=10 is past the end.*has {NUM_FRAMES} frames"):
        iter_frames(path, start=10)  # Known count: refused at the call.
    # mkv has no frame count: the error comes after decoding it all.
    mkv = _write(tmp_path / "clip.mkv", _level_frames())
    with pytest.raises(VideoError, match=f"start=50 is past the end.*has {NUM_FRAMES} frames"):
        read_video(mkv, start=50)
    folder = _folder(tmp_path, {"0.png": np.zeros((4, 4, 3), np.uint8)})
    with pytest.raises(VideoError, match="has 1 frames"):
        read_video(folder, start=1)


@pytest.mark.skipif(not (SHARED_VIDEOS / "cat.mp4").exists(), reason="shared sample videos not present")
def test_sample_video_smoke():
    path = SHARED_VIDEOS / "cat.mp4"
    info = probe(path)
    assert info.kind == "video" and info.width > 0 and info.height > 0 and info.fps > 0
    frames, read_info = read_video(path, end=5)
    assert frames.shape == (5, info.height, info.width, 3)
    assert read_info.num_frames == 5 and frames.std() > 0
