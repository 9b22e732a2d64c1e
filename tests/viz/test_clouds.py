"""Tests of viz.clouds: colours from frames, Open3D clouds, PLY and GLB round trips."""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest
import trimesh

from viz.clouds import point_cloud, sample_colors, write_dynamic_glb, write_ply

H, W = 10, 12


def _frames_with(pixels: dict[tuple[int, int, int], tuple[int, int, int]], num_frames: int):
    """A generator of black frames with ``(t, x, y) -> RGB`` painted in."""
    for t in range(num_frames):
        frame = np.zeros((H, W, 3), np.uint8)
        for (ft, x, y), rgb in pixels.items():
            if ft == t:
                frame[y, x] = rgb
        yield frame


def test_sample_colors_median_of_visible_pixels_inside_the_frame():
    tracks = np.array([
        [[2.4, 3.6], [5.0, 5.0], [1.0, 1.0], [-0.6, 2.0], [2.5, 0.49]],
        [[2.4, 3.6], [5.0, 5.0], [1.0, 1.0], [np.nan, np.nan], [2.5, 0.49]],
        [[2.4, 3.6], [5.0, 5.0], [1.0, 1.0], [3.0, 9.6], [2.5, 0.49]],
        [[2.4, 3.6], [11.6, 5.0], [1.0, 1.0], [3.0, 2.0], [2.5, 0.49]],
    ])  # (T=4, N=5, 2)
    visibility = np.ones((4, 5), bool)
    visibility[0, 1] = False  # Track 1 hidden in frame 0 (its pixel there is a decoy).
    visibility[:, 2] = False  # Track 2 never visible.
    visibility[3, 3] = False  # Track 3: outside (x -> -1, y -> 10), NaN, or hidden.
    pixels = {
        # Track 0 at pixel (2, 4): four values, median of the middle two (20 and 30).
        (0, 2, 4): (10, 0, 7), (1, 2, 4): (20, 50, 7), (2, 2, 4): (200, 60, 7), (3, 2, 4): (30, 70, 8),
        # Track 1 at pixel (5, 5): frame 0 hidden, frame 3 at x=11.6 -> 12, outside the frame.
        (0, 5, 5): (255, 255, 255), (1, 5, 5): (40, 41, 42), (2, 5, 5): (60, 61, 62),
        (3, 11, 5): (255, 255, 255),
        (0, 1, 1): (255, 0, 0),  # Track 2 is never visible, whatever is there.
        (3, 3, 2): (255, 0, 0),  # Where track 3 is in frame 3, hidden.
        # Track 4 at (2.5, 0.49): halves round up, so pixel (3, 0).
        (0, 3, 0): (1, 2, 3), (1, 3, 0): (1, 2, 3), (2, 3, 0): (1, 2, 3), (3, 3, 0): (1, 2, 3),
    }
    colors = sample_colors(_frames_with(pixels, 4), tracks, visibility)
    assert colors.dtype == np.uint8 and colors.shape == (5, 3)
    assert colors[0].tolist() == [25, 55, 7]  # R (20+30)/2, G (50+60)/2, B (7+7)/2.
    assert colors[1].tolist() == [50, 51, 52]  # Mean of the two middle (only) samples.
    assert colors[2].tolist() == [128, 128, 128]
    assert colors[3].tolist() == [128, 128, 128]
    assert colors[4].tolist() == [1, 2, 3]

    picked = sample_colors(_frames_with(pixels, 4), tracks, visibility, which=np.array([4, 0]))
    assert picked.tolist() == [[1, 2, 3], [25, 55, 7]]
    mask = np.array([False, True, False, False, True])
    assert sample_colors(_frames_with(pixels, 4), tracks, visibility, which=mask).tolist() == [
        [50, 51, 52], [1, 2, 3]]
    assert sample_colors(_frames_with(pixels, 4), tracks, visibility, which=[]).shape == (0, 3)


def test_sample_colors_rejects_bad_input():
    tracks = np.zeros((2, 3, 2))
    visibility = np.ones((2, 3), bool)
    with pytest.raises(ValueError, match="got 1 frames"):
        sample_colors(_frames_with({}, 1), tracks, visibility)
    with pytest.raises(ValueError, match="more frames"):
        sample_colors(_frames_with({}, 3), tracks, visibility)
    with pytest.raises(ValueError, match="visibility must be a boolean"):
        sample_colors(_frames_with({}, 2), tracks, visibility.astype(int))
    with pytest.raises(ValueError, match="outside"):
        sample_colors(_frames_with({}, 2), tracks, visibility, which=[3])


def test_point_cloud_drops_nan_rows_and_keeps_their_colours():
    points = np.array([[0.0, 0, 0], [np.nan, 1, 1], [1, 2, 3], [4, 5, np.inf], [7, 8, 9]])
    colors = np.array([[255, 0, 0], [1, 1, 1], [0, 255, 0], [2, 2, 2], [0, 0, 51]], np.uint8)
    cloud = point_cloud(points, colors)
    assert np.array_equal(np.asarray(cloud.points), points[[0, 2, 4]])
    assert np.allclose(np.asarray(cloud.colors), colors[[0, 2, 4]] / 255.0)
    assert not cloud.has_normals()
    floats = point_cloud(points, colors / 255.0)  # Float colours are taken as 0-1.
    assert np.allclose(np.asarray(floats.colors), colors[[0, 2, 4]] / 255.0)
    assert len(point_cloud(np.full((3, 3), np.nan)).points) == 0
    with pytest.raises(ValueError, match="colors must have shape"):
        point_cloud(points, colors[:2])


def test_outlier_removal_voxels_and_normals():
    grid = np.stack(np.meshgrid(np.arange(10) * 0.1, np.arange(10) * 0.1, [0.0]), -1).reshape(-1, 3)
    with_outlier = np.concatenate([grid, [[100.0, 100.0, 100.0]]])
    assert len(point_cloud(with_outlier).points) == 101
    cleaned = point_cloud(with_outlier, remove_outliers=True)
    assert len(cleaned.points) == 100 and np.asarray(cleaned.points).max() < 1.0

    rng = np.random.default_rng(0)
    cluster = rng.uniform(0.0, 0.01, (1000, 3))
    dense = np.concatenate([cluster, [[1.0, 1.0, 1.0]]])
    colors = np.concatenate([np.full((1000, 3), 100, np.uint8), [[200, 200, 200]]])
    down = point_cloud(dense, colors, voxel_size=0.1)
    order = np.argsort(np.asarray(down.points)[:, 0])
    assert np.allclose(np.asarray(down.points)[order], [cluster.mean(axis=0), [1.0, 1.0, 1.0]])
    assert np.allclose(np.asarray(down.colors)[order], [[100 / 255] * 3, [200 / 255] * 3])

    plane = point_cloud(grid, normals=True)
    normals = np.asarray(plane.normals)
    assert plane.has_normals() and np.allclose(np.abs(normals), [0.0, 0.0, 1.0], atol=1e-6)
    with pytest.raises(ValueError, match="voxel_size"):
        point_cloud(grid, voxel_size=0.0)


def test_write_ply_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    points = rng.normal(size=(50, 3)) * 10
    points[7] = np.nan
    colors = rng.integers(0, 256, (50, 3), dtype=np.uint8)
    path = write_ply(tmp_path / "cloud.ply", points, colors)
    assert path == tmp_path / "cloud.ply" and [p.name for p in tmp_path.iterdir()] == ["cloud.ply"]
    assert b"format binary_little_endian" in path.read_bytes()[:200]
    back = o3d.io.read_point_cloud(str(path))
    keep = np.arange(50) != 7
    assert np.allclose(np.asarray(back.points), points[keep], atol=1e-9)
    assert np.abs(np.asarray(back.colors) - colors[keep] / 255.0).max() <= 1 / 255 + 1e-12

    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_ply(tmp_path / "missing" / "cloud.ply", points, colors)
    with pytest.raises(ValueError, match="no finite point"):
        write_ply(tmp_path / "empty.ply", np.full((2, 3), np.nan))
    assert not (tmp_path / "empty.ply").exists()


def _load_nodes(path) -> dict[str, np.ndarray | None]:
    """``node name -> (K, 3) points`` (None for a node without geometry) of a GLB file."""
    scene = trimesh.load(path)
    assert isinstance(scene, trimesh.Scene)
    out = {}
    for node in scene.graph.nodes:
        if node.startswith("frame_"):
            _, geometry = scene.graph[node]
            out[node] = None if geometry is None else scene.geometry[geometry]
    return dict(sorted(out.items()))


def test_write_dynamic_glb_one_node_per_frame(tmp_path):
    T, N = 4, 5
    trajectories = np.arange(T * N * 3, dtype=np.float64).reshape(T, N, 3) / 10
    is_dynamic = np.array([True, False, True, True, False])
    trajectories[1, 2] = np.nan  # Frame 1: tracks 0 and 3 known.
    trajectories[2, [0, 2, 3]] = np.nan  # Frame 2: no moving point known.
    trajectories[:, 1] = np.nan  # A static track's NaN does not matter.
    colors = np.array([[255, 0, 0], [9, 9, 9], [0, 255, 0], [0, 0, 255], [9, 9, 9]], np.uint8)

    path = write_dynamic_glb(tmp_path / "moving.glb", trajectories, is_dynamic, colors)
    nodes = _load_nodes(path)
    assert list(nodes) == [f"frame_{t:06d}" for t in range(T)]
    assert [0 if g is None else len(g.vertices) for g in nodes.values()] == [3, 2, 0, 3]
    cloud = nodes["frame_000001"]
    assert isinstance(cloud, trimesh.PointCloud)
    assert np.allclose(cloud.vertices, trajectories[1, [0, 3]], atol=1e-5)
    assert np.array_equal(np.asarray(cloud.colors)[:, :3], colors[[0, 3]])
    assert np.allclose(nodes["frame_000003"].vertices, trajectories[3, [0, 2, 3]], atol=1e-5)

    # Named by the source video's frame numbers (every 5th frame from 10); default orange.
    path = write_dynamic_glb(tmp_path / "strided.glb", trajectories, is_dynamic,
                             frame_indices=np.array([10, 15, 20, 25]))
    nodes = _load_nodes(path)
    assert list(nodes) == ["frame_000010", "frame_000015", "frame_000020", "frame_000025"]
    assert nodes["frame_000020"] is None and len(nodes["frame_000015"].vertices) == 2
    assert np.array_equal(np.asarray(nodes["frame_000010"].colors)[0, :3], [255, 110, 0])

    with pytest.raises(ValueError, match="frame_indices"):
        write_dynamic_glb(tmp_path / "bad.glb", trajectories, is_dynamic, frame_indices=[0, 1, 2])
    with pytest.raises(ValueError, match="frame_indices"):
        write_dynamic_glb(tmp_path / "bad.glb", trajectories, is_dynamic, frame_indices=[0, 1, 1, 2])
    with pytest.raises(ValueError, match="is_dynamic"):
        write_dynamic_glb(tmp_path / "bad.glb", trajectories, is_dynamic[:3])
    with pytest.raises(FileNotFoundError):
        write_dynamic_glb(tmp_path / "no" / "bad.glb", trajectories, is_dynamic)
