"""Fixtures shared by the tests of :mod:`cotracker3` and its subpackages."""

from __future__ import annotations

import pytest

TINY = dict(window_len=8, model_resolution=(64, 64), latent_dim=32, hidden_size=32, num_heads=2, time_depth=1,
            space_depth=1, corr_hidden_dim=32, corr_embed_dim=16, num_virtual_tracks=4)
"""Sizes of a model that trains in a fraction of a second per step."""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A two-step ``track3d train`` run folder of a :data:`TINY` model."""
    from cotracker3.train.loop import TrainConfig, train

    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(steps=2, iters=2, num_points=16, min_frames=4, max_frames=8, scene_reuse=2,
                         scene=dict(num_frames=8, height=64, width=64, num_points=48, supersample=1),
                         model=dict(TINY), seed=1)
    return train(config, out)


@pytest.fixture
def shipped(run, tmp_path, monkeypatch):
    """``run`` exported as the embedded model into a folder of its own (``TRACK3D_EMBEDDED_DIR``)."""
    from cotracker3.train.export import export

    monkeypatch.setenv("TRACK3D_EMBEDDED_DIR", str(tmp_path / "embedded"))
    export(run, metrics={"mean": {"average_jaccard": 1.0}}, command="track3d train ...", wall_time_s=3.0)
    return tmp_path / "embedded"
