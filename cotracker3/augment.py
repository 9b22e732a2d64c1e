"""Old import path of :mod:`cotracker3.train.augment` (the training augmentations), kept for one release (0.1.x).

``import cotracker3.augment`` gives the module :mod:`cotracker3.train.augment` itself (the same
object, so attributes and patches are shared) with a :class:`DeprecationWarning`.
Import :mod:`cotracker3.train.augment` instead; this alias goes in the next release.
"""

import sys
import warnings

from cotracker3.train import augment as _moved

warnings.warn("cotracker3.augment moved to cotracker3.train.augment; the old path goes in the next release",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
