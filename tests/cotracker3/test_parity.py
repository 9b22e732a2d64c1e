"""Our CoTracker3 computes what the published reference computes.

Fixtures (tests/fixtures/README.md, tests/fixtures/parity/README.md) hold the
reference implementation's outputs with the recipe weights. Tolerances are the
ones stated there: 1e-2 px on coordinates, 1e-3 on probabilities, and boolean
visibilities equal except where the reference probability lies within 1e-3 of
the threshold.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cotracker3
from recipe_weights import FIXTURES, PARITY, recipe_parameters

COORD_TOL = 1e-2
PROB_TOL = 1e-3


def _model(kind: str):
    model = cotracker3.build_model(f"cotracker3-{kind}")
    missing, unexpected = model.load_state_dict(recipe_parameters(kind), strict=False)
    assert missing == ["time_emb"] and unexpected == []
    return model.eval()


@pytest.fixture(scope="module")
def offline_model():
    return _model("offline")


@pytest.fixture(scope="module")
def online_model():
    return _model("online")


def _assert_visibility(ours: np.ndarray, ref: np.ndarray, prob: np.ndarray | None, thr: float):
    differ = ours != ref
    if prob is not None:
        differ &= np.abs(prob - thr) > PROB_TOL
    assert not differ.any(), f"{int(differ.sum())} visibility flags differ from the reference"


@pytest.mark.parametrize("kind", ["offline", "online"])
def test_time_embedding_matches_reference(kind):
    key = {"offline": "offline_window_len_60", "online": "online_window_len_16"}[kind]
    ref = np.load(PARITY / "time_emb.npz")[key]
    model = cotracker3.build_model(f"cotracker3-{kind}")
    np.testing.assert_allclose(model.time_emb.numpy(), ref, atol=1e-6)


def test_offline_model_matches_reference(offline_model):
    ref = np.load(PARITY / "offline_model.npz")
    video = torch.from_numpy(ref["video"]).float()[None]
    queries = torch.from_numpy(ref["queries"])[None]
    with torch.no_grad():
        coords, vis, conf = offline_model(video, queries, iters=int(ref["iters"]))[:3]
    assert coords.shape == (1, *ref["coords"].shape)
    np.testing.assert_allclose(coords[0].numpy(), ref["coords"], atol=COORD_TOL, rtol=0)
    np.testing.assert_allclose(vis[0].numpy(), ref["vis"], atol=PROB_TOL, rtol=0)
    np.testing.assert_allclose(conf[0].numpy(), ref["conf"], atol=PROB_TOL, rtol=0)


@pytest.fixture(scope="module")
def predictor_fixture():
    return np.load(PARITY / "offline_predictor.npz")


@pytest.mark.parametrize(
    "case, kwargs",
    [
        ("grid", lambda r: {"grid_size": int(r["grid_size"])}),
        ("forward", lambda r: {"queries": torch.from_numpy(r["queries"])[None]}),
        ("backward", lambda r: {"queries": torch.from_numpy(r["queries"])[None], "backward_tracking": True}),
    ],
)
def test_offline_predictor_matches_reference(offline_model, predictor_fixture, case, kwargs):
    ref = predictor_fixture
    video = torch.from_numpy(ref["video"])[None]
    out = cotracker3.Predictor(offline_model)(video, **kwargs(ref))
    np.testing.assert_allclose(out.tracks[0].numpy(), ref[f"{case}_tracks"], atol=COORD_TOL, rtol=0)
    _assert_visibility(out.visibility[0].numpy(), ref[f"{case}_visibility"], None, 0.9)


# -- online -------------------------------------------------------------------


@pytest.fixture(scope="module")
def online_model_fixture():
    return np.load(FIXTURES / "online_model.npz")


def test_online_model_streaming_matches_reference(online_model, online_model_fixture):
    ref = online_model_fixture
    video = torch.from_numpy(ref["video"]).float()[None]
    queries = torch.from_numpy(ref["queries"])[None]
    state = online_model.init_state(queries)
    coords, vis, conf = [], [], []
    with torch.no_grad():
        for k, (s, e) in enumerate(zip(ref["chunk_starts"], ref["chunk_ends"])):
            assert state.start == s
            out, state = online_model.forward_window(video[:, s:e], state, iters=int(ref["iters"]))
            if k == 0:  # the first window alone, as the reference returns it
                np.testing.assert_allclose(out.coords[0].numpy(), ref["coords_first"], atol=COORD_TOL, rtol=0)
                np.testing.assert_allclose(out.vis[0].numpy(), ref["vis_first"], atol=PROB_TOL, rtol=0)
                np.testing.assert_allclose(out.conf[0].numpy(), ref["conf_first"], atol=PROB_TOL, rtol=0)
            keep = e - s if k == len(ref["chunk_starts"]) - 1 else online_model.step
            coords.append(out.coords[0, :keep])
            vis.append(out.vis[0, :keep])
            conf.append(out.conf[0, :keep])
    np.testing.assert_allclose(torch.cat(coords).numpy(), ref["coords"], atol=COORD_TOL, rtol=0)
    np.testing.assert_allclose(torch.cat(vis).numpy(), ref["vis"], atol=PROB_TOL, rtol=0)
    np.testing.assert_allclose(torch.cat(conf).numpy(), ref["conf"], atol=PROB_TOL, rtol=0)


def test_online_model_whole_video_equals_streaming(online_model, online_model_fixture):
    ref = online_model_fixture
    video = torch.from_numpy(ref["video"]).float()[None]
    queries = torch.from_numpy(ref["queries"])[None]
    with torch.no_grad():
        coords, vis, conf = online_model(video, queries, iters=int(ref["iters"]))[:3]
    np.testing.assert_allclose(coords[0].numpy(), ref["coords"], atol=COORD_TOL, rtol=0)
    np.testing.assert_allclose(vis[0].numpy(), ref["vis"], atol=PROB_TOL, rtol=0)


@pytest.fixture(scope="module")
def online_predictor_fixture():
    return np.load(FIXTURES / "online_predictor.npz")


@pytest.mark.parametrize("case", ["queries", "grid"])
def test_online_predictor_matches_reference(online_model, online_predictor_fixture, case):
    """Driven exactly as the reference online predictor: overlapping 2*step chunks."""
    ref = online_predictor_fixture
    video = torch.from_numpy(ref["video"])[None]
    pred = cotracker3.OnlinePredictor(online_model)
    setup = {"queries": torch.from_numpy(ref["queries"])[None]} if case == "queries" else {
        "grid_size": int(ref["grid_size"]), "grid_query_frame": int(ref["grid_query_frame"])}
    assert pred(video[:, : 2 * pred.step], is_first_step=True, **setup) is None
    for s, e in zip(ref["chunk_starts"], ref["chunk_ends"]):
        out = pred(video[:, s:e])
        assert out.tracks.shape[1] == e
    np.testing.assert_allclose(out.tracks[0].numpy(), ref[f"{case}_tracks"], atol=COORD_TOL, rtol=0)
    _assert_visibility(out.visibility[0].numpy(), ref[f"{case}_visibility"], ref[f"{case}_visconf"], 0.6)


def test_online_predictor_push_frames_equals_chunked_calls(online_model, online_predictor_fixture):
    """Frames pushed a few at a time give the reference's result too."""
    ref = online_predictor_fixture
    video = torch.from_numpy(ref["video"])[None]
    pred = cotracker3.OnlinePredictor(online_model)
    H, W = video.shape[-2:]
    pred.start(queries=torch.from_numpy(ref["queries"]), frame_size=(W, H))
    for i in range(0, video.shape[1], 5):  # chunk sizes unrelated to the window
        pred.push(video[:, i : i + 5])
    out = pred.finish()
    np.testing.assert_allclose(out.tracks[0].numpy(), ref["queries_tracks"], atol=COORD_TOL, rtol=0)
    _assert_visibility(out.visibility[0].numpy(), ref["queries_visibility"], ref["queries_visconf"], 0.6)


# -- on a GPU -------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


@pytest.fixture
def no_tf32():
    """The reference's fixtures are float32: TF32 (cuDNN's default for convolutions) is off
    for the comparison, as the fixtures' tolerances assume."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@cuda
def test_offline_model_matches_reference_on_cuda(no_tf32):
    model = _model("offline").cuda()
    ref = np.load(PARITY / "offline_model.npz")
    video = torch.from_numpy(ref["video"]).float()[None].cuda()
    queries = torch.from_numpy(ref["queries"])[None].cuda()
    with torch.no_grad():
        coords, vis, conf = model(video, queries, iters=int(ref["iters"]))[:3]
    np.testing.assert_allclose(coords[0].cpu().numpy(), ref["coords"], atol=COORD_TOL, rtol=0)
    np.testing.assert_allclose(vis[0].cpu().numpy(), ref["vis"], atol=PROB_TOL, rtol=0)
    np.testing.assert_allclose(conf[0].cpu().numpy(), ref["conf"], atol=PROB_TOL, rtol=0)


@cuda
@pytest.mark.parametrize("case", ["grid", "forward", "backward"])
def test_offline_predictor_matches_reference_on_cuda(no_tf32, predictor_fixture, case):
    ref = predictor_fixture
    kwargs = {"grid": {"grid_size": int(ref["grid_size"])},
              "forward": {"queries": torch.from_numpy(ref["queries"])[None]},
              "backward": {"queries": torch.from_numpy(ref["queries"])[None], "backward_tracking": True}}[case]
    video = torch.from_numpy(ref["video"])[None]  # stays on the host: the predictor moves frames as it encodes
    out = cotracker3.Predictor(_model("offline").cuda())(video, **kwargs)
    np.testing.assert_allclose(out.tracks[0].cpu().numpy(), ref[f"{case}_tracks"], atol=COORD_TOL, rtol=0)
    _assert_visibility(out.visibility[0].cpu().numpy(), ref[f"{case}_visibility"], None, 0.9)


@cuda
def test_online_predictor_matches_reference_on_cuda(no_tf32, online_predictor_fixture):
    ref = online_predictor_fixture
    video = torch.from_numpy(ref["video"])[None].cuda()
    pred = cotracker3.OnlinePredictor(_model("online").cuda())
    assert pred(video[:, : 2 * pred.step], is_first_step=True, queries=torch.from_numpy(ref["queries"])[None]) is None
    for s, e in zip(ref["chunk_starts"], ref["chunk_ends"]):
        out = pred(video[:, s:e])
    np.testing.assert_allclose(out.tracks[0].cpu().numpy(), ref["queries_tracks"], atol=COORD_TOL, rtol=0)
    _assert_visibility(out.visibility[0].cpu().numpy(), ref["queries_visibility"], ref["queries_visconf"], 0.6)
