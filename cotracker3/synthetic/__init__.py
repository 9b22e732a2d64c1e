"""The synthetic scene engine: rendered 3D videos with complete ground truth.

* :mod:`~cotracker3.synthetic.engine`: a room with textured, static and moving
  primitives (and movers of named kinds, a waving cloth among them) seen by a
  moving or still camera, ray-cast with torch on the CPU
  (:func:`render_scene`), with 2D tracks, visibility, 3D trajectories, depth,
  cameras and segmentation;
* :mod:`~cotracker3.synthetic.sets`: the named sets of scenes and their seeds:
  the held-out evaluation set, the reconstruction tiers, the training stream
  and the calibration set.

Their public names are all here (``from cotracker3 import synthetic``,
``synthetic.render_scene``, ``synthetic.eval_scenes``, ...). Nothing in the
inference core imports this package.
"""

from cotracker3.synthetic.engine import (BOX, CAMERA_MODES, CLOTH, MOVER_KINDS, PHOTOS, QUAD, SPHERE, TEXTURE_SIZE,
                                         SceneConfig, SyntheticScene, camera_centres, project, render_scene)
from cotracker3.synthetic.sets import (EVAL_TIERS, EVAL_VIDEOS_PER_TIER, RECON_TIERS, calibration_scene, eval_scenes,
                                       eval_seed, recon_scenes, recon_seed, training_scene, training_scenes)

__all__ = [
    "SceneConfig",
    "SyntheticScene",
    "render_scene",
    "project",
    "camera_centres",
    "QUAD",
    "BOX",
    "SPHERE",
    "CLOTH",
    "TEXTURE_SIZE",
    "PHOTOS",
    "CAMERA_MODES",
    "MOVER_KINDS",
    "EVAL_TIERS",
    "EVAL_VIDEOS_PER_TIER",
    "eval_seed",
    "eval_scenes",
    "RECON_TIERS",
    "recon_seed",
    "recon_scenes",
    "training_scenes",
    "training_scene",
    "calibration_scene",
]
