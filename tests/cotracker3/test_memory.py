"""The memory budget of offline tracking: chunk sizes chosen for given budgets, point batches
as the last resort, and runs under a small budget that match runs without one.

Hand-worked figures use the published sizes: frames resized to 384x512, stride 4 (96x128
feature maps), 128 channels, 4 pyramid levels (1 + 1/4 + 1/16 + 1/64 = 1.328125 of the finest),
transformer width 384, 64 virtual tracks.
"""

from __future__ import annotations

import pytest
import torch

import cotracker3
from cotracker3.memory import CPU_CHUNKS, GPU_CHUNKS, SAFETY, correlation_chunk, plan_chunks, tracking_memory
from cotracker3.predictor import Predictor
from small_models import one_thread, small_model  # noqa: F401  (one_thread is a fixture)

GiB = 2**30
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def published():
    return cotracker3.build_model("cotracker3-offline")


def _chunks(plan):
    return plan.point_frames, plan.tokens, plan.encoder_frames


def test_cpu_keeps_its_cache_sized_chunks_whatever_the_budget(published):
    for budget in (None, 20 * GiB, 500 * GiB):
        plan = plan_chunks(published, 50, 2500, budget=budget)
        assert _chunks(plan) == CPU_CHUNKS[0] and plan.batches == 1


def test_gpu_takes_the_largest_chunks_that_fit(published):
    chosen = []
    for budget in (8 * GiB, 24 * GiB, 80 * GiB, 141 * GiB):
        plan = plan_chunks(published, 100, 10_000, dtype=torch.bfloat16, device="cuda", budget=budget)
        assert plan.batches == 1 and plan.estimate <= SAFETY * budget
        i = GPU_CHUNKS.index(_chunks(plan))
        if i > 0:  # the next larger chunks would not have fitted
            p, t, e = GPU_CHUNKS[i - 1]
            larger = tracking_memory(published, 100, 10_000, dtype=torch.bfloat16, point_frames=p, tokens=t,
                                     encoder_frames=e)
            assert larger > SAFETY * budget
        chosen.append(i)
    assert chosen == sorted(chosen, reverse=True) and chosen[0] > chosen[-1]  # more memory, larger chunks
    unlimited = plan_chunks(published, 100, 10_000, device="cuda")
    assert _chunks(unlimited) == GPU_CHUNKS[0] and unlimited.budget is None


def test_1000_frames_of_10000_points_fit_a_24_gib_card(published):
    # float32: one token buffer of 1000 x (10000 + 64) x 384 x 4 bytes = 15.46e9 plus the pyramid,
    # 1000 x 96 x 128 x 128 x 4 x 1.328125 = 8.36e9, is 23.8e9 bytes: more than 0.85 x 24 GiB
    # (21.9e9), so the points must be split; bfloat16 halves both (11.9e9) and fits in one call.
    fp32 = plan_chunks(published, 1000, 10_000, device="cuda", budget=24 * GiB)
    assert fp32 is not None and fp32.batches >= 2 and fp32.estimate <= SAFETY * 24 * GiB
    bf16 = plan_chunks(published, 1000, 10_000, dtype=torch.bfloat16, device="cuda", budget=24 * GiB)
    assert bf16 is not None and bf16.batches == 1 and bf16.estimate <= SAFETY * 24 * GiB
    assert plan_chunks(published, 1000, 10_000, device="cuda", budget=2 * GiB) is None  # the pyramid alone is 8 GB


def test_estimate_follows_the_chunk_sizes(published):
    def need(**chunks):
        return tracking_memory(published, 100, 10_000, **chunks)

    base = need(point_frames=1024, tokens=4096)
    assert need(point_frames=65536, tokens=4096) > base and need(point_frames=65536, tokens=1 << 20) > base
    assert need(point_frames=1024, tokens=4096, encoder_frames=32) > base
    # Chunks larger than the call are the call: the 1<<30 setting no longer estimates 98,000 GiB.
    assert need(point_frames=1 << 30, tokens=1 << 30) == need(point_frames=100 * 10_000, tokens=100 * 10_064)
    # Beyond the chunks, the estimate is the pyramid, the token buffer and the query patches
    # (4 levels of 7x7 features of 128 channels per point), worked out by hand above.
    fixed = 100 * 96 * 128 * 128 * 4 * 1.328125 + 100 * 10_064 * 384 * 4 + 10_000 * 4 * 49 * 128 * 4
    assert fixed < base < 1.5 * fixed


def test_correlation_chunks_as_the_model_cuts_them():
    assert correlation_chunk(2500, 50, 1024) == (256, 4)  # the CPU's: 256 points by 4 frames
    assert correlation_chunk(10_000, 100, 65536) == (655, 100)  # whole tracks of 655 points
    assert correlation_chunk(100, 50, 1024) == (100, 10)
    assert correlation_chunk(100, 50, 10) == (100, 1)  # at least one frame


def _video(T, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, T, 3, 32, 40), generator=g, dtype=torch.uint8)


def test_a_small_budget_takes_smaller_chunks_and_the_same_tracks():
    model = small_model("offline")
    video = _video(12)
    free = Predictor(model, iters=2)
    ref = free(video, grid_size=7, backward_tracking=True)
    assert _chunks(free.last_plan) == CPU_CHUNKS[0]
    # A budget between the smallest chunks' need and the first chunks' need.
    small = tracking_memory(model, 12, 49, point_frames=64, tokens=256)
    tight = Predictor(model, iters=2, max_memory=int(small / SAFETY) + free.plan_extra(12, True) * 2)
    out = tight(video, grid_size=7, backward_tracking=True)
    assert tight.last_plan.point_frames < CPU_CHUNKS[0][0] and tight.last_plan.batches == 1
    assert (model.chunk_point_frames, model.updateformer.chunk_tokens) == CPU_CHUNKS[0][:2]  # restored
    assert (out.tracks - ref.tracks).norm(dim=-1).max() < 1e-2  # the parity tolerance
    assert (out.visibility == ref.visibility).all()


def test_point_batches_track_each_batch_with_the_support_grid():
    model = small_model("offline")
    video = _video(8)
    q = torch.tensor([[0.0, 5.0 + 3 * i, 4.0 + 2 * i] for i in range(10)])
    least = dict(zip(("point_frames", "tokens", "encoder_frames"), CPU_CHUNKS[-1]))
    # Two batches of 5 queries, each with the 36 support points, fit; all 46 at once do not.
    budget = int(tracking_memory(model, 8, 5 + 36, **least) / SAFETY) + 1
    assert tracking_memory(model, 8, 10 + 36, **least) > SAFETY * budget
    pred = Predictor(model, iters=2, max_memory=budget)
    out = pred(video, queries=q)
    assert pred.last_plan.batches == 2
    alone = Predictor(model, iters=2)
    for part in (slice(0, 5), slice(5, 10)):
        ref = alone(video, queries=q[part])
        torch.testing.assert_close(out.tracks[:, :, part], ref.tracks, atol=1e-4, rtol=0)
        assert (out.visibility[:, :, part] == ref.visibility).all()


def test_the_in_place_transformer_equals_the_autograd_one():
    model = small_model("offline")
    video = _video(6).float()
    g = torch.Generator().manual_seed(1)
    queries = torch.cat([torch.zeros(1, 9, 1), torch.rand(1, 9, 2, generator=g) * 60], -1)
    model.chunk_point_frames, model.updateformer.chunk_tokens = 16, 20  # several chunks each way
    try:
        with torch.no_grad():
            a = model(video, queries, iters=2)
        b = model(video, queries, iters=2)  # autograd on: chunks concatenated, nothing in place
    finally:
        model.chunk_point_frames, model.updateformer.chunk_tokens = CPU_CHUNKS[0][:2]
    assert b.coords.requires_grad
    torch.testing.assert_close(a.coords, b.coords.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.vis, b.vis.detach(), atol=1e-6, rtol=1e-5)


def test_sizes_are_parsed_and_bad_ones_refused(published):
    from cotracker3.memory import parse_size

    assert parse_size("8G") == 8 * GiB and parse_size("512M") == 512 * 2**20
    assert parse_size("1.5GiB") == int(1.5 * GiB) and parse_size(" 2k ") == 2048
    assert parse_size(1000) == 1000 and parse_size(None) is None
    for bad in ("", "G", "-1G", "0", "eight", 0, -5):
        with pytest.raises(ValueError, match="max_memory must be a positive size"):
            parse_size(bad, "max_memory")
    assert Predictor(published, max_memory="1G").max_memory == GiB
    with pytest.raises(ValueError, match="max_memory"):
        Predictor(published, max_memory="lots")
