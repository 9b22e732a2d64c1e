"""Tests of viz.recording: a hand-built reconstruction written to .rrd and read back with Rerun."""

from __future__ import annotations

from collections import defaultdict

import cv2
import numpy as np
import pytest
import rerun as rr

from viz.recording import MOVING_COLOR, STATIC_TRACK_COLOR, reliability_colors, write_recording

T, N, W, H = 5, 6, 32, 24
K = np.array([[50.0, 0.0, 15.5], [0.0, 50.0, 11.5], [0.0, 0.0, 1.0]])
STATIC_POINTS = np.array([[-1.0, -1.0, 5.0], [1.0, -1.0, 5.0], [1.0, 1.0, 6.0], [-1.0, 1.0, 6.0]])
POINT_COLORS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 99, 199]], np.uint8)


def _scene() -> dict:
    """T=5 frames, N=6 tracks (0 and 1 move), a camera sliding along +x, frame 2 unregistered."""
    cam_from_world = np.tile(np.eye(4), (T, 1, 1))
    cam_from_world[:, 0, 3] = -0.5 * np.arange(T)  # Camera centre at (0.5 t, 0, 0).
    cam_from_world[2] = np.nan
    trajectories = np.full((T, N, 3), np.nan)
    trajectories[:, 2:] = STATIC_POINTS  # Static tracks: the same point every frame.
    trajectories[:, 0] = [[0.0, 0.1 * t, 4.0] for t in range(T)]  # Moves down.
    trajectories[:, 1] = [[1.0, 0.0, 3.0 + 0.2 * t] for t in range(T)]  # Moves away...
    trajectories[2, 1] = np.nan  # ...and is lost at frame 2.
    tracks = np.array([[[2.0 + 5 * n + t, 3.0 + 2 * n] for n in range(N)] for t in range(T)], np.float32)
    tracks[4, 3] = np.nan  # Unknown 2D position (flagged visible): not drawn.
    visibility = np.ones((T, N), bool)
    visibility[[1, 3], 5] = False
    is_dynamic = np.array([True, True, False, False, False, False])
    return dict(tracks=tracks, visibility=visibility, is_dynamic=is_dynamic,
                cam_from_world=cam_from_world, K=np.tile(K, (T, 1, 1)), points=STATIC_POINTS,
                point_colors=POINT_COLORS, trajectories=trajectories, frame_size=(W, H), fps=10.0)


def _frame(t: int) -> np.ndarray:
    return np.full((H, W, 3), (10 * t, 100, 200 - 10 * t), np.uint8)


def _read(path) -> dict[str, list[tuple[bool, dict]]]:
    """Every chunk of the recording as ``entity -> [(is_static, columns as lists)]``."""
    chunks = defaultdict(list)
    for chunk in rr.chunk.RrdReader(path).stream():
        chunks[chunk.entity_path].append((chunk.is_static, chunk.to_record_batch().to_pydict()))
    return chunks


def _rows(chunks, entity: str, component: str) -> dict[int, object]:
    """``frame -> value`` of one temporal component (the value: a list, one item per instance)."""
    out = {}
    for is_static, table in chunks[entity]:
        if component in table:
            assert not is_static
            for frame, value in zip(table["frame"], table[component]):
                if value is not None:
                    out[frame] = value
    return dict(sorted(out.items()))


def test_recording_layout_and_contents(tmp_path):
    scene = _scene()
    produced, reported = [], []

    def frames():
        for t in range(T):
            produced.append(t)
            yield _frame(t)

    def progress(done, total):
        reported.append((done, total, len(produced)))

    path = write_recording(tmp_path / "sub" / "rec.rrd", frames=frames(), tail=2, progress=progress,
                           **scene)
    assert path == tmp_path / "sub" / "rec.rrd" and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["rec.rrd"]  # No temporary left.
    # Frames were consumed one at a time, as the recording went.
    assert reported == [(t + 1, T, t + 1) for t in range(T)]

    schema = rr.chunk.RrdReader(path).store().schema()
    assert {"/world", "/world/camera", "/world/camera/image", "/world/camera/image/tracks",
            "/world/static_points", "/world/moving_points", "/world/moving_tails"} == set(
        schema.entity_paths())
    assert {c.name for c in schema.index_columns()} == {"frame", "time"}
    assert schema.column_for("/world/static_points", "Points3D:positions").is_static
    assert not schema.column_for("/world/moving_points", "Points3D:positions").is_static

    chunks = _read(path)
    frames_seen = {f for entity in chunks.values() for _, table in entity for f in table.get("frame", [])}
    assert frames_seen == set(range(T))
    times = {f: d for entity in chunks.values() for _, table in entity
             for f, d in zip(table.get("frame", []), table.get("time", []))}
    assert [times[t].total_seconds() for t in range(T)] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])

    # The world is declared RDF, once, statically.
    [(is_static, world)] = chunks["/world"]
    assert is_static and world["ViewCoordinates:xyz"] == [[[3, 2, 5]]]  # Right, Down, Forward.

    # One camera transform per registered frame, holding cam_from_world as ChildFromParent.
    translations = _rows(chunks, "/world/camera", "Transform3D:translation")
    assert list(translations) == [0, 1, 3, 4]
    for t, value in translations.items():
        assert value == [pytest.approx(scene["cam_from_world"][t, :3, 3])]
    relations = _rows(chunks, "/world/camera", "Transform3D:relation")
    assert all(v == [rr.TransformRelation.ChildFromParent.value] for v in relations.values())
    assert list(_rows(chunks, "/world/camera", "Clear:is_recursive")) == [2]  # The unregistered frame.
    pinholes = _rows(chunks, "/world/camera", "Pinhole:image_from_camera")
    assert list(pinholes) == [0, 1, 3, 4]
    shifted = K.copy()
    shifted[:2, 2] += 0.5  # Rerun's pixel centres are at +0.5.
    assert pinholes[0] == [pytest.approx(shifted.T.ravel())]  # Stored column-major.
    assert _rows(chunks, "/world/camera", "Pinhole:resolution")[3] == [[W, H]]
    assert _rows(chunks, "/world/camera", "Pinhole:camera_xyz")[0] == [[3, 2, 5]]

    # Static points: static, with their colours.
    [(is_static, cloud)] = chunks["/world/static_points"]
    assert is_static and "frame" not in cloud
    assert np.allclose(cloud["Points3D:positions"][0], STATIC_POINTS)
    assert np.array_equal(cloud["Points3D:colors"][0], [int.from_bytes(bytes([*c, 255]), "big")
                                                        for c in POINT_COLORS])

    # Moving points: the known ones each frame (track 1 is lost at frame 2).
    moving = _rows(chunks, "/world/moving_points", "Points3D:positions")
    assert [len(v) for v in moving.values()] == [2, 2, 1, 2, 2]
    assert np.allclose(moving[2], [[0.0, 0.2, 4.0]])
    assert np.allclose(moving[4], [[0.0, 0.4, 4.0], [1.0, 0.0, 3.8]])

    # Tails over the last 2 frames, broken where track 1 is unknown.
    tails = _rows(chunks, "/world/moving_tails", "LineStrips3D:strips")
    assert [len(v) for v in tails.values()] == [0, 2, 3, 2, 3]
    assert np.allclose(tails[4][-1], [[1.0, 0.0, 3.6], [1.0, 0.0, 3.8]])

    # 2D tracks: visible and finite only, shifted by half a pixel, coloured by motion.
    positions = _rows(chunks, "/world/camera/image/tracks", "Points2D:positions")
    assert [len(v) for v in positions.values()] == [6, 5, 6, 5, 5]
    assert np.allclose(positions[0], scene["tracks"][0] + 0.5)
    colors = _rows(chunks, "/world/camera/image/tracks", "Points2D:colors")[0]
    packed = [int.from_bytes(bytes([*c, 255]), "big") for c in (MOVING_COLOR, STATIC_TRACK_COLOR)]
    assert colors == [packed[0]] * 2 + [packed[1]] * 4

    # Images: one JPEG per frame, decoding to the frame.
    blobs = _rows(chunks, "/world/camera/image", "EncodedImage:blob")
    assert list(blobs) == list(range(T))
    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(bytes(blobs[3][0]), np.uint8), cv2.IMREAD_COLOR),
                           cv2.COLOR_BGR2RGB)
    assert decoded.shape == (H, W, 3)
    assert np.abs(decoded.astype(int) - _frame(3)).max() <= 3


def test_without_frames_raw_images_and_no_tails(tmp_path):
    scene = _scene()
    path = write_recording(tmp_path / "plain.rrd", tail=0, **scene)
    entities = set(rr.chunk.RrdReader(path).store().schema().entity_paths())
    assert "/world/camera/image" not in entities and "/world/moving_tails" not in entities
    assert "/world/camera/image/tracks" in entities

    path = write_recording(tmp_path / "raw.rrd", frames=[_frame(t) for t in range(T)],
                           jpeg_quality=None, **scene)
    buffers = _rows(_read(path), "/world/camera/image", "Image:buffer")
    assert np.array_equal(np.asarray(buffers[4][0], np.uint8).reshape(H, W, 3), _frame(4))


def test_bad_input_raises_and_leaves_nothing(tmp_path):
    scene = _scene()
    with pytest.raises(ValueError, match="visibility must have shape"):
        write_recording(tmp_path / "a.rrd", **{**scene, "visibility": scene["visibility"][:, :3]})
    with pytest.raises(ValueError, match="visibility must be a boolean"):
        write_recording(tmp_path / "a.rrd", **{**scene, "visibility": scene["visibility"].astype(float)})
    with pytest.raises(ValueError, match="trajectories must have shape"):
        write_recording(tmp_path / "a.rrd", **{**scene, "trajectories": scene["trajectories"][:, :2]})
    with pytest.raises(ValueError, match="K must have shape"):
        write_recording(tmp_path / "a.rrd", **{**scene, "K": np.eye(4)})
    with pytest.raises(ValueError, match="point_colors must have shape"):
        write_recording(tmp_path / "a.rrd", **{**scene, "point_colors": POINT_COLORS[:2]})
    with pytest.raises(ValueError, match="fps"):
        write_recording(tmp_path / "a.rrd", **{**scene, "fps": 0.0})
    with pytest.raises(ValueError, match="got 3 frames"):
        write_recording(tmp_path / "a.rrd", frames=(_frame(t) for t in range(3)), **scene)
    with pytest.raises(ValueError, match="frame 0 must be"):
        write_recording(tmp_path / "a.rrd", frames=[np.zeros((H, W + 1, 3), np.uint8)] * T, **scene)
    assert list(tmp_path.iterdir()) == []


def test_reliability_colours_stores_and_hides_moving_points(tmp_path):
    scene = _scene()
    reliability = np.array([0.1, 0.8, 1.0, 1.0, 0.0, 0.0])  # Tracks 0 and 1 move.

    def moving_columns(path):
        chunks = _read(path)
        columns = {}
        for _, table in chunks["/world/moving_points"]:
            for key in table:
                name = key.rpartition(":")[2]
                if name in ("positions", "colors", "reliability", "track"):
                    columns[name] = _rows(chunks, "/world/moving_points", key)
        tails = _rows(chunks, "/world/moving_tails", "LineStrips3D:strips")
        return columns, tails

    columns, _ = moving_columns(write_recording(tmp_path / "all.rrd", tail=2, reliability=reliability, **scene))
    assert [len(v) for v in columns["positions"].values()] == [2, 2, 1, 2, 2]
    assert columns["track"][0] == [0, 1] and columns["track"][2] == [0]  # Track 1 is lost at frame 2.
    assert columns["reliability"][0] == pytest.approx([0.1, 0.8])
    packed = [int.from_bytes(bytes([*c, 255]), "big") for c in reliability_colors(reliability[:2])]
    assert columns["colors"][0] == packed

    columns, tails = moving_columns(write_recording(tmp_path / "some.rrd", tail=2, reliability=reliability,
                                                    min_reliability=0.5, **scene))
    assert [len(v) for v in columns["positions"].values()] == [1, 1, 0, 1, 1]  # Track 0 is hidden.
    assert np.allclose(columns["positions"][4], [[1.0, 0.0, 3.8]]) and columns["track"][4] == [1]
    assert [len(v) for v in tails.values()] == [0, 1, 1, 0, 1]  # Only track 1's tail.
    positions = _rows(_read(tmp_path / "some.rrd"), "/world/camera/image/tracks", "Points2D:positions")
    assert [len(v) for v in positions.values()] == [6, 5, 6, 5, 5]  # 2D tracks are all still drawn.

    with pytest.raises(ValueError, match="min_reliability must be in"):
        write_recording(tmp_path / "a.rrd", reliability=reliability, min_reliability=2.0, **scene)
    with pytest.raises(ValueError, match="reliability must have shape"):
        write_recording(tmp_path / "a.rrd", reliability=reliability[:3], **scene)
    with pytest.raises(ValueError, match="needs the tracks' reliability"):
        write_recording(tmp_path / "a.rrd", min_reliability=0.5, **scene)


def test_reliability_colour_map():
    colors = reliability_colors(np.array([0.0, 0.25, 0.5, 1.0, np.nan, 7.0]))
    assert colors.dtype == np.uint8 and colors.shape == (6, 3)
    assert colors[0].tolist() == [220, 40, 40] and colors[2].tolist() == [255, 170, 0]
    assert colors[3].tolist() == [40, 200, 80] and colors[4].tolist() == colors[0].tolist()  # NaN: 0
    assert colors[5].tolist() == colors[3].tolist()  # clipped to 1
    assert colors[1].tolist() == [238, 105, 20]  # halfway between red and amber
