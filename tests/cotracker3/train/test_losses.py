"""The CoTracker3 training losses on cases worked out by hand."""

from __future__ import annotations

import math

import torch

from cotracker3.train.losses import (
    confidence_loss,
    cotracker_losses,
    huber,
    track_loss,
    visibility_loss,
)
from cotracker3.model import ModelOutput


def test_huber_is_quadratic_then_linear():
    x = torch.tensor([2.0, 10.0, -10.0])
    # |d| = 2 <= 6: 0.5 * 4 = 2; |d| = 10: 6 * (10 - 3) = 42.
    assert torch.allclose(huber(x, torch.zeros(3), 6.0), torch.tensor([2.0, 42.0, 42.0]))


def test_iterations_are_weighted_by_gamma():
    target = torch.zeros(1, 2, 3, 2)
    first = torch.ones(1, 2, 3, 2)  # L1 error 1 everywhere
    last = torch.zeros(1, 2, 3, 2)  # perfect
    mask = torch.ones(1, 2, 3, dtype=torch.bool)
    # (0.8^1 * 1 + 0.8^0 * 0) / 2 iterations = 0.4
    assert math.isclose(float(track_loss([first, last], target, mask, huber_delta=None)), 0.4, rel_tol=1e-6)
    # Swapped: the later iteration's error weighs fully: (0 + 1) / 2.
    assert math.isclose(float(track_loss([last, first], target, mask, huber_delta=None)), 0.5, rel_tol=1e-6)


def test_masked_points_do_not_count():
    target = torch.zeros(1, 1, 2, 2)
    pred = torch.tensor([[[[3.0, 3.0], [100.0, 100.0]]]])
    mask = torch.tensor([[[True, False]]])
    assert math.isclose(float(track_loss([pred], target, mask, huber_delta=None)), 3.0, rel_tol=1e-6)
    # Huber, delta 6: 0.5 * 9 = 4.5 per coordinate.
    assert math.isclose(float(track_loss([pred], target, mask, huber_delta=6.0)), 4.5, rel_tol=1e-6)


def test_visibility_cross_entropy():
    half = torch.full((1, 2, 2), 0.5)
    target = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    assert math.isclose(float(visibility_loss([half, half], target)), math.log(2), rel_tol=1e-6)


def test_confidence_target_is_within_12_px_on_visible_points():
    target = torch.zeros(1, 1, 2, 2)
    coords = torch.tensor([[[[3.0, 4.0], [13.0, 0.0]]]])  # 5 px: close; 13 px: not
    conf = torch.full((1, 1, 2), 0.5)
    visible = torch.tensor([[[True, True]]])
    # Both points cost ln 2 whatever their target, averaged over the 2 points.
    assert math.isclose(float(confidence_loss([coords], [conf], target, visible)), math.log(2), rel_tol=1e-6)
    sure = torch.tensor([[[0.999999, 0.999999]]])
    # The close point costs ~0, the far one -ln(1e-6); only the first point is visible -> ~0.
    assert float(confidence_loss([coords], [sure], target, torch.tensor([[[True, False]]]))) < 1e-5
    assert float(confidence_loss([coords], [sure], target, visible)) > 6.0


def test_total_combines_the_weighted_terms():
    B, T, N = 1, 3, 4
    tracks = torch.zeros(B, T, N, 2)
    vis = torch.tensor([[[True, True, False, False]] * T])
    coords = torch.full((B, T, N, 2), 2.0)  # Huber(2) = 2 for visible, L1 = 2 for occluded
    out = [ModelOutput(coords, torch.full((B, T, N), 0.5), torch.full((B, T, N), 0.5))]
    losses = cotracker_losses(out, tracks, vis)
    assert math.isclose(float(losses.visible), 0.05 * 2.0, rel_tol=1e-6)
    assert math.isclose(float(losses.occluded), 0.01 * 2.0, rel_tol=1e-6)
    assert math.isclose(float(losses.visibility), math.log(2), rel_tol=1e-6)
    assert math.isclose(float(losses.confidence), math.log(2) / 2, rel_tol=1e-6)  # half the points visible
    assert math.isclose(float(losses.total), 0.1 + 0.02 + math.log(2) * 1.5, rel_tol=1e-6)
