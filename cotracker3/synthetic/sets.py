"""The named sets of synthetic scenes, each a deterministic function of its own seeds.

* the held-out evaluation set (:data:`EVAL_TIERS`, :func:`eval_scenes`): a fixed
  list of configurations and seeds, never trained on;
* the reconstruction benchmark's tiers (:data:`RECON_TIERS`, :func:`recon_scenes`);
* the training stream (:func:`training_scenes`, :func:`training_scene`): fresh
  scenes from a seed of the caller's choice;
* the calibration set (:func:`calibration_scene`): scenes drawn as the training
  stream's are, on which a model's visibility threshold is chosen.

Seeds come from :class:`numpy.random.SeedSequence` with a spawn key per set:
``(0, tier, index)`` under a fixed entropy for the evaluation set, ``(2, tier,
index)`` for the reconstruction tiers of their own, ``(3, index)`` for the
calibration set, and ``(1, index)`` under the caller's seed for a training
stream. No training seed reaches the others: a spawn key is part of the
sequence, and the training stream's starts with 1.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from cotracker3.synthetic.engine import SceneConfig, SyntheticScene, render_scene


# --------------------------------------------------------------------------
# The sets
# --------------------------------------------------------------------------

EVAL_TIERS: dict[str, SceneConfig] = {
    "static_camera": SceneConfig(camera="static", num_dynamic=4, num_exiting=1),
    "moving_camera": SceneConfig(camera="moving", num_dynamic=3, num_exiting=1),
    "heavy_occlusion": SceneConfig(camera="moving", num_dynamic=6, num_static=4, num_exiting=2, num_occluders=3),
    "fast_motion": SceneConfig(camera="moving", camera_speed=2.5, object_speed=3.0, num_dynamic=4, num_exiting=2),
}
"""Tiers of the held-out synthetic evaluation set (24 frames, 256x256, 256 points)."""

EVAL_VIDEOS_PER_TIER = 5
"""Scenes per tier in the held-out set."""

_EVAL_ENTROPY = 20261124
_TRAIN_KEY = 1
_CALIBRATION_KEY = 3


def eval_seed(tier: str, index: int) -> int:
    """The fixed seed of scene ``index`` of an evaluation tier (never used for training)."""
    if tier not in EVAL_TIERS:
        raise ValueError(f"unknown tier {tier!r}; tiers: {', '.join(EVAL_TIERS)}")
    ss = np.random.SeedSequence(_EVAL_ENTROPY, spawn_key=(0, list(EVAL_TIERS).index(tier), index))
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


RECON_TIERS: dict[str, SceneConfig] = {
    **{name: dataclasses.replace(cfg, dynamic_point_fraction=0.0) for name, cfg in EVAL_TIERS.items()},
    "nodal_pan": SceneConfig(camera="pan", num_dynamic=2, num_exiting=1, dynamic_point_fraction=0.0),
    "pan_walk": SceneConfig(camera="pan_walk", num_dynamic=2, num_exiting=1, dynamic_point_fraction=0.0),
    "mover_dominated": SceneConfig(camera="moving", num_dynamic=4, num_exiting=0, dynamic_point_fraction=0.6),
    "movers_3d": SceneConfig(camera="moving", camera_speed=1.4, num_dynamic=0, num_exiting=0, num_static=0,
                             movers=("slide", "circle", "fly", "cloth"), dynamic_point_fraction=0.5),
}
"""Tiers of the reconstruction benchmark (``benchmarks/reconstruction.py``): the
evaluation tiers with points sampled uniformly over the visible surfaces (as a
grid of queries samples a video), a nodal pan (no parallax anywhere), a pan
followed by a walk, a mover-dominated tier (60% of the points on four
independently moving objects, each smaller than the static scene), and
``movers_3d``: half the points on four movers of known kinds
(:data:`~cotracker3.synthetic.engine.MOVER_KINDS`: one sliding at constant
velocity, one circling on the floor, one flying, one waving cloth; about 75
points each of 600), labelled by
:attr:`~cotracker3.synthetic.engine.SyntheticScene.object_motion`, for the 3D
reconstruction of moving points. It has no props (the static scene is the
ground and the walls): with three, a prop near the camera hid three of the
movers for half the clip in one of its five scenes. New tiers go at the end: a
tier's seeds depend on its position."""


def recon_seed(tier: str, index: int) -> int:
    """The fixed seed of scene ``index`` of a reconstruction tier: the evaluation
    set's seed for the tiers the two share, seeds of their own for the others."""
    if tier in EVAL_TIERS:
        return eval_seed(tier, index)
    if tier not in RECON_TIERS:
        raise ValueError(f"unknown tier {tier!r}; tiers: {', '.join(RECON_TIERS)}")
    ss = np.random.SeedSequence(_EVAL_ENTROPY, spawn_key=(2, list(RECON_TIERS).index(tier), index))
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def recon_scenes(tiers: list[str] | None = None, videos_per_tier: int = EVAL_VIDEOS_PER_TIER,
                 **overrides) -> Iterator[SyntheticScene]:
    """Render the reconstruction benchmark's scenes (:data:`RECON_TIERS`), tier by tier.

    Args:
        tiers: subset of :data:`RECON_TIERS` (default: all, in order).
        videos_per_tier: scenes per tier.
        overrides: :class:`SceneConfig` fields to change; the seeds stay those of the set.

    Yields:
        :class:`SyntheticScene` named ``"<tier>/<index>"``.
    """
    for tier in tiers or list(RECON_TIERS):
        if tier not in RECON_TIERS:
            raise ValueError(f"unknown tier {tier!r}; tiers: {', '.join(RECON_TIERS)}")
        cfg = dataclasses.replace(RECON_TIERS[tier], **overrides)
        for i in range(videos_per_tier):
            yield render_scene(cfg, recon_seed(tier, i), name=f"{tier}/{i:02d}")


def eval_scenes(tiers: list[str] | None = None, videos_per_tier: int = EVAL_VIDEOS_PER_TIER,
                **overrides) -> Iterator[SyntheticScene]:
    """Render the held-out evaluation set, tier by tier.

    Args:
        tiers: subset of :data:`EVAL_TIERS` (default: all, in order).
        videos_per_tier: scenes per tier (the published set uses :data:`EVAL_VIDEOS_PER_TIER`).
        overrides: :class:`SceneConfig` fields to change (e.g. a smaller ``height``
            for quick tests); the seeds stay those of the set.

    Yields:
        :class:`SyntheticScene` named ``"<tier>/<index>"``.
    """
    for tier in tiers or list(EVAL_TIERS):
        if tier not in EVAL_TIERS:
            raise ValueError(f"unknown tier {tier!r}; tiers: {', '.join(EVAL_TIERS)}")
        cfg = dataclasses.replace(EVAL_TIERS[tier], **overrides)
        for i in range(videos_per_tier):
            yield render_scene(cfg, eval_seed(tier, i), name=f"{tier}/{i:02d}")


def training_scenes(seed: int = 0, config: SceneConfig | None = None, randomize: bool = True) -> Iterator[SyntheticScene]:
    """An endless stream of fresh scenes for training, disjoint from the evaluation seeds.

    Args:
        seed: seed of the stream (different seeds give different streams).
        config: base configuration (default: :class:`SceneConfig`).
        randomize: draw the camera mode, object counts and speeds per scene
            around ``config`` (covering the evaluation tiers' range).

    Yields:
        :class:`SyntheticScene`: ``training_scene(seed, 0, ...)``, ``training_scene(seed, 1, ...)``, ...
    """
    k = 0
    while True:
        yield training_scene(seed, k, config, randomize)
        k += 1


def training_scene(seed: int, index: int, config: SceneConfig | None = None, randomize: bool = True) -> SyntheticScene:
    """Scene ``index`` of the training stream ``seed`` (see :func:`training_scenes`), rendered directly."""
    ss = np.random.SeedSequence(seed, spawn_key=(_TRAIN_KEY, index))
    return _drawn_scene(ss, config, randomize, name=f"train/{seed}/{index}")


def calibration_scene(index: int, config: SceneConfig | None = None) -> SyntheticScene:
    """Scene ``index`` of the calibration set: drawn as a training stream's scenes are (camera,
    objects and speeds per scene around ``config``), from a seed space of its own that no
    training seed reaches (``track3d train --seed`` draws only spawn keys ``(1, index)``).

    The scene is named ``"calibration/<index>"``.
    """
    ss = np.random.SeedSequence(_EVAL_ENTROPY, spawn_key=(_CALIBRATION_KEY, index))
    return _drawn_scene(ss, config, True, name=f"calibration/{index}")


def _drawn_scene(ss: np.random.SeedSequence, config: SceneConfig | None, randomize: bool, name: str) -> SyntheticScene:
    """The scene of seed sequence ``ss``: its seed, and with ``randomize`` its configuration drawn around ``config``."""
    base = config or SceneConfig()
    scene_seed = int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))
    cfg = base
    if randomize:
        r = np.random.default_rng(ss.spawn(1)[0])
        n_dyn = int(r.integers(1, 7))
        cfg = dataclasses.replace(
            base,
            camera=str(r.choice(["moving", "static"], p=[0.75, 0.25])),
            camera_speed=float(r.uniform(0.5, 2.5)),
            object_speed=float(r.uniform(0.5, 3.0)),
            num_dynamic=n_dyn,
            num_exiting=int(r.integers(0, min(n_dyn, 2) + 1)),
            num_static=int(r.integers(0, 5)),
            num_occluders=int(r.integers(0, 4)),
        )
    return render_scene(cfg, scene_seed, name=name)
