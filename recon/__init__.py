"""recon: from 2D tracks to cameras, a static point cloud and 3D trajectories.

Pure geometry on arrays (numpy, scipy, pycolmap; no torch). The layer is being
built; see the project's issues. Nothing is exported yet.
"""

__all__: list[str] = []
