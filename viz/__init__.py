"""viz: turns tracking and reconstruction results into things people look at.

Videos with tracks drawn on them (:func:`viz.overlay.write_overlay_video`);
Rerun recordings and Open3D / trimesh exports follow in later work.
"""
