"""Old import path of :mod:`cotracker3.eval.tapvid` (the TAP-Vid metrics), kept for one release (0.1.x).

``import cotracker3.tapvid`` gives the module :mod:`cotracker3.eval.tapvid` itself (the same
object, so attributes and patches are shared) with a :class:`DeprecationWarning`.
Import :mod:`cotracker3.eval.tapvid` instead; this alias goes in the next release.
"""

import sys
import warnings

from cotracker3.eval import tapvid as _moved

warnings.warn("cotracker3.tapvid moved to cotracker3.eval.tapvid; the old path goes in the next release",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
