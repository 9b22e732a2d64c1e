"""track3d: turn an ordinary video into 3D trajectories of its points.

Python API::

    import track3d
    result = track3d.reconstruct("video.mp4", grid=50)
    result.cam_from_world   # (T, 4, 4) camera poses (OpenCV), NaN where not solved
    result.points           # (M, 3) the static point cloud
    result.trajectories     # (T, N, 3) world position of every tracked point per frame
    result.is_dynamic       # (N,) the point moves on its own
    result.save("out/")     # the result folder; track3d.load("out/") reads it back

    tracks = track3d.track("video.mp4", grid=30)   # 2D only: tracks, visibility, confidence

The same as commands: ``track3d reconstruct video.mp4 --grid 50 --out out/``,
``track3d view out/``, ``track3d track video.mp4 --out tracks/``. See
:class:`track3d.reconstruction.ReconstructOptions` and
:class:`track3d.tracking.TrackOptions` for every option.
"""

from track3d.errors import OutputError, Track3DError, USER_ERRORS, VideoError
from track3d.io import load_tracks
from track3d.reconstruction import ReconstructOptions, Result, _version, load, reconstruct
from track3d.tracking import TrackOptions, Tracks, track
from track3d.video import VideoInfo, iter_frames, probe, read_video

__version__ = _version()
"""The installed version (package metadata: ``pyproject.toml``, one source)."""


__all__ = [
    "reconstruct",
    "Result",
    "ReconstructOptions",
    "load",
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
