"""Old import path of :mod:`cotracker3.train.loop` (the supervised training loop), kept for one release (0.1.x).

``import cotracker3.training`` gives the module :mod:`cotracker3.train.loop` itself (the same
object, so attributes and patches are shared) with a :class:`DeprecationWarning`.
Import :mod:`cotracker3.train.loop` instead; this alias goes in the next release.
"""

import sys
import warnings

from cotracker3.train import loop as _moved

warnings.warn("cotracker3.training moved to cotracker3.train.loop; the old path goes in the next release",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
