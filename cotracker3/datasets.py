"""Old import path of :mod:`cotracker3.eval.datasets` (the benchmark dataset readers), kept for one release (0.1.x).

``import cotracker3.datasets`` gives the module :mod:`cotracker3.eval.datasets` itself (the same
object, so attributes and patches are shared) with a :class:`DeprecationWarning`.
Import :mod:`cotracker3.eval.datasets` instead; this alias goes in the next release.
"""

import sys
import warnings

from cotracker3.eval import datasets as _moved

warnings.warn("cotracker3.datasets moved to cotracker3.eval.datasets; the old path goes in the next release",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
