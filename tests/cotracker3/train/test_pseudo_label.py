"""Fine-tuning on real videos with pseudo-labels: videos, SIFT queries, teacher labels, the loop."""

from __future__ import annotations

import json
import logging

import av
import cv2
import numpy as np
import pytest
import torch

from cotracker3.baseline import LucasKanadeTracker
from cotracker3.errors import CheckpointError, DatasetError
from cotracker3.model import CoTracker3Offline
from cotracker3.predictor import Predictor
from cotracker3.train.pseudo_label import (FROZEN, PseudoLabelConfig, VideoTooShortError, finetune, list_videos,
                                     plan_step, pseudo_label, read_clip, sift_queries)
from cotracker3.train.loop import TrainingError

TINY = dict(window_len=8, model_resolution=(64, 64), latent_dim=32, hidden_size=32, num_heads=2, time_depth=1,
            space_depth=1, corr_hidden_dim=32, corr_embed_dim=16, num_virtual_tracks=4)
MOTION = np.array([2.0, 1.0])  # pixels per frame (x, y) of the translating texture


def _texture(size: int, seed: int) -> np.ndarray:
    """Grey blurred noise (grey: the encoder's chroma subsampling leaves it intact)."""
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.uniform(0, 255, (size, size)).astype(np.float32), (0, 0), 1.5)
    tex = (tex - tex.min()) / (tex.max() - tex.min()) * 255
    return np.repeat(tex.astype(np.uint8)[..., None], 3, -1)


def _translating(n: int, hw: tuple[int, int] = (64, 64), seed: int = 0) -> np.ndarray:
    """Frames of a texture moving by MOTION px per frame: frame t shows (x, y) of frame 0 at (x, y) + t * MOTION."""
    H, W = hw
    dx, dy = MOTION.astype(int)
    tex = _texture(max(H, W) + n * 2 + 8, seed)
    x0, y0 = n * dx + 4, n * dy + 4
    return np.stack([tex[y0 - t * dy:y0 - t * dy + H, x0 - t * dx:x0 - t * dx + W] for t in range(n)])


def _write(path, frames: np.ndarray):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10, options={"crf": "4"})
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Two 20-frame translating videos and one 5-frame video, 64x64."""
    folder = tmp_path_factory.mktemp("videos")
    _write(folder / "a.mp4", _translating(20, seed=1))
    _write(folder / "b.mp4", _translating(20, seed=2))
    _write(folder / "short.mp4", _translating(5, seed=3))
    return folder


@pytest.fixture(scope="module")
def init(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("init") / "init.pt"
    torch.save(CoTracker3Offline(**TINY).state_dict(), path)
    return path


def _config(init_path, **kw) -> PseudoLabelConfig:
    base = dict(steps=4, iters=2, num_points=16, clip_len=8, min_clip_len=6, teachers=["self", "baseline"],
                teacher_iters=2, model=dict(TINY), init=str(init_path), seed=5, log_every=1, checkpoint_every=2)
    base.update(kw)
    return PseudoLabelConfig(**base)


# --------------------------------------------------------------------------
# Videos
# --------------------------------------------------------------------------


def test_list_videos_finds_readable_videos_and_skips_others(videos, tmp_path):
    assert [p.name for p in list_videos(videos)] == ["a.mp4", "b.mp4", "short.mp4"]
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match="could be read"):
        list_videos(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no file ending in"):
        list_videos(tmp_path / "empty")
    with pytest.raises(DatasetError, match="does not exist"):
        list_videos(tmp_path / "missing")


def test_read_clip_reads_the_asked_frames(videos):
    source = _translating(20, seed=1)
    clip = read_clip(videos / "a.mp4", 3, 5, size=(64, 64), step=2)
    assert clip.shape == (5, 64, 64, 3) and clip.dtype == np.uint8
    # Frames 3, 5, ..., 11 of the source (lossy codec: close, not equal); a wrong frame is far off.
    err = np.abs(clip.astype(float) - source[3:12:2].astype(float)).mean(axis=(1, 2, 3))
    assert err.max() < 4
    assert np.abs(clip[0].astype(float) - source[4].astype(float)).mean() > 10
    small = read_clip(videos / "a.mp4", 0, 2, size=(32, 48))
    assert small.shape == (2, 32, 48, 3)
    with pytest.raises(VideoTooShortError, match="has 5 frames"):
        read_clip(videos / "short.mp4", 0, 6)


# --------------------------------------------------------------------------
# SIFT queries
# --------------------------------------------------------------------------


def _blob_video(T: int = 16, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Dark frames with a 4x4 grid of bright Gaussian blobs moving +1 px/frame in x; and their centres at frame 0."""
    c = np.linspace(15, size - 25, 4)
    centres = np.stack(np.meshgrid(c, c), -1).reshape(-1, 2)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    frames = []
    for t in range(T):
        img = np.zeros((size, size), np.float32)
        for cx, cy in centres:
            img += 220 * np.exp(-((xx - cx - t) ** 2 + (yy - cy) ** 2) / (2 * 2.5 ** 2))
        frames.append(np.repeat(np.clip(img + 20, 0, 255).astype(np.uint8)[..., None], 3, -1))
    return np.stack(frames), centres


def test_sift_queries_are_keypoints_of_the_first_quarter():
    frames, centres = _blob_video()
    T = len(frames)
    used = set()
    for seed in range(6):
        q, ok = sift_queries(frames, 8, np.random.default_rng(seed))
        assert ok and q.shape == (8, 3) and q.dtype == np.float32
        t = q[:, 0]
        assert np.all(t == np.round(t)) and t.min() >= 0 and t.max() <= T // 4
        used |= set(t.astype(int).tolist())
        # Each query sits on a blob centre of its own frame (the blobs move +1 px/frame in x).
        d = np.linalg.norm(q[:, None, 1:] - (centres[None] + np.stack([t, 0 * t], -1)[:, None]), axis=-1)
        assert d.min(1).max() < 1.0
        assert len({tuple(r) for r in np.round(q, 3)}) == 8  # distinct points
    assert len(used) > 1  # several frames of the first quarter, not only the first


def test_sift_fallback_on_a_flat_video_is_uniform_and_flagged():
    frames = np.full((12, 40, 50, 3), 128, np.uint8)
    q, ok = sift_queries(frames, 20, np.random.default_rng(0))
    assert not ok and q.shape == (20, 3)
    assert np.all(q[:, 0] == np.round(q[:, 0])) and q[:, 0].min() >= 0 and q[:, 0].max() <= 11
    assert q[:, 1].min() >= 0 and q[:, 1].max() <= 49 and q[:, 2].min() >= 0 and q[:, 2].max() <= 39
    assert q[:, 0].max() > 3  # over the whole clip, not only the first quarter
    # Too few keypoints for the request is a failure too.
    blobs, _ = _blob_video()
    assert not sift_queries(blobs, 200, np.random.default_rng(0))[1]


# --------------------------------------------------------------------------
# Pseudo-labels
# --------------------------------------------------------------------------


def test_baseline_teacher_labels_follow_the_known_motion(tmp_path):
    path = _write(tmp_path / "moving.mp4", _translating(10, (96, 96), seed=4))
    clip = read_clip(path, 0, 10, size=(96, 96))
    q, ok = sift_queries(clip, 48, np.random.default_rng(1))
    assert ok
    expected = q[None, :, 1:] + (np.arange(10)[:, None, None] - q[None, :, :1]) * MOTION
    inside = ((expected > 6) & (expected < 89)).all(axis=(0, 2))  # in view, off the border, in every frame
    q, expected = q[inside], expected[:, inside]
    assert len(q) >= 10
    tracks, visible = pseudo_label(clip, q, LucasKanadeTracker())
    assert tracks.shape == (10, len(q), 2) and visible.shape == (10, len(q)) and visible.dtype == bool
    assert visible.mean() > 0.9
    assert np.abs(tracks - expected)[visible].max() < 1.0


def test_model_teacher_labels_use_the_0_9_visibility_filter():
    model = CoTracker3Offline(**TINY)
    with torch.no_grad():  # visibility probability sigmoid(2 * 0.7) = 0.80 everywhere: visible at 0.5, not at 0.9
        model.updateformer.vis_conf_head.weight.zero_()
        model.updateformer.vis_conf_head.bias.copy_(torch.tensor([0.7, 0.0]))
    video = _translating(8)
    q = np.array([[0, 20.0, 20.0], [2, 30.0, 25.0]], np.float32)
    lenient = Predictor(model, iters=2, visibility_threshold=0.5)
    assert lenient(torch.from_numpy(video).permute(0, 3, 1, 2), queries=q).visibility.all()
    _, visible = pseudo_label(video, q, lenient)
    assert visible.sum() == 2 and visible[0, 0] and visible[2, 1]  # only the query frames themselves


# --------------------------------------------------------------------------
# Fine-tuning
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def whole_run(videos, init, tmp_path_factory):
    """A 4-step fine-tuning run without interruption, and the warnings it logged."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("cotracker3.train.pseudo_label").addHandler(handler)
    try:
        run = finetune(_config(init), videos, tmp_path_factory.mktemp("whole"))
    finally:
        logging.getLogger("cotracker3.train.pseudo_label").removeHandler(handler)
    return run, [r.getMessage() for r in records if r.levelno >= logging.WARNING]


def test_finetune_freezes_the_heads_and_trains_the_rest(whole_run, init):
    run, warnings = whole_run
    assert any("short.mp4" in w for w in warnings)  # shorter than a clip: skipped with a warning
    before = torch.load(init, weights_only=True)
    after = torch.load(run / "model.pt", weights_only=True)
    frozen = [k for k in before if k.startswith(FROZEN)]
    assert frozen == ["updateformer.vis_conf_head.weight", "updateformer.vis_conf_head.bias"]
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    trained = [k for k in before if not k.startswith(FROZEN) and before[k].is_floating_point() and k != "time_emb"]
    changed = [k for k in trained if not torch.equal(before[k], after[k])]
    assert len(changed) > 0.8 * len(trained)
    lines = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4]
    assert {x["video"] for x in lines} <= {"a.mp4", "b.mp4"}
    assert {x["teacher"] for x in lines} == {"self", "baseline"}  # one teacher drawn per step from the pool
    assert all(x["sift"] and 6 <= x["frames"] <= 8 and x["points"] == 16 for x in lines)
    assert all(x["lr"] <= 5e-5 and x["loss"] > 0 for x in lines)


def test_resume_goes_on_exactly_as_without_stopping(whole_run, videos, init, tmp_path):
    whole = whole_run[0]
    stopped = tmp_path / "stopped"

    def stop_after_2(step, steps, items):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(_config(init), videos, stopped, progress=stop_after_2)
    ckpt = torch.load(stopped / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 2
    start = torch.load(init, weights_only=True)
    assert all(torch.equal(ckpt["teacher"][k], start[k]) for k in start)  # "self": the initial student
    finetune(_config(init, init=None), videos, stopped)  # the saved configuration is used
    a = torch.load(whole / "model.pt", weights_only=True)
    b = torch.load(stopped / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(x)["step"] for x in (stopped / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_self_teacher_is_refreshed_from_the_student(videos, init, tmp_path):
    config = dict(steps=2, teachers=["self"], self_refresh=1)

    def stop_after_1(step, steps, items):
        if step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(_config(init, **config), videos, tmp_path / "one", progress=stop_after_1)
    after_one = torch.load(tmp_path / "one" / "model.pt", weights_only=True)
    two = finetune(_config(init, **config), videos, tmp_path / "two")
    teacher = torch.load(two / "checkpoint.pt", weights_only=True)["teacher"]
    final = torch.load(two / "model.pt", weights_only=True)
    assert all(torch.equal(teacher[k], after_one[k]) for k in after_one)  # step 2's teacher: the student of step 1
    assert not all(torch.equal(teacher[k], final[k]) for k in final)


def test_flat_video_samples_are_masked_out(init, tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    _write(folder / "grey.mp4", np.full((10, 64, 64, 3), 128, np.uint8))
    run = finetune(_config(init, steps=2, teachers=["self"]), folder, tmp_path / "run")
    lines = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [x["sift"] for x in lines] == [False, False]  # SIFT finds nothing: uniform queries...
    assert all(x["loss"] == 0 and x["grad_norm"] == 0 and x["teacher_visible"] == 0 for x in lines)  # ...no loss


def test_steps_are_drawn_from_seed_and_step():
    config = PseudoLabelConfig(clip_len=8, min_clip_len=4, seed=1, init="x")
    for step in range(20):
        a, b = plan_step(config, step, [40, 9]), plan_step(config, step, [40, 9])
        assert (a.video, a.start, a.length, a.stride, a.teacher) == (b.video, b.start, b.length, b.stride, b.teacher)
        n = [40, 9][a.video]
        assert 4 <= a.length <= 8 and 1 <= a.stride <= 3 and a.start + (a.length - 1) * a.stride < n
    assert len({plan_step(config, s, [40, 9]).stride for s in range(50)}) > 1


def test_reference_settings_are_the_defaults():
    config = PseudoLabelConfig()
    assert config.lr == 5e-5 and config.clip == 10.0 and config.weight_decay == 1e-5 and config.iters == 4


def test_bad_inputs_are_clear_errors(videos, init, tmp_path):
    with pytest.raises(TrainingError, match="unknown teacher 'tapir'"):
        finetune(_config(init, teachers=["baseline", "tapir"]), videos, tmp_path / "r1")
    with pytest.raises(TrainingError, match="init is required"):
        finetune(_config(init, init=None), videos, tmp_path / "r2")
    with pytest.raises(CheckpointError):
        finetune(_config(init, init=str(tmp_path / "missing.pt")), videos, tmp_path / "r3")
    with pytest.raises(TrainingError, match="min_clip_len"):
        finetune(_config(init, min_clip_len=9), videos, tmp_path / "r4")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no readable video"):
        finetune(_config(init), empty, tmp_path / "r5")
    with pytest.raises(DatasetError, match="frames of a clip"):
        finetune(_config(init, clip_len=30, min_clip_len=20), videos, tmp_path / "r6")


def test_export_of_a_fine_tuned_run_records_both_stages(videos, tmp_path):
    # Supervised run -> pseudo-label fine-tune from its model.pt (bfloat16 autocast) -> embedded export:
    # the record names the parent run, both stages' steps, the real videos, and the summed wall time.
    from cotracker3 import embedded
    from cotracker3.train.export import export
    from cotracker3.train.loop import TrainConfig, train

    parent = train(TrainConfig(steps=2, iters=2, num_points=16, min_frames=4, max_frames=8, scene_reuse=2,
                               scene=dict(num_frames=8, height=64, width=64, num_points=48, supersample=1),
                               model=dict(TINY), seed=1), tmp_path / "supervised")
    run = finetune(_config(parent / "model.pt", steps=3, bf16=True), videos, tmp_path / "real")
    lines = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(np.isfinite(x["loss"]) for x in lines)
    record = json.loads((export(run, tmp_path / "shipped") / embedded.PROVENANCE_FILE).read_text())
    assert record["steps"] == 3 and record["training"]["bf16"] is True
    assert record["initialised_from"]["run"] == "supervised" and record["initialised_from"]["steps"] == 2
    assert record["data"]["real_videos"] == ["a.mp4 (20 frames)", "b.mp4 (20 frames)"]
    own = torch.load(run / "checkpoint.pt", weights_only=True)["wall_s"]
    assert own > 0 and record["initialised_from"]["wall_time_s"] > 0
    assert record["wall_time_s"] == pytest.approx(own + record["initialised_from"]["wall_time_s"])


# --------------------------------------------------------------------------
# Batches of clips and devices
# --------------------------------------------------------------------------


def test_the_clips_of_a_step_share_its_length_and_clip_0_is_the_single_clip_step():
    config = PseudoLabelConfig(clip_len=8, min_clip_len=4, seed=1, init="x", batch_size=3)
    counts = [40, 30, 20]
    for step in range(20):
        one = plan_step(PseudoLabelConfig(clip_len=8, min_clip_len=4, seed=1, init="x"), step, counts)
        plans = [plan_step(config, step, counts, clip) for clip in range(3)]
        assert (plans[0].video, plans[0].start, plans[0].length, plans[0].stride) == \
            (one.video, one.start, one.length, one.stride)
        assert {p.length for p in plans} == {one.length}
        for p in plans:
            assert p.start + (p.length - 1) * p.stride < counts[p.video]
    draws = {(p.video, p.start, p.stride) for s in range(10) for p in (plan_step(config, s, counts, c) for c in (1, 2))}
    assert len(draws) > 10  # the other clips draw their own videos and starts


def test_a_batch_of_two_trains_on_both_clips(videos, init, tmp_path):
    run = finetune(_config(init, steps=2, batch_size=2, teachers=["baseline"], device="cpu"), videos, tmp_path / "b2")
    lines = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2] and all(x["clips"] == 2 for x in lines)
    for x in lines:
        assert len(x["batch"]) == 2 and len({c["frames"] for c in x["batch"]}) == 1  # one length per step
        assert x["batch"][0]["video"] == x["video"] and x["loss"] > 0
    # Clip 0 of a step is the clip a batch of one trains on; the second clip counts in the loss.
    single = finetune(_config(init, steps=1, teachers=["baseline"], device="cpu"), videos, tmp_path / "one")
    first = json.loads((single / "log.jsonl").read_text().splitlines()[0])
    assert (first["video"], first["start"], first["stride"], first["frames"]) == \
        tuple(lines[0]["batch"][0][k] for k in ("video", "start", "stride", "frames"))
    assert first["loss"] != lines[0]["loss"]


def test_an_unknown_device_is_a_clear_error(videos, init, tmp_path):
    with pytest.raises(TrainingError, match="unknown device"):
        finetune(_config(init, device="tpu"), videos, tmp_path / "run")
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="no CUDA"):
            finetune(_config(init, device="cuda"), videos, tmp_path / "run")
