"""Supervised training on synthetic clips: samples, learning, checkpoints and resuming."""

from __future__ import annotations

import json

import pytest
import torch

from cotracker3.errors import CheckpointError
from cotracker3.train.losses import cotracker_losses
from cotracker3.train.loop import TrainConfig, TrainingError, build_model, make_sample, train

TINY = dict(window_len=8, model_resolution=(64, 64), latent_dim=32, hidden_size=32, num_heads=2, time_depth=1,
            space_depth=1, corr_hidden_dim=32, corr_embed_dim=16, num_virtual_tracks=4)


def _config(**kw) -> TrainConfig:
    base = dict(steps=4, iters=2, num_points=16, min_frames=4, max_frames=8, scene_reuse=2, log_every=1,
                checkpoint_every=2, scene=dict(num_frames=8, height=64, width=64, num_points=48, supersample=1),
                model=dict(TINY), seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_sample_is_a_supervisable_clip():
    config = _config()
    video, queries, tracks, vis = make_sample(config, 0)
    L = video.shape[1]
    assert 4 <= L <= 8 and video.shape == (1, L, 3, 64, 64)
    N = queries.shape[1]
    assert 0 < N <= 16 and tracks.shape == (1, L, N, 2) and vis.shape == (1, L, N)
    # Every query sits on its track at a frame where the track is visible.
    t = queries[0, :, 0].long()
    assert vis[0, t, torch.arange(N)].all()
    assert torch.allclose(queries[0, :, 1:], tracks[0, t, torch.arange(N)])
    again = make_sample(config, 0)
    assert all(torch.equal(a, b) for a, b in zip(again, (video, queries, tracks, vis)))  # from (seed, step) alone


def test_the_model_learns_a_clip():
    torch.manual_seed(0)
    config = _config()
    model = build_model(config)
    video, queries, tracks, vis = make_sample(config, 0)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    first = None
    for _ in range(40):
        losses = cotracker_losses(model.forward_train(video, queries, 2), tracks, vis)
        opt.zero_grad()
        losses.total.backward()
        opt.step()
        first = first if first is not None else float(losses.total.detach())
    assert float(losses.total.detach()) < 0.6 * first


@pytest.mark.parametrize("batch, workers", [(1, 0), (2, 2)])
def test_resume_goes_on_exactly_as_without_stopping(tmp_path, batch, workers):
    """Stopped after step 3 and resumed, a run ends with the weights of a run without a stop, bit for
    bit; with data-loader workers (the stopped run) against none (the whole run) too."""
    whole = train(_config(batch_size=batch), tmp_path / "whole")
    stopped = tmp_path / "stopped"

    def stop_after_3(step, steps, items):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_config(batch_size=batch, workers=workers), stopped, progress=stop_after_3)
    ckpt = torch.load(stopped / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 3  # the step finished before the interruption is kept
    train(_config(batch_size=batch, workers=workers), stopped)
    a = torch.load(whole / "model.pt", weights_only=True)
    b = torch.load(stopped / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lines = [json.loads(x) for x in (whole / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4] and all(x["total"] > 0 for x in lines)
    assert all(x["clips"] == batch for x in lines)


def test_damaged_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="damaged"):
        train(_config(), tmp_path)


def test_bad_configuration():
    with pytest.raises(TrainingError):
        _config(min_frames=9).check()


def test_bf16_autocast_trains(tmp_path):
    train(_config(steps=2, bf16=True), tmp_path)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert len(lines) == 2


def test_online_training_supervises_every_window(tmp_path):
    from cotracker3.model import CoTracker3Online

    config = _config(online=True, model=dict(TINY, window_len=4), min_frames=6)
    model = build_model(config)
    assert isinstance(model, CoTracker3Online)
    video, queries, tracks, vis = make_sample(config, 0)
    windows = model.forward_train(video, queries, 2)
    L = video.shape[1]
    starts = [s for s, _ in windows]
    assert starts == list(range(0, 2 * len(starts), 2))  # windows of 4 frames, half overlapping
    assert starts[-1] + 4 >= L and (len(starts) == 1 or starts[-2] + 4 < L)  # the last one reaches the end
    # The windows' last iterations are what forward() stitches together.
    full = model(video, queries, 2)
    first = windows[0][1][-1]
    assert torch.allclose(full.coords[:, :2], first.coords[:, :2], atol=1e-5)
    train(config, tmp_path)
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert len(lines) == 4


def test_a_run_folder_loads_with_its_own_sizes(tmp_path):
    from cotracker3.eval.scoring import load_tracker
    from cotracker3.weights import model_from_checkpoint

    train(_config(steps=1), tmp_path)
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    for spec in (tmp_path / "model.pt", tmp_path):
        model = model_from_checkpoint(spec)
        assert model.latent_dim == TINY["latent_dim"] and model.window_len == TINY["window_len"]
        assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    with pytest.raises(CheckpointError, match="offline model of a training run"):
        model_from_checkpoint(tmp_path / "model.pt", kind="online")
    tracker, _ = load_tracker(str(tmp_path))  # what `track3d eval --tracker RUN` uses
    assert tracker.model.latent_dim == TINY["latent_dim"]


def test_run_model_is_the_trained_one(run):
    from cotracker3.train.loop import load_run_model

    model = load_run_model(run)
    trained = torch.load(run / "model.pt", weights_only=True)
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items()) and not model.training


def test_evaluate_model_reports_every_tier_in_percent(run, monkeypatch):
    from cotracker3 import synthetic
    from cotracker3.eval import scoring
    from cotracker3.train.loop import evaluate_model, load_run_model

    reports = []

    def evaluate(*args, **kwargs):
        reports.append(real(*args, **kwargs))
        return reports[-1]

    real = scoring.evaluate
    monkeypatch.setattr(scoring, "evaluate", evaluate)
    metrics = evaluate_model(load_run_model(run), videos_per_tier=1)
    fractions = reports[0].to_json()  # what evaluate reports: fractions in [0, 1]
    assert set(metrics) == {f"{tier}/mean" for tier in synthetic.EVAL_TIERS} | {"mean"}
    for key, values in metrics.items():
        assert set(values) == {"average_jaccard", "average_pts_within_thresh", "occlusion_accuracy"}
        for name, value in values.items():
            assert value == round(100 * fractions[key][name], 2), (key, name)
    assert any(v > 1 for values in metrics.values() for v in values.values())
