"""The CoTracker3 architecture (Karaev et al., 2024, arXiv 2410.11831).

Read top-down: helper functions, small modules (CNN encoder, attention
blocks, the update transformer), then the tracker itself in its two forms:

* :class:`CoTracker3Offline` sees the whole video in one window and tracks
  every query through all of it;
* :class:`CoTracker3Online` sees ``window_len`` frames at a time, slides by
  ``window_len // 2`` and carries its state from window to window
  (:class:`OnlineState`), so videos of any length stream through it.

Both take frames already resized to ``model_resolution`` (the predictors in
:mod:`cotracker3.predictor` do that and map results back to the caller's
pixels). Parameter names and shapes are those of the published checkpoints,
so ``load_state_dict(published, strict=True)`` works.

Conventions: pixel coordinates are ``(x, y)`` with ``(0, 0)`` the centre of
the top-left pixel; queries are ``(t, x, y)``; visibility and confidence are
logits inside the model and probabilities at its outputs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# --------------------------------------------------------------------------
# Helper functions
# --------------------------------------------------------------------------


def sincos_time_embedding(dim: int, length: int) -> Tensor:
    """1-D sine-cosine embedding of frame indices ``0 .. length - 1``.

    Returns:
        ``(1, length, dim)`` float32: ``[sin(t * w_k) for k] + [cos(t * w_k) for k]``
        with ``w_k = 10000 ** (-k / (dim / 2))``, computed in float64.
    """
    if dim % 2:
        raise ValueError(f"embedding dimension must be even, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    t = torch.arange(length, dtype=torch.float32).to(torch.float64)
    angles = t[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)[None].float()


def fourier_encode(x: Tensor, num_freqs: int = 10) -> Tensor:
    """Concatenate ``x`` with ``sin`` and ``cos`` of ``x * 2**k``, ``k < num_freqs``.

    Shape:
        ``x``: ``(..., D)`` -> ``(..., D + 2 * D * num_freqs)``. The sines come
        first, frequency-major (all D values at 2**0, then at 2**1, ...),
        then the cosines in the same order.
    """
    scales = 2.0 ** torch.arange(num_freqs, dtype=x.dtype, device=x.device)
    xb = (x[..., None, :] * scales[:, None]).flatten(-2)
    return torch.cat([x, torch.sin(torch.cat([xb, xb + 0.5 * math.pi], dim=-1))], dim=-1)


def patch_offsets(radius: int, device=None, dtype=torch.float32) -> Tensor:
    """Integer offsets of a ``(2r+1) x (2r+1)`` patch, ``(K, 2)`` as ``(dx, dy)``.

    The order is x-major: entry ``a * (2r+1) + b`` is ``(a - r, b - r)``. The
    published correlation MLP was trained with this order.
    """
    d = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    dx, dy = torch.meshgrid(d, d, indexing="ij")
    return torch.stack([dx, dy], dim=-1).reshape(-1, 2)


def normalize_coords(xy: Tensor, width: int, height: int) -> Tensor:
    """Pixel ``(x, y)`` to ``grid_sample``'s ``[-1, 1]`` with ``align_corners=True``."""
    scale = xy.new_tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)])
    return xy * scale - 1.0


def gather_patches(fmaps: Tensor, centers: Tensor, radius: int) -> Tensor:
    """Bilinearly sample a patch of features around points, frame by frame, from channels-last maps.

    The patch offsets are whole pixels, so every sample of a patch shares the
    centre's fractional weights: the ``(2r+2)**2`` integer neighbours are
    gathered as rows of the ``(h * w, C)`` map and blended once. This equals
    ``grid_sample`` (bilinear, border padding, corners aligned) and its backward
    is a row-wise index-add rather than a scatter per sample.

    Args:
        fmaps: ``(F, h, w, C)`` feature maps, one per frame.
        centers: ``(F, N, 2)`` patch centres in feature-map pixels ``(x, y)``.
        radius: patch radius ``r``; patches hold ``K = (2r+1)**2`` samples.

    Returns:
        ``(F, N, K, C)`` in :func:`patch_offsets` order. Outside the map the border value is repeated.
    """
    frames = torch.arange(fmaps.shape[0], device=centers.device).view(-1, 1)
    return _gather(fmaps, centers, frames, radius)


def _gather(fmaps: Tensor, centers: Tensor, frames: Tensor, radius: int) -> Tensor:
    """:func:`gather_patches` for centres ``(..., 2)`` on maps ``frames`` (broadcast to
    ``centers.shape[:-1]``): ``(..., K, C)``."""
    n_maps, h, w, C = fmaps.shape
    size = 2 * radius + 2
    rows, frac = _neighbour_rows(centers, frames, radius, h, w)
    p = fmaps.reshape(n_maps * h * w, C).index_select(0, rows.reshape(-1)).view(*rows.shape, C)
    p = _blend(p, frac.to(fmaps.dtype), frac.ndim - 1)
    return p.reshape(*centers.shape[:-1], (size - 1) ** 2, C)


def _neighbour_rows(centers: Tensor, frames: Tensor, radius: int, h: int, w: int) -> tuple[Tensor, Tensor]:
    """Rows of the ``(maps * h * w, C)`` flattened maps holding each centre's ``(2r+2)**2``
    whole-pixel neighbours, ``(..., x, y)`` order, clamped to the map; and the centres'
    fractional parts ``(..., 2)``. ``frames`` (broadcast to ``centers.shape[:-1]``) picks the map."""
    centers = centers.float()
    base = centers.floor()
    frac = centers - base
    base = base.long() - radius
    d = torch.arange(2 * radius + 2, device=centers.device)
    ix = (base[..., 0, None] + d).clamp(0, w - 1)
    iy = (base[..., 1, None] + d).clamp(0, h - 1)
    rows = ix[..., :, None] + iy[..., None, :] * w + (frames * (h * w))[..., None, None]
    return rows, frac


def _blend(p: Tensor, frac: Tensor, axis: int) -> Tensor:
    """Bilinear blend of whole-pixel neighbours: ``p`` has ``(size_x, size_y)`` at ``axis, axis + 1``
    (after ``frac.ndim - 1`` leading axes); returns ``size - 1`` samples per axis."""
    shape = frac.shape[:-1] + (1,) * (p.ndim - frac.ndim + 1)
    fx, fy = frac[..., 0].reshape(shape), frac[..., 1].reshape(shape)
    p = torch.lerp(p.narrow(axis, 0, p.shape[axis] - 1), p.narrow(axis, 1, p.shape[axis] - 1), fx)
    return torch.lerp(p.narrow(axis + 1, 0, p.shape[axis + 1] - 1), p.narrow(axis + 1, 1, p.shape[axis + 1] - 1), fy)


def patch_correlation(fmaps: Tensor, centers: Tensor, frames: Tensor, support: Tensor, radius: int) -> Tensor:
    """Correlations between the feature patch around each point and its query's patch.

    ``out[..., i, j]`` is the dot product of the bilinearly sampled feature at
    the ``i``-th offset around the centre (:func:`patch_offsets` order, as
    :func:`gather_patches` samples it) with the ``j``-th support feature.
    Sampling is linear, so the whole-pixel neighbours are correlated first and
    the blend runs on ``K`` correlations instead of ``C`` channels.

    Args:
        fmaps: ``(maps, h, w, C)`` channels-last feature maps.
        centers: ``(B, n, s, 2)`` patch centres in feature-map pixels ``(x, y)``.
        frames: long, broadcastable to ``(B, n, s)``: the map each centre samples.
        support: ``(B, n, K, C)`` query patch features, ``K = (2r+1)**2``.
        radius: patch radius ``r``.

    Returns:
        ``(B, n, s, K, K)``; border values repeat outside the map.
    """
    n_maps, h, w, C = fmaps.shape
    B, n, s = centers.shape[:3]
    size = 2 * radius + 2
    rows, frac = _neighbour_rows(centers, frames, radius, h, w)  # B n s size size
    p = fmaps.reshape(n_maps * h * w, C).index_select(0, rows.reshape(-1)).view(B, n, s * size * size, C)
    # Under reduced precision the features are stored in 16 bits and the products come out in
    # 16 bits. Measured on the CPU (README, "Reduced precision"): taking them and the blend in
    # float32 instead changed nothing in the tracks' deviation from float32 and cost a third
    # more time.
    corr = (p @ support.to(p.dtype).transpose(-1, -2)).view(B, n, s, size, size, -1)
    corr = _blend(corr, frac.to(corr.dtype), 3)
    return corr.reshape(B, n, s, (size - 1) ** 2, -1)


def sample_patches(fmaps: Tensor, centers: Tensor, radius: int) -> Tensor:
    """Bilinearly sample a patch of features around points, frame by frame.

    Args:
        fmaps: ``(F, C, h, w)`` feature maps, one per frame.
        centers: ``(F, N, 2)`` patch centres in feature-map pixels ``(x, y)``.
        radius: patch radius ``r``; patches hold ``K = (2r+1)**2`` samples.

    Returns:
        ``(F, C, N, K)``. Outside the map the border value is repeated.
    """
    return gather_patches(fmaps.permute(0, 2, 3, 1), centers, radius).permute(0, 3, 1, 2)


def sample_at_frames(fmaps: Tensor, frames: Tensor, centers: Tensor, radius: int) -> Tensor:
    """Sample a feature patch around each query at the query's own frame.

    Args:
        fmaps: ``(B, T, h, w, C)`` channels-last maps.
        frames: ``(B, N)`` integer frame index of each query (clamped to the video).
        centers: ``(B, N, 2)`` query positions in feature-map pixels.
        radius: patch radius.

    Returns:
        ``(B, N, K, C)`` features, ``K = (2r+1)**2`` in :func:`patch_offsets` order.
    """
    B, T = fmaps.shape[:2]
    maps = frames.clamp(0, T - 1) + torch.arange(B, device=frames.device)[:, None] * T
    return _gather(fmaps.reshape(B * T, *fmaps.shape[2:]), centers, maps, radius)


# --------------------------------------------------------------------------
# Small modules
# --------------------------------------------------------------------------


class Mlp(nn.Module):
    """Two linear layers with a GELU between them."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int, approximate: str = "none"):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU(approximate=approximate)
        self.fc2 = nn.Linear(hidden_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with instance norm, optional strided 1x1 shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1)
        self.norm1 = nn.InstanceNorm2d(planes)
        self.norm2 = nn.InstanceNorm2d(planes)
        self.downsample = None
        if stride != 1:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride), nn.InstanceNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        # In place: the norms' outputs and the sum are fresh tensors nothing else holds.
        y = F.relu(self.norm1(self.conv1(x)), inplace=True)
        y = F.relu(self.norm2(self.conv2(y)), inplace=True)
        if self.downsample is not None:
            x = self.downsample(x)
        return F.relu(x + y, inplace=True)


class BasicEncoder(nn.Module):
    """The CNN feature encoder: four residual stages fused at ``1 / stride`` resolution.

    Shape:
        ``(F, 3, H, W)`` in ``[-1, 1]`` -> ``(F, output_dim, H / stride, W / stride)``.
    """

    def __init__(self, input_dim: int = 3, output_dim: int = 128, stride: int = 4):
        super().__init__()
        self.stride = stride
        half, three_q = output_dim // 2, output_dim // 4 * 3
        self.conv1 = nn.Conv2d(input_dim, half, kernel_size=7, stride=2, padding=3)
        self.norm1 = nn.InstanceNorm2d(half)
        self.layer1 = nn.Sequential(ResidualBlock(half, half, 1), ResidualBlock(half, half))
        self.layer2 = nn.Sequential(ResidualBlock(half, three_q, 2), ResidualBlock(three_q, three_q))
        self.layer3 = nn.Sequential(ResidualBlock(three_q, output_dim, 2), ResidualBlock(output_dim, output_dim))
        self.layer4 = nn.Sequential(ResidualBlock(output_dim, output_dim, 2), ResidualBlock(output_dim, output_dim))
        self.conv2 = nn.Conv2d(half + three_q + 2 * output_dim, output_dim * 2, kernel_size=3, padding=1)
        self.norm2 = nn.InstanceNorm2d(output_dim * 2)
        self.conv3 = nn.Conv2d(output_dim * 2, output_dim, kernel_size=1)
        for m in self.modules():  # the reference's initialisation (He, fan-out)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        size = (x.shape[-2] // self.stride, x.shape[-1] // self.stride)
        x = F.relu(self.norm1(self.conv1(x)), inplace=True)
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(F.interpolate(x, size, mode="bilinear", align_corners=True))
        x = F.relu(self.norm2(self.conv2(torch.cat(feats, dim=1))), inplace=True)
        return self.conv3(x)


class Attention(nn.Module):
    """Multi-head (cross-)attention through ``scaled_dot_product_attention``."""

    def __init__(self, query_dim: int, context_dim: int | None = None, num_heads: int = 8, dim_head: int = 48):
        super().__init__()
        inner = dim_head * num_heads
        self.heads = num_heads
        self.to_q = nn.Linear(query_dim, inner)
        self.to_kv = nn.Linear(context_dim or query_dim, 2 * inner)
        self.to_out = nn.Linear(inner, query_dim)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        context = x if context is None else context
        B, n_q, _ = x.shape
        q = self.to_q(x).unflatten(-1, (self.heads, -1)).transpose(1, 2)
        k, v = self.to_kv(context).unflatten(-1, (2, self.heads, -1)).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(B, n_q, -1))


class AttnBlock(nn.Module):
    """Pre-norm self-attention block with a tanh-GELU MLP."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads=num_heads, dim_head=hidden_size // num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), hidden_size, approximate="tanh")

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """Pre-norm cross-attention block: ``x`` attends to ``context``."""

    def __init__(self, hidden_size: int, context_dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.norm_context = nn.LayerNorm(context_dim)
        self.cross_attn = Attention(hidden_size, context_dim, num_heads=num_heads, dim_head=hidden_size // num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), hidden_size, approximate="tanh")

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x = x + self.cross_attn(self.norm1(x), self.norm_context(context))
        return x + self.mlp(self.norm2(x))


class UpdateTransformer(nn.Module):
    """Alternating attention over time (per track) and across tracks.

    Cross-track attention goes through ``num_virtual_tracks`` learned tokens:
    virtual tokens read from the real tracks, attend among themselves, and
    the real tracks read back from them. Outputs per token: ``(dx, dy)``
    in feature-map pixels, then the visibility and confidence logit updates.
    """

    def __init__(
        self,
        input_dim: int = 1110,
        hidden_size: int = 384,
        num_heads: int = 8,
        time_depth: int = 3,
        space_depth: int = 3,
        mlp_ratio: float = 4.0,
        num_virtual_tracks: int = 64,
    ):
        super().__init__()
        if space_depth < 1 or time_depth % space_depth:
            raise ValueError("time_depth must be a positive multiple of space_depth")
        self.num_virtual_tracks = num_virtual_tracks
        self.input_transform = nn.Linear(input_dim, hidden_size)
        self.flow_head = nn.Linear(hidden_size, 2)
        self.vis_conf_head = nn.Linear(hidden_size, 2)
        # The published checkpoints spell this parameter without the "t".
        self.virual_tracks = nn.Parameter(torch.randn(1, num_virtual_tracks, 1, hidden_size))
        self.time_blocks = nn.ModuleList(AttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(time_depth))
        self.space_virtual_blocks = nn.ModuleList(
            AttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(space_depth)
        )
        self.space_point2virtual_blocks = nn.ModuleList(
            CrossAttnBlock(hidden_size, hidden_size, num_heads, mlp_ratio) for _ in range(space_depth)
        )
        self.space_virtual2point_blocks = nn.ModuleList(
            CrossAttnBlock(hidden_size, hidden_size, num_heads, mlp_ratio) for _ in range(space_depth)
        )
        # The reference's initialisation: Xavier-uniform linear layers with zero biases,
        # and near-zero heads so that the first updates are small.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.flow_head.weight, std=0.001)
        nn.init.trunc_normal_(self.vis_conf_head.weight, std=0.001)
        #: Tokens per call of a transformer block (bounds memory; results do not depend on it).
        self.chunk_tokens = 4096

    def forward(self, x: Tensor) -> Tensor:
        """Shape: ``(B, N, T, input_dim)`` -> ``(B, N, T, 4)``."""
        return self.blocks(self.input_transform(x))

    def blocks(self, tokens: Tensor) -> Tensor:
        """Everything after the input projection: ``(B, N, T, hidden)`` -> ``(B, N, T, 4)``."""
        B, N, T, D = tokens.shape
        return self.run_blocks(torch.cat([tokens, self.virtual_tokens(B, T, tokens.dtype)], dim=1), N)

    def virtual_tokens(self, batch: int, frames: int, dtype: torch.dtype) -> Tensor:
        """The learned virtual tracks, ``(batch, V, frames, hidden)``, to follow the real tracks' tokens."""
        return self.virual_tracks.expand(batch, -1, frames, -1).to(dtype)

    def run_blocks(self, tokens: Tensor, num_points: int) -> Tensor:
        """The blocks on ``(B, N + V, T, hidden)`` tokens, the ``N = num_points`` real tracks
        followed by the virtual ones (:meth:`virtual_tokens`); returns ``(B, N, T, 4)``.

        Each block runs on at most ``chunk_tokens`` tokens at a time (whole
        tracks for attention over time, whole frames across tracks), which
        bounds the attention and MLP activations without changing the result.
        Without autograd (inference) every chunk's result is written back into
        ``tokens``, which is overwritten: one token-sized tensor is all the
        transformer holds. With autograd the chunks are concatenated into new tensors.
        """
        B, _, T, D = tokens.shape
        inplace = not torch.is_grad_enabled()
        if inplace:
            tokens = tokens.contiguous()
        every = len(self.time_blocks) // len(self.space_virtual_blocks)
        for i, time_block in enumerate(self.time_blocks):
            flat = tokens.view(-1, T, D) if inplace else tokens.reshape(-1, T, D)
            out = _in_chunks(time_block, flat, self.chunk_tokens, inplace)
            tokens = tokens if inplace else out.view(B, -1, T, D)
            if i % every == 0:
                j = i // every
                tokens = self._space_block(j, tokens, num_points, inplace)
        return self._heads(tokens[:, :num_points])

    def _heads(self, tokens: Tensor) -> Tensor:
        """Coordinate and visibility/confidence updates ``(B, N, T, 4)`` of ``(B, N, T, hidden)`` tokens.

        The updates accumulate over the iterations: the heads run in the weights' precision
        (float32) whatever the tokens' (16 bits under reduced precision), on ``chunk_tokens``
        tokens at a time so that no float32 copy of all the tokens is made."""
        B, N, T, _ = tokens.shape
        dtype = self.flow_head.weight.dtype
        if torch.is_grad_enabled():
            with torch.autocast(tokens.device.type, enabled=False):
                tokens = tokens.to(dtype)
                return torch.cat([self.flow_head(tokens), self.vis_conf_head(tokens)], dim=-1)
        out = tokens.new_empty((B, N, T, 4), dtype=dtype)
        rows = max(1, self.chunk_tokens // max(1, B * T))
        with torch.autocast(tokens.device.type, enabled=False):
            for a in range(0, N, rows):
                x = tokens[:, a:a + rows].to(dtype)
                out[:, a:a + rows, :, :2] = self.flow_head(x)
                out[:, a:a + rows, :, 2:] = self.vis_conf_head(x)
        return out

    def _space_block(self, j: int, tokens: Tensor, N: int, inplace: bool) -> Tensor:
        """Space block ``j`` over every frame of ``(B, N + V, T, D)`` tokens, ``chunk_tokens`` at a time."""
        B, M, T, D = tokens.shape
        if not inplace:
            space = tokens.transpose(1, 2).reshape(B * T, M, D)  # (B T) (N+V) D
            space = _in_chunks(lambda s: self._across_tracks(j, s, N), space, self.chunk_tokens)
            return space.view(B, T, M, D).transpose(1, 2)
        step = max(1, self.chunk_tokens // max(1, B * M))
        for t0 in range(0, T, step):
            t1 = min(T, t0 + step)
            space = tokens[:, :, t0:t1].transpose(1, 2).reshape(B * (t1 - t0), M, D)
            tokens[:, :, t0:t1] = self._across_tracks(j, space, N).view(B, t1 - t0, M, D).transpose(1, 2)
        return tokens

    def _across_tracks(self, j: int, space: Tensor, N: int) -> Tensor:
        """Space block ``j`` on ``(frames, N + V, D)``: virtual tracks read, mix, and are read back."""
        points, virtual = space[:, :N], space[:, N:]
        virtual = self.space_virtual2point_blocks[j](virtual, points)
        virtual = self.space_virtual_blocks[j](virtual)
        points = self.space_point2virtual_blocks[j](points, virtual)
        return torch.cat([points, virtual], dim=1)


def _in_chunks(fn, x: Tensor, max_tokens: int, inplace: bool = False) -> Tensor:
    """``fn`` applied to slices of ``x`` along its first axis, holding at most ``max_tokens``
    tokens (``x.shape[0] * x.shape[1]``), concatenated (or, with ``inplace``, written back
    into ``x``, which is returned); ``fn`` must treat rows independently and keep their shape."""
    rows = max(1, max_tokens // max(1, x.shape[1]))
    if x.shape[0] <= rows and not inplace:
        return fn(x)
    if inplace:
        for i in range(0, x.shape[0], rows):
            x[i:i + rows] = fn(x[i:i + rows])
        return x
    return torch.cat([fn(x[i:i + rows]) for i in range(0, x.shape[0], rows)])


# --------------------------------------------------------------------------
# The tracker
# --------------------------------------------------------------------------


class ModelOutput(NamedTuple):
    """What the models return.

    Attributes:
        coords: ``(B, T, N, 2)`` float32, pixels of the model's input frames, ``(x, y)``.
        vis: ``(B, T, N)`` float32 visibility probability.
        conf: ``(B, T, N)`` float32 confidence probability (that the position is
            within a few pixels of the truth).
    """

    coords: Tensor
    vis: Tensor
    conf: Tensor


def as_float32(out):
    """Model outputs (a tensor, or tuples, named tuples, lists and dataclasses of them, as
    mixed precision returns them) with every floating-point tensor in float32."""
    if isinstance(out, Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, tuple) and hasattr(out, "_fields"):
        return type(out)(*(as_float32(x) for x in out))
    if isinstance(out, (tuple, list)):
        return type(out)(as_float32(x) for x in out)
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        return dataclasses.replace(out, **{f.name: as_float32(getattr(out, f.name)) for f in dataclasses.fields(out)})
    return out


class CoTracker3(nn.Module):
    """Layers and computations shared by the offline and the online tracker.

    The constructor builds architecture only; weights load separately
    (:func:`cotracker3.weights.load_checkpoint`). Defaults are the published sizes.

    Args:
        window_len: frames the transformer sees at once (its time embedding length):
            60 for the published offline model, 16 for the online one.
        stride: encoder down-sampling factor.
        corr_radius: radius of the correlation patches (7x7 for 3).
        corr_levels: levels of the feature pyramid.
        num_virtual_tracks: learned tokens for cross-track attention.
        model_resolution: ``(H, W)`` the predictors resize frames to.
        latent_dim: feature channels of the encoder.
        hidden_size, num_heads, time_depth, space_depth, mlp_ratio: transformer sizes.
        corr_hidden_dim, corr_embed_dim: hidden and output width of the correlation MLP.
        num_freqs: Fourier frequencies of the displacement encoding.
    """

    def __init__(
        self,
        window_len: int = 60,
        stride: int = 4,
        corr_radius: int = 3,
        corr_levels: int = 4,
        num_virtual_tracks: int = 64,
        model_resolution: tuple[int, int] = (384, 512),
        latent_dim: int = 128,
        hidden_size: int = 384,
        num_heads: int = 8,
        time_depth: int = 3,
        space_depth: int = 3,
        mlp_ratio: float = 4.0,
        corr_hidden_dim: int = 384,
        corr_embed_dim: int = 256,
        num_freqs: int = 10,
    ):
        super().__init__()
        self.window_len = window_len
        self.stride = stride
        self.corr_radius = corr_radius
        self.corr_levels = corr_levels
        self.model_resolution = tuple(model_resolution)
        self.latent_dim = latent_dim
        self.num_freqs = num_freqs
        patch = (2 * corr_radius + 1) ** 2
        self.input_dim = 2 + corr_levels * corr_embed_dim + 4 * (1 + 2 * num_freqs)
        self.fnet = BasicEncoder(3, latent_dim, stride)
        self.updateformer = UpdateTransformer(
            self.input_dim, hidden_size, num_heads, time_depth, space_depth, mlp_ratio, num_virtual_tracks
        )
        self.corr_mlp = Mlp(patch * patch, corr_hidden_dim, corr_embed_dim)
        self.register_buffer("time_emb", sincos_time_embedding(self.input_dim, window_len))
        #: Point-frames per chunk of correlation features, their MLP and the
        #: transformer's input projection (bounds memory; results do not depend on it).
        self.chunk_point_frames = 1024
        #: Optional ``callable(iteration, iters)`` called after each refinement
        #: step, for progress bars; not part of the state dict.
        self.progress = None

    # -- features ---------------------------------------------------------

    def encode(self, video: Tensor, chunk: int = 1, transform=None) -> list[Tensor]:
        """Feature pyramid of a video, channels last.

        Args:
            video: ``(B, T, 3, H, W)`` values 0..255 (uint8 or float), on the model's device
                or elsewhere (then moved there ``chunk`` frames at a time: a long video
                can stay in host memory).
            chunk: frames per encoder call (bounds memory; results do not depend on it).
            transform: optional ``callable((F, 3, h, w)) -> (F, 3, H, W)`` float applied
                to each chunk first (a predictor resizes its caller's frames this way,
                so the resized video never exists as a whole).

        Returns:
            ``corr_levels`` tensors ``(B, T, H / stride / 2**l, W / stride / 2**l, C)``,
            unit-length along ``C`` at level 0, average-pooled above. Under autocast
            they are stored in the autocast precision (the correlations are computed
            in it anyway), else in float32 (or the video's floating type).
        """
        B, T = video.shape[:2]
        device = self.time_emb.device
        if torch.is_autocast_enabled(device.type):
            dtype = torch.get_autocast_dtype(device.type)
        else:
            dtype = video.dtype if video.is_floating_point() else torch.float32
        frames = video.reshape(B * T, *video.shape[2:])
        fmap = None
        for s in range(0, B * T, chunk):
            x = frames[s : s + chunk].to(device, non_blocking=True)
            x = transform(x) if transform is not None else x
            H, W = x.shape[-2:]
            if H % self.stride or W % self.stride:
                raise ValueError(f"frame size {W}x{H} must be a multiple of the stride {self.stride}")
            f = self.fnet(2.0 * (x / 255.0) - 1.0)
            f = (f / f.square().sum(dim=1, keepdim=True).clamp_min(1e-12).sqrt()).permute(0, 2, 3, 1)
            if fmap is None:
                fmap = f.new_empty((B * T, *f.shape[1:]), dtype=dtype)
            fmap[s : s + chunk] = f
        pyramid = [fmap]
        for _ in range(self.corr_levels - 1):
            down = F.avg_pool2d(pyramid[-1].permute(0, 3, 1, 2), 2, stride=2)
            pyramid.append(down.permute(0, 2, 3, 1).contiguous())
        return [p.view(B, T, *p.shape[1:]) for p in pyramid]

    def query_features(self, pyramid: list[Tensor], frames: Tensor, coords: Tensor) -> list[Tensor]:
        """Features of the patch around every query at its frame, per level.

        Args:
            pyramid: from :meth:`encode`.
            frames: ``(B, N)`` long, query frame indices into the pyramid's frames.
            coords: ``(B, N, 2)`` query positions in level-0 feature pixels.

        Returns:
            Per level ``(B, N, K, C)``.
        """
        return [
            sample_at_frames(fmap, frames, coords / 2**level, self.corr_radius)
            for level, fmap in enumerate(pyramid)
        ]

    def correlation_embedding(self, pyramid: list[Tensor], coords: Tensor, support: list[Tensor],
                              frames: Tensor) -> Tensor:
        """Embedded 4D correlations between query patches and patches at ``coords``.

        Args:
            pyramid: per level ``(F, h, w, C)`` channels-last maps of all frames.
            coords: ``(B, n, s, 2)`` current estimates, level-0 feature pixels.
            support: per level ``(B, n, K, C)`` the same points' query patch features.
            frames: broadcastable to ``(B, n, s)``: the map of each estimate.

        Returns:
            ``(B, n, s, corr_levels * corr_embed_dim)``.
        """
        B, n, s, _ = coords.shape
        levels = []
        for level, fmap in enumerate(pyramid):
            corr = patch_correlation(fmap, coords / 2**level, frames, support[level], self.corr_radius)
            levels.append(self.corr_mlp(corr.view(B, n, s, -1)))
        return torch.cat(levels, dim=-1)

    def input_tokens(self, pyramid: list[Tensor], support: list[Tensor], coords: Tensor, vis: Tensor,
                     conf: Tensor, time_emb: Tensor, out: Tensor | None = None) -> Tensor:
        """The update transformer's input tokens for the current estimates.

        Per point and frame: the visibility and confidence logits, the embedded
        correlations (:meth:`correlation_embedding`), the Fourier-encoded motion to
        the neighbouring frames, plus the time embedding, projected to the
        transformer's width. Computed in chunks of at most ``chunk_point_frames``
        point-frames (at least 256 points, or all of them, by as many frames as fit),
        so the correlation features, their MLP activations, the motion encoding and
        the wide input vectors only ever exist for one chunk.

        Args:
            pyramid: per level ``(B * S, h, w, C)`` channels-last maps.
            support: per level ``(B, N, K, C)``.
            coords: ``(B, S, N, 2)`` level-0 feature pixels.
            vis, conf: ``(B, S, N)`` logits.
            time_emb: ``(1, S, input_dim)``.
            out: optional ``(B, N, S, hidden_size)`` tensor the tokens are written into.

        Returns:
            ``(B, N, S, hidden_size)`` (``out`` when given).
        """
        B, S, N, _ = coords.shape
        res_h, res_w = self.model_resolution
        scale = coords.new_tensor([res_w / self.stride, res_h / self.stride]).repeat(2)
        fwd = F.pad(coords[:, :-1] - coords[:, 1:], (0, 0, 0, 0, 0, 1))
        bwd = F.pad(coords[:, 1:] - coords[:, :-1], (0, 0, 0, 0, 1, 0))
        motion = (torch.cat([fwd, bwd], dim=-1) / scale).transpose(1, 2)  # B N S 4, encoded per chunk
        logits = torch.stack([vis, conf], dim=-1).transpose(1, 2)  # B N S 2
        coords = coords.transpose(1, 2)  # B N S 2
        n_step = min(N, max(256, self.chunk_point_frames // S))
        s_step = max(1, min(S, self.chunk_point_frames // n_step))
        frame_ids = torch.arange(B * S, device=coords.device).view(B, 1, S)
        rows = []
        for n0 in range(0, N, n_step):
            n1 = min(N, n0 + n_step)
            parts = []
            for s0 in range(0, S, s_step):
                s1 = min(S, s0 + s_step)
                corr = self.correlation_embedding(pyramid, coords[:, n0:n1, s0:s1],
                                                  [sp[:, n0:n1] for sp in support], frame_ids[..., s0:s1])
                x = torch.cat([logits[:, n0:n1, s0:s1], corr,
                               fourier_encode(motion[:, n0:n1, s0:s1], self.num_freqs)], dim=-1)
                x = self.updateformer.input_transform(x + time_emb[:, None, s0:s1])
                if out is None:
                    parts.append(x)
                else:
                    out[:, n0:n1, s0:s1] = x
            if out is None:
                rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=2))
        if out is not None:
            return out
        return rows[0] if len(rows) == 1 else torch.cat(rows, dim=1)

    def token_dtype(self, device: torch.device) -> torch.dtype:
        """The dtype of the transformer's tokens: the autocast precision where autocast is on."""
        if torch.is_autocast_enabled(device.type):
            return torch.get_autocast_dtype(device.type)
        return self.updateformer.input_transform.weight.dtype

    def refine(
        self,
        pyramid: list[Tensor],
        support: list[Tensor],
        coords: Tensor,
        vis: Tensor,
        conf: Tensor,
        iters: int,
        all_iterations: bool = True,
    ) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Iteratively update tracks inside one window.

        Args:
            pyramid: per level ``(B, S, h, w, C)`` features of the window's frames (:meth:`encode`).
            support: per level ``(B, N, K, C)`` query patch features.
            coords: ``(B, S, N, 2)`` initial positions, level-0 feature pixels.
            vis, conf: ``(B, S, N)`` initial logits.
            iters: number of updates.
            all_iterations: return every iteration's output (for the losses), or only the last.

        Returns:
            One ``(coords, vis, conf)`` per iteration (or the last one), coords in feature
            pixels, logits.

        Without autograd the tokens live in one buffer of ``(B, N + V, S, hidden)``,
        reused by every iteration and updated in place by the transformer.
        """
        B, S, N = coords.shape[:3]
        time_emb = self.time_embedding(S).to(coords.dtype)
        # Batch and frames flattened: patches are gathered as rows of the channels-last maps.
        maps = [p.reshape(B * S, *p.shape[2:]) for p in pyramid]
        former = self.updateformer
        buffer = None
        if not torch.is_grad_enabled():
            D = former.input_transform.out_features
            buffer = coords.new_empty((B, N + former.num_virtual_tracks, S, D), dtype=self.token_dtype(coords.device))
        outputs = []
        for it in range(iters):
            coords = coords.detach()
            if buffer is None:
                tokens = self.input_tokens(maps, support, coords, vis, conf, time_emb)
                delta = former.blocks(tokens).transpose(1, 2)  # B S N 4
            else:
                self.input_tokens(maps, support, coords, vis, conf, time_emb, out=buffer[:, :N])
                buffer[:, N:] = former.virtual_tokens(B, S, buffer.dtype)
                delta = former.run_blocks(buffer, N).transpose(1, 2)
            coords = coords + delta[..., :2]
            vis = vis + delta[..., 2]
            conf = conf + delta[..., 3]
            if all_iterations or it == iters - 1:
                outputs.append((coords, vis, conf))
            if self.progress is not None:
                self.progress(it + 1, iters)
        return outputs

    def time_embedding(self, length: int) -> Tensor:
        """The ``(1, length, input_dim)`` time embedding, linearly resampled if needed."""
        if length == self.time_emb.shape[1]:
            return self.time_emb
        emb = F.interpolate(self.time_emb.float().transpose(1, 2), size=length, mode="linear")
        return emb.transpose(1, 2)

    def check_inputs(self, video: Tensor, queries: Tensor) -> None:
        """Validate model inputs (internal invariants: predictors check user input)."""
        if video.ndim != 5 or video.shape[2] != 3:
            raise ValueError(f"video must be (B, T, 3, H, W), got {tuple(video.shape)}")
        self._check_queries(queries, video.shape[0])

    @staticmethod
    def _check_queries(queries: Tensor, batch: int) -> None:
        if queries.ndim != 3 or queries.shape[-1] != 3 or queries.shape[0] != batch:
            raise ValueError(f"queries must be (B, N, 3) with B={batch}, got {tuple(queries.shape)}")
        if queries.shape[1] == 0:
            raise ValueError("queries is empty: the model needs at least one point to track")


INITIALISATIONS = (None, "baseline")
"""How an offline model starts its refinement: ``None`` (the published models: every
frame at the query position, visibility and confidence logits 0) or ``"baseline"``
(given tracks and visibility logits, ``init`` of :meth:`CoTracker3Offline.forward`:
those of the Lucas-Kanade baseline, :func:`cotracker3.baseline.initial_tracks`, which
the model refines). The model never computes them itself."""


class CoTracker3Offline(CoTracker3):
    """CoTracker3 that sees the whole video in one window (``window_len=60`` published).

    Args:
        initialisation: where the iterative refinement starts. ``None`` (default,
            the published models): every frame at the query position. ``"baseline"``:
            at tracks and visibility logits the caller passes as ``init`` (the
            Lucas-Kanade baseline's, both directions of time, with initial visibility
            logits of ``+-BASELINE_VIS_LOGIT`` where it sees or lost the point: see
            :func:`cotracker3.baseline.initial_tracks`; the predictors supply them).
            A small model trained briefly then spends its capacity on
            correcting the classical tracks (occlusions, drift, lost points) instead of
            first learning to follow texture; the trained embedded model is built so.
            Not a weight: it is part of the architecture record
            (``provenance.json``, a run's configuration).
        **kwargs: the sizes of :class:`CoTracker3`.
    """

    def __init__(self, *args, initialisation: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if initialisation not in INITIALISATIONS:
            raise ValueError(f"initialisation must be one of {INITIALISATIONS}, got {initialisation!r}")
        self.initialisation = initialisation

    def forward(self, video: Tensor, queries: Tensor, iters: int = 4,
                init: tuple[Tensor, Tensor] | None = None) -> ModelOutput:
        """Track queries through a whole video.

        Args:
            video: ``(B, T, 3, H, W)`` float, RGB 0..255, ``H, W`` multiples of the stride.
            queries: ``(B, N, 3)`` float, ``(t, x, y)``: frame index and pixels of ``video``.
            iters: refinement iterations.
            init: where refinement starts, for a model whose :attr:`initialisation` is
                ``"baseline"`` (required there, e.g. from
                :func:`cotracker3.baseline.initial_tracks`): ``(coords (B, T, N, 2)``
                pixels of ``video``, ``vis (B, T, N)`` logits``)``. Default: the query
                position in every frame, logits 0.

        Returns:
            :class:`ModelOutput` with ``coords (B, T, N, 2)``, ``vis`` and ``conf (B, T, N)``.
        """
        outputs = self.forward_train(video, queries, iters, init=init)
        return outputs[-1]

    def forward_train(self, video: Tensor, queries: Tensor, iters: int = 4,
                      init: tuple[Tensor, Tensor] | None = None) -> list[ModelOutput]:
        """Like :meth:`forward`, returning every iteration's output (for the losses)."""
        self.check_inputs(video, queries)
        return self.track_features(self.encode(video), queries, iters, init=init)

    def track_features(self, pyramid: list[Tensor], queries: Tensor, iters: int = 4,
                       init: tuple[Tensor, Tensor] | None = None, all_iterations: bool = True) -> list[ModelOutput]:
        """:meth:`forward_train` from a feature pyramid (:meth:`encode`) instead of frames.

        A caller that encodes the frames itself (chunk by chunk from its own
        video, or once for both directions of time) tracks with this.

        Args:
            pyramid: per level ``(B, T, h, w, C)``.
            queries: ``(B, N, 3)`` float ``(t, x, y)``, pixels of the encoded frames.
            iters: refinement iterations.
            init: optional ``(coords (B, T, N, 2)`` pixels of the encoded frames,
                ``vis (B, T, N)`` logits``)`` to start refining from (required when
                :attr:`initialisation` is ``"baseline"``); default: the query position in
                every frame, logits 0.
            all_iterations: return every iteration's output (for the losses), or only the
                last one (inference: less memory).

        Returns:
            Every iteration's :class:`ModelOutput` (or a list of the last one).

        Raises:
            ValueError: ``init`` is missing for a model that refines given tracks, or has
                the wrong shape.
        """
        B, T = pyramid[0].shape[:2]
        self._check_queries(queries, B)
        if init is None and self.initialisation is not None:
            raise ValueError(f"this model refines given tracks (initialisation {self.initialisation!r}): pass "
                             "init=(coords, vis), e.g. from cotracker3.baseline.initial_tracks(video, queries); "
                             "the predictors do")
        N = queries.shape[1]
        frames = queries[..., 0].long()
        qxy = queries[..., 1:].float() / self.stride
        support = self.query_features(pyramid, frames, qxy)
        zeros = qxy.new_zeros(B, T, N)
        if init is None:
            coords, vis = qxy[:, None].expand(B, T, N, 2), zeros
        else:
            coords, vis = init[0].to(qxy.dtype) / self.stride, init[1].to(qxy.dtype)
            if coords.shape != (B, T, N, 2) or vis.shape != (B, T, N):
                raise ValueError(f"init must be ({(B, T, N, 2)}, {(B, T, N)}), got "
                                 f"({tuple(coords.shape)}, {tuple(vis.shape)})")
        steps = self.refine(pyramid, support, coords, vis, zeros, iters, all_iterations)
        return [ModelOutput(c * self.stride, v.sigmoid(), k.sigmoid()) for c, v, k in steps]


@dataclass
class OnlineState:
    """What the online tracker carries from one window to the next.

    Its size does not depend on how many frames have been processed.

    Attributes:
        start: absolute index of the first frame of the next window.
        queries: ``(B, N, 3)`` the queries in model pixels.
        support: per level ``(B, N, K, C)`` query patch features collected so far
            (zero for queries whose frame has not been seen yet).
        coords: ``(B, O, N, 2)`` predictions for the ``O = window_len - step``
            frames shared with the next window, feature pixels (or None at start).
        vis, conf: ``(B, O, N)`` logits for those frames.
    """

    start: int
    queries: Tensor
    support: list[Tensor] | None = None
    coords: Tensor | None = None
    vis: Tensor | None = None
    conf: Tensor | None = None


class CoTracker3Online(CoTracker3):
    """CoTracker3 with sliding windows of ``window_len`` frames (16 published).

    Windows start every ``step = window_len // 2`` frames; each is initialised
    from the previous window's predictions on the frames they share. Use
    :meth:`init_state` and :meth:`forward_window` to stream a video, or
    :meth:`forward` to run a whole video through the same windows.
    """

    def __init__(self, window_len: int = 16, **kwargs):
        super().__init__(window_len=window_len, **kwargs)
        if window_len < 2:
            raise ValueError("window_len must be at least 2")
        self.step = window_len // 2

    def init_state(self, queries: Tensor) -> OnlineState:
        """A fresh streaming state for ``queries (B, N, 3)`` ``(t, x, y)`` in model pixels."""
        return OnlineState(start=0, queries=queries)

    def forward_window(self, chunk: Tensor, state: OnlineState, iters: int = 4) -> tuple[ModelOutput, OnlineState]:
        """Track through the next window of a stream.

        Args:
            chunk: ``(B, L, 3, H, W)`` float 0..255: frames ``state.start ..
                state.start + L - 1`` of the video, ``1 <= L <= window_len``; all but
                the last window must have ``L == window_len``.
            state: from :meth:`init_state` or the previous call.
            iters: refinement iterations.

        Returns:
            ``(out, next_state)``: ``out`` holds predictions for the ``L`` frames of
            the chunk (probabilities); frames ``start .. start + step - 1`` are final,
            later ones are revised by the next window. ``next_state.start`` is
            ``state.start + step``.
        """
        outputs, next_state = self._window(chunk, state, iters)
        return outputs[-1], next_state

    def _window(self, chunk: Tensor, state: OnlineState, iters: int) -> tuple[list[ModelOutput], OnlineState]:
        """:meth:`forward_window`, returning every refinement iteration's output."""
        B, L = chunk.shape[:2]
        S, step, start = self.window_len, self.step, state.start
        if not 1 <= L <= S:
            raise ValueError(f"a window holds 1..{S} frames, got {L}")
        queries = state.queries
        self.check_inputs(chunk, queries)
        N = queries.shape[1]
        if L < S:  # the last window: repeat the last frame
            chunk = torch.cat([chunk, chunk[:, -1:].expand(B, S - L, *chunk.shape[2:])], dim=1)
        pyramid = self.encode(chunk)

        frames = queries[..., 0].long()
        qxy = queries[..., 1:].to(chunk.dtype) / self.stride
        # Queries whose frame enters the video in this window get their features now.
        lo = 0 if start == 0 else start + step
        new = ((frames >= lo) & (frames < start + S)).to(chunk.dtype)[..., None, None]
        feats = self.query_features(pyramid, frames - start, qxy)
        if state.support is None:
            support = [f * new for f in feats]
        else:
            support = [s + f * new for s, f in zip(state.support, feats)]

        coords = qxy[:, None].expand(B, S, N, 2)
        vis = chunk.new_zeros(B, S, N)
        conf = chunk.new_zeros(B, S, N)
        if state.coords is not None:
            # Tracks that started before the shared frames continue from there.
            prev = state.coords.shape[1]
            pad = S - prev

            def extend(x: Tensor) -> Tensor:
                return torch.cat([x, x[:, -1:].expand(B, pad, *x.shape[2:])], dim=1)

            cont = (frames < start + prev)[:, None, :]
            coords = torch.where(cont[..., None], extend(state.coords), coords)
            vis = torch.where(cont, extend(state.vis), vis)
            conf = torch.where(cont, extend(state.conf), conf)

        steps = [(c[:, :L], v[:, :L], k[:, :L]) for c, v, k in self.refine(pyramid, support, coords, vis, conf, iters)]
        c, v, k = steps[-1]
        shared = slice(step, L) if L > step else slice(L, L)
        next_state = OnlineState(
            start=start + step,
            queries=queries,
            support=support,
            coords=c[:, shared] if L > step else None,
            vis=v[:, shared] if L > step else None,
            conf=k[:, shared] if L > step else None,
        )
        return [ModelOutput(c * self.stride, v.sigmoid(), k.sigmoid()) for c, v, k in steps], next_state

    def forward_train(self, video: Tensor, queries: Tensor, iters: int = 4) -> list[tuple[int, list[ModelOutput]]]:
        """The sliding windows of :meth:`forward`, for the losses: per window its first
        frame and every iteration's output for its frames (gradients flow between windows)."""
        self.check_inputs(video, queries)
        T = video.shape[1]
        state = self.init_state(queries)
        windows = []
        start = 0
        while True:
            outputs, state = self._window(video[:, start : start + self.window_len], state, iters)
            windows.append((start, outputs))
            if start + self.window_len >= T:
                return windows
            start += self.step

    def forward(self, video: Tensor, queries: Tensor, iters: int = 4) -> ModelOutput:
        """Track queries through a whole video with sliding windows.

        Args:
            video: ``(B, T, 3, H, W)`` float 0..255.
            queries: ``(B, N, 3)`` ``(t, x, y)`` in pixels of ``video``.
            iters: refinement iterations per window.

        Returns:
            :class:`ModelOutput` for all ``T`` frames.
        """
        self.check_inputs(video, queries)
        T = video.shape[1]
        state = self.init_state(queries)
        coords, vis, conf = [], [], []
        start = 0
        while True:
            out, state = self.forward_window(video[:, start : start + self.window_len], state, iters)
            last = start + self.window_len >= T
            keep = out.coords.shape[1] if last else self.step
            coords.append(out.coords[:, :keep])
            vis.append(out.vis[:, :keep])
            conf.append(out.conf[:, :keep])
            if last:
                break
            start += self.step
        return ModelOutput(torch.cat(coords, 1), torch.cat(vis, 1), torch.cat(conf, 1))
