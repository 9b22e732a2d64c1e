"""``track3d track`` as a user runs it: good runs, and bad input.

Bad input must give a one-line error, exit code 2, no traceback, and no output
folder. The tests write their own videos and recipe-weight checkpoints (the
published architecture with deterministic weights), so nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from recipe_weights import recipe_parameters
from track3d import io
from track3d.cli import main
from track3d.tracking import cpu_has_bfloat16

W, H, T = 64, 48, 8


def _frames(n=T, w=W, h=H, seed=0) -> np.ndarray:
    """A textured image sliding right by 2 px per frame."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.integers(0, 256, (h, w + 2 * n, 3), dtype=np.uint8), (5, 5), 0)
    return np.stack([base[:, 2 * i : 2 * i + w] for i in range(n)])


def _write_video(path: Path, frames: np.ndarray, fps=10) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for kind in ("offline", "online"):
        paths[kind] = d / f"recipe_{kind}.pth"
        torch.save(recipe_parameters(kind), paths[kind])
    return paths


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return _write_video(tmp_path_factory.mktemp("vid") / "clip.mp4", _frames())


@pytest.fixture(autouse=True)
def _offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACK3D_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TRACK3D_OFFLINE", "1")


def run(*args) -> int:
    return main(["-q", "track", *map(str, args)])


def assert_user_error(rc, capsys, out: Path, *needles):
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("track3d: error: "), err
    for needle in needles:
        assert needle in err, err
    assert not out.exists()
    assert not any(p.name.startswith(f".{out.name}.tmp") for p in out.parent.iterdir())


# -- runs that work ------------------------------------------------------------


def test_track_writes_tracks_and_overlay(video, ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(video, "--grid", 3, "--checkpoint", ckpt["offline"], "--out", out) == 0
    d = io.load_tracks(out)
    assert d["tracks"].shape == (T, 9, 2) and d["tracks"].dtype == np.float32
    assert d["visibility"].shape == (T, 9) and d["visibility"].dtype == bool
    assert d["confidence"].shape == (T, 9)
    assert tuple(d["frame_size"]) == (W, H) and float(d["fps"]) == pytest.approx(10)
    np.testing.assert_array_equal(d["frame_indices"], np.arange(T))
    # Grid points start where they were placed, in source pixels, and are visible there.
    assert (d["queries"][:, 0] == 0).all()
    np.testing.assert_allclose(d["tracks"][0], d["queries"][:, 1:], atol=1e-4)
    assert d["visibility"][0].all()
    with av.open(str(out / "overlay.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == T


def test_queries_file_and_frame_selection(video, ckpt, tmp_path):
    qfile = tmp_path / "q.csv"
    qfile.write_text("# t, x, y\n0, 10, 20\n2, 31.5, 17\n")
    out = tmp_path / "out"
    assert run(video, "--queries", qfile, "--start", 1, "--stride", 2, "--checkpoint", ckpt["offline"],
               "--no-overlay", "--out", out) == 0
    d = io.load_tracks(out)
    np.testing.assert_array_equal(d["frame_indices"], [1, 3, 5, 7])
    assert float(d["fps"]) == pytest.approx(5)
    # Each query is written back into its own frame, in source pixels.
    np.testing.assert_allclose(d["tracks"][0, 0], [10, 20], atol=1e-4)
    np.testing.assert_allclose(d["tracks"][2, 1], [31.5, 17], atol=1e-4)
    assert d["visibility"][0, 0] and d["visibility"][2, 1]
    assert not (out / "overlay.mp4").exists()


def test_max_side_reports_source_pixels(video, ckpt, tmp_path):
    qfile = tmp_path / "q.txt"
    qfile.write_text("0 40 30\n")
    out = tmp_path / "out"
    assert run(video, "--queries", qfile, "--max-side", 32, "--checkpoint", ckpt["offline"],
               "--no-overlay", "--out", out) == 0
    d = io.load_tracks(out)
    assert tuple(d["frame_size"]) == (W, H)
    np.testing.assert_allclose(d["tracks"][0, 0], [40, 30], atol=1e-3)


def test_online_mode_streams(video, ckpt, tmp_path):
    out = tmp_path / "out"
    assert run(video, "--online", "--grid", 2, "--checkpoint", ckpt["online"], "--no-overlay", "--out", out) == 0
    d = io.load_tracks(out)
    assert d["tracks"].shape == (T, 4, 2) and np.isfinite(d["tracks"]).all()


def test_video_too_long_for_memory_fails_before_decoding_and_suggests_online(video, ckpt, tmp_path, monkeypatch,
                                                                             capsys):
    from cotracker3 import predictor
    from track3d import video as video_io

    monkeypatch.setattr(predictor, "available_memory", lambda device: 2**20)

    def no_decoding(*args, **kwargs):
        raise AssertionError("the video was decoded before the memory check")

    monkeypatch.setattr(video_io, "read_video", no_decoding)
    out = tmp_path / "out"
    rc = run(video, "--grid", 3, "--checkpoint", ckpt["offline"], "--no-overlay", "--out", out)
    assert_user_error(rc, capsys, out, f"9 points through {T} frames", "0.0 GiB are available", "--online")
    # The online mode streams: no whole-video estimate stands in its way.
    assert run(video, "--online", "--grid", 3, "--checkpoint", ckpt["online"], "--no-overlay", "--out", out) == 0


def test_max_memory_option(video, ckpt, tmp_path, capsys):
    out = tmp_path / "bad"
    assert_user_error(run(video, "--max-memory", "lots", "--checkpoint", ckpt["offline"], "--out", out), capsys, out,
                      "--max-memory must be a positive size like 8G")
    # 1 MiB is less than any plan of this model needs: refused up front, as with too little free memory.
    out = tmp_path / "small"
    rc = run(video, "--grid", 3, "--max-memory", "1M", "--checkpoint", ckpt["offline"], "--no-overlay", "--out", out)
    assert_user_error(rc, capsys, out, f"9 points through {T} frames", "GiB are available", "--online")
    out = tmp_path / "enough"
    assert run(video, "--grid", 3, "--max-memory", "4G", "--checkpoint", ckpt["offline"], "--no-overlay",
               "--out", out) == 0
    assert io.load_tracks(out)["tracks"].shape == (T, 9, 2)


def test_precision_option(video, ckpt, tmp_path, capsys):
    out = tmp_path / "half"
    rc = run(video, "--precision", "float16", "--device", "cpu", "--checkpoint", ckpt["offline"], "--out", out)
    assert_user_error(rc, capsys, out, "GPU only")
    if not cpu_has_bfloat16():
        # Emulated bfloat16 would take minutes a frame: refused before anything is decoded or written.
        out = tmp_path / "bf16"
        rc = run(video, "--precision", "bfloat16", "--checkpoint", ckpt["offline"], "--out", out)
        assert_user_error(rc, capsys, out, "bfloat16 instructions", "float32")
        return
    outs = {}
    for precision in ("float32", "bfloat16"):
        outs[precision] = tmp_path / precision
        assert run(video, "--grid", 3, "--precision", precision, "--checkpoint", ckpt["offline"], "--no-overlay",
                   "--out", outs[precision]) == 0
    a, b = (io.load_tracks(outs[p])["tracks"] for p in ("float32", "bfloat16"))
    assert np.isfinite(b).all() and a.shape == b.shape
    assert not np.array_equal(a[1:], b[1:])  # bfloat16 really ran (frame 0 holds the queries)


@pytest.mark.parametrize("kind", ["gray", "rgba", "16bit", "odd"])
def test_image_folders_of_any_pixel_format(kind, ckpt, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    frames = _frames(4, w=37 if kind == "odd" else W, h=23 if kind == "odd" else H)
    for i, f in enumerate(frames):
        img = cv2.cvtColor(f, cv2.COLOR_RGB2BGR)
        if kind == "gray":
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        elif kind == "rgba":
            img = cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)
        elif kind == "16bit":
            img = img.astype(np.uint16) * 257
        cv2.imwrite(str(folder / f"frame{i}.png"), img)
    out = tmp_path / "out"
    assert run(folder, "--grid", 2, "--checkpoint", ckpt["offline"], "--out", out) == 0
    d = io.load_tracks(out)
    assert d["tracks"].shape == (4, 4, 2)
    assert tuple(d["frame_size"]) == frames.shape[2:0:-1]


def test_overwrite(video, ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("x")
    assert run(video, "--grid", 2, "--checkpoint", ckpt["offline"], "--no-overlay", "--out", out) == 2
    assert "already exists" in capsys.readouterr().err
    assert run(video, "--grid", 2, "--checkpoint", ckpt["offline"], "--no-overlay", "--out", out,
               "--overwrite") == 0
    assert (out / "tracks.npz").exists() and not (out / "old.txt").exists()


def test_interrupted_run_leaves_no_output(video, ckpt, tmp_path, monkeypatch, capsys):
    import viz.overlay

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(viz.overlay, "write_overlay_video", boom)
    out = tmp_path / "out"
    assert run(video, "--grid", 2, "--checkpoint", ckpt["offline"], "--out", out) == 130
    assert not out.exists()
    assert not any(p.name.startswith(".out.tmp") for p in tmp_path.iterdir())


# -- bad input ------------------------------------------------------------------


def test_missing_video(ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert_user_error(run(tmp_path / "nope.mp4", "--checkpoint", ckpt["offline"], "--out", out),
                      capsys, out, "nope.mp4")


def test_not_a_video(ckpt, tmp_path, capsys):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video\n" * 50)
    out = tmp_path / "out"
    assert_user_error(run(bad, "--checkpoint", ckpt["offline"], "--out", out), capsys, out, "notes.mp4")


def test_truncated_video(ckpt, tmp_path, capsys):
    full = _write_video(tmp_path / "full.mp4", _frames(20))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    out = tmp_path / "out"
    assert_user_error(run(cut, "--checkpoint", ckpt["offline"], "--out", out), capsys, out, "cut.mp4")


def test_zero_frames(ckpt, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    assert_user_error(run(empty, "--checkpoint", ckpt["offline"], "--out", out), capsys, out,
                      f"the folder {empty} contains no images")


def test_start_past_the_end(video, ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert_user_error(run(video, "--start", 50, "--checkpoint", ckpt["offline"], "--out", out), capsys, out,
                      f"start=50 is past the end of {video}: it has {T} frames")


@pytest.mark.parametrize("online", [False, True])
def test_one_frame(ckpt, tmp_path, capsys, online):
    one = _write_video(tmp_path / "one.mp4", _frames(1))
    out = tmp_path / "out"
    extra = ["--online", "--checkpoint", ckpt["online"]] if online else ["--checkpoint", ckpt["offline"]]
    assert_user_error(run(one, *extra, "--out", out), capsys, out, "at least 2")


@pytest.mark.parametrize(
    "rows, needle",
    [
        ("0 100 10\n", "outside"),  # x beyond the 64 px width
        ("0 -1 10\n", "outside"),
        ("0 nan 10\n", "NaN"),
        (f"{T} 10 10\n", "frame"),  # frame index past the end
        ("1.5 10 10\n", "frame"),
        ("0 10\n", "rows"),
    ],
)
def test_bad_queries(video, ckpt, tmp_path, capsys, rows, needle):
    qfile = tmp_path / "q.txt"
    qfile.write_text(rows)
    out = tmp_path / "out"
    assert_user_error(run(video, "--queries", qfile, "--checkpoint", ckpt["offline"], "--out", out),
                      capsys, out, needle)


@pytest.mark.parametrize("grid", [0, -3])
def test_bad_grid(video, ckpt, tmp_path, capsys, grid):
    out = tmp_path / "out"
    assert_user_error(run(video, "--grid", grid, "--checkpoint", ckpt["offline"], "--out", out),
                      capsys, out, "--grid")


def test_checkpoint_with_wrong_keys(video, tmp_path, capsys):
    sd = recipe_parameters("offline")
    del sd["corr_mlp.fc1.weight"]
    sd["head.extra"] = torch.zeros(3)
    bad = tmp_path / "bad.pth"
    torch.save(sd, bad)
    out = tmp_path / "out"
    assert_user_error(run(video, "--checkpoint", bad, "--out", out), capsys, out,
                      "missing key: corr_mlp.fc1.weight", "unexpected key: head.extra")


def test_online_checkpoint_for_offline_model(video, ckpt, tmp_path, capsys):
    import cotracker3

    path = tmp_path / "online_full.pth"
    torch.save(cotracker3.build_model("cotracker3-online").state_dict(), path)
    out = tmp_path / "out"
    assert_user_error(run(video, "--checkpoint", path, "--out", out), capsys, out, "time_emb", "--online")


def test_file_that_is_not_a_checkpoint(video, tmp_path, capsys):
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"\x00garbage" * 100)
    out = tmp_path / "out"
    assert_user_error(run(video, "--checkpoint", bad, "--out", out), capsys, out, "weights.pth")


def test_no_weights_offline_names_file_url_and_cache(video, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TRACK3D_EMBEDDED_DIR", str(tmp_path / "no-embedded-model"))  # a build that ships none
    out = tmp_path / "out"
    assert_user_error(run(video, "--out", out), capsys, out, "scaled_offline.pth",
                      "https://huggingface.co/facebook/cotracker3", str(tmp_path / "cache"))


def test_online_model_name_without_online_flag(video, tmp_path, capsys):
    out = tmp_path / "out"
    assert_user_error(run(video, "--model", "cotracker3-online", "--out", out), capsys, out, "--online")


def test_help_and_models_listing(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["track", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--grid", "--queries", "--model", "--checkpoint", "--online", "--backward", "--out"):
        assert flag in text
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert "cotracker3-offline" in listing and "scaled_online.pth" in listing and "not cached" in listing


def test_baseline_tracker_needs_no_weights(video, tmp_path):
    out = tmp_path / "lk"
    assert run(video, "--grid", 3, "--model", "baseline", "--out", out) == 0
    d = io.load_tracks(out)
    assert d["tracks"].shape == (T, 9, 2) and d["visibility"][0].all()
    # The frames slide right by 2 px per frame: interior points follow (x + 2 t).
    q = d["queries"]
    inner = (q[:, 1] > 8) & (q[:, 1] < W - 8 - 2 * T)
    assert inner.any()
    moved = d["tracks"][-1, inner, 0] - d["tracks"][0, inner, 0]
    np.testing.assert_allclose(moved, -2 * (T - 1), atol=0.5)


def test_baseline_with_online_is_refused(video, tmp_path, capsys):
    out = tmp_path / "lk"
    assert_user_error(run(video, "--model", "baseline", "--online", "--out", out), capsys, out, "baseline")


def test_train_and_pseudo_label_take_device_batch_and_workers(tmp_path, monkeypatch):
    """The options reach the training configurations; ``python -m track3d`` is the command."""
    import subprocess
    import sys

    import cotracker3.train.loop as loop
    import cotracker3.train.pseudo_label as pseudo_label

    seen = {}

    def fake_train(config, out, **kw):
        seen["train"] = config
        Path(out).mkdir(parents=True)
        return Path(out)

    def fake_finetune(config, videos, out, **kw):
        seen["pseudo-label"] = config
        Path(out).mkdir(parents=True)
        return Path(out)

    monkeypatch.setattr(loop, "train", fake_train)
    monkeypatch.setattr(pseudo_label, "finetune", fake_finetune)
    assert main(["-q", "train", "--out", str(tmp_path / "t"), "--device", "cpu", "--batch-size", "4",
                 "--workers", "3"]) == 0
    assert (seen["train"].device, seen["train"].batch_size, seen["train"].workers) == ("cpu", 4, 3)
    (tmp_path / "videos").mkdir()
    assert main(["-q", "pseudo-label", str(tmp_path / "videos"), "--init", "x.pt", "--out", str(tmp_path / "p"),
                 "--batch-size", "2"]) == 0
    assert (seen["pseudo-label"].device, seen["pseudo-label"].batch_size) == ("auto", 2)
    monkeypatch.undo()
    assert main(["-q", "train", "--out", str(tmp_path / "u"), "--device", "tpu"]) == 2
    assert not (tmp_path / "u").exists()
    done = subprocess.run([sys.executable, "-m", "track3d", "train", "--help"], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0
    assert all(opt in done.stdout for opt in ("--device", "--batch-size", "--workers"))
