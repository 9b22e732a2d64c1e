"""recon: from 2D tracks to cameras, a static point cloud and 3D trajectories.

Pure geometry on arrays (numpy, scipy, pycolmap; no torch)::

    import recon
    rec = recon.reconstruct(tracks, visibility, image_size=(W, H), confidence=None,
                            intrinsics=None, depth=None, options=None)
    rec.cam_from_world  # (T,4,4) float64, NaN for frames not solved
    rec.K               # (T,3,3)
    rec.registered      # (T,) bool
    rec.camera_kind     # (T,) "full", "rotation" (centre held fixed), "identity" or "none"
    rec.groups          # (N,) rigid motion group: 0 static scene, 1.. movers, -1 none
    rec.trajectories    # (T,N,3) world coordinates, NaN where unknown
    rec.is_dynamic      # (N,) bool
    rec.reliability     # (N,) float in [0,1]
    rec.status          # what was solved, and why anything was not
    recon.export_colmap(rec, "out/colmap")

Modules: :mod:`~recon.pipeline` (the stages), :mod:`~recon.separation`
(rigid groups, static/moving), :mod:`~recon.rotation` (rotation-only
cameras), :mod:`~recon.colmap` (every pycolmap call), :mod:`~recon.geometry`
(projection, alignment, camera metrics).
"""

from __future__ import annotations

from pathlib import Path

from recon.geometry import camera_errors, umeyama
from recon.pipeline import Reconstruction, ReconOptions, Status, reconstruct


def export_colmap(rec: Reconstruction, path: str | Path, *, text: bool = False) -> Path:
    """Write the COLMAP model (cameras, images, points3D) of a reconstruction.

    Raises:
        ValueError: no camera was solved (there is no model to write).
    """
    from recon.colmap import write_model

    if rec.colmap_model is None:
        raise ValueError(f"no COLMAP model to export: {rec.status.cameras} ({rec.status.messages[-1:]})")
    return write_model(rec.colmap_model, path, text=text)


__all__ = ["reconstruct", "Reconstruction", "ReconOptions", "Status", "export_colmap", "camera_errors", "umeyama"]
