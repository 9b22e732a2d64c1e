"""track3d: turn an ordinary video into tracks (and, later, 3D trajectories) of its points.

Python API::

    import track3d
    result = track3d.track("video.mp4", grid=30)       # CoTracker3, offline
    result.tracks       # (T, N, 2) float32 pixels (x, y) of the source video
    result.visibility   # (T, N) bool
    result.confidence   # (T, N) float32
    result.save("out/tracks.npz")

The same as a command: ``track3d track video.mp4 --grid 30 --out out/``.
See :class:`track3d.tracking.TrackOptions` for every option.
"""

from track3d.errors import OutputError, Track3DError, USER_ERRORS, VideoError
from track3d.io import load_tracks
from track3d.tracking import TrackOptions, Tracks, track
from track3d.video import VideoInfo, iter_frames, probe, read_video

__version__ = "0.1.0"

__all__ = [
    "track",
    "Tracks",
    "TrackOptions",
    "load_tracks",
    "probe",
    "iter_frames",
    "read_video",
    "VideoInfo",
    "Track3DError",
    "VideoError",
    "OutputError",
    "USER_ERRORS",
]
