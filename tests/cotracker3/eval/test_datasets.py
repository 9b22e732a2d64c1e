"""Tests of cotracker3.eval.datasets: the readers of the published evaluation formats.

Every test writes small files in the published layouts into ``tmp_path`` (a
few frames of a few pixels, a few points) and checks that the readers return
exactly that content, converted to our convention: ``px = norm * size - 0.5``
for TAP-Vid coordinates, visibility = not occluded, time-major arrays.
"""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cotracker3.eval import datasets
from cotracker3.eval.datasets import (
    EvalVideo,
    detect_format,
    read_dataset,
    read_davis,
    read_dynamic_replica,
    read_kinetics,
    read_rgb_stacking,
    read_robotap,
    resize_to_eval,
)
from cotracker3.errors import DatasetError

T, H, W = 3, 4, 6

# Normalised points (N=2, T=3) chosen so that norm * (6, 4) is exact; the
# expected pixels are worked out by hand: px = norm * (W, H) - 0.5.
POINTS = np.array(
    [
        [[0.5, 0.25], [0.0, 0.0], [1.0, 1.0]],
        [[0.25, 0.5], [0.75, 0.125], [0.5, 0.75]],
    ]
)
EXPECTED_TRACKS = np.array(  # (T, N, 2)
    [
        [[2.5, 0.5], [1.0, 1.5]],  # (0.5*6-.5, .25*4-.5), (.25*6-.5, .5*4-.5)
        [[-0.5, -0.5], [4.0, 0.0]],  # (0-.5, 0-.5), (.75*6-.5, .125*4-.5)
        [[5.5, 3.5], [2.5, 2.5]],  # (6-.5, 4-.5), (.5*6-.5, .75*4-.5)
    ],
    dtype=np.float32,
)
OCCLUDED = np.array([[False, True, False], [True, True, False]])
EXPECTED_VISIBILITY = np.array([[True, False], [False, False], [True, True]])  # ~OCCLUDED.T


def make_video(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(T, H, W, 3), dtype=np.uint8)


def example(seed: int = 0, **overrides) -> dict:
    ex = {"video": make_video(seed), "points": POINTS.astype(np.float32), "occluded": OCCLUDED.copy()}
    ex.update(overrides)
    return ex


def write_pickle(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(data))
    return path


# Flat colours with distinct channels: JPEG keeps them to within a few grey
# levels, and a swapped channel order would be off by more than 100.
COLOURS = [(200, 40, 90), (10, 120, 250), (90, 230, 30)]


def jpeg_frames() -> tuple[list[bytes], np.ndarray]:
    rgb = np.stack([np.full((H * 2, W * 2, 3), c, np.uint8) for c in COLOURS])
    encoded = []
    for frame in rgb:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
        encoded.append(buf.tobytes())
    return encoded, rgb


def check_video(v: EvalVideo, name: str, video: np.ndarray) -> None:
    assert v.name == name
    np.testing.assert_array_equal(v.video, video)
    assert v.tracks.dtype == np.float32 and v.visibility.dtype == np.bool_
    np.testing.assert_array_equal(v.tracks, EXPECTED_TRACKS)
    np.testing.assert_array_equal(v.visibility, EXPECTED_VISIBILITY)


# ---------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------


def test_read_davis(tmp_path):
    path = write_pickle(tmp_path / "tapvid_davis.pkl", {"bear": example(0), "car": example(1)})
    videos = list(read_davis(path))
    assert [v.name for v in videos] == ["bear", "car"]
    check_video(videos[0], "bear", make_video(0))
    check_video(videos[1], "car", make_video(1))
    assert videos[0].image_size == (W, H)


def test_read_rgb_stacking(tmp_path):
    path = write_pickle(tmp_path / "tapvid_rgb_stacking.pkl", [example(0), example(1), example(2)])
    videos = list(read_rgb_stacking(path))
    assert [v.name for v in videos] == [f"tapvid_rgb_stacking_000{i}" for i in range(3)]
    for i, v in enumerate(videos):
        check_video(v, v.name, make_video(i))


def test_read_kinetics_folder_of_jpeg_shards(tmp_path):
    encoded, rgb = jpeg_frames()
    # As generate_tapvid.py writes them: 'video' a numpy array of JPEG bytes,
    # float64 points; the second shard holds a plain list of bytes instead.
    first = example(points=POINTS.astype(np.float64), video=np.array(encoded))
    second = example(points=POINTS.astype(np.float64), video=list(encoded))
    write_pickle(tmp_path / "0000_of_0002.pkl", [first, first])
    write_pickle(tmp_path / "0001_of_0002.pkl", [second])
    (tmp_path / "notes.txt").write_text("not a shard")
    videos = list(read_kinetics(tmp_path))
    assert [v.name for v in videos] == ["0000_of_0002_0000", "0000_of_0002_0001", "0001_of_0002_0000"]
    for v in videos:
        assert v.video.shape == (T, 2 * H, 2 * W, 3) and v.video.dtype == np.uint8
        assert np.abs(v.video.astype(int) - rgb).max() <= 3  # RGB order, lossy JPEG
        # Decoded frames are twice the size: px = norm * (12, 8) - 0.5,
        # i.e. (EXPECTED + 0.5) * 2 - 0.5.
        np.testing.assert_array_equal(v.tracks, (EXPECTED_TRACKS + 0.5) * 2 - 0.5)
        np.testing.assert_array_equal(v.visibility, EXPECTED_VISIBILITY)
    # A single shard file reads too.
    assert len(list(read_kinetics(tmp_path / "0001_of_0002.pkl"))) == 1


def test_read_kinetics_streams_one_shard_at_a_time(tmp_path, monkeypatch):
    encoded, _ = jpeg_frames()
    for shard in range(3):
        write_pickle(tmp_path / f"{shard:04d}_of_0003.pkl", [example(video=list(encoded))])
    loaded = []
    real = datasets._load_pickle
    monkeypatch.setattr(datasets, "_load_pickle", lambda p: loaded.append(p.name) or real(p))
    videos = read_kinetics(tmp_path)
    assert loaded == []  # nothing read before iterating
    next(videos)
    assert loaded == ["0000_of_0003.pkl"]
    next(videos)
    assert loaded == ["0000_of_0003.pkl", "0001_of_0003.pkl"]


def test_read_robotap_folder(tmp_path):
    write_pickle(tmp_path / "robotap_split0.pkl", {"a": example(0)})
    write_pickle(tmp_path / "robotap_split1.pkl", {"b": example(1), "c": example(2)})
    videos = list(read_robotap(tmp_path))
    assert [v.name for v in videos] == ["a", "b", "c"]
    for i, v in enumerate(videos):
        check_video(v, v.name, make_video(i))
    assert [v.name for v in read_robotap(tmp_path / "robotap_split1.pkl")] == ["b", "c"]


def test_integer_occlusion_flags_are_accepted(tmp_path):
    path = write_pickle(tmp_path / "d.pkl", {"x": example(occluded=OCCLUDED.astype(np.uint8))})
    check_video(next(read_davis(path)), "x", make_video(0))


# Dynamic Replica: 2 sequences, 3 frames each, of a 4x6 left camera.
DR_TRAJ = np.array(  # (T, N=3, 3): x, y, depth-like third column (ignored)
    [
        [[0.0, 0.0, 1.0], [5.0, 3.0, 1.0], [2.5, 1.5, 1.0]],
        [[1.0, 2.0, 1.0], [-0.25, 1.0, 1.0], [2.0, 3.5, 1.0]],  # point 1 left of x = 0; point 2 below y = H-1
        [[4.5, 0.5, 1.0], [5.5, 2.0, 1.0], [3.0, 3.0, 1.0]],  # point 1 right of x = W-1
    ],
    dtype=np.float32,
)
DR_VIS = np.array([[True, True, False], [True, True, True], [False, True, True]])
# Visible where 'verts_inds_vis' says so and inside [0, W-1] x [0, H-1] = [0, 5] x [0, 3].
DR_EXPECTED_VIS = np.array([[True, True, False], [True, False, False], [False, False, True]])


def write_dynamic_replica(root: Path, with_img: bool = True) -> Path:
    split = root / "valid"
    frames = []
    for seq, name in enumerate(["seq_a", "seq_b"]):
        for t in (2, 0, 1):  # out of order on purpose
            video = make_video(10 + seq)
            traj = {"traj_2d": torch.from_numpy(DR_TRAJ[t]), "verts_inds_vis": torch.from_numpy(DR_VIS[t])}
            image_rel = f"{name}/images/{t:04d}.png"
            (split / name / "images").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(split / image_rel), cv2.cvtColor(video[t], cv2.COLOR_RGB2BGR))
            if with_img:
                traj["img"] = torch.from_numpy(video[t])
            traj_rel = f"{name}/trajectories/{t:06d}.pth"
            (split / name / "trajectories").mkdir(parents=True, exist_ok=True)
            torch.save(traj, split / traj_rel)
            for camera in ("left", "right"):
                frames.append(
                    {
                        "sequence_name": name,
                        "frame_number": t,
                        "frame_timestamp": t / 30,
                        "image": {"path": image_rel, "size": [H, W]},
                        "camera_name": camera,
                        "trajectories": {"path": traj_rel} if camera == "left" else None,
                    }
                )
    jgz = split / "frame_annotations_valid.jgz"
    with gzip.open(jgz, "wt", encoding="utf8") as f:
        json.dump(frames, f)
    return jgz


@pytest.mark.parametrize("with_img", [True, False])
def test_read_dynamic_replica(tmp_path, with_img):
    jgz = write_dynamic_replica(tmp_path, with_img)
    for path in (tmp_path, tmp_path / "valid", jgz):
        videos = list(read_dynamic_replica(path))
        assert [v.name for v in videos] == ["seq_a", "seq_b"]
        for seq, v in enumerate(videos):
            np.testing.assert_array_equal(v.video, make_video(10 + seq))  # PNG is lossless, RGB order kept
            np.testing.assert_array_equal(v.tracks, DR_TRAJ[..., :2])  # stored pixels, frames in number order
            np.testing.assert_array_equal(v.visibility, DR_EXPECTED_VIS)


# ---------------------------------------------------------------------------
# Detection and dispatch
# ---------------------------------------------------------------------------


def test_detect_format_by_name_and_folder(tmp_path):
    assert detect_format(write_pickle(tmp_path / "tapvid_davis.pkl", {"a": example()})) == "davis"
    assert detect_format(write_pickle(tmp_path / "tapvid_rgb_stacking.pkl", [example()])) == "rgb_stacking"
    assert detect_format(write_pickle(tmp_path / "k" / "0003_of_0010.pkl", [example()])) == "kinetics"
    assert detect_format(tmp_path / "k") == "kinetics"
    assert detect_format(write_pickle(tmp_path / "r" / "robotap_split0.pkl", {"a": example()})) == "robotap"
    assert detect_format(tmp_path / "r") == "robotap"
    write_dynamic_replica(tmp_path / "dr")
    assert detect_format(tmp_path / "dr") == "dynamic_replica"
    assert detect_format(tmp_path / "dr" / "valid") == "dynamic_replica"
    assert detect_format(tmp_path / "dr" / "valid" / "frame_annotations_valid.jgz") == "dynamic_replica"


def test_detect_format_by_content_without_unpickling(tmp_path, monkeypatch):
    encoded, _ = jpeg_frames()
    files = {
        "a.pkl": ({"v": example()}, "davis"),
        "b.pkl": ([example()], "rgb_stacking"),
        "c.pkl": ([example(video=np.array(encoded))], "kinetics"),
        "d.pkl": ([example(video=list(encoded))], "kinetics"),
    }
    for name, (data, _) in files.items():
        write_pickle(tmp_path / name, data)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("detect_format must not unpickle")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    for name, (_, expected) in files.items():
        assert detect_format(tmp_path / name) == expected, name


def test_read_dataset_autodetects(tmp_path):
    path = write_pickle(tmp_path / "tapvid_davis.pkl", {"bear": example(0)})
    check_video(next(read_dataset(path)), "bear", make_video(0))
    listed = write_pickle(tmp_path / "videos.pkl", [example(0)])
    check_video(next(read_dataset(listed)), "videos_0000", make_video(0))
    robotap = write_pickle(tmp_path / "x.pkl", {"a": example(0)})
    assert next(read_dataset(robotap, format="robotap")).name == "a"
    with pytest.raises(ValueError, match="format must be one of"):
        read_dataset(path, format="sintel")


def test_detect_format_errors(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        detect_format(tmp_path / "missing.pkl")
    (tmp_path / "empty.pkl").write_bytes(b"")
    with pytest.raises(DatasetError, match="empty"):
        detect_format(tmp_path / "empty.pkl")
    (tmp_path / "text.pkl").write_text("hello, I am not a pickle")
    with pytest.raises(DatasetError, match="not a pickle"):
        detect_format(tmp_path / "text.pkl")
    write_pickle(tmp_path / "number.pkl", 42)
    with pytest.raises(DatasetError, match="dict or list"):
        detect_format(tmp_path / "number.pkl")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DatasetError, match="no dataset recognised"):
        detect_format(tmp_path / "folder")


# ---------------------------------------------------------------------------
# Wrong structures
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "broken, match",
    [
        ({"points": POINTS, "occluded": OCCLUDED}, r"missing key\(s\) \['video'\]"),
        (example(points=POINTS[:1]), r"'points' \(1, 3, 2\) and 'occluded' \(2, 3\).*1 vs 2 tracks"),
        (example(occluded=OCCLUDED[:, :2]), r"3 vs 2 frames"),
        (example(points=POINTS[..., :1]), r"'points' must be \(N, T, 2\)"),
        (example(occluded=OCCLUDED.astype(int) * 2), "'occluded' must be boolean"),
        (example(video=make_video(0)[:2]), "'video' has 2 frames but 'points' has 3"),
        (example(video=make_video(0)[..., 0]), r"'video' must be \(T, H, W, 3\) uint8"),
        (example(video=[b"not a jpeg"] * 3), "frame 0 of 'video' is not a decodable image"),
        (example(video="frames"), "list of JPEG bytes"),
        ("not a dict", "expected a dict with keys"),
    ],
)
def test_wrong_video_structure(tmp_path, broken, match):
    path = write_pickle(tmp_path / "tapvid_davis.pkl", {"bad": broken})
    with pytest.raises(DatasetError, match=match) as info:
        list(read_davis(path))
    assert str(path) in str(info.value) and "'bad'" in str(info.value)


def test_wrong_containers(tmp_path):
    listed = write_pickle(tmp_path / "list.pkl", [example()])
    with pytest.raises(DatasetError, match="expected a dict of videos"):
        list(read_davis(listed))
    with pytest.raises(DatasetError, match="expected a dict of videos"):
        list(read_robotap(listed))
    named = write_pickle(tmp_path / "dict.pkl", {"a": example()})
    with pytest.raises(DatasetError, match="expected a list of videos"):
        list(read_rgb_stacking(named))
    number = write_pickle(tmp_path / "0000_of_0001.pkl", 3)
    with pytest.raises(DatasetError, match="expected a list of videos"):
        list(read_kinetics(number))


def test_unreadable_files(tmp_path):
    (tmp_path / "empty.pkl").write_bytes(b"")
    with pytest.raises(DatasetError, match="empty.pkl: empty file"):
        list(read_davis(tmp_path / "empty.pkl"))
    (tmp_path / "garbage.pkl").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DatasetError, match="garbage.pkl: not a readable pickle"):
        list(read_davis(tmp_path / "garbage.pkl"))
    with pytest.raises(DatasetError, match="no such file"):
        read_davis(tmp_path / "missing.pkl")
    with pytest.raises(DatasetError, match="expected a file"):
        read_davis(tmp_path)
    with pytest.raises(DatasetError, match=r"no TAP-Vid Kinetics shard file matching '\*_of_\*.pkl'"):
        read_kinetics(tmp_path)
    with pytest.raises(DatasetError, match="no RoboTAP file"):
        read_robotap(tmp_path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the plain pickle written as a .pth below
def test_dynamic_replica_errors(tmp_path):
    with pytest.raises(DatasetError, match="no Dynamic Replica annotations"):
        read_dynamic_replica(tmp_path)

    jgz = tmp_path / "frame_annotations_valid.jgz"
    jgz.write_text("plain text")
    with pytest.raises(DatasetError, match="not a gzipped JSON"):
        list(read_dynamic_replica(jgz))

    def annotations(data) -> Path:
        with gzip.open(jgz, "wt", encoding="utf8") as f:
            json.dump(data, f)
        return jgz

    with pytest.raises(DatasetError, match="expected a JSON list"):
        list(read_dynamic_replica(annotations({"frames": []})))
    with pytest.raises(DatasetError, match="no frame annotation"):
        list(read_dynamic_replica(annotations([])))
    frame = {"sequence_name": "s", "frame_number": 0, "camera_name": "left", "trajectories": {"path": "t0.pth"}}
    with pytest.raises(DatasetError, match="'sequence_name' must be str"):
        list(read_dynamic_replica(annotations([{**frame, "sequence_name": None}])))
    with pytest.raises(DatasetError, match="no frame of the left camera"):
        list(read_dynamic_replica(annotations([{**frame, "camera_name": "right"}])))
    with pytest.raises(DatasetError, match="repeated frame numbers"):
        list(read_dynamic_replica(annotations([frame, frame])))
    with pytest.raises(DatasetError, match="t0.pth: trajectory file not found"):
        list(read_dynamic_replica(annotations([frame])))
    with pytest.raises(DatasetError, match="'trajectories' must be an object with a 'path'"):
        list(read_dynamic_replica(annotations([{**frame, "trajectories": None}])))

    img = torch.zeros((H, W, 3), dtype=torch.uint8)
    torch.save({"traj_2d": torch.zeros(5, 3), "img": img}, tmp_path / "t0.pth")
    with pytest.raises(DatasetError, match="expected a dict with 'traj_2d' and 'verts_inds_vis'"):
        list(read_dynamic_replica(annotations([frame])))
    torch.save({"traj_2d": torch.zeros(5, 3), "verts_inds_vis": torch.ones(4, dtype=torch.bool), "img": img},
               tmp_path / "t0.pth")  # fmt: skip
    with pytest.raises(DatasetError, match=r"'traj_2d' must be \(N, >=2\)"):
        list(read_dynamic_replica(annotations([frame])))
    torch.save({"traj_2d": torch.zeros(5, 3), "verts_inds_vis": torch.ones(5, dtype=torch.bool), "img": img},
               tmp_path / "t0.pth")  # fmt: skip
    torch.save({"traj_2d": torch.zeros(6, 3), "verts_inds_vis": torch.ones(6, dtype=torch.bool), "img": img},
               tmp_path / "t1.pth")  # fmt: skip
    second = {**frame, "frame_number": 1, "trajectories": {"path": "t1.pth"}}
    with pytest.raises(DatasetError, match="6 tracks, but the sequence's first frame has .* 5 tracks"):
        list(read_dynamic_replica(annotations([frame, second])))
    (tmp_path / "t1.pth").write_bytes(pickle.dumps({"traj_2d": object()}))
    with pytest.raises(DatasetError, match="weights_only=True"):
        list(read_dynamic_replica(annotations([frame, second])))
    torch.save({"traj_2d": torch.zeros(5, 3), "verts_inds_vis": torch.ones(5, dtype=torch.bool)}, tmp_path / "t0.pth")
    with pytest.raises(DatasetError, match="missing or unreadable image"):
        list(read_dynamic_replica(annotations([{**frame, "image": {"path": "nope.png"}}])))


# ---------------------------------------------------------------------------
# Resizing to the evaluation resolution
# ---------------------------------------------------------------------------


def test_resize_to_eval_maps_tracks_through_normalised_coordinates():
    video = np.zeros((2, 4, 8, 3), np.uint8)
    video[..., 0] = 200  # flat colour: any resampling keeps it
    tracks = np.array([[[1.5, 0.5], [-0.5, -0.5]], [[7.5, 3.5], [3.5, 1.5]]], np.float32)
    vis = np.array([[True, False], [False, True]])
    v = EvalVideo("v", video, tracks, vis)
    small = resize_to_eval(v, (2, 4))
    # Halving both sides: norm = (px + 0.5) / (8, 4), px' = norm * (4, 2) - 0.5.
    # (1.5, 0.5) -> (0.25, 0.25) -> (0.5, 0.0); the corner (-0.5, -0.5) stays
    # the corner; (7.5, 3.5) -> (1, 1) -> (3.5, 1.5); the centre (3.5, 1.5)
    # -> (0.5, 0.5) -> (1.5, 0.5).
    np.testing.assert_allclose(small.tracks, [[[0.5, 0.0], [-0.5, -0.5]], [[3.5, 1.5], [1.5, 0.5]]], atol=1e-6)
    assert small.video.shape == (2, 2, 4, 3)
    assert (small.video[..., 0] == 200).all() and (small.video[..., 1:] == 0).all()
    np.testing.assert_array_equal(small.visibility, vis)
    assert small.tracks.dtype == np.float32 and small.name == "v"

    big = resize_to_eval(v)  # 256x256, enlarging
    assert big.video.shape == (2, 256, 256, 3) and (big.video[..., 0] == 200).all()
    # (1.5, 0.5) -> norm (0.25, 0.25) -> 0.25 * 256 - 0.5 = 63.5.
    np.testing.assert_allclose(big.tracks[0, 0], [63.5, 63.5], atol=1e-5)
    assert resize_to_eval(big) is big  # already 256x256
    back = resize_to_eval(big, (4, 8))
    np.testing.assert_allclose(back.tracks, tracks, atol=1e-5)


@pytest.mark.parametrize("size", [(256,), (0, 256), (256.0, 256), "256x256"])
def test_resize_to_eval_rejects_bad_size(size):
    v = EvalVideo("v", np.zeros((1, 2, 2, 3), np.uint8), np.zeros((1, 0, 2), np.float32), np.zeros((1, 0), bool))
    with pytest.raises(ValueError, match=r"\(height, width\)"):
        resize_to_eval(v, size)


def test_eval_video_checks_shapes():
    with pytest.raises(ValueError, match="tracks must be"):
        EvalVideo("v", np.zeros((2, 2, 2, 3), np.uint8), np.zeros((3, 1, 2), np.float32), np.zeros((3, 1), bool))
    with pytest.raises(ValueError, match="visibility must be"):
        EvalVideo("v", np.zeros((2, 2, 2, 3), np.uint8), np.zeros((2, 1, 2), np.float32), np.zeros((2, 1)))
