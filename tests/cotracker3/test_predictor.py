"""Behaviour tests of cotracker3.predictor: grids, input checks, offline and streaming predictors.

Numerical equality with the published reference is proven in test_parity.py;
here small randomly initialised models check shapes, conventions, the
bookkeeping of queries, grids, masks, dense and backward tracking, and the
streaming interface. Expected values are worked out by hand in the comments.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import cotracker3
from small_models import SMALL, one_thread, small_model  # noqa: F401  (one_thread is a fixture)
from cotracker3.errors import CoTrackerError, InputError, QueryError
from cotracker3.predictor import OnlinePredictor, Predictor, TrackingResult, grid_points

MH, MW = SMALL["model_resolution"]


def random_video(T: int, h: int = 32, w: int = 40, B: int = 1, seed: int = 0) -> torch.Tensor:
    """``(B, T, 3, h, w)`` uint8."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (B, T, 3, h, w), generator=g, dtype=torch.uint8)


def model_to_caller(h: int, w: int) -> torch.Tensor:
    """Model pixels -> caller pixels for frames resized with ``align_corners=True``."""
    return torch.tensor([(w - 1) / (MW - 1), (h - 1) / (MH - 1)])


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pred():
    return Predictor(small_model("offline"), iters=2)


@pytest.fixture(scope="module")
def online_model():
    return small_model("online")


# --------------------------------------------------------------------------- grid_points


def test_grid_points_one_is_the_centre():
    assert grid_points(1, (30, 50)).tolist() == [[[25.0, 15.0]]]


def test_grid_points_corners_at_margin():
    # (H, W) = (64, 128): margin 128 / 64 = 2 -> x in {2, 126}, y in {2, 62}, row-major.
    pts = grid_points(2, (64, 128))
    assert pts.shape == (1, 4, 2) and pts.dtype == torch.float32
    assert pts.tolist() == [[[2.0, 2.0], [126.0, 2.0], [2.0, 62.0], [126.0, 62.0]]]


def test_grid_points_row_major_order():
    # (H, W) = (32, 64): margin 1 -> xs 1, 32, 63 and ys 1, 16, 31.
    pts = grid_points(3, (32, 64))[0]
    assert pts.tolist() == [[x, y] for y in (1.0, 16.0, 31.0) for x in (1.0, 32.0, 63.0)]


# --------------------------------------------------------------------------- TrackingResult


def test_tracking_result_unpacks_and_numpy():
    r = TrackingResult(torch.zeros(2, 3, 4, 2), torch.ones(2, 3, 4, dtype=torch.bool),
                       torch.full((2, 3, 4), 0.5), torch.zeros(2, 4, 3))
    tracks, vis = r
    assert tracks is r.tracks and vis is r.visibility
    arrays = r.numpy(batch=1)
    assert arrays["tracks"].shape == (3, 4, 2) and arrays["tracks"].dtype == np.float32
    assert arrays["visibility"].dtype == np.bool_ and arrays["queries"].shape == (4, 3)


def test_visibility_is_the_thresholded_score_and_the_threshold_can_come_from_the_model(online_model):
    video = random_video(6)
    model = small_model("offline")
    out = Predictor(model, iters=2)(video, queries=QUERIES)
    assert out.visibility_score.shape == out.visibility.shape and out.visibility_score.dtype == torch.float32
    assert Predictor(model).visibility_threshold == cotracker3.predictor.OFFLINE_VISIBILITY_THRESHOLD
    t, n = QUERIES[:, 0].long(), torch.arange(4)
    assert (out.visibility_score[0, t, n] == 1).all()  # the query frame is visible for sure
    for threshold in (0.3, 0.7):
        out = Predictor(model, iters=2, visibility_threshold=threshold)(video, queries=QUERIES)
        assert torch.equal(out.visibility, out.visibility_score > threshold)
    model.visibility_threshold = 0.35  # a calibrated model (the embedded one) brings its own
    assert Predictor(model).visibility_threshold == 0.35
    assert Predictor(model, visibility_threshold=0.8).visibility_threshold == 0.8
    online = OnlinePredictor(online_model, iters=1)
    assert online.visibility_threshold == cotracker3.predictor.ONLINE_VISIBILITY_THRESHOLD
    online.start(queries=ONLINE_QUERIES[:2], frame_size=(40, 32))
    online.push(random_video(10)[0])
    res = online.finish()
    assert res.visibility_score.shape == res.visibility.shape
    assert torch.equal(res.visibility, res.visibility_score > online.visibility_threshold)
    assert "visibility_score" in res.numpy()


# --------------------------------------------------------------------------- Predictor: queries


QUERIES = torch.tensor([[0.0, 5.0, 6.0], [2.0, 39.0, 31.0], [5.0, 0.0, 0.0], [3.0, 17.5, 12.25]])


def test_predictor_rejects_online_model(online_model):
    with pytest.raises(TypeError, match="OnlinePredictor"):
        Predictor(online_model)


def test_predictor_queries_shapes_and_dtypes(pred):
    video = random_video(6, B=2)
    out = pred(video, queries=QUERIES)
    assert isinstance(out, TrackingResult)
    assert out.tracks.shape == (2, 6, 4, 2) and out.tracks.dtype == torch.float32
    assert out.visibility.shape == (2, 6, 4) and out.visibility.dtype == torch.bool
    assert out.confidence.shape == (2, 6, 4) and out.confidence.dtype == torch.float32
    assert out.queries.shape == (2, 4, 3)
    assert torch.isfinite(out.tracks).all()
    assert (out.confidence >= 0).all() and (out.confidence <= 1).all()


def test_predictor_query_points_written_back(pred):
    video = random_video(6, B=2)
    out = pred(video, queries=QUERIES)
    torch.testing.assert_close(out.queries, QUERIES.expand(2, -1, -1), atol=1e-4, rtol=0)
    b = torch.arange(2)[:, None]
    t, n = QUERIES[:, 0].long()[None], torch.arange(4)[None]
    assert torch.equal(out.tracks[b, t, n], out.queries[..., 1:])
    assert out.visibility[b, t, n].all()
    assert (out.confidence[b, t, n] == 1).all()
    # Elsewhere the tracks are the model's: not all equal to the query.
    assert not torch.allclose(out.tracks[:, 1, 0], QUERIES[0, 1:].expand(2, 2))


def test_predictor_batched_queries_per_element(pred):
    video = random_video(4, B=2)
    q = torch.stack([QUERIES[[0, 1]], QUERIES[[2, 3]] - torch.tensor([2.0, 0.0, 0.0])])
    out = pred(video, queries=q)
    torch.testing.assert_close(out.queries, q, atol=1e-4, rtol=0)


def test_predictor_unbatched_and_numpy_inputs(pred):
    video = random_video(5)
    ref = pred(video, queries=QUERIES[:2])
    unbatched = pred(video[0], queries=QUERIES[:2])
    as_numpy = pred(video[0].numpy(), queries=QUERIES[:2].numpy())
    as_float = pred(video.float(), queries=QUERIES[:2].tolist())
    for out in (unbatched, as_numpy, as_float):
        assert out.tracks.shape == (1, 5, 2, 2)
        torch.testing.assert_close(out.tracks, ref.tracks, atol=1e-4, rtol=1e-5)
        assert torch.equal(out.visibility, ref.visibility)


@pytest.mark.parametrize("h, w", [(23, 37), (33, 17)])
def test_predictor_odd_frame_size(pred, h, w):
    video = random_video(4, h=h, w=w)
    q = torch.tensor([[0.0, w - 1.0, h - 1.0], [3.0, 0.0, 0.0], [1.0, w / 3, h / 2]])
    out = pred(video, queries=q)
    assert out.tracks.shape == (1, 4, 3, 2)
    torch.testing.assert_close(out.tracks[0, [0, 3, 1], [0, 1, 2]], q[:, 1:], atol=1e-4, rtol=0)


def test_predictor_support_grid_is_tracked_along_and_dropped():
    model = small_model("offline")
    a = Predictor(model, iters=1, support_grid_size=2)(random_video(3), queries=QUERIES[:1])
    b = Predictor(model, iters=1, support_grid_size=5)(random_video(3), queries=QUERIES[:1])
    assert a.tracks.shape == b.tracks.shape == (1, 3, 1, 2)
    assert not torch.allclose(a.tracks, b.tracks)  # the support points take part


# --------------------------------------------------------------------------- Predictor: backward tracking


def test_backward_tracking_changes_only_frames_before_the_query(pred):
    T = 8
    video = random_video(T)
    q = torch.tensor([[0.0, 10.0, 10.0], [3.0, 20.0, 15.0], [7.0, 30.0, 25.0]])
    fwd = pred(video, queries=q)
    bwd = pred(video, queries=q, backward_tracking=True)
    for n, t in enumerate(q[:, 0].long().tolist()):
        assert torch.equal(bwd.tracks[0, t:, n], fwd.tracks[0, t:, n])
        assert torch.equal(bwd.visibility[0, t:, n], fwd.visibility[0, t:, n])
        assert torch.equal(bwd.confidence[0, t:, n], fwd.confidence[0, t:, n])
        if t > 0:  # frames before the query come from the time-reversed run
            assert not torch.allclose(bwd.tracks[0, :t, n], fwd.tracks[0, :t, n])
    assert torch.equal(bwd.queries, fwd.queries)


def test_backward_tracking_reuses_the_pyramid_and_equals_tracking_the_reversed_video(pred):
    # The reversed pyramid stands in for encoding the time-reversed frames: the result must be
    # what the model gives on the reversed video itself (resized as the predictor resizes).
    from cotracker3.predictor import resize_frames

    T = 6
    video = random_video(T)
    q = torch.tensor([[4.0, 12.0, 9.0], [2.0, 30.0, 20.0]])
    bwd = pred(video, queries=q, backward_tracking=True)
    frames = resize_frames(video, pred.interp_shape)
    model_q = q.clone()[None]
    model_q[..., 1:] *= torch.tensor([(MW - 1) / (40 - 1), (MH - 1) / (32 - 1)])
    support = grid_points(pred.support_grid_size, pred.interp_shape)  # tracked along with user queries
    model_q = torch.cat([model_q, torch.cat([torch.zeros_like(support[..., :1]), support], -1)], dim=1)
    model_q[..., 0] = T - 1 - model_q[..., 0]
    with torch.no_grad():
        rev = pred.model(frames.flip(1), model_q, iters=pred.iters)
    back = torch.tensor([(40 - 1) / (MW - 1), (32 - 1) / (MH - 1)])
    for n, t in enumerate(q[:, 0].long().tolist()):
        expected = rev.coords.flip(1)[0, :t, n] * back
        torch.testing.assert_close(bwd.tracks[0, :t, n], expected, atol=1e-4, rtol=1e-5)


# --------------------------------------------------------------------------- Predictor: grids and masks


def test_predictor_grid(pred):
    h, w = 32, 40
    out = pred(random_video(5, h=h, w=w, B=2), grid_size=3, grid_query_frame=2)
    assert out.tracks.shape == (2, 5, 9, 2)
    assert (out.queries[..., 0] == 2).all()
    # Grid points are laid out in model pixels and mapped back to the caller's.
    expected = grid_points(3, (MH, MW))[0] * model_to_caller(h, w)
    torch.testing.assert_close(out.queries[0, :, 1:], expected, atol=1e-5, rtol=0)
    assert torch.equal(out.tracks[:, 2], out.queries[..., 1:])
    assert out.visibility[:, 2].all()


def test_predictor_grid_size_one(pred):
    out = pred(random_video(3), grid_size=1)
    torch.testing.assert_close(out.queries[0, 0, 1:], torch.tensor([MW / 2, MH / 2]) * model_to_caller(32, 40))


@pytest.mark.parametrize("form", ["hw_numpy", "1hw", "b1hw"])
def test_predictor_segm_mask_keeps_grid_points_inside(pred, form):
    # Grid 4 on the 96x64 model frame: xs 1.5, 32.5, 63.5, 94.5 round to 2, 32, 64, 94,
    # which nearest-resizing from 40 columns reads at columns floor(x * 40 / 96) = 0, 13, 26, 39.
    # A mask of columns 0..19 keeps the first two grid columns: 8 points.
    h, w = 32, 40
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[:, :20] = True
    segm = {"hw_numpy": mask.numpy(), "1hw": mask[None].float(), "b1hw": mask[None, None].to(torch.uint8)}[form]
    out = pred(random_video(4, h=h, w=w), grid_size=4, segm_mask=segm)
    full = grid_points(4, (MH, MW))[0] * model_to_caller(h, w)
    assert out.tracks.shape == (1, 4, 8, 2)
    torch.testing.assert_close(out.queries[0, :, 1:], full[[0, 1, 4, 5, 8, 9, 12, 13]], atol=1e-5, rtol=0)
    assert (out.queries[0, :, 1] < 20).all()


def test_predictor_empty_segm_mask(pred):
    with pytest.raises(QueryError, match="none of the grid points"):
        pred(random_video(3), grid_size=4, segm_mask=torch.zeros(32, 40))


def test_predictor_segm_mask_wrong_size(pred):
    with pytest.raises(QueryError, match="segm_mask"):
        pred(random_video(3), grid_size=4, segm_mask=torch.ones(32, 41))


def test_predictor_segm_mask_without_grid(pred):
    with pytest.raises(QueryError, match="grid_size"):
        pred(random_video(3), segm_mask=torch.ones(32, 40))


# --------------------------------------------------------------------------- Predictor: dense


def _pixels(queries: torch.Tensor) -> list[tuple[int, int]]:
    return sorted((round(x), round(y)) for x, y in queries[0, :, 1:].tolist())


def test_predictor_dense_every_pixel():
    pred = Predictor(small_model("offline"), iters=1)
    T, h, w = 8, 32, 40
    out = pred(random_video(T, h=h, w=w), grid_query_frame=3)
    step = max(w // 80, 1)  # 1
    N = (w // step) * (h // step)
    assert out.tracks.shape == (1, T, N, 2) and N == 1280
    assert (out.queries[..., 0] == 3).all()
    assert _pixels(out.queries) == [(x, y) for x in range(w) for y in range(h)]
    torch.testing.assert_close(out.tracks[:, 3], out.queries[..., 1:], atol=1e-4, rtol=0)
    assert out.visibility[:, 3].all()


def test_predictor_dense_step_two_odd_width():
    # W = 161 -> step 161 // 80 = 2: 80 x 2 points per offset, 4 offsets covering
    # every pixel of the 160 x 4 top-left block once.
    pred = Predictor(small_model("offline"), iters=1)
    out = pred(random_video(2, h=5, w=161))
    assert out.tracks.shape == (1, 2, 640, 2)
    assert _pixels(out.queries) == [(x, y) for x in range(160) for y in range(4)]


# --------------------------------------------------------------------------- Predictor: errors


@pytest.mark.parametrize(
    "video, match",
    [
        (torch.zeros(1, 3, 32, 40), "at least 2"),  # one frame, unbatched
        (torch.zeros(2, 1, 3, 32, 40), "at least 2"),  # one frame, batched
        (torch.zeros(4, 4, 32, 40), "RGB"),  # four channels
        (torch.zeros(4, 32, 40, 3), "permute"),  # channels last
        (torch.zeros(4, 3, 1, 40), "2x2"),  # one row
        (torch.zeros(4, 3, 32, 40, dtype=torch.int32), "uint8 or float"),
        ([[0.0]], "tensor or array"),
    ],
)
def test_predictor_bad_video(pred, video, match):
    with pytest.raises(InputError, match=match):
        pred(video, queries=QUERIES[:1])


T_ERR, H_ERR, W_ERR = 6, 32, 40


@pytest.mark.parametrize(
    "queries, match",
    [
        ([[0.0, float("nan"), 3.0]], "NaN"),
        ([[0.0, 3.0, float("inf")]], "NaN or infinity"),
        # The pixel area is [-0.5, W - 0.5] x [-0.5, H - 0.5] ((0, 0) is the centre of the top-left pixel).
        ([[0.0, W_ERR - 0.5 + 0.01, 3.0]], "outside"),
        ([[0.0, -0.51, 3.0]], "outside"),
        ([[0.0, 3.0, H_ERR]], "outside"),
        ([[T_ERR, 3.0, 3.0]], "integers"),  # t past the end
        ([[-1.0, 3.0, 3.0]], "integers"),
        ([[1.5, 3.0, 3.0]], "integers"),
        (torch.zeros(0, 3), "empty"),
        ([[3.0, 3.0]], "rows of"),
        (torch.zeros(2, 1, 3), "rows of"),  # batch 2 for a batch-1 video
    ],
)
def test_predictor_bad_queries(pred, queries, match):
    with pytest.raises(QueryError, match=match):
        pred(random_video(T_ERR, h=H_ERR, w=W_ERR), queries=queries)


def test_predictor_boundary_queries_are_accepted(pred):
    q = [[T_ERR - 1, W_ERR - 1, H_ERR - 1], [0, 0, 0]]
    out = pred(random_video(T_ERR, h=H_ERR, w=W_ERR), queries=q)
    assert out.tracks.shape == (1, T_ERR, 2, 2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"grid_size": -1}, "non-negative"),
        ({"grid_size": 2.5}, "non-negative"),
        ({"grid_size": 3, "grid_query_frame": T_ERR}, "grid_query_frame"),
        ({"grid_query_frame": -1}, "grid_query_frame"),
        ({"grid_size": 3, "queries": [[0.0, 1.0, 1.0]]}, "not both"),
    ],
)
def test_predictor_bad_grid(pred, kwargs, match):
    with pytest.raises(QueryError, match=match):
        pred(random_video(T_ERR, h=H_ERR, w=W_ERR), **kwargs)


def test_errors_are_cotracker_and_value_errors(pred):
    with pytest.raises(CoTrackerError):
        pred(random_video(2), queries=[[5.0, 1.0, 1.0]])
    with pytest.raises(ValueError):
        pred(torch.zeros(1, 3, 8, 8))


# --------------------------------------------------------------------------- OnlinePredictor


ONLINE_QUERIES = torch.tensor([[0.0, 5.0, 5.0], [6.0, 20.0, 10.0], [13.0, 39.0, 31.0], [2.0, 12.5, 7.5]])


def _reference_style(model, video, **setup) -> TrackingResult:
    """Drive the predictor as the reference does: chunks of 2 * step every step frames."""
    pred = OnlinePredictor(model, iters=2)
    step = pred.step
    assert pred(video[:, : 2 * step], is_first_step=True, **setup) is None
    out = None
    for i in range(0, video.shape[1] - step, step):
        out = pred(video[:, i : i + 2 * step])
        assert out.tracks.shape[1] == min(i + 2 * step, video.shape[1])
    return out


def _pushed(model, video, sizes=(1, 3, 7, 2), keep_history=True, **setup) -> OnlinePredictor:
    pred = OnlinePredictor(model, iters=2, keep_history=keep_history)
    h, w = video.shape[-2:]
    pred.start(frame_size=(w, h), batch=video.shape[0], **setup)
    i = 0
    for size in itertools.cycle(sizes):
        if i >= video.shape[1]:
            break
        pred.push(video[:, i : i + size])
        i += size
    return pred


def _assert_same(a: TrackingResult, b: TrackingResult):
    assert a.tracks.shape == b.tracks.shape
    torch.testing.assert_close(a.tracks, b.tracks, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(a.confidence, b.confidence, atol=1e-5, rtol=1e-5)
    assert torch.equal(a.visibility, b.visibility)
    torch.testing.assert_close(a.queries, b.queries)


def test_online_predictor_rejects_offline_model():
    with pytest.raises(TypeError, match="Predictor"):
        OnlinePredictor(small_model("offline"))


@pytest.mark.parametrize("T", [5, 16, 21])
def test_online_push_any_chunk_sizes_equals_reference_style(online_model, T):
    video = random_video(T, B=2)
    q = ONLINE_QUERIES[ONLINE_QUERIES[:, 0] < T]
    ref = _reference_style(online_model, video, queries=q)
    out = _pushed(online_model, video, queries=q).finish()
    assert out.tracks.shape == (2, T, len(q), 2)
    assert out.visibility.dtype == torch.bool
    assert (out.confidence >= 0).all() and (out.confidence <= 1).all()
    torch.testing.assert_close(out.queries, q.expand(2, -1, -1), atol=1e-4, rtol=0)
    _assert_same(out, ref)


def test_online_push_returns_tracks_when_a_window_runs(online_model):
    video = random_video(14)
    pred = OnlinePredictor(online_model, iters=1)
    pred.start(queries=ONLINE_QUERIES[:2], frame_size=(40, 32))
    seen = []
    for i in range(14):
        out = pred.push(video[0, i])  # one (3, H, W) frame at a time
        if out is not None:
            seen.append((i + 1, out.tracks.shape[1]))
    # Windows complete after 8 frames, then every step = 4 frames; the result
    # covers every frame seen so far.
    assert seen == [(8, 8), (12, 12)]
    assert pred.finish().tracks.shape == (1, 14, 2, 2)


def test_online_grid_and_support_grid(online_model):
    video = random_video(12)
    out = _pushed(online_model, video, grid_size=3, grid_query_frame=1).finish()
    assert out.tracks.shape == (1, 12, 9, 2)
    assert (out.queries[..., 0] == 1).all()
    expected = grid_points(3, (MH, MW))[0] * model_to_caller(32, 40)
    torch.testing.assert_close(out.queries[0, :, 1:], expected, atol=1e-5, rtol=0)
    sup = _pushed(online_model, video, queries=ONLINE_QUERIES[:2], add_support_grid=True).finish()
    plain = _pushed(online_model, video, queries=ONLINE_QUERIES[:2]).finish()
    assert sup.tracks.shape == plain.tracks.shape == (1, 12, 2, 2)
    assert not torch.allclose(sup.tracks, plain.tracks)  # the support points take part


def test_online_track_iterable_of_frames(online_model):
    video = random_video(19)
    frames = [f.permute(1, 2, 0).numpy() for f in video[0]]  # (H, W, 3) uint8
    assert frames[0].shape == (32, 40, 3) and frames[0].dtype == np.uint8
    pred = OnlinePredictor(online_model, iters=2)
    pred.start(queries=ONLINE_QUERIES, frame_size=(40, 32))
    results = list(pred.track(iter(frames), chunk=5))
    assert len(results) >= 2
    ref = _pushed(online_model, video, queries=ONLINE_QUERIES).finish()
    _assert_same(results[-1], ref)


def test_online_memory_does_not_grow(online_model):
    S, step = online_model.window_len, online_model.step

    def state_after(windows: int):
        pred = _pushed(online_model, random_video(S + (windows - 1) * step, seed=windows),
                       sizes=(3,), queries=ONLINE_QUERIES)
        st = pred._state
        assert st.start == windows * step
        assert len(pred._buffer) <= S
        shapes = [tuple(st.coords.shape), tuple(st.vis.shape), tuple(st.conf.shape)]
        return shapes + [tuple(s.shape) for s in st.support], len(pred._buffer)

    few, many = state_after(3), state_after(10)
    assert few == many
    assert few[0][0] == (1, S - step, len(ONLINE_QUERIES), 2)


def test_online_keep_history_false_returns_recent_frames(online_model):
    video = random_video(20)
    full = _pushed(online_model, video, queries=ONLINE_QUERIES[:2])
    recent = _pushed(online_model, video, queries=ONLINE_QUERIES[:2], keep_history=False)
    a, b = full.result(), recent.result()
    # The last window started at 12: frames 12..15 are final, 16..19 pending.
    assert a.tracks.shape[1] == 20 and b.tracks.shape[1] == 8
    torch.testing.assert_close(b.tracks, a.tracks[:, 12:])
    assert torch.equal(b.visibility, a.visibility[:, 12:])
    assert a.start_frame == 0 and b.start_frame == 12
    fa, fb = full.finish(), recent.finish()
    torch.testing.assert_close(fb.tracks, fa.tracks[:, -fb.tracks.shape[1]:])
    assert fb.tracks.shape[1] < 20
    assert fb.start_frame == 20 - fb.tracks.shape[1]


def test_online_odd_frame_size(online_model):
    video = random_video(10, h=23, w=37)
    out = _pushed(online_model, video, queries=[[0, 36, 22], [4, 0, 0]]).finish()
    assert out.tracks.shape == (1, 10, 2, 2)
    assert torch.isfinite(out.tracks).all()


# --------------------------------------------------------------------------- OnlinePredictor: errors


def test_online_push_before_start(online_model):
    pred = OnlinePredictor(online_model)
    with pytest.raises(InputError, match="start"):
        pred.push(random_video(2))
    with pytest.raises(InputError, match="start"):
        pred.finish()
    with pytest.raises(InputError, match="is_first_step"):
        pred(random_video(8))


def test_online_finish_with_one_frame(online_model):
    pred = OnlinePredictor(online_model)
    pred.start(queries=[[0, 1, 1]], frame_size=(40, 32))
    with pytest.raises(InputError, match="no window"):
        pred.result()
    pred.push(random_video(1))
    with pytest.raises(InputError, match="at least 2"):
        pred.finish()


def test_online_push_after_finish(online_model):
    pred = _pushed(online_model, random_video(3), queries=[[0, 1, 1]])
    pred.finish()
    with pytest.raises(InputError, match="start"):
        pred.push(random_video(1))


@pytest.mark.parametrize("h, w, B", [(32, 41, 1), (33, 40, 1), (32, 40, 2)])
def test_online_frames_of_another_size(online_model, h, w, B):
    pred = OnlinePredictor(online_model)
    pred.start(queries=[[0, 1, 1]], frame_size=(40, 32))
    pred.push(random_video(2))
    with pytest.raises(InputError, match="started for 40x32"):
        pred.push(random_video(2, h=h, w=w, B=B))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({}, QueryError, "queries or a grid_size"),
        ({"queries": [[0, 1, 1]], "grid_size": 3}, QueryError, "not both"),
        ({"grid_size": -2}, QueryError, "non-negative"),
        ({"queries": [[0, 40, 1]]}, QueryError, "outside"),
        ({"queries": [[5, 1, 1]], "num_frames": 5}, QueryError, "integers"),
        ({"queries": [[0, 1, 1]], "frame_size": (1, 32)}, InputError, "2x2"),
    ],
)
def test_online_bad_start(online_model, kwargs, error, match):
    pred = OnlinePredictor(online_model)
    kwargs = {"frame_size": (40, 32), **kwargs}
    with pytest.raises(error, match=match):
        pred.start(**kwargs)


def test_online_reference_style_chunk_too_long(online_model):
    pred = OnlinePredictor(online_model)
    video = random_video(9)
    pred(video[:, :8], is_first_step=True, queries=[[0, 1, 1]])
    with pytest.raises(InputError, match="at most 8"):
        pred(video)


def test_online_bad_frames(online_model):
    pred = OnlinePredictor(online_model)
    pred.start(queries=[[0, 1, 1]], frame_size=(40, 32))
    with pytest.raises(InputError, match="RGB"):
        pred.push(torch.zeros(2, 4, 32, 40))
    with pytest.raises(InputError, match="uint8 or float"):
        pred.push(torch.zeros(2, 3, 32, 40, dtype=torch.int64))
    with pytest.raises(InputError, match="tensor or array"):
        pred.push("frames")


def test_queries_on_the_frame_edges_are_accepted():
    from cotracker3.predictor import check_queries

    edges = [[0, -0.5, -0.5], [1, W_ERR - 0.5, H_ERR - 0.5]]
    q = check_queries(edges, 1, T_ERR, W_ERR, H_ERR, "cpu")
    np.testing.assert_array_equal(q[0].numpy(), np.array(edges, np.float32))


# --------------------------------------------------------------------------- precision


def test_bfloat16_predictors_stay_near_float32(pred, online_model):
    # Mixed precision changes the arithmetic, not the algorithm: float32 outputs, tracks that differ
    # from the float32 run (so bfloat16 was used) by a small fraction of a pixel on this 40x32 video.
    video = random_video(8, seed=3)
    exact = pred(video, grid_size=3)
    fast = Predictor(pred.model, iters=pred.iters, dtype=torch.bfloat16)(video, grid_size=3)
    assert fast.tracks.dtype == torch.float32 and fast.confidence.dtype == torch.float32
    dev = (fast.tracks - exact.tracks).norm(dim=-1)
    assert 0 < dev.max() < 0.5 and dev.median() < 0.1
    online = OnlinePredictor(online_model, dtype=torch.bfloat16)
    online.start(grid_size=3, frame_size=(40, 32))
    online.push(video)
    out = online.finish()
    ref = OnlinePredictor(online_model)
    ref.start(grid_size=3, frame_size=(40, 32))
    ref.push(video)
    dev = (out.tracks - ref.finish().tracks).norm(dim=-1)
    assert 0 < dev.max() < 0.5 and out.tracks.dtype == torch.float32


def test_precision_errors(pred):
    with pytest.raises(ValueError, match="dtype must be one of"):
        Predictor(pred.model, dtype=torch.float64)
    with pytest.raises(ValueError, match="GPU only"):
        Predictor(pred.model, dtype=torch.float16)(random_video(4), grid_size=2)


# --------------------------------------------------------------------------- memory estimate


def test_tracking_memory_grows_with_frames_and_points_and_shrinks_with_bfloat16(pred):
    from cotracker3.predictor import tracking_memory

    m = pred.model
    base = tracking_memory(m, 10, 100)
    assert base > 0
    more_frames = tracking_memory(m, 20, 100) - base
    assert more_frames > 0 and tracking_memory(m, 40, 100) - base == pytest.approx(3 * more_frames, rel=1e-6)
    assert tracking_memory(m, 10, 200) > base
    # The pyramid and the tokens are stored in 16 bits: less memory once they dominate (the
    # 16-bit weight copies and float32 correlations of one chunk cost more in a short call).
    assert tracking_memory(m, 400, 100, dtype=torch.bfloat16) < tracking_memory(m, 400, 100)


def test_available_memory_on_this_machine():
    from cotracker3.predictor import available_memory

    free = available_memory("cpu")
    assert free is None or free > 0
    assert available_memory("meta") is None


def test_offline_call_too_big_for_memory_fails_up_front_and_suggests_online(pred, monkeypatch):
    from cotracker3 import predictor as P
    from cotracker3.memory import CPU_CHUNKS, SAFETY, tracking_memory

    least = dict(zip(("point_frames", "tokens", "encoder_frames"), CPU_CHUNKS[-1]))
    # The least any plan needs: the smallest chunks and the 9 queries in two batches (5 and 4),
    # each with the 36 support points.
    floor = tracking_memory(pred.model, 6, 5 + 36, **least) / SAFETY
    need = tracking_memory(pred.model, 6, 9 + 36, **least) / SAFETY  # what the message reports
    monkeypatch.setattr(P, "available_memory", lambda device: int(floor) - 1)
    model_calls = []
    monkeypatch.setattr(pred.model, "progress", lambda *a: model_calls.append(a))
    with pytest.raises(cotracker3.MemoryEstimateError, match="online") as info:
        pred(random_video(6), queries=torch.tensor([[0.0, 5.0, 5.0]] * 9))
    assert f"{need / 2**30:.1f} GiB" in str(info.value) and not model_calls  # nothing ran
    assert isinstance(info.value, CoTrackerError) and isinstance(info.value, MemoryError)
    monkeypatch.setattr(P, "available_memory", lambda device: int(floor) + 1)
    assert pred(random_video(6), queries=torch.tensor([[0.0, 5.0, 5.0]] * 9)).tracks.shape == (1, 6, 9, 2)
    assert pred.last_plan.batches == 2 and pred.last_plan.point_batch == 5 + 36
