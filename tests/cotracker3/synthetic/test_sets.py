"""The named scene sets and their seeds: evaluation, training stream, calibration."""

from __future__ import annotations

import pytest

from cotracker3 import synthetic
from cotracker3.synthetic import EVAL_TIERS, SceneConfig

SMALL = dict(num_frames=8, height=48, width=64, num_points=96, supersample=1)
TINY = SceneConfig(num_frames=2, height=16, width=16, num_points=4, supersample=1)


def test_eval_seeds_are_fixed_distinct_and_not_used_for_training():
    seeds = [synthetic.eval_seed(t, i) for t in EVAL_TIERS for i in range(synthetic.EVAL_VIDEOS_PER_TIER)]
    assert len(set(seeds)) == len(seeds)
    assert seeds == [synthetic.eval_seed(t, i) for t in EVAL_TIERS for i in range(synthetic.EVAL_VIDEOS_PER_TIER)]
    with pytest.raises(ValueError, match="unknown tier"):
        synthetic.eval_seed("underwater", 0)
    stream = synthetic.training_scenes(seed=0, config=SceneConfig(num_frames=2, height=16, width=16,
                                                                  num_points=4, supersample=1))
    train = [next(stream).seed for _ in range(20)]
    assert len(set(train)) == 20 and not set(train) & set(seeds)
    other = synthetic.training_scenes(seed=1, config=SceneConfig(num_frames=2, height=16, width=16,
                                                                 num_points=4, supersample=1))
    assert next(other).seed not in train


def test_eval_scenes_are_named_by_tier():
    names = [s.name for s in synthetic.eval_scenes(["static_camera"], videos_per_tier=2,
                                                   **{**SMALL, "num_frames": 2})]
    assert names == ["static_camera/00", "static_camera/01"]
    with pytest.raises(ValueError):
        next(synthetic.eval_scenes(["nope"]))


def test_training_scenes_are_those_of_before_the_sets_moved():
    # Seeds and drawn configurations of the training stream, pinned: runs resume and reproduce.
    a, b = synthetic.training_scene(0, 0, TINY), synthetic.training_scene(0, 3, TINY)
    assert (a.seed, a.name, b.seed) == (5769891174451087230, "train/0/0", 8112235649061861895)
    assert (a.config.camera, a.config.num_dynamic, a.config.num_static, a.config.num_occluders) == ("moving", 6, 2, 1)
    assert (b.config.camera, b.config.num_dynamic, b.config.num_static, b.config.num_occluders) == ("static", 4, 4, 0)
    assert b.config.camera_speed == pytest.approx(1.974681, abs=1e-6)


def test_no_training_seed_reaches_the_calibration_set():
    calibration = [synthetic.calibration_scene(i, TINY) for i in range(4)]
    assert [s.name for s in calibration] == [f"calibration/{i}" for i in range(4)]
    seeds = {s.seed for s in calibration}
    assert len(seeds) == 4
    evaluation = {synthetic.eval_seed(t, i) for t in EVAL_TIERS for i in range(synthetic.EVAL_VIDEOS_PER_TIER)}
    assert not seeds & evaluation
    # It used to be training stream 9001: 'track3d train --seed 9001' trained on it.
    for seed in (0, 1, 9001, 20261124):
        assert not seeds & {synthetic.training_scene(seed, i, TINY).seed for i in range(4)}
    # Drawn as training scenes are: cameras, objects and speeds vary from scene to scene.
    assert len({(s.config.camera, s.config.num_dynamic, s.config.camera_speed) for s in calibration}) == 4
