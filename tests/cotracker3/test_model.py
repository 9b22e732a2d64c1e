"""Behaviour tests of cotracker3.model: helpers, encoder, offline and online trackers.

Numerical equality with the published reference is proven in test_parity.py;
these tests check shapes, conventions and invariants. They use small models
(constructor overrides, seeded random initialisation) so that they run fast on
a CPU; the published sizes appear only where the published configuration is
the point. Expected values are worked out by hand in the comments.
"""

from __future__ import annotations

import math

import pytest
import torch

import cotracker3
from small_models import SMALL, one_thread, small_model  # noqa: F401  (one_thread is a fixture)
from cotracker3.errors import CoTrackerError
from cotracker3.model import (
    BasicEncoder,
    CoTracker3Offline,
    CoTracker3Online,
    ModelOutput,
    OnlineState,
    UpdateTransformer,
    fourier_encode,
    gather_patches,
    patch_correlation,
    normalize_coords,
    patch_offsets,
    sample_at_frames,
    sample_patches,
    sincos_time_embedding,
)

H, W = SMALL["model_resolution"]


def random_video(T: int, h: int = H, w: int = W, B: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, T, 3, h, w, generator=g) * 255


def random_queries(N: int, T: int, B: int = 1, seed: int = 1, h: int = H, w: int = W) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, T, (B, N, 1), generator=g).float()
    xy = torch.rand(B, N, 2, generator=g) * torch.tensor([w - 1.0, h - 1.0])
    return torch.cat([t, xy], dim=-1)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def offline():
    return small_model("offline")


@pytest.fixture(scope="module")
def online():
    return small_model("online")


# --------------------------------------------------------------------------- sincos_time_embedding


def test_time_embedding_shape_and_dtype():
    emb = sincos_time_embedding(6, 5)
    assert emb.shape == (1, 5, 6)
    assert emb.dtype == torch.float32


def test_time_embedding_at_t0_is_zero_sines_then_unit_cosines():
    # t = 0: sin(0) = 0 for every frequency, cos(0) = 1.
    emb = sincos_time_embedding(8, 3)
    assert torch.equal(emb[0, 0], torch.tensor([0.0, 0, 0, 0, 1, 1, 1, 1]))


def test_time_embedding_values_at_t1():
    # dim 4: w_k = 10000 ** (-k / 2) -> w_0 = 1, w_1 = 1 / 100.
    emb = sincos_time_embedding(4, 2)
    expected = torch.tensor([math.sin(1.0), math.sin(0.01), math.cos(1.0), math.cos(0.01)])
    torch.testing.assert_close(emb[0, 1], expected, atol=1e-7, rtol=0)


def test_time_embedding_one_frame():
    emb = sincos_time_embedding(4, 1)
    assert torch.equal(emb, torch.tensor([[[0.0, 0.0, 1.0, 1.0]]]))


def test_time_embedding_odd_dim_raises():
    with pytest.raises(ValueError, match="even"):
        sincos_time_embedding(5, 3)


# --------------------------------------------------------------------------- fourier_encode


def test_fourier_encode_width():
    x = torch.zeros(2, 3, 4)
    assert fourier_encode(x, num_freqs=10).shape == (2, 3, 4 * (1 + 2 * 10))
    assert fourier_encode(x, num_freqs=0).shape == (2, 3, 4)


def test_fourier_encode_values_by_hand():
    # x = (pi/2, 0), 3 frequencies 1, 2, 4, frequency-major:
    #   sines   sin(pi/2)=1, sin(0)=0, sin(pi)=0, 0, sin(2pi)=0, 0
    #   cosines cos(pi/2)=0, cos(0)=1, cos(pi)=-1, 1, cos(2pi)=1, 1
    x = torch.tensor([math.pi / 2, 0.0], dtype=torch.float64)
    out = fourier_encode(x, num_freqs=3)
    expected = torch.tensor(
        [math.pi / 2, 0.0] + [1.0, 0, 0, 0, 0, 0] + [0.0, 1, -1, 1, 1, 1], dtype=torch.float64
    )
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)


def test_fourier_encode_keeps_input_first_and_dtype():
    x = torch.randn(5, 2)
    out = fourier_encode(x, num_freqs=2)
    assert out.dtype == x.dtype
    assert torch.equal(out[:, :2], x)


def test_fourier_encode_zero_rows():
    assert fourier_encode(torch.zeros(0, 4), num_freqs=2).shape == (0, 20)


# --------------------------------------------------------------------------- patch_offsets / normalize_coords


def test_patch_offsets_shape_and_x_major_order():
    r = 3
    off = patch_offsets(r)
    assert off.shape == ((2 * r + 1) ** 2, 2)
    assert off[0].tolist() == [-r, -r]
    assert off[1].tolist() == [-r, -r + 1]  # dy varies fastest
    assert off[2 * r + 1].tolist() == [-r + 1, -r]
    assert off[-1].tolist() == [r, r]
    a, b = 4, 2
    assert off[a * (2 * r + 1) + b].tolist() == [a - r, b - r]


def test_patch_offsets_radius_zero_and_dtype():
    off = patch_offsets(0, dtype=torch.float64)
    assert off.dtype == torch.float64
    assert off.tolist() == [[0.0, 0.0]]


def test_normalize_coords_corners_and_centre():
    xy = torch.tensor([[0.0, 0.0], [9.0, 4.0], [4.5, 2.0]])
    out = normalize_coords(xy, width=10, height=5)
    torch.testing.assert_close(out, torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]))


# --------------------------------------------------------------------------- sample_patches


def _ramp(n_frames: int, channels: int, h: int, w: int, axis: str) -> torch.Tensor:
    if axis == "x":
        values = torch.arange(w, dtype=torch.float32).expand(h, w)
    else:
        values = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    return values.expand(n_frames, channels, h, w).clone()


def test_sample_patches_shape():
    out = sample_patches(torch.zeros(3, 5, 8, 10), torch.zeros(3, 7, 2), radius=2)
    assert out.shape == (3, 5, 7, 25)


def test_sample_patches_x_ramp_returns_x_clamped_at_border():
    # Bilinear sampling of a function linear in x is exact: the sample is the
    # x coordinate of the sample point, clamped to [0, w - 1] by border padding.
    h, w, r = 6, 9, 2
    fmaps = _ramp(2, 3, h, w, "x")
    centers = torch.tensor([[[3.25, 2.5], [0.5, 1.0]], [[7.75, 4.0], [4.0, 0.0]]])
    out = sample_patches(fmaps, centers, r)  # F C N K
    dx = patch_offsets(r)[:, 0]
    expected = (centers[..., 0:1] + dx).clamp(0, w - 1)  # F N K
    for c in range(3):
        torch.testing.assert_close(out[:, c], expected, atol=1e-5, rtol=0)


def test_sample_patches_y_ramp_returns_y():
    h, w, r = 7, 5, 1
    fmaps = _ramp(1, 1, h, w, "y")
    centers = torch.tensor([[[2.0, 3.5], [1.0, 0.25]]])
    out = sample_patches(fmaps, centers, r)
    expected = (centers[..., 1:2] + patch_offsets(r)[:, 1]).clamp(0, h - 1)
    torch.testing.assert_close(out[:, 0], expected, atol=1e-5, rtol=0)


def test_sample_patches_zero_points():
    assert sample_patches(torch.zeros(2, 4, 6, 6), torch.zeros(2, 0, 2), radius=1).shape == (2, 4, 0, 9)


def test_gather_patches_equals_grid_sample_and_its_gradient():
    # gather_patches blends whole-pixel neighbours; torch's grid_sample (bilinear,
    # border padding, aligned corners) is the independent implementation it must equal,
    # in value and in the gradient with respect to the feature maps, also off the map.
    g = torch.Generator().manual_seed(3)
    n_frames, C, h, w, r = 3, 4, 7, 9, 2
    fmaps = torch.randn(n_frames, C, h, w, generator=g, requires_grad=True)
    centers = torch.rand(n_frames, 6, 2, generator=g) * torch.tensor([w + 5.0, h + 5.0]) - 2.5
    centers[0, 0] = torch.tensor([3.0, 4.0])  # exactly on a pixel
    grid = normalize_coords(centers[:, :, None, :] + patch_offsets(r), w, h)
    expected = torch.nn.functional.grid_sample(fmaps, grid, mode="bilinear", padding_mode="border",
                                               align_corners=True)  # F C N K
    out = gather_patches(fmaps.permute(0, 2, 3, 1), centers, r)  # F N K C
    torch.testing.assert_close(out.permute(0, 3, 1, 2), expected, atol=1e-5, rtol=1e-5)
    weights = torch.randn(expected.shape, generator=g)
    (grad_expected,) = torch.autograd.grad((expected * weights).sum(), fmaps)
    (grad,) = torch.autograd.grad((out.permute(0, 3, 1, 2) * weights).sum(), fmaps)
    torch.testing.assert_close(grad, grad_expected, atol=1e-5, rtol=1e-5)


def test_patch_correlation_equals_sampling_then_dot_products_and_its_gradient():
    # Correlating whole-pixel neighbours and blending after must equal sampling the patch
    # (gather_patches, itself checked against grid_sample) and taking dot products.
    g = torch.Generator().manual_seed(5)
    maps, C, h, w, r, B, n, s = 5, 6, 7, 9, 2, 2, 3, 4
    K = (2 * r + 1) ** 2
    fmaps = torch.randn(maps, h, w, C, generator=g, requires_grad=True)
    centers = torch.rand(B, n, s, 2, generator=g) * torch.tensor([w + 5.0, h + 5.0]) - 2.5
    frames = torch.tensor([[0, 2, 4, 1], [3, 3, 0, 2]]).view(B, 1, s)
    support = torch.randn(B, n, K, C, generator=g, requires_grad=True)
    out = patch_correlation(fmaps, centers, frames, support, r)
    assert out.shape == (B, n, s, K, K)
    expected = torch.empty(B, n, s, K, K)
    for b in range(B):
        for t in range(s):
            patches = gather_patches(fmaps[frames[b, 0, t]][None], centers[b, :, t][None], r)[0]  # n K C
            expected[b, :, t] = patches @ support[b].transpose(-1, -2)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    weights = torch.randn(out.shape, generator=g)
    grads = torch.autograd.grad((out * weights).sum(), (fmaps, support))
    grads_expected = torch.autograd.grad((expected * weights).sum(), (fmaps, support))
    for a, b in zip(grads, grads_expected):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- sample_at_frames


def test_sample_at_frames_picks_each_query_frame():
    # Channel 0 holds the frame index, channel 1 an x ramp: sampling is exact.
    B, T, h, w, r = 2, 5, 6, 8, 1
    fmaps = torch.zeros(B, T, 2, h, w)
    fmaps[:, :, 0] = torch.arange(T, dtype=torch.float32)[None, :, None, None]
    fmaps[:, :, 1] = torch.arange(w, dtype=torch.float32)
    frames = torch.tensor([[0, 3, 4], [2, 1, 0]])
    centers = torch.tensor([[[2.0, 2.0], [3.5, 1.0], [5.0, 4.0]], [[1.0, 1.0], [6.0, 3.0], [4.25, 2.0]]])
    out = sample_at_frames(fmaps.permute(0, 1, 3, 4, 2), frames, centers, r)  # channels last
    assert out.shape == (B, 3, 9, 2)
    torch.testing.assert_close(out[..., 0], frames[..., None].float().expand(B, 3, 9), atol=1e-5, rtol=0)
    expected_x = (centers[..., 0:1] + patch_offsets(r)[:, 0]).clamp(0, w - 1)
    torch.testing.assert_close(out[..., 1], expected_x, atol=1e-5, rtol=0)


def test_sample_at_frames_clamps_frame_index():
    T = 4
    fmaps = torch.arange(T, dtype=torch.float32)[None, :, None, None, None].expand(1, T, 5, 5, 1).clone()
    frames = torch.tensor([[-3, T + 5]])
    out = sample_at_frames(fmaps, frames, torch.full((1, 2, 2), 2.0), radius=1)
    torch.testing.assert_close(out[0, 0], torch.zeros(9, 1))
    torch.testing.assert_close(out[0, 1], torch.full((9, 1), float(T - 1)))


def test_sample_at_frames_one_frame():
    fmaps = torch.full((1, 1, 4, 4, 3), 7.0)
    out = sample_at_frames(fmaps, torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2, 2), radius=0)
    assert torch.equal(out, torch.full((1, 2, 1, 3), 7.0))


# --------------------------------------------------------------------------- encoder and pyramid


def test_basic_encoder_shape():
    enc = BasicEncoder(3, 16, stride=4)
    with torch.no_grad():
        out = enc(torch.randn(2, 3, 32, 40))
    assert out.shape == (2, 16, 8, 10)


def test_encode_pyramid_shapes_and_unit_norm(offline):
    video = random_video(3, B=2)
    with torch.no_grad():
        pyramid = offline.encode(video)
    C = SMALL["latent_dim"]
    assert len(pyramid) == offline.corr_levels == 4
    for level, fmap in enumerate(pyramid):
        s = offline.stride * 2**level
        assert fmap.shape == (2, 3, H // s, W // s, C)  # channels last
    norms = pyramid[0].norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-5, rtol=0)
    # Level 1 is the 2x2 average of level 0.
    manual = pyramid[0][0, 0].reshape(H // 8, 2, W // 8, 2, C).mean(dim=(1, 3))
    torch.testing.assert_close(pyramid[1][0, 0], manual, atol=1e-6, rtol=0)


def test_encode_does_not_depend_on_chunk(offline):
    video = random_video(3, B=2)
    with torch.no_grad():
        a = offline.encode(video, chunk=16)
        b = offline.encode(video, chunk=1)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


def test_encode_with_a_transform_equals_encoding_transformed_frames(offline):
    # A predictor hands uint8 caller frames and a resize: the pyramid must equal that of the
    # resized float video, and forward() must equal track_features() on it.
    g = torch.Generator().manual_seed(2)
    raw = torch.randint(0, 256, (1, 3, 3, H // 2, W // 2), generator=g, dtype=torch.uint8)

    def resize(x):
        return torch.nn.functional.interpolate(x.float(), (H, W), mode="bilinear", align_corners=True)

    video = resize(raw[0])[None]
    queries = random_queries(5, 3)
    with torch.no_grad():
        a = offline.encode(raw, transform=resize)
        b = offline.encode(video)
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-6)
        direct = offline(video, queries, iters=2)
        from_features = offline.track_features(a, queries, iters=2)[-1]
    torch.testing.assert_close(direct.coords, from_features.coords, atol=1e-5, rtol=1e-5)


def test_encode_under_bfloat16_autocast_stores_bfloat16(offline):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        pyramid = offline.encode(random_video(2))
    assert all(p.dtype == torch.bfloat16 for p in pyramid)


def test_encode_size_not_multiple_of_stride_raises(offline):
    with pytest.raises(ValueError, match="stride"):
        offline.encode(torch.zeros(1, 2, 3, 30, 32))


# --------------------------------------------------------------------------- update transformer


def test_update_transformer_shape():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        tf = UpdateTransformer(input_dim=10, hidden_size=16, num_heads=2, num_virtual_tracks=3)
    with torch.no_grad():
        assert tf(torch.randn(2, 5, 4, 10)).shape == (2, 5, 4, 4)


def test_update_transformer_depths_must_divide():
    with pytest.raises(ValueError, match="multiple"):
        UpdateTransformer(input_dim=10, hidden_size=16, num_heads=2, time_depth=4, space_depth=3)


# --------------------------------------------------------------------------- build_model


def test_build_model_published_configuration():
    model = cotracker3.build_model("cotracker3-offline")
    assert isinstance(model, CoTracker3Offline)
    # 2 (vis, conf) + 4 levels * 256 + 4 displacement values * (1 + 2 * 10 freqs)
    assert model.input_dim == 2 + 4 * 256 + 4 * 21 == 1110
    assert model.time_emb.shape == (1, 60, 1110)
    assert model.model_resolution == (384, 512)
    online = cotracker3.build_model("cotracker3-online")
    assert isinstance(online, CoTracker3Online)
    assert (online.window_len, online.step) == (16, 8)
    # Same layers: only the (computed, buffer) time embedding differs in length.
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model) == count(online) == count(cotracker3.build_model("offline"))
    assert "time_emb" not in dict(model.named_parameters())


def test_build_model_overrides():
    model = small_model("online", window_len=6)
    assert isinstance(model, CoTracker3Online)
    assert model.window_len == 6 and model.step == 3
    assert model.time_emb.shape == (1, 6, model.input_dim)
    assert model.model_resolution == SMALL["model_resolution"]
    assert model.updateformer.virual_tracks.shape == (1, 4, 1, 64)


def test_build_model_same_seed_same_weights():
    a, b = small_model(seed=3), small_model(seed=3)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_build_model_unknown_name():
    with pytest.raises(CoTrackerError, match="unknown"):
        cotracker3.build_model("cotracker2")


def test_online_window_len_too_small():
    with pytest.raises(ValueError, match="window_len"):
        cotracker3.build_model("online", **{**SMALL, "window_len": 1})


# --------------------------------------------------------------------------- check_inputs


@pytest.mark.parametrize(
    "video_shape, query_shape",
    [
        ((4, 3, 64, 96), (1, 2, 3)),  # unbatched video
        ((1, 4, 1, 64, 96), (1, 2, 3)),  # one channel
        ((1, 4, 3, 64, 96), (2, 3)),  # unbatched queries
        ((1, 4, 3, 64, 96), (1, 2, 2)),  # (x, y) without t
        ((1, 4, 3, 64, 96), (2, 2, 3)),  # batch mismatch
    ],
)
def test_check_inputs_wrong_shapes(offline, video_shape, query_shape):
    with pytest.raises(ValueError):
        offline.check_inputs(torch.zeros(video_shape), torch.zeros(query_shape))
    with pytest.raises(ValueError):
        offline(torch.zeros(video_shape), torch.zeros(query_shape))


# --------------------------------------------------------------------------- offline forward


def test_offline_forward_shapes_and_probabilities(offline):
    B, T, N = 2, 8, 5
    video, queries = random_video(T, B=B), random_queries(N, T, B=B)
    with torch.no_grad():
        out = offline(video, queries, iters=2)
    assert isinstance(out, ModelOutput)
    assert out.coords.shape == (B, T, N, 2) and out.coords.dtype == torch.float32
    assert out.vis.shape == out.conf.shape == (B, T, N)
    for p in (out.vis, out.conf):
        assert torch.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
    assert torch.isfinite(out.coords).all()


def test_offline_forward_train_returns_every_iteration(offline):
    video, queries = random_video(4), random_queries(3, 4)
    calls = []
    offline.progress = lambda i, n: calls.append((i, n))
    try:
        with torch.no_grad():
            steps = offline.forward_train(video, queries, iters=3)
            last = offline(video, queries, iters=3)
    finally:
        offline.progress = None
    assert len(steps) == 3
    assert calls == [(1, 3), (2, 3), (3, 3)] * 2
    torch.testing.assert_close(steps[-1].coords, last.coords)
    assert not torch.equal(steps[0].coords, steps[-1].coords)  # the updates do something


def test_offline_batch_elements_are_independent(offline):
    video, queries = random_video(4, B=2), random_queries(3, 4, B=2)
    with torch.no_grad():
        both = offline(video, queries, iters=2)
        second = offline(video[1:], queries[1:], iters=2)
    torch.testing.assert_close(both.coords[1:], second.coords, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(both.vis[1:], second.vis, atol=1e-5, rtol=1e-4)


def test_chunk_sizes_do_not_change_results(offline):
    video, queries = random_video(5, B=2), random_queries(7, 5, B=2)
    try:
        with torch.no_grad():
            # one frame per correlation chunk (7 points > 3 point-frames), one track per time-block call
            offline.chunk_point_frames, offline.updateformer.chunk_tokens = 3, 10
            a = offline(video, queries, iters=2)
            offline.chunk_point_frames, offline.updateformer.chunk_tokens = 10**6, 10**6
            b = offline(video, queries, iters=2)
    finally:
        offline.chunk_point_frames, offline.updateformer.chunk_tokens = 4096, 16384
    torch.testing.assert_close(a.coords, b.coords, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(a.vis, b.vis, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.conf, b.conf, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("T", [1, 5, 11])
def test_offline_video_shorter_or_longer_than_window(offline, T):
    # window_len is 8: the time embedding is resampled to T frames.
    video, queries = random_video(T), random_queries(3, T)
    with torch.no_grad():
        out = offline(video, queries, iters=1)
    assert out.coords.shape == (1, T, 3, 2)
    assert torch.isfinite(out.coords).all()


def test_offline_one_point_odd_size(offline):
    # Any multiple of the stride works for the model (resizing is the predictor's job).
    video = random_video(3, h=36, w=44)
    with torch.no_grad():
        out = offline(video, torch.tensor([[[1.0, 43.0, 35.0]]]), iters=1)
    assert out.coords.shape == (1, 3, 1, 2)


def test_time_embedding_resampling(offline):
    assert offline.time_embedding(8) is offline.time_emb
    emb = offline.time_embedding(15)
    assert emb.shape == (1, 15, offline.input_dim)
    # Linear resampling (align_corners=False) of 8 -> 15 samples keeps the values in range.
    assert emb.min() >= offline.time_emb.min() - 1e-6 and emb.max() <= offline.time_emb.max() + 1e-6


# --------------------------------------------------------------------------- online


def _stream(model, video, queries, iters):
    """Run ``forward_window`` chunk by chunk, keeping ``step`` frames of each window."""
    T, S, step = video.shape[1], model.window_len, model.step
    state = model.init_state(queries)
    coords, vis, conf, starts = [], [], [], []
    start = 0
    while True:
        assert state.start == start
        starts.append(start)
        out, state = model.forward_window(video[:, start : start + S], state, iters)
        last = start + S >= T
        keep = out.coords.shape[1] if last else step
        coords.append(out.coords[:, :keep])
        vis.append(out.vis[:, :keep])
        conf.append(out.conf[:, :keep])
        if last:
            return ModelOutput(torch.cat(coords, 1), torch.cat(vis, 1), torch.cat(conf, 1)), starts
        start += step


@pytest.mark.parametrize("T", [8, 13, 20])
def test_online_forward_equals_window_by_window(online, T):
    video, queries = random_video(T), random_queries(4, T)
    with torch.no_grad():
        whole = online(video, queries, iters=2)
        streamed, starts = _stream(online, video, queries, iters=2)
    assert whole.coords.shape == (1, T, 4, 2)
    assert starts == list(range(0, max(T - online.step, 1), online.step))
    torch.testing.assert_close(whole.coords, streamed.coords, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(whole.vis, streamed.vis, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(whole.conf, streamed.conf, atol=1e-6, rtol=1e-5)
    for p in (whole.vis, whole.conf):
        assert (p >= 0).all() and (p <= 1).all()


def test_online_video_shorter_than_window(online):
    T = 5  # window_len is 8: the window is padded with the last frame
    video, queries = random_video(T), random_queries(3, T)
    with torch.no_grad():
        out = online(video, queries, iters=1)
        padded = torch.cat([video, video[:, -1:].expand(1, 8 - T, 3, H, W)], dim=1)
        full, _ = online.forward_window(padded, online.init_state(queries), iters=1)
    assert out.coords.shape == (1, T, 3, 2)
    torch.testing.assert_close(out.coords, full.coords[:, :T], atol=1e-5, rtol=1e-5)


def test_online_state_size_is_constant(online):
    N, S, step = 3, online.window_len, online.step
    video, queries = random_video(6 * step), random_queries(N, 6 * step)
    state = online.init_state(queries)
    assert isinstance(state, OnlineState) and state.coords is None
    shapes = set()
    with torch.no_grad():
        for start in range(0, 5 * step, step):
            _, state = online.forward_window(video[:, start : start + S], state, iters=1)
            shapes.add((tuple(state.coords.shape), tuple(state.vis.shape), tuple(state.conf.shape),
                        tuple(tuple(s.shape) for s in state.support)))
            assert state.start == start + step
    assert shapes == {((1, S - step, N, 2), (1, S - step, N), (1, S - step, N),
                       tuple((1, N, 49, SMALL["latent_dim"]) for _ in range(4)))}


def test_online_support_collected_once_when_query_frame_arrives(online):
    # Windows of 8 frames start at 0, 4, 8. A query at frame 5 is first seen by the
    # window at 0 (frames 0..7); one at frame 12 by the window at 8 (frames 8..15).
    video = random_video(16)
    queries = torch.tensor([[[0.0, 10.0, 10.0], [5.0, 40.0, 30.0], [12.0, 30.0, 20.0]]])
    state = online.init_state(queries)
    with torch.no_grad():
        _, state = online.forward_window(video[:, 0:8], state, iters=1)
        first = [s.clone() for s in state.support]
        assert (first[0][0, :2] != 0).any(dim=(1, 2)).all() and (first[0][0, 2] == 0).all()
        _, state = online.forward_window(video[:, 4:12], state, iters=1)
        for a, b in zip(first, state.support):  # frame 5 is shared: not collected twice
            assert torch.equal(a, b)
        _, state = online.forward_window(video[:, 8:16], state, iters=1)
    assert (state.support[0][0, 2] != 0).any()
    for a, b in zip(first, state.support):
        assert torch.equal(a[0, :2], b[0, :2])


def test_online_forward_window_length_checked(online):
    state = online.init_state(random_queries(2, 4))
    with pytest.raises(ValueError, match="window"):
        online.forward_window(random_video(online.window_len + 1), state)
    with pytest.raises(ValueError, match="window"):
        online.forward_window(random_video(1)[:, :0], state)
