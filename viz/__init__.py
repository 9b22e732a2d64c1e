"""viz: turns tracking and reconstruction results into things people look at.

- :mod:`viz.overlay`: videos with tracks drawn on them
  (:func:`viz.overlay.write_overlay_video`).
- :mod:`viz.recording`: a Rerun recording (``.rrd``) of a reconstruction
  (:func:`viz.recording.write_recording`; its layout is in the module docstring).
- :mod:`viz.clouds`: colours of tracks from the video, Open3D point clouds,
  PLY and per-frame GLB exports (:func:`viz.clouds.sample_colors`,
  :func:`viz.clouds.point_cloud`, :func:`viz.clouds.write_ply`,
  :func:`viz.clouds.write_dynamic_glb`).

Nothing is imported here, so ``import viz`` stays cheap: Rerun and Open3D load
only with the module (Open3D only inside the functions) that needs them.
"""
