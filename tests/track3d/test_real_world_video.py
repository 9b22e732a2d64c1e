"""Videos as phones make them: rotation, EXIF orientation, variable frame rate, 10-bit,
long takes (``--mode auto``), and ``reconstruct`` runs that resume after an interruption.

Every video is written by the test (PyAV); the rotated one gets the display matrix a
phone writes, patched into the ``tkhd`` box of an mp4. Tracking uses the classical
baseline tracker (no weights) except where a CoTracker3 model is the point of the test.
"""

from __future__ import annotations

import json
import struct
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

import track3d
from recipe_weights import recipe_parameters
from track3d import io, video as video_io
from track3d.cli import main
from track3d.tracking import TrackOptions

W, H, T = 96, 64, 8
BASELINE = TrackOptions(model="baseline")


@pytest.fixture(autouse=True)
def _offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACK3D_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TRACK3D_OFFLINE", "1")


def _frames(n=T, w=W, h=H, seed=0) -> np.ndarray:
    """A textured image sliding right by 2 px and down by 1 px per frame."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.integers(0, 256, (h + n, w + 2 * n, 3), dtype=np.uint8), (5, 5), 0)
    return np.stack([base[i : i + h, 2 * i : 2 * i + w] for i in range(n)])


def _write(path: Path, frames: np.ndarray, fps=10, pix_fmt="yuv420p", times_ms=None, options=None) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options=options or {})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if times_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            if times_ms is not None:
                frame.pts, frame.time_base = times_ms[i], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _tkhd_matrix_offset(data: bytes) -> int:
    """Byte offset of the 3x3 matrix in the (first) ``tkhd`` box (ISO 14496-12, 8.3.2)."""
    box = data.find(b"tkhd")
    assert box > 0
    version = data[box + 4]
    # type, version+flags, times/track id/reserved/duration (20 or 32 bytes), reserved (8),
    # layer, alternate group, volume, reserved (2 each), then the matrix.
    return box + 4 + 4 + (20 if version == 0 else 32) + 8 + 8


def _rotate_like_a_phone(source: Path, target: Path) -> Path:
    """Copy of ``source`` whose display matrix says 'rotate 90' (a phone's portrait video)."""
    data = bytearray(source.read_bytes())
    at = _tkhd_matrix_offset(data)
    assert struct.unpack(">9i", data[at : at + 36]) == (1 << 16, 0, 0, 0, 1 << 16, 0, 0, 0, 1 << 30)
    data[at : at + 36] = struct.pack(">9i", 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)
    target.write_bytes(bytes(data))
    return target


def _shown(xy: np.ndarray, height: int) -> np.ndarray:
    """Stored pixels (x, y) to those shown after a 90 degree clockwise turn: (H - 1 - y, x)."""
    return np.stack([height - 1 - xy[..., 1], xy[..., 0]], axis=-1)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    plain = _write(d / "plain.mp4", _frames())
    return {"plain": plain, "rotated": _rotate_like_a_phone(plain, d / "rotated.mp4")}


# -- rotation ------------------------------------------------------------------------


def test_rotated_clip_reads_upright(clips):
    plain, plain_info = video_io.read_video(clips["plain"])
    shown, info = video_io.read_video(clips["rotated"])
    assert (info.width, info.height) == (H, W) and info.rotation == 90
    assert info.orientation == "display matrix: rotate 90"
    np.testing.assert_array_equal(shown, np.rot90(plain, -1, axes=(1, 2)))  # Decoding is identical: exact.
    assert video_io.probe(clips["rotated"]).width == H
    stored, kept = video_io.read_video(clips["rotated"], ignore_rotation=True)
    np.testing.assert_array_equal(stored, plain)
    assert kept.orientation == "ignored (display matrix: rotate 90)"


def test_rotated_clip_tracks_equal_the_plain_clips_turned(clips, tmp_path):
    rng = np.random.default_rng(1)
    q = np.concatenate([np.zeros((12, 1)), rng.uniform([12, 12], [W - 20, H - 12], (12, 2))], 1).astype(np.float32)
    np.save(tmp_path / "q.npy", q)
    # The same points, given where they are shown: outside the stored 96x64 frame for y >= 64.
    q_shown = np.concatenate([q[:, :1], _shown(q[:, 1:], H)], 1)
    np.save(tmp_path / "q_shown.npy", q_shown)
    assert (q_shown[:, 2] >= H).any()
    plain = track3d.track(clips["plain"], BASELINE, queries=str(tmp_path / "q.npy"))
    shown = track3d.track(clips["rotated"], BASELINE, queries=str(tmp_path / "q_shown.npy"))
    assert shown.frame_size == (H, W) and shown.orientation == "display matrix: rotate 90"
    assert plain.visibility.mean() > 0.9
    ok = plain.visibility & shown.visibility
    err = np.abs(shown.tracks - _shown(plain.tracks, H))[ok]
    assert err.max() <= 2.0, err.max()


def test_rotated_clip_through_the_command(clips, tmp_path):
    out = tmp_path / "out"
    assert main(["-q", "track", str(clips["rotated"]), "--model", "baseline", "--grid", "3", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frame_size"] == [H, W] and summary["orientation"] == "display matrix: rotate 90"
    with av.open(str(out / "overlay.mp4")) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (H, W)
    out2 = tmp_path / "stored"
    assert main(["-q", "track", str(clips["rotated"]), "--model", "baseline", "--grid", "3", "--ignore-rotation",
                 "--no-overlay", "--out", str(out2)]) == 0
    summary = json.loads((out2 / "summary.json").read_text())
    assert summary["frame_size"] == [W, H] and summary["orientation"].startswith("ignored")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_of_image_folders(orientation, tmp_path):
    from PIL import Image, ImageOps

    frames = _frames(n=2, w=40, h=24)
    for t, f in enumerate(frames):
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(f).save(tmp_path / f"{t}.png", exif=exif)
    read, info = video_io.read_video(tmp_path)
    with Image.open(tmp_path / "0.png") as image:
        expected = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    np.testing.assert_array_equal(read[0], expected)
    assert (info.width, info.height) == (expected.shape[1], expected.shape[0])
    assert (info.orientation == "none") == (orientation == 1)
    stored, _ = video_io.read_video(tmp_path, ignore_rotation=True)
    np.testing.assert_array_equal(stored, frames)


# -- timestamps ----------------------------------------------------------------------


def test_variable_frame_rate_keeps_its_timestamps(tmp_path):
    times_ms = [0, 33, 67, 100, 200, 300, 333, 367, 500, 533]
    clip = _write(tmp_path / "vfr.mp4", _frames(n=len(times_ms)), fps=30, times_ms=times_ms)
    frames, info = video_io.read_video(clip)
    np.testing.assert_allclose(info.timestamps, np.array(times_ms) / 1000, atol=1e-6)
    assert info.variable_fps
    assert info.fps == pytest.approx(9 / 0.533)  # The average: (T - 1) frames over the time they span.
    # Every other frame: the times of those frames.
    _, half = video_io.read_video(clip, stride=2)
    np.testing.assert_allclose(half.timestamps, np.array(times_ms[::2]) / 1000, atol=1e-6)

    out = tmp_path / "out"
    assert main(["-q", "track", str(clip), "--model", "baseline", "--grid", "3", "--no-overlay",
                 "--out", str(out)]) == 0
    saved = io.load_tracks(out)
    np.testing.assert_allclose(saved["timestamps"], np.array(times_ms) / 1000, atol=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fps_variable"] and summary["fps"] == pytest.approx(9 / 0.533)


def test_constant_frame_rate_is_not_flagged(clips):
    _, info = video_io.read_video(clips["plain"])
    assert not info.variable_fps and info.fps == 10.0
    np.testing.assert_allclose(info.timestamps, np.arange(T) / 10, atol=1e-6)


def test_recording_time_timeline_follows_the_timestamps(tmp_path):
    from viz.recording import write_recording

    tracks = np.zeros((3, 1, 2), np.float32)
    with pytest.raises(ValueError, match="timestamps"):
        write_recording(tmp_path / "r.rrd", tracks=tracks, visibility=np.ones((3, 1), bool),
                        is_dynamic=np.zeros(1, bool), cam_from_world=np.full((3, 4, 4), np.nan),
                        K=np.full((3, 3, 3), np.nan), points=np.zeros((0, 3)), trajectories=np.full((3, 1, 3), np.nan),
                        frame_size=(8, 8), fps=10.0, timestamps=np.array([0.0, 0.1]))


# -- bit depth -----------------------------------------------------------------------


def test_ten_bit_clip_tracks_like_its_eight_bit_twin(tmp_path):
    frames = _frames()
    eight = _write(tmp_path / "8.mp4", frames, options={"qp": "0"})
    ten = _write(tmp_path / "10.mp4", frames, pix_fmt="yuv420p10le", options={"qp": "0"})
    with av.open(str(ten)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p10le"
    a, _ = video_io.read_video(eight)
    b, _ = video_io.read_video(ten)
    assert b.dtype == np.uint8 and np.abs(a.astype(int) - b).mean() < 6.0  # 4:2:0 chroma rounds differently
    ta = track3d.track(eight, BASELINE, grid=4)
    tb = track3d.track(ten, BASELINE, grid=4)
    by_name = track3d.track(eight, model="baseline", grid=4)  # a name given as model= is the weights name
    assert by_name.model == ta.model and np.array_equal(by_name.tracks, ta.tracks)
    assert (ta.visibility == tb.visibility).mean() > 0.95  # Grid points at the edges slide out of both.
    ok = ta.visibility & tb.visibility
    assert ok.sum() > 40
    assert np.abs(ta.tracks - tb.tracks)[ok].max() < 0.5


def _hdr_clip(path: Path, signal: list[float], transfer: int) -> Path:
    """Gray bands of the given HDR signal values (0..1), 10-bit BT.2020 with ``transfer``."""
    band = 16
    rgb = np.zeros((32, band * len(signal), 3), np.uint16)
    for i, v in enumerate(signal):
        rgb[:, i * band : (i + 1) * band] = round(v * 65535)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = rgb.shape[1], rgb.shape[0], "yuv420p10le"
        cc = stream.codec_context
        cc.color_trc, cc.color_primaries, cc.colorspace = transfer, 9, 9  # BT.2020
        for _ in range(2):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb48le")))
        container.mux(stream.encode())
    return path


def _pq_signal(nits: float) -> float:
    """SMPTE ST 2084 inverse EOTF."""
    m1, m2, c1, c2, c3 = 2610 / 16384, 2523 / 4096 * 128, 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    y = (nits / 10000) ** m1
    return ((c1 + c2 * y) / (1 + c3 * y)) ** m2


# Reference white (203 nits, BT.2408) is luminance 1 before the curve: 1 * (1 + 1/w^2) / 2 ~= 0.5 in linear
# light, 1.055 * 0.5 ** (1 / 2.4) - 0.055 = 0.735 in sRGB, 187.5 of 255.
REFERENCE_WHITE_8BIT = 187.5


def test_pq_video_is_tone_mapped_not_clipped(tmp_path):
    nits = [0, 50, 203, 1000, 4000]
    frames, _ = video_io.read_video(_hdr_clip(tmp_path / "pq.mp4", [_pq_signal(n) for n in nits], video_io.TRANSFER_PQ))
    bands = frames[0, 16, 8::16, 1].astype(float)  # The centre of each band, green.
    assert bands[0] < 8
    assert np.all(np.diff(bands) > 5), bands  # Every level distinct: 1000 and 4000 nits are not clipped together.
    assert bands[-1] < 255
    assert abs(bands[2] - REFERENCE_WHITE_8BIT) < 6, bands
    assert np.ptp(frames[0, 16, 8::16], axis=1).max() <= 3  # Gray stays gray.


def test_hlg_video_is_tone_mapped(tmp_path):
    # HLG's reference white is 75 % signal: 203 nits on a 1000-nit display (BT.2408).
    signal = [0.0, 0.5, 0.75, 0.9, 1.0]
    frames, _ = video_io.read_video(_hdr_clip(tmp_path / "hlg.mp4", signal, video_io.TRANSFER_HLG))
    bands = frames[0, 16, 8::16, 1].astype(float)
    assert bands[0] < 8 and np.all(np.diff(bands) > 5), bands
    assert abs(bands[2] - REFERENCE_WHITE_8BIT) < 6, bands


def test_hdr_to_sdr_checks_its_transfer():
    with pytest.raises(ValueError, match="PQ"):
        video_io.hdr_to_sdr(np.zeros((2, 2, 3), np.uint16), 1)


# -- long takes: --mode auto ---------------------------------------------------------


def test_auto_mode_tracks_online_when_offline_does_not_fit(clips, tmp_path, monkeypatch, capsys):
    import cotracker3
    from cotracker3 import predictor

    checkpoints = cotracker3.weights.cache_dir() / "checkpoints"
    checkpoints.mkdir(parents=True)
    for name, kind in (("cotracker3-offline", "offline"), ("cotracker3-online", "online")):
        torch.save(recipe_parameters(kind), checkpoints / cotracker3.weights.get_config(name).filename)
    monkeypatch.setattr(predictor, "available_memory", lambda device: 2**20)
    out = tmp_path / "auto"
    assert main(["-q", "track", str(clips["plain"]), "--grid", "2", "--no-overlay", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "online" and "--mode auto tracks it online" in summary["notices"][0]
    assert io.load_tracks(out)["tracks"].shape == (T, 4, 2)
    # Forced offline, the estimate stands: a one-line error suggesting the online mode.
    out = tmp_path / "forced"
    assert main(["-q", "track", str(clips["plain"]), "--grid", "2", "--mode", "offline", "--no-overlay",
                 "--out", str(out)]) == 2
    assert "--online" in capsys.readouterr().err and not out.exists()
    # With memory to spare, auto stays offline.
    monkeypatch.undo()
    monkeypatch.setenv("TRACK3D_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TRACK3D_OFFLINE", "1")
    out = tmp_path / "fits"
    assert main(["-q", "track", str(clips["plain"]), "--grid", "2", "--no-overlay", "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["mode"] == "offline"


def test_online_and_mode_offline_contradict(clips, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["-q", "track", str(clips["plain"]), "--online", "--mode", "offline", "--out", str(out)]) == 2
    assert "contradict" in capsys.readouterr().err


def test_frame_count_from_packets(clips):
    assert video_io.count_frames(clips["plain"]) == T
    assert video_io.count_frames(clips["plain"].parent) is None


# -- reconstruct resumes -------------------------------------------------------------


def test_reconstruct_interrupted_after_tracking_resumes_without_tracking(clips, tmp_path, monkeypatch, capsys):
    import recon
    import track3d.reconstruction as reconstruction

    out = tmp_path / "out"
    args = ["-q", "reconstruct", str(clips["rotated"]), "--model", "baseline", "--grid", "6", "--no-viz",
            "--out", str(out)]
    real_recon = recon.reconstruct

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(recon, "reconstruct", interrupt)
    assert main(args) == 130
    kept = reconstruction.stages_dir(out)
    assert not out.exists() and (kept / "track.json").is_file() and (kept / "track.npz").is_file()

    monkeypatch.setattr(recon, "reconstruct", real_recon)
    tracked = []
    real_track = reconstruction.track
    monkeypatch.setattr(reconstruction, "track", lambda *a, **k: tracked.append(1) or real_track(*a, **k))
    assert main(args) == 0
    assert not tracked  # Tracking was skipped ...
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reused"] == ["track"] and "track" not in summary["timings"]
    assert summary["frame_size"] == [H, W] and summary["orientation"] == "display matrix: rotate 90"
    assert not kept.exists()  # ... and the kept stages are gone once the result is complete.
    assert "reused from an earlier run: track" in capsys.readouterr().out

    # A changed tracking option invalidates the kept tracks.
    monkeypatch.setattr(recon, "reconstruct", interrupt)
    assert main(args[:-1] + [str(tmp_path / "out2")]) == 130
    monkeypatch.setattr(recon, "reconstruct", real_recon)
    tracked.clear()
    changed = [a if a != "6" else "5" for a in args[:-1]] + [str(tmp_path / "out2")]
    assert main(changed) == 0
    assert tracked and json.loads((tmp_path / "out2" / "summary.json").read_text())["reused"] == []


def test_stage_cache_ignores_damaged_or_foreign_stages(tmp_path):
    from track3d.reconstruction import StageCache

    cache = StageCache(tmp_path / "kept")
    cache.save("track", "k1", {"a": np.arange(3)}, {"x": 1})
    assert cache.load("track", "k2") is None
    arrays, meta = cache.load("track", "k1")
    np.testing.assert_array_equal(arrays["a"], np.arange(3))
    assert meta["x"] == 1
    (tmp_path / "kept" / "track.npz").write_bytes(b"not a zip")
    assert cache.load("track", "k1") is None
    assert cache.reused == ["track"]
    assert StageCache(None).load("track", "k1") is None
