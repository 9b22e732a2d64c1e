"""Behaviour tests of cotracker3.baseline.LucasKanadeTracker.

Videos are rendered from an analytic texture (48 sinusoids in random
directions, periods of 6 to 60 pixels, broadband so that it has few
look-alike spots) sampled at moved coordinates, so the true position of every
point is known exactly: a point ``(x, y)`` of frame 0 under a motion
``frame_t(u, v) = texture(m_t^-1(u, v))`` is at ``m_t(x, y)`` in frame ``t``.
Frames are rounded to uint8 like real video. Tolerances are stated at each
assertion; they hold with margin (measured errors in the comments).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from cotracker3.baseline import LucasKanadeTracker, sample_patches, structural_similarity
from cotracker3.errors import CoTrackerError, InputError, QueryError
from cotracker3.predictor import TrackingResult, grid_points

_RNG = np.random.default_rng(7)
_K = 48
_ANGLE = _RNG.uniform(0, np.pi, _K)
_FREQ = np.exp(_RNG.uniform(np.log(0.1), np.log(1.0), _K))  # radians per pixel
_PHASE = _RNG.uniform(0, 2 * np.pi, _K)
_AMP = _FREQ**-0.5 / np.sqrt((_FREQ**-1).sum() / 2)  # unit standard deviation, more weight on coarse


def texture(x: np.ndarray, y: np.ndarray, seed: int = 0) -> np.ndarray:
    """Richly textured grey levels (mean 128, standard deviation 44) at real coordinates ``(x, y)``."""
    angle, phase = _ANGLE + seed, _PHASE * (1 + seed)
    v = sum(_AMP[k] * np.sin(_FREQ[k] * (np.cos(angle[k]) * x + np.sin(angle[k]) * y) + phase[k]) for k in range(_K))
    return 128 + 44 * v


def render(T: int, H: int, W: int, source) -> np.ndarray:
    """``(T, 3, H, W)`` uint8 video; ``source(t, u, v) -> (x, y)`` texture coordinates of pixel ``(u, v)``."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    frames = [texture(*source(t, u, v)) for t in range(T)]
    grey = np.clip(np.round(np.stack(frames)), 0, 255).astype(np.uint8)
    return np.repeat(grey[:, None], 3, axis=1)


def translating(T: int, H: int, W: int, velocity=(0.8, 0.5)):
    """Video of the texture moving by ``velocity`` px/frame.

    Returns the video and ``(T, 2)`` offsets: frame-0 point ``p`` is at ``p + offset[t]``.
    """
    offset = np.arange(T)[:, None] * np.asarray(velocity, float)
    video = render(T, H, W, lambda t, u, v: (u - offset[t, 0], v - offset[t, 1]))
    return video, offset


@pytest.fixture(scope="module")
def lk():
    return LucasKanadeTracker()


@pytest.fixture(scope="module")
def moving():
    """24 frames 96x128, sub-pixel steps in random directions (up to 1.5 px per frame and axis)."""
    rng = np.random.default_rng(3)
    steps = rng.uniform(-1.5, 1.5, (24, 2))
    steps[0] = 0
    offset = np.cumsum(steps, 0)
    video = render(24, 96, 128, lambda t, u, v: (u - offset[t, 0], v - offset[t, 1]))
    return video, offset


# --------------------------------------------------------------------------- accuracy


def test_subpixel_translation_is_tracked_to_a_tenth_of_a_pixel(lk, moving):
    video, offset = moving
    rng = np.random.default_rng(0)
    xy = rng.uniform([30, 30], [98, 66], (60, 2))  # stays >= 10 px inside every frame
    q = np.c_[np.zeros(60), xy].astype(np.float32)
    out = lk(video, q).numpy()
    truth = xy[None] + offset[:, None]
    err = np.linalg.norm(out["tracks"] - truth, axis=-1)
    assert out["visibility"].all()
    # Measured: mean 0.013 px, max 0.073 px over 23 chained steps.
    assert err.mean() < 0.03
    assert err.max() < 0.15
    assert np.median(err[-1]) < 0.05
    assert (out["confidence"] > 0.5).all() and (out["confidence"] <= 1).all()


def test_pixel_convention_centre_of_top_left_pixel(lk):
    # A zoom about the centre of pixel (0, 0) by s: frame-0 point p is at s * p.
    # Were OpenCV's (0, 0) the top-left *corner* instead, tracks would be off by
    # (s - 1) / 2 = +0.15 px in x and y after 10 frames of 3% zoom.
    T, n = 10, 24
    s = 1.03 ** np.arange(T)
    video = render(T, 192, 192, lambda t, u, v: (u / s[t], v / s[t]))
    g = np.linspace(8, 140, n)
    gx, gy = np.meshgrid(g, g)
    q = np.c_[np.zeros(n * n), gx.ravel(), gy.ravel()].astype(np.float32)
    out = lk(video, q).numpy()
    d = out["tracks"][-1] - q[:, 1:] * s[-1]
    assert out["visibility"][-1].mean() > 0.95
    bias = np.median(d[out["visibility"][-1]], axis=0)
    assert np.abs(bias).max() < 0.05, bias  # measured: about 0.01 px


def test_sample_patches_uses_pixel_centres():
    img = np.arange(20, dtype=np.uint8).reshape(4, 5)  # value = 5 * row + column
    p = sample_patches(img, np.array([[2.0, 1.0], [2.5, 1.5]], np.float32), 3)
    assert p.shape == (2, 9)
    assert p[0].tolist() == [1, 2, 3, 6, 7, 8, 11, 12, 13]  # centred on row 1, column 2
    np.testing.assert_allclose(p[1, 4], 5 * 1.5 + 2.5)  # bilinear between centres


def test_large_frames_are_tracked_shrunk_and_mapped_back(moving):
    # max_size=64 halves the 96x128 frames. Coordinates map as pixel centres,
    # x' = (x + 0.5) / 2 - 0.5; a corner-based x' = x / 2 would be 0.5 px off here.
    video, offset = moving
    rng = np.random.default_rng(1)
    xy = rng.uniform([30, 30], [98, 66], (30, 2))
    q = np.c_[np.full(30, 5), xy].astype(np.float32)
    out = LucasKanadeTracker(max_size=64)(video, q, backward_tracking=True).numpy()
    truth = xy[None] - offset[5] + offset[:, None]
    err = np.linalg.norm(out["tracks"] - truth, axis=-1)
    assert out["visibility"].mean() > 0.95
    assert np.median(err) < 0.1 and err.max() < 0.3  # measured: 0.04 and 0.14 px
    assert np.array_equal(out["tracks"][5], q[:, 1:])  # exact query, no round trip


def test_structural_similarity():
    rng = np.random.default_rng(0)
    tex = rng.normal(0, 30, (3, 121)).astype(np.float32)
    flat = rng.normal(0, 0.5, (3, 121)).astype(np.float32)  # noise well below the contrast floor
    tex -= tex.mean(1, keepdims=True)
    flat -= flat.mean(1, keepdims=True)
    np.testing.assert_allclose(structural_similarity(tex, tex, 3.0), 1, rtol=1e-6)
    # Inverted: (9 - 2 * 30**2) / (2 * 30**2 + 9) = -0.99 (contrast 30, floor 3).
    np.testing.assert_allclose(structural_similarity(tex, -tex, 3.0), -0.99, atol=0.01)
    assert (structural_similarity(flat, np.roll(flat, 1, axis=0), 3.0) > 0.9).all()  # flat vs flat: alike
    assert (np.abs(structural_similarity(tex, flat, 3.0)) < 0.05).all()  # flat vs textured: not
    assert (np.abs(structural_similarity(tex, np.roll(tex, 1, axis=0), 3.0)) < 0.3).all()  # unrelated textures


# --------------------------------------------------------------------------- occlusion and leaving


OCCLUDED = (8, 13)  # first and last frame the occluder is there


def occluded_video(occluder: str):
    """24 frames 96x128 moving 0.8, 0.5 px/frame; a static 31x31 square over the track of
    frame-0 point (40, 40) in frames 8..13.

    The point stays >= 11 px inside the square, more than the LK half-windows. The
    square is flat grey, blurred noise, or a texture made of the same sinusoids as
    the background (there the large fallback window slips 10 px onto the occluder
    at frame 8, forward-backward consistently; the appearance check rejects it).
    Returns video, ``(2, 3)`` queries (the occluded point and one far from the
    square) and ``(T, 2, 2)`` true tracks.
    """
    k, m = OCCLUDED
    video, offset = translating(24, 96, 128)
    p0 = np.array([40.0, 40.0])
    x0, y0 = np.round(p0 + (offset[k] + offset[m]) / 2 - 15).astype(int)
    v, u = np.mgrid[y0 : y0 + 31, x0 : x0 + 31].astype(np.float64)
    if occluder == "flat":
        patch = np.full_like(u, 100.0)
    elif occluder == "noise":
        patch = cv2.GaussianBlur(np.random.default_rng(0).uniform(-128, 383, u.shape), (0, 0), 1.0)
    else:
        patch = texture(u * 1.7, v * 1.3, seed=5)
    video[k : m + 1, :, y0 : y0 + 31, x0 : x0 + 31] = np.clip(np.round(patch), 0, 255).astype(np.uint8)
    q = np.array([[0, *p0], [0, 100, 20]], np.float32)
    return video, q, q[None, :, 1:] + offset[:, None]


@pytest.mark.parametrize("occluder", ["flat", "noise", "similar texture"])
def test_occluded_point_is_invisible_then_reacquired(lk, occluder):
    video, q, truth = occluded_video(occluder)
    k, m = OCCLUDED
    out = lk(video, q).numpy()
    vis, tracks, conf = out["visibility"], out["tracks"], out["confidence"]
    assert vis[:, 1].all()
    assert vis[:k, 0].all()
    assert not vis[k : m + 1, 0].any()
    assert (conf[k : m + 1, 0] == 0).all()
    # Re-acquired in the first frame after the occluder left (at most one frame late) ...
    assert vis[m + 2 :, 0].all() and vis[m + 1 :, 0].sum() >= len(vis) - m - 2
    # ... at the right place (measured: 0.07 px at most, re-acquisition included) ...
    err = np.linalg.norm(tracks - truth, axis=-1)
    assert err[vis].max() < 0.1
    # ... and, while occluded, interpolated across the gap: right for linear motion.
    assert err[k : m + 1, 0].max() < 0.5


def test_lost_points_stay_lost_without_search():
    video, q, truth = occluded_video("flat")
    out = LucasKanadeTracker(max_lost_frames=0)(video, q).numpy()
    k, _ = OCCLUDED
    assert out["visibility"][:k, 0].all() and not out["visibility"][k:, 0].any()
    assert np.array_equal(out["tracks"][k:, 0], np.broadcast_to(out["tracks"][k - 1, 0], (len(video) - k, 2)))


def test_points_leaving_the_frame_become_invisible(lk):
    T, H, W = 16, 64, 96
    video, offset = translating(T, H, W, velocity=(3.0, 0.2))
    q = np.array([[0, x, 32] for x in (30, 55, 65, 75)], np.float32)
    out = lk(video, q).numpy()
    x_true = q[None, :, 1] + offset[:, None, 0]
    outside = x_true > W - 0.5  # beyond the frame's pixel area
    well_inside = x_true < W - 1 - 10  # LK's window still has texture on both sides
    assert outside[-1, 1:].all()  # all but the first leave
    assert not out["visibility"][outside].any()
    assert out["visibility"][well_inside].all()
    assert (out["confidence"][outside] == 0).all()


# --------------------------------------------------------------------------- query frames, backward


@pytest.mark.parametrize("backward", [False, True])
def test_query_in_the_middle(lk, moving, backward):
    video, offset = moving
    tq = 12
    xy = np.array([[50.3, 40.7], [70.9, 55.2], [64.0, 48.0]])
    q = np.c_[np.full(3, tq), xy].astype(np.float32)
    out = lk(video, q, backward_tracking=backward).numpy()
    truth = xy[None] - offset[tq] + offset[:, None]  # positions relative to the query frame
    # The query frame holds exactly the query, visible, confidence 1.
    assert np.array_equal(out["tracks"][tq], q[:, 1:])
    assert out["visibility"][tq].all() and (out["confidence"][tq] == 1).all()
    after = np.linalg.norm(out["tracks"][tq:] - truth[tq:], axis=-1)
    assert out["visibility"][tq:].all() and after.max() < 0.15
    before = out["tracks"][:tq]
    if backward:
        assert out["visibility"][:tq].all()
        assert np.linalg.norm(before - truth[:tq], axis=-1).max() < 0.15
    else:
        assert not out["visibility"][:tq].any()
        assert (out["confidence"][:tq] == 0).all()
        assert np.array_equal(before, np.broadcast_to(q[:, 1:], before.shape))
    np.testing.assert_array_equal(out["queries"], q)


def test_points_with_different_query_frames(lk, moving):
    video, offset = moving
    q = np.array([[0, 60, 40], [5, 60, 40], [23, 60, 40]], np.float32)
    out = lk(video, q, backward_tracking=True).numpy()
    truth = q[None, :, 1:] - offset[q[:, 0].astype(int)][None] + offset[:, None]
    assert out["visibility"].all()
    assert np.linalg.norm(out["tracks"] - truth, axis=-1).max() < 0.15
    for n, t in enumerate(q[:, 0].astype(int)):
        assert np.array_equal(out["tracks"][t, n], q[n, 1:])


# --------------------------------------------------------------------------- API


def test_shapes_dtypes_unbatched_numpy(lk):
    video, _ = translating(5, 24, 32)
    out = lk(video, np.array([[0, 10, 10], [2, 20.5, 5]], np.float32))
    assert isinstance(out, TrackingResult)
    assert out.tracks.shape == (1, 5, 2, 2) and out.tracks.dtype == torch.float32
    assert out.visibility.shape == (1, 5, 2) and out.visibility.dtype == torch.bool
    assert out.confidence.shape == (1, 5, 2) and out.confidence.dtype == torch.float32
    assert out.queries.shape == (1, 2, 3) and out.queries.dtype == torch.float32
    assert out.start_frame == 0
    assert out.tracks.device == lk.device == torch.device("cpu")
    c = out.confidence
    assert ((c >= 0) & (c <= 1)).all() and (c[~out.visibility] == 0).all()
    tracks, vis = lk(video, [[0, 10, 10]])  # unpacks like the reference predictors
    assert tracks.shape == (1, 5, 1, 2) and vis.shape == (1, 5, 1)


def test_batched_torch_float_video_with_per_element_queries(lk):
    right, off_r = translating(8, 48, 64, velocity=(1.0, 0.0))
    down, off_d = translating(8, 48, 64, velocity=(0.0, 1.0))
    video = torch.from_numpy(np.stack([right, down])).float()  # float 0..255, (B, T, 3, H, W)
    q = torch.tensor([[[0, 20, 20], [0, 30, 25]], [[0, 25, 15], [3, 30, 20]]], dtype=torch.float32)
    out = lk(video, q)
    assert out.tracks.shape == (2, 8, 2, 2)
    qn = q.numpy()
    for b, off in enumerate((off_r, off_d)):
        truth = qn[b, None, :, 1:] - off[qn[b, :, 0].astype(int)][None] + off[:, None]
        ok = out.visibility[b].numpy()
        tq = qn[b, :, 0].astype(int)
        after = np.arange(8)[:, None] >= tq[None]
        assert ok[after].all()
        err = np.linalg.norm(out.tracks[b].numpy() - truth, axis=-1)
        assert err[after].max() < 0.15
    # (N, 3) queries serve every batch element; uint8 and float agree.
    shared = lk(video.to(torch.uint8), q[0])
    assert torch.equal(shared.queries, q[0].expand(2, -1, -1))
    assert torch.allclose(shared.tracks[0], out.tracks[0])


def test_grid_and_grid_query_frame(lk):
    video, offset = translating(6, 40, 48)
    out = lk(video, grid_size=3, grid_query_frame=2)
    pts = grid_points(3, (40, 48))[0]
    assert out.tracks.shape == (1, 6, 9, 2)
    assert torch.equal(out.queries[0, :, 0], torch.full((9,), 2.0))
    assert torch.equal(out.queries[0, :, 1:], pts)
    assert torch.equal(out.tracks[0, 2], pts)
    assert not out.visibility[0, :2].any()


def test_segm_mask_keeps_grid_points_inside():
    lk = LucasKanadeTracker()
    video, _ = translating(4, 32, 48)
    mask = np.zeros((32, 48), np.uint8)
    mask[:, :24] = 1  # left half
    out = lk(video, grid_size=4, segm_mask=mask)
    pts = grid_points(4, (32, 48))[0]
    inside = pts[:, 0].round() < 24
    assert out.queries.shape == (1, int(inside.sum()), 3)
    assert torch.equal(out.queries[0, :, 1:], pts[inside])
    same = lk(video, grid_size=4, segm_mask=torch.from_numpy(mask)[None, None])
    assert torch.equal(same.queries, out.queries)


def test_dense_when_neither_queries_nor_grid():
    video, _ = translating(3, 16, 20)
    out = LucasKanadeTracker()(video, grid_query_frame=1)  # W // 80 = 0 -> every pixel
    assert out.tracks.shape == (1, 3, 16 * 20, 2)
    assert out.queries[0, :3].tolist() == [[1, 0, 0], [1, 1, 0], [1, 2, 0]]
    out = LucasKanadeTracker(dense_stride=4)(video)
    assert out.queries.shape == (1, 4 * 5, 3)
    assert out.queries[0, 5].tolist() == [0, 0, 4]  # row-major (x, y)


def test_two_frames_and_odd_sizes(lk):
    video, offset = translating(2, 23, 37, velocity=(0.5, -0.25))
    out = lk(video, np.array([[1, 18, 11]], np.float32), backward_tracking=True)
    assert out.tracks.shape == (1, 2, 1, 2)
    np.testing.assert_allclose(out.tracks[0, 0, 0].numpy(), [17.5, 11.25], atol=0.15)


def test_device_argument():
    assert LucasKanadeTracker(device="cpu").device == torch.device("cpu")
    assert "win_size=9" in repr(LucasKanadeTracker())


# --------------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def small_video():
    return translating(4, 16, 20)[0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(queries=np.zeros((0, 3), np.float32)), "empty"),
        (dict(queries=[[4, 1, 1]]), r"\[0, 3\]"),
        (dict(queries=[[-1, 1, 1]]), "frame indices"),
        (dict(queries=[[0.5, 1, 1]]), "integers"),
        (dict(queries=[[0, 20, 1]]), "outside"),
        (dict(queries=[[0, float("nan"), 1]]), "NaN"),
        (dict(queries=[[0, 1]]), r"\(N, 3\)"),
        (dict(queries=[[0, 1, 1]], grid_size=2), "not both"),
        (dict(grid_size=-1), "non-negative"),
        (dict(grid_size=2, grid_query_frame=4), "grid_query_frame"),
        (dict(segm_mask=np.ones((16, 20))), "grid_size > 0"),
        (dict(grid_size=2, segm_mask=np.ones((8, 8))), "segm_mask"),
        (dict(grid_size=2, segm_mask=np.zeros((16, 20))), "none of the grid points"),
    ],
)
def test_query_errors(lk, small_video, kwargs, match):
    with pytest.raises(QueryError, match=match):
        lk(small_video, **kwargs)


@pytest.mark.parametrize(
    "video, match",
    [
        (np.zeros((4, 16, 20, 3), np.uint8), "permute"),
        (np.zeros((1, 3, 16, 20), np.uint8), "at least 2"),
        (np.zeros((4, 3, 16, 20), np.int32), "uint8 or float"),
        ([[0]], "tensor or array"),
    ],
)
def test_input_errors(lk, video, match):
    with pytest.raises(InputError, match=match) as info:
        lk(video, [[0, 1, 1]])
    assert isinstance(info.value, CoTrackerError)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(win_size=2),
        dict(fallback_win_size=1),
        dict(fallback_levels=-1),
        dict(max_velocity_change=0),
        dict(search_radius=0),
        dict(levels=-1),
        dict(fb_threshold=0),
        dict(max_iters=0),
        dict(patch_size=1),
        dict(similarity_threshold=1.5),
        dict(reacquire_threshold=-2),
        dict(max_similarity_drop=-0.1),
        dict(contrast_floor=0),
        dict(max_lost_frames=-1),
        dict(dense_stride=0),
        dict(max_size=1),
    ],
)
def test_constructor_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        LucasKanadeTracker(**kwargs)
