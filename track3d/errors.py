"""Exceptions raised at the public boundaries of :mod:`track3d`.

Every mistake a user can make is a :class:`Track3DError` or one of the
:class:`cotracker3.errors.CoTrackerError` family; :data:`USER_ERRORS` names
both so the command line can turn them into a one-line message and a
non-zero exit code, without a traceback.
"""

from __future__ import annotations

from cotracker3.errors import CoTrackerError


class Track3DError(Exception):
    """Base class of every track3d error caused by the user's input."""


class VideoError(Track3DError, ValueError):
    """A video could not be read: missing, not a video, truncated or empty."""


class OutputError(Track3DError, ValueError):
    """An output location cannot be written (exists, not a folder, ...)."""


class ResultError(Track3DError, ValueError):
    """A result file cannot be read: missing, not the expected format, keys missing."""


USER_ERRORS: tuple[type[Exception], ...] = (Track3DError, CoTrackerError)
"""Exception types that mean "the input was wrong", not "track3d has a bug"."""
