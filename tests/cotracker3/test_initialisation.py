"""A model whose refinement starts from the Lucas-Kanade baseline's tracks (``initialisation="baseline"``).

The starting tracks are an input of the model (``init``); the baseline gives
them (:func:`cotracker3.baseline.initial_tracks`) and the predictors pass
them. With its update heads zeroed, such a model must return exactly the
baseline's tracks, and its visibility must be the baseline's visibility
turned into the initial logits: that pins the whole path (model, predictor,
backward tracking, training run, export) to the baseline's output.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cotracker3 import embedded, synthetic
from cotracker3.baseline import BASELINE_VIS_LOGIT, LucasKanadeTracker, initial_tracks
from cotracker3.predictor import Predictor
from cotracker3.train.export import export
from cotracker3.train.loop import TrainConfig, load_run_model, run_architecture, train
from tests.small_models import SMALL, one_thread, small_model  # noqa: F401 (fixture)
from track3d.cli import main

H, W = SMALL["model_resolution"]


def _zero_heads(model):
    """No update: the model's output is where it started."""
    with torch.no_grad():
        for head in (model.updateformer.flow_head, model.updateformer.vis_conf_head):
            head.weight.zero_()
            head.bias.zero_()
    return model


@pytest.fixture(scope="module")
def scene():
    """A small synthetic scene with motion the baseline can follow (frames at the model's size)."""
    cfg = synthetic.SceneConfig(num_frames=8, height=H, width=W, num_points=40, supersample=1)
    s = synthetic.render_scene(cfg, seed=2)
    video = torch.from_numpy(np.ascontiguousarray(s.frames)).permute(0, 3, 1, 2)[None]  # uint8
    first = np.argmax(s.visibility, axis=0)
    keep = s.visibility.any(0)
    n = np.flatnonzero(keep)[:12]
    q = np.stack([first[n], s.tracks[first[n], n, 0], s.tracks[first[n], n, 1]], -1).astype(np.float32)
    return video, torch.from_numpy(q)[None]


def test_unknown_initialisation_is_refused():
    with pytest.raises(ValueError, match="initialisation"):
        small_model(initialisation="flow")


def test_query_initialisation_is_the_published_behaviour(one_thread, scene):
    video, q = scene
    model = small_model(seed=3)
    assert model.initialisation is None and Predictor(model).initial_tracks is None
    pyramid = model.encode(video.float())
    T, N = video.shape[1], q.shape[1]
    start = (q[:, None, :, 1:].expand(1, T, N, 2).clone(), torch.zeros(1, T, N))
    plain = model.track_features(pyramid, q, iters=2)[-1]
    explicit = model.track_features(pyramid, q, iters=2, init=start)[-1]
    assert torch.allclose(plain.coords, explicit.coords, atol=1e-5)
    assert torch.allclose(plain.vis, explicit.vis, atol=1e-6)


def test_baseline_initialisation_starts_at_the_baseline_tracks(one_thread, scene):
    video, q = scene
    model = _zero_heads(small_model(seed=3, initialisation="baseline"))
    lk = LucasKanadeTracker()(video, queries=q, backward_tracking=True)
    coords, vis = initial_tracks(video.float(), q)
    assert torch.equal(coords, lk.tracks)
    assert torch.equal(vis, torch.where(lk.visibility, BASELINE_VIS_LOGIT, -BASELINE_VIS_LOGIT))
    assert 0 < lk.visibility.float().mean() < 1  # the scene has both visible and lost points
    out = model(video.float(), q, iters=3, init=(coords, vis))
    assert torch.allclose(out.coords, lk.tracks, atol=1e-4)
    assert torch.equal(out.vis > 0.5, lk.visibility)


def test_init_of_the_wrong_shape_is_refused(one_thread, scene):
    video, q = scene
    model = small_model(seed=3, initialisation="baseline")
    coords, vis = initial_tracks(video.float(), q)
    with pytest.raises(ValueError, match="init must be"):
        model.track_features(model.encode(video.float()), q, init=(coords[:, :-1], vis[:, :-1]))


def test_the_model_does_not_start_from_the_baseline_by_itself(one_thread, scene):
    video, q = scene
    model = small_model(seed=3, initialisation="baseline")
    with pytest.raises(ValueError, match="refines given tracks.*initial_tracks"):
        model(video.float(), q, iters=1)


def test_the_predictors_find_the_baseline_through_the_registry(one_thread, monkeypatch):
    from cotracker3 import predictor
    from cotracker3.errors import InputError

    assert predictor.INITIAL_TRACKS["baseline"] is initial_tracks
    model = small_model(seed=3, initialisation="baseline")
    assert Predictor(model).initial_tracks is initial_tracks
    mine = lambda video, queries: initial_tracks(video, queries)  # noqa: E731
    assert Predictor(model, initial_tracks=mine).initial_tracks is mine  # the caller's choice wins
    monkeypatch.setattr(predictor, "INITIAL_TRACKS", {})
    with pytest.raises(InputError, match="nothing provides them"):
        Predictor(model)


@pytest.mark.parametrize("backward", [False, True])
def test_predictor_starts_from_the_baseline_on_the_callers_frames(one_thread, scene, backward):
    video, q = scene
    model = _zero_heads(small_model(seed=3, initialisation="baseline"))
    q = q.clone()
    q[0, ::2, 0] = 3  # some points queried mid-video: the frames before them come from tracking backwards
    lk = LucasKanadeTracker()(video, queries=q, backward_tracking=True)
    out = Predictor(model, iters=2, visibility_threshold=0.5)(video, queries=q, backward_tracking=backward)
    after = torch.arange(video.shape[1])[None, :, None] >= q[:, None, :, 0]
    check = torch.ones_like(after) if backward else after  # without it, earlier frames are not asked for
    assert torch.allclose(out.tracks[check], lk.tracks[check], atol=1e-3)
    assert torch.equal(out.visibility[check], lk.visibility[check])


def test_predictor_maps_the_baseline_tracks_onto_the_model_resolution(one_thread, scene):
    video, q = scene
    big = torch.nn.functional.interpolate(video[0].float(), scale_factor=2, mode="bilinear",
                                          align_corners=True).round().clamp(0, 255).to(torch.uint8)[None]
    q2 = q.clone()
    q2[..., 1:] = q[..., 1:] * torch.tensor([(2 * W - 1) / (W - 1), (2 * H - 1) / (H - 1)])
    model = _zero_heads(small_model(seed=3, initialisation="baseline"))
    seen = {}

    def spy(frames, queries):
        seen["size"], seen["queries"] = tuple(frames.shape[-2:]), queries.clone()
        return initial_tracks(frames, queries)

    out = Predictor(model, iters=1, visibility_threshold=0.5, support_grid_size=0, initial_tracks=spy)(big, queries=q2)
    lk = LucasKanadeTracker()(big, queries=q2, backward_tracking=True)
    assert seen["size"] == (2 * H, 2 * W)  # the baseline tracks the caller's frames
    assert torch.allclose(seen["queries"], q2, atol=1e-3)  # at the caller's query points
    assert torch.allclose(out.tracks, lk.tracks, atol=1e-3)  # mapped to the model's pixels and back


def test_training_run_and_embedded_export_keep_the_initialisation(tmp_path, monkeypatch):
    tiny = dict(window_len=8, model_resolution=(64, 64), latent_dim=32, hidden_size=32, num_heads=2,
                time_depth=1, space_depth=1, corr_hidden_dim=32, corr_embed_dim=16, num_virtual_tracks=4,
                initialisation="baseline")
    config = TrainConfig(steps=2, iters=2, num_points=16, min_frames=4, max_frames=8, scene_reuse=2,
                         scene=dict(num_frames=8, height=64, width=64, num_points=48, supersample=1),
                         model=tiny, seed=1)
    run = train(config, tmp_path / "run")
    assert load_run_model(run).initialisation == "baseline"
    assert run_architecture(run / "model.pt")["initialisation"] == "baseline"
    assert run_architecture(tmp_path / "elsewhere" / "model.pt") is None
    monkeypatch.setenv("TRACK3D_EMBEDDED_DIR", str(tmp_path / "embedded"))
    export(run)
    assert json.loads((tmp_path / "embedded" / "provenance.json").read_text())["architecture"]["initialisation"] \
        == "baseline"
    assert embedded.load().initialisation == "baseline"


def test_train_command_refuses_baseline_initialisation_online(tmp_path, capsys):
    code = main(["train", "--out", str(tmp_path / "r"), "--steps", "1", "--online", "--init-tracks", "baseline"])
    assert code == 2
    assert "offline model" in capsys.readouterr().err
    assert not (tmp_path / "r" / "checkpoint.pt").exists()
