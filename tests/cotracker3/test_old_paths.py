"""The module paths from before the subpackages still import, for one release, as the moved modules."""

from __future__ import annotations

import importlib
import sys

import pytest

MOVED = {
    "cotracker3.losses": "cotracker3.train.losses",
    "cotracker3.augment": "cotracker3.train.augment",
    "cotracker3.training": "cotracker3.train.loop",
    "cotracker3.pseudo_label": "cotracker3.train.pseudo_label",
    "cotracker3.tapvid": "cotracker3.eval.tapvid",
    "cotracker3.datasets": "cotracker3.eval.datasets",
    "cotracker3.evaluation": "cotracker3.eval.scoring",
}


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_old_path_is_the_moved_module_with_a_warning(old, new, monkeypatch):
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)


def test_old_names_are_there():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from cotracker3 import evaluation, training

    assert training.SMALL_MODEL["latent_dim"] == 64 and callable(training.train)
    assert evaluation.BASELINE == "baseline" and callable(evaluation.calibrate_visibility)


def test_public_names_stay():
    import cotracker3

    for name in ("build_model", "from_pretrained", "load_checkpoint", "resolve_weights", "cache_dir", "REGISTRY",
                 "CoTracker3Offline", "CoTracker3Online", "ModelOutput", "Predictor", "OnlinePredictor",
                 "TrackingResult", "grid_points", "tracking_memory", "LucasKanadeTracker", "CoTrackerError",
                 "CheckpointError", "DatasetError", "InputError", "MemoryEstimateError", "QueryError",
                 "WeightsUnavailableError"):
        assert name in cotracker3.__all__ and hasattr(cotracker3, name), name
