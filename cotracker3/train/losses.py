"""The training losses of CoTracker3 (Karaev et al., 2024), as the reference trains with.

Every refinement iteration ``i`` of ``I`` is supervised, weighted by
``gamma ** (I - 1 - i)`` (``gamma = 0.8``: later iterations count more), and
the sum is divided by ``I``:

- **tracks, visible points**: Huber loss (``delta = 6`` px) of the predicted
  positions, averaged over x and y, then over the visible, valid points;
  weighted ``0.05`` in the total;
- **tracks, occluded points**: L1 loss, averaged the same way over the occluded
  valid points; weighted ``0.01``;
- **visibility**: binary cross-entropy of the predicted visibility against
  the truth, over every point (not weighted by iteration);
- **confidence**: binary cross-entropy of the predicted confidence against
  "this iteration's prediction lies within 12 px of the truth", counted on
  visible points only (the positions are not differentiated through it).

Positions are in the pixels the model sees (its input frames).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

GAMMA = 0.8
HUBER_DELTA = 6.0
VISIBLE_WEIGHT = 0.05
OCCLUDED_WEIGHT = 0.01
CONFIDENCE_RADIUS = 12.0


def huber(x: Tensor, y: Tensor, delta: float = HUBER_DELTA) -> Tensor:
    """Element-wise Huber loss: quadratic within ``delta``, linear beyond."""
    return F.huber_loss(x, y, reduction="none", delta=delta)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def track_loss(coords: list[Tensor], target: Tensor, mask: Tensor, *, huber_delta: float | None,
               gamma: float = GAMMA) -> Tensor:
    """Iteration-weighted position loss.

    Args:
        coords: per iteration ``(B, T, N, 2)`` predicted positions.
        target: ``(B, T, N, 2)`` true positions.
        mask: ``(B, T, N)``: the points that count.
        huber_delta: Huber loss with this delta, or None for L1.

    Returns:
        A scalar: ``sum_i gamma^(I-1-i) * mean_masked(loss_i) / I``.
    """
    total = target.new_zeros(())
    n = len(coords)
    for i, pred in enumerate(coords):
        err = (pred - target).abs() if huber_delta is None else huber(pred, target, huber_delta)
        total = total + gamma ** (n - 1 - i) * _masked_mean(err.mean(-1), mask)
    return total / n


def visibility_loss(vis: list[Tensor], target: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean binary cross-entropy of predicted visibility probabilities, averaged over iterations."""
    target = target.to(vis[0].dtype)
    losses = []
    for v in vis:
        bce = F.binary_cross_entropy(v.clamp(1e-6, 1 - 1e-6), target, reduction="none")
        losses.append(bce.mean() if valid is None else _masked_mean(bce, valid))
    return torch.stack(losses).mean()


def confidence_loss(coords: list[Tensor], conf: list[Tensor], target: Tensor, visible: Tensor,
                    radius: float = CONFIDENCE_RADIUS) -> Tensor:
    """Cross-entropy of the confidence against "within ``radius`` px of the truth", on visible points.

    As in the reference, the per-point loss is multiplied by the visibility and
    averaged over all points (not only the visible ones), then over iterations.
    """
    losses = []
    for c, k in zip(coords, conf):
        close = ((c.detach() - target) ** 2).sum(-1) <= radius ** 2
        bce = F.binary_cross_entropy(k.clamp(1e-6, 1 - 1e-6), close.to(k.dtype), reduction="none")
        losses.append((bce * visible.to(k.dtype)).mean())
    return torch.stack(losses).mean()


@dataclass
class Losses:
    """The four terms (already weighted) and their sum."""

    visible: Tensor
    occluded: Tensor
    visibility: Tensor
    confidence: Tensor

    @property
    def total(self) -> Tensor:
        return self.visible + self.occluded + self.visibility + self.confidence

    @classmethod
    def mean(cls, losses: list["Losses"]) -> "Losses":
        """Each term averaged over ``losses`` (the clips of a batch, the windows of an online pass)."""
        return cls(**{f.name: torch.stack([getattr(x, f.name) for x in losses]).mean()
                      for f in dataclasses.fields(cls)})

    def items(self) -> dict[str, float]:
        """Plain floats for logs."""
        terms = dict(visible=self.visible, occluded=self.occluded, visibility=self.visibility,
                     confidence=self.confidence)
        return {"total": float(self.total.detach()), **{k: float(v.detach()) for k, v in terms.items()}}


def cotracker_losses(outputs, tracks: Tensor, visibility: Tensor, valid: Tensor | None = None,
                     *, train_on_occluded: bool = True) -> Losses:
    """All CoTracker3 losses of one forward pass.

    Args:
        outputs: per iteration, anything with ``coords (B, T, N, 2)``, ``vis`` and
            ``conf (B, T, N)`` probabilities (:class:`cotracker3.model.ModelOutput`).
        tracks: ``(B, T, N, 2)`` true positions, model pixels.
        visibility: ``(B, T, N)`` bool truth.
        valid: ``(B, T, N)`` bool: the points and frames that are supervised at
            all (default: all).
        train_on_occluded: include the L1 term on occluded points.

    Returns:
        :class:`Losses`.
    """
    coords = [o.coords for o in outputs]
    vis = visibility.bool()
    given = valid is not None
    valid = torch.ones_like(vis) if valid is None else valid.bool()
    visible = track_loss(coords, tracks, valid & vis, huber_delta=HUBER_DELTA) * VISIBLE_WEIGHT
    occluded = (track_loss(coords, tracks, valid & ~vis, huber_delta=None) * OCCLUDED_WEIGHT
                if train_on_occluded else tracks.new_zeros(()))
    return Losses(
        visible=visible,
        occluded=occluded,
        visibility=visibility_loss([o.vis for o in outputs], vis, valid if given else None),
        confidence=confidence_loss(coords, [o.conf for o in outputs], tracks, vis & valid),
    )
