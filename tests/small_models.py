"""Small, deterministic CoTracker3 models for fast behaviour tests.

The published sizes are tested against the reference in ``test_parity.py``;
the behaviour tests use this architecture so that a forward pass takes
milliseconds. Constraints: ``latent_dim % 4 == 0``, ``hidden_size %
num_heads == 0``, and ``model_resolution`` a multiple of
``stride * 2**(corr_levels - 1) = 32``.
"""

from __future__ import annotations

import pytest
import torch

import cotracker3

SMALL = dict(
    window_len=8,
    latent_dim=32,
    hidden_size=64,
    num_heads=2,
    num_virtual_tracks=4,
    model_resolution=(64, 96),
    corr_hidden_dim=32,
    corr_embed_dim=16,
)


def small_model(kind: str = "offline", seed: int = 0, **overrides):
    """A small randomly initialised model, the same for the same seed."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return cotracker3.build_model(kind, **{**SMALL, **overrides}).eval()


@pytest.fixture(scope="module")
def one_thread():
    """The models are tiny: one intra-op thread is faster than contended threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
