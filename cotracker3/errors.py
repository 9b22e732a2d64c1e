"""Exceptions raised at the public boundaries of :mod:`cotracker3`.

They all derive from :class:`CoTrackerError`, so callers (the ``track3d``
command line among them) can report user mistakes in one line, without a
traceback, and let real bugs surface.
"""

from __future__ import annotations


class CoTrackerError(Exception):
    """Base class of every error caused by the caller's input."""


class QueryError(CoTrackerError, ValueError):
    """Query points, grid or mask arguments are invalid for the given video."""


class InputError(CoTrackerError, ValueError):
    """A video tensor has the wrong shape, dtype or too few frames."""


class CheckpointError(CoTrackerError, ValueError):
    """A checkpoint file is not a checkpoint, or does not fit the model."""


class WeightsUnavailableError(CoTrackerError, RuntimeError):
    """Weights are neither on disk nor downloadable (names the file, URL, cache)."""


class DatasetError(CoTrackerError, ValueError):
    """An evaluation dataset file is missing, unreadable or of the wrong structure."""


class MemoryEstimateError(CoTrackerError, MemoryError):
    """An offline run would need more memory than is available (says how much, and what to do)."""
