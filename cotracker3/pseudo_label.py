"""Old import path of :mod:`cotracker3.train.pseudo_label` (pseudo-label fine-tuning), kept for one release (0.1.x).

``import cotracker3.pseudo_label`` gives the module :mod:`cotracker3.train.pseudo_label` itself (the same
object, so attributes and patches are shared) with a :class:`DeprecationWarning`.
Import :mod:`cotracker3.train.pseudo_label` instead; this alias goes in the next release.
"""

import sys
import warnings

from cotracker3.train import pseudo_label as _moved

warnings.warn("cotracker3.pseudo_label moved to cotracker3.train.pseudo_label; the old path goes in the next release",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
