"""Old import path of :mod:`cotracker3.train.losses` (the training losses), kept for one release (0.1.x).

``import cotracker3.losses`` gives the module :mod:`cotracker3.train.losses` itself (the same
object, so attributes and patches are shared) with a :class:`DeprecationWarning`.
Import :mod:`cotracker3.train.losses` instead; this alias goes in the next release.
"""

import sys
import warnings

from cotracker3.train import losses as _moved

warnings.warn("cotracker3.losses moved to cotracker3.train.losses; the old path goes in the next release",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
