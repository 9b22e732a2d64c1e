"""``track3d batch`` on a local Ray, as a user runs it: good and bad videos, resuming, killed
workers, time-outs, Ctrl-C, and teacher labels for ``track3d pseudo-label --labels``.

The clips are tiny (12 frames, at most 128 pixels a side) cut from ../shared/videos when it is
there, else rendered by the synthetic engine; one is a folder of PNG frames. Nothing is downloaded:
the trackers are the Lucas-Kanade baseline, the shipped embedded model, and a tiny random model.
Most tests share one Ray started in this process (``run_batch`` uses a Ray this process already
runs); the Ctrl-C test runs the command in a child process that starts and stops its own.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from track3d import batch
from track3d.cli import main

SHARED_VIDEOS = Path(__file__).resolve().parents[3] / "shared" / "videos"
FRAMES, SIDE = 12, 128
RECORD_KEYS = {"input", "out", "status", "error", "seconds", "frames", "registered_frames"}
COMMON = ["--grid", "8", "--model", "baseline"]


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACK3D_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TRACK3D_OFFLINE", "1")
    monkeypatch.delenv(batch.TEST_HOOK_ENV, raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # each test says which Ray it runs on


def _write_video(path: Path, frames: np.ndarray, fps: float = 10) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
        container.mux(stream.encode())
    return path


def _cut(source: Path, n: int = FRAMES, side: int = SIDE) -> np.ndarray:
    """The first ``n`` frames of a video, shrunk to ``side`` pixels at most (even sizes)."""
    frames = []
    with av.open(str(source)) as container:
        for frame in container.decode(video=0):
            img = frame.to_ndarray(format="rgb24")
            s = side / max(img.shape[:2])
            size = (int(img.shape[1] * s) // 2 * 2, int(img.shape[0] * s) // 2 * 2)
            frames.append(cv2.resize(img, size, interpolation=cv2.INTER_AREA))
            if len(frames) == n:
                break
    return np.stack(frames)


def _rendered(seed: int, n: int = FRAMES) -> np.ndarray:
    from cotracker3 import synthetic

    cfg = dataclasses.replace(synthetic.EVAL_TIERS["moving_camera"], num_frames=n, height=96, width=128,
                              num_points=1, supersample=1)
    return np.asarray(synthetic.render_scene(cfg, seed).frames)


def _real_or_rendered(name: str, seed: int) -> np.ndarray:
    path = SHARED_VIDEOS / f"{name}.mp4"
    return _cut(path) if path.is_file() else _rendered(seed)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """apple.mp4, cat.mp4 (real, cut), room/ (rendered, PNG frames), corrupt.mp4 and truncated.mp4."""
    root = tmp_path_factory.mktemp("clips")
    _write_video(root / "apple.mp4", _real_or_rendered("apple", 1))
    _write_video(root / "cat.mp4", _real_or_rendered("cat", 2))
    room = root / "room"
    room.mkdir()
    for t, frame in enumerate(_rendered(3)):
        cv2.imwrite(str(room / f"{t:04d}.png"), frame[..., ::-1])
    (root / "corrupt.mp4").write_bytes(b"this is not a video\n" * 100)
    whole = _write_video(tmp_path_factory.mktemp("whole") / "whole.mp4", _rendered(4))
    (root / "truncated.mp4").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return root


GOOD, BAD = ("apple", "cat", "room"), ("corrupt", "truncated")


@pytest.fixture(scope="module")
def local_ray():
    """One Ray for the tests of this module (2 CPUs, no dashboard), stopped at the end."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=128 * 1024 * 1024)
    yield ray
    ray.shutdown()


def _batch_json(out: Path) -> dict:
    return json.loads((out / batch.BATCH_FILE).read_text())


def _by_name(record: dict) -> dict:
    return {Path(r["out"]).name: r for r in record["inputs"]}


def _no_partial(out: Path) -> bool:
    return not any(".tmp-" in p.name or ".old-" in p.name for p in out.iterdir())


def _run(*args) -> int:
    return main(["-q", "batch", *map(str, args)])


# -- inputs and names (no Ray) ---------------------------------------------------------


def test_inputs_from_folders_lists_and_files(clips, tmp_path):
    listing = tmp_path / "videos.txt"
    listing.write_text(f"# a comment\n{clips / 'cat.mp4'}\n\n{os.path.relpath(clips / 'room', tmp_path)}  # frames\n"
                       "missing.mp4\n")
    found = batch.collect_inputs([clips / "apple.mp4", listing, clips])
    assert found[:3] == [clips / "apple.mp4", clips / "cat.mp4", clips / "room"]
    assert found[3] == tmp_path / "missing.mp4"  # listed but missing: kept, so that its task fails and is recorded
    assert set(found[4:]) == {clips / "corrupt.mp4", clips / "truncated.mp4"}  # each input once
    with pytest.raises(batch.Track3DError, match="does not exist"):
        batch.collect_inputs([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(batch.Track3DError, match="no video found"):
        batch.collect_inputs([tmp_path / "empty"])


def test_names_are_unique_and_stable(tmp_path):
    a, b, c = tmp_path / "x" / "clip.mp4", tmp_path / "y" / "clip.mp4", tmp_path / "z" / "my video!.mov"
    names = batch.assign_names([a, b, c], tmp_path / "out")
    assert names[2] == "my_video" and names[0].startswith("clip-") and names[1].startswith("clip-")
    assert len(set(names)) == 3
    assert batch.assign_names([b, c, a], tmp_path / "out") == [names[1], names[2], names[0]]  # order-independent
    # A name recorded in batch.json is kept when the set of inputs changes ...
    out = tmp_path / "out"
    out.mkdir()
    (out / batch.BATCH_FILE).write_text(json.dumps({"inputs": [{"input": str(a), "out": str(out / "clip")}]}))
    assert batch.assign_names([a], out) == ["clip"]
    assert batch.assign_names([a, b], out)[0] == "clip"
    # ... and a folder holding another video's result is never taken over.
    (out / "solo").mkdir()
    (out / "solo" / "summary.json").write_text(json.dumps({"source": "/elsewhere/solo.mp4"}))
    assert batch.assign_names([tmp_path / "solo.mp4"], out)[0].startswith("solo-")


def test_resources_per_task_follow_the_cluster():
    assert batch.task_resources({"CPU": 2}) == (1.0, 0.0)
    assert batch.task_resources({"CPU": 16, "GPU": 2}) == (8.0, 1.0)  # one GPU each, CPUs shared among them
    assert batch.task_resources({"CPU": 16, "GPU": 2}, gpus_per_task=0.5) == (4.0, 0.5)
    assert batch.task_resources({"CPU": 16, "GPU": 2}, cpus_per_task=2, gpus_per_task=0) == (2.0, 0.0)
    with pytest.raises(batch.Track3DError, match="2 CPU"):
        batch.task_resources({"CPU": 2}, cpus_per_task=4)
    with pytest.raises(batch.Track3DError, match="0 GPU"):
        batch.task_resources({"CPU": 2}, gpus_per_task=1)


def test_usage_errors_exit_2_without_starting_ray(clips, tmp_path, capsys):
    import ray

    out = tmp_path / "out"
    assert _run(tmp_path / "nope.mp4", "--out", out) == 2
    assert _run(clips / "apple.mp4", "--out", out, "--task", "track", "--mapper", "global") == 2
    assert "do not apply to --task track" in capsys.readouterr().err
    assert _run(clips / "apple.mp4", "--out", out, "--retries", "-1") == 2
    assert _run(clips / "apple.mp4", "--out", out, "--timeout", "0") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(line.startswith("track3d: error: ") for line in err.splitlines())
    assert not ray.is_initialized()
    with pytest.raises(SystemExit):
        main(["batch", "--help"])
    text = capsys.readouterr().out
    for flag in ("--address", "--cpus-per-task", "--gpus-per-task", "--retries", "--timeout", "--overwrite",
                 "--task", "--grid", "--mapper", "--online", "--no-viz"):
        assert flag in text


# -- a folder with bad files; resuming ---------------------------------------------------


def test_folder_with_bad_files_then_resume(clips, tmp_path, local_ray, capsys):
    out = tmp_path / "out"
    t0 = time.perf_counter()
    assert _run(clips, "--out", out, *COMMON) == 1
    first = time.perf_counter() - t0
    record = _batch_json(out)
    assert record["engine"] == "ray" and record["ray_version"] == local_ray.__version__
    entries = _by_name(record)
    assert set(entries) == set(GOOD + BAD)
    for entry in entries.values():
        assert RECORD_KEYS <= set(entry)
    for name in GOOD:
        e = entries[name]
        assert e["status"] == "done" and e["error"] is None and e["frames"] == FRAMES
        assert 0 <= e["registered_frames"] <= FRAMES and e["seconds"] > 0
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["source"] == e["input"] and (out / name / "reconstruction.npz").is_file()
        assert e["threads"] == 1 and summary["options"]["threads"] == 1  # one CPU per task: one thread
    table = capsys.readouterr().out
    assert "3 done, 0 skipped, 2 failed" in table
    # A bad file fails with exactly the one-line message 'track3d reconstruct' gives, and leaves nothing.
    for name in BAD:
        e = entries[name]
        assert e["status"] == "failed" and e["frames"] is None and not (out / name).exists()
        assert main(["-q", "reconstruct", e["input"], "--out", str(tmp_path / "single"), *COMMON]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"track3d: error: {e['error']}"
    assert _no_partial(out)

    # The second run skips the finished videos (their folders untouched) and only retries the bad ones.
    stamps = {name: (out / name / "summary.json").stat().st_mtime_ns for name in GOOD}
    t0 = time.perf_counter()
    assert _run(clips, "--out", out, *COMMON) == 1
    second = time.perf_counter() - t0
    entries = _by_name(_batch_json(out))
    for name in GOOD:
        assert entries[name]["status"] == "skipped" and entries[name]["frames"] == FRAMES
        assert entries[name]["node"] is None  # no task ran for it
        assert (out / name / "summary.json").stat().st_mtime_ns == stamps[name]
    assert {entries[n]["status"] for n in BAD} == {"failed"}
    assert "0 done, 3 skipped, 2 failed" in capsys.readouterr().out
    assert second < 0.6 * first, (first, second)
    # Only good videos, all finished: exit 0, and no Ray task at all.
    assert _run(*(clips / f"{n}.mp4" for n in GOOD[:2]), clips / "room", "--out", out, *COMMON) == 0
    # --overwrite redoes a finished one.
    assert _run(clips / "cat.mp4", "--out", out, "--overwrite", *COMMON) == 0
    assert _by_name(_batch_json(out))["cat"]["status"] == "done"
    assert (out / "cat" / "summary.json").stat().st_mtime_ns > stamps["cat"]


# -- killed workers, time-outs ----------------------------------------------------------


def test_killed_worker_is_retried(clips, tmp_path, local_ray, monkeypatch):
    marker = tmp_path / "killed"
    monkeypatch.setenv(batch.TEST_HOOK_ENV, f"kill:{marker}")
    out = tmp_path / "out"
    assert _run(clips / "apple.mp4", clips / "room", "--out", out, *COMMON) == 0
    # One worker killed itself (SIGKILL) while writing a result; Ray ran its task again elsewhere.
    killed_pid = int(marker.read_text())
    assert killed_pid > 0
    entries = _by_name(_batch_json(out))
    assert {e["status"] for e in entries.values()} == {"done"}
    assert all((out / name / "reconstruction.npz").is_file() for name in entries)
    assert _no_partial(out)  # the killed worker's half-written folder is gone

    # Without retries, the same kill fails that input (recorded), and the others are done.
    marker.unlink()
    out2 = tmp_path / "out2"
    assert _run(clips / "apple.mp4", clips / "room", "--out", out2, "--retries", "0", *COMMON) == 1
    entries = _by_name(_batch_json(out2))
    failed = [e for e in entries.values() if e["status"] == "failed"]
    assert len(failed) == 1 and "died" in failed[0]["error"]
    assert not Path(failed[0]["out"]).exists() and _no_partial(out2)


def test_timeout_stops_and_records_the_task(clips, tmp_path, local_ray, monkeypatch):
    monkeypatch.setenv(batch.TEST_HOOK_ENV, f"pause:{tmp_path / 'paused'}")
    out = tmp_path / "out"
    assert _run(clips / "cat.mp4", "--out", out, "--timeout", "8", *COMMON) == 1
    (entry,) = _batch_json(out)["inputs"]
    assert entry["status"] == "failed" and entry["error"].startswith("timed out after 8 s")
    assert (tmp_path / "paused").exists()  # it was stopped while writing ...
    assert not (out / "cat").exists() and _no_partial(out)  # ... and left nothing


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (killed, waiting for its parent to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_task_stuck_past_its_timeout_is_stopped_by_force(clips, tmp_path, local_ray, monkeypatch):
    marker = tmp_path / "stuck"
    monkeypatch.setenv(batch.TEST_HOOK_ENV, f"stuck:{marker}")
    monkeypatch.setattr(batch, "FORCE_GRACE_S", 2.0)
    out = tmp_path / "out"
    t0 = time.perf_counter()
    assert _run(clips / "cat.mp4", "--out", out, "--timeout", "8", *COMMON) == 1
    assert time.perf_counter() - t0 < 60, _batch_json(out)
    (entry,) = _batch_json(out)["inputs"]
    assert entry["error"] == "timed out after 8 s (--timeout); stopped by force", entry
    pid = int(marker.read_text())
    deadline = time.monotonic() + 20
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pid)  # its worker was killed
    assert not (out / "cat").exists() and _no_partial(out)


# -- teacher labels, then fine-tuning from them -------------------------------------------


def test_track_task_writes_teacher_labels_and_pseudo_label_trains_on_them(clips, tmp_path, local_ray):
    from cotracker3.model import CoTracker3Offline

    labels = tmp_path / "labels" / "baseline"
    assert _run(clips / "apple.mp4", clips / "room", "--task", "track", "--model", "baseline", "--grid", "6",
                "--no-overlay", "--out", labels) == 0
    entries = _by_name(_batch_json(labels))
    assert {e["status"] for e in entries.values()} == {"done"}
    for name, e in entries.items():
        assert e["frames"] == FRAMES and e["registered_frames"] is None
        assert sorted(p.name for p in (labels / name).iterdir()) == ["summary.json", "tracks.npz"]
    # Running it again skips them.
    assert _run(clips / "apple.mp4", clips / "room", "--task", "track", "--model", "baseline", "--grid", "6",
                "--no-overlay", "--out", labels) == 0
    assert {e["status"] for e in _batch_json(labels)["inputs"]} == {"skipped"}

    tiny = dict(window_len=8, model_resolution=(64, 64), latent_dim=32, hidden_size=32, num_heads=2,
                time_depth=1, space_depth=1, corr_hidden_dim=32, corr_embed_dim=16, num_virtual_tracks=4)
    torch.manual_seed(0)
    init = tmp_path / "init.pt"
    torch.save(CoTracker3Offline(**tiny).state_dict(), init)
    run = tmp_path / "run"
    from cotracker3.train import pseudo_label

    config = pseudo_label.PseudoLabelConfig(steps=3, iters=2, num_points=12, clip_len=8, min_clip_len=6,
                                            model=dict(tiny), init=str(init), seed=1, log_every=1,
                                            checkpoint_every=3)
    found = batch.load_labels([tmp_path / "labels"])
    assert sorted(lv.video.name for lv in found) == ["apple.mp4", "room"] and {lv.teacher for lv in found} == {"baseline"}
    pseudo_label.finetune(config, None, run, labels=found)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if '"step"' in line]
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert all(r["teacher"] == "baseline" and r["labels"] for r in steps)
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in steps)
    before, after = torch.load(init, weights_only=True), torch.load(run / "model.pt", weights_only=True)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and not any(k.startswith(pseudo_label.FROZEN) for k in changed)

    # The command: --labels instead of VIDEOS (from the run above: its model.pt records the tiny sizes).
    assert main(["-q", "pseudo-label", "--labels", str(tmp_path / "labels"), "--init", str(run / "model.pt"),
                 "--out", str(tmp_path / "run2"), "--steps", "1", "--points", "8", "--clip-len", "8"]) == 0
    assert (tmp_path / "run2" / "model.pt").is_file()
    for wrong in ([str(clips), "--labels", str(labels)], [], ["--labels", str(labels), "--teacher", "self"],
                  ["--labels", str(tmp_path / "nothing")]):
        assert main(["-q", "pseudo-label", *wrong, "--init", str(init), "--out", str(tmp_path / "run3")]) == 2
    assert not (tmp_path / "run3").exists()


def test_label_sample_follows_the_labels(tmp_path):
    """Queries and targets of a labelled clip are the teacher's tracks, scaled to the student's pixels."""
    from cotracker3.train import pseudo_label

    frames = _rendered(5, n=10)
    video = _write_video(tmp_path / "v.mp4", frames)
    T, N = 10, 5
    rng = np.random.default_rng(0)
    tracks = rng.uniform(0, [127, 95], size=(T, N, 2)).astype(np.float32)
    visibility = np.ones((T, N), bool)
    visibility[:, 4] = False  # never seen: never a query
    arrays = dict(tracks=tracks, visibility=visibility, frame_indices=np.arange(T), frame_size=np.array([128, 96]))
    lv = pseudo_label.LabelledVideo(video=video, teacher="t", num_frames=T, load=lambda: arrays)
    plan = pseudo_label.StepPlan(video=0, start=2, length=4, stride=2, teacher=0, rng=np.random.default_rng(1))
    clip, queries, target, visible, ok = pseudo_label.label_sample(lv, plan, 8, (48, 64))
    assert ok and clip.shape == (4, 48, 64, 3) and len(queries) == 4 and target.shape == (4, 4, 2)
    scale = np.array([63 / 127, 47 / 95], np.float32)
    np.testing.assert_allclose(target, tracks[[2, 4, 6, 8]][:, :4] * scale, rtol=1e-5)
    for (t, x, y), n in zip(queries, range(4)):
        assert t <= 1 and np.allclose([x, y], target[int(t), n])
    expected = cv2.resize(frames[6], (64, 48), interpolation=cv2.INTER_AREA).astype(float)
    assert np.abs(clip[2].astype(float) - expected).mean() < 12  # frame 6 of the video (codec noise aside)
