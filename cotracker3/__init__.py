"""cotracker3: dense, long-range 2D point tracking with CoTracker3.

The public contract::

    import cotracker3
    model = cotracker3.build_model("cotracker3-offline")   # architecture only, no I/O
    model.load_state_dict(sd, strict=True)                  # or cotracker3.from_pretrained(...)
    coords, vis, conf = model(video, queries, iters=4)[:3]  # video (B,T,3,H,W) 0..255, queries (B,N,3)
    out = cotracker3.Predictor(model)(video, grid_size=20)  # out.tracks (B,T,N,2) px, out.visibility, out.confidence
    online = cotracker3.OnlinePredictor(cotracker3.build_model("cotracker3-online"))

The inference core, which imports nothing else of the package:
:mod:`~cotracker3.model` (the architecture), :mod:`~cotracker3.predictor`
(pre/post-processing, offline and streaming trackers), :mod:`~cotracker3.weights`
(registry, cache, download, safe loading), :mod:`~cotracker3.embedded` (the model
shipped inside the package), :mod:`~cotracker3.errors`. Beside the predictors,
:mod:`~cotracker3.baseline` (the classical Lucas-Kanade tracker, same API; it also
gives the starting tracks of a model built with ``initialisation="baseline"``).
Then, each in its own subpackage: :mod:`cotracker3.train` (losses, augmentations,
training loop, pseudo-labelling, embedded export), :mod:`cotracker3.eval` (TAP-Vid
metrics, dataset readers, scoring) and :mod:`cotracker3.synthetic` (rendered scenes
with full 2D/3D ground truth).

The old module paths ``cotracker3.training``, ``losses``, ``augment``,
``pseudo_label``, ``tapvid``, ``datasets`` and ``evaluation`` still import (the
moved module itself, with a ``DeprecationWarning``) for one release.
"""

from cotracker3.baseline import LucasKanadeTracker
from cotracker3.errors import (CheckpointError, CoTrackerError, DatasetError, InputError, MemoryEstimateError,
                               QueryError, WeightsUnavailableError)
from cotracker3.model import CoTracker3Offline, CoTracker3Online, ModelOutput
from cotracker3.predictor import OnlinePredictor, Predictor, TrackingResult, grid_points, tracking_memory
from cotracker3.weights import REGISTRY, build_model, cache_dir, from_pretrained, load_checkpoint, resolve_weights

__all__ = [
    "build_model",
    "from_pretrained",
    "load_checkpoint",
    "resolve_weights",
    "cache_dir",
    "REGISTRY",
    "CoTracker3Offline",
    "CoTracker3Online",
    "ModelOutput",
    "Predictor",
    "OnlinePredictor",
    "TrackingResult",
    "grid_points",
    "tracking_memory",
    "LucasKanadeTracker",
    "CoTrackerError",
    "CheckpointError",
    "DatasetError",
    "InputError",
    "MemoryEstimateError",
    "QueryError",
    "WeightsUnavailableError",
]
