"""Old import path of :mod:`cotracker3.eval.scoring` (scoring trackers), kept for one release (0.1.x).

``import cotracker3.evaluation`` gives the module :mod:`cotracker3.eval.scoring` itself (the same
object, so attributes and patches are shared) with a :class:`DeprecationWarning`.
Import :mod:`cotracker3.eval.scoring` instead; this alias goes in the next release.
"""

import sys
import warnings

from cotracker3.eval import scoring as _moved

warnings.warn("cotracker3.evaluation moved to cotracker3.eval.scoring; the old path goes in the next release",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
