"""Tests of track3d.io: atomic result folders, tracks.npz round trip and errors."""

from __future__ import annotations

import numpy as np
import pytest

from track3d.errors import OutputError, ResultError, Track3DError
from track3d.io import atomic_output_dir, load_tracks, save_tracks


def _result(num_steps: int = 4, num_points: int = 3) -> dict:
    rng = np.random.default_rng(0)
    tracks = rng.uniform(0, 50, (num_steps, num_points, 2)).astype(np.float32)
    tracks[1, :1] = np.nan
    return {
        "tracks": tracks,
        "visibility": rng.uniform(size=(num_steps, num_points)) > 0.3,
        "confidence": rng.uniform(size=(num_steps, num_points)).astype(np.float32),
        "queries": np.concatenate(
            [np.zeros((num_points, 1)), tracks[0]], axis=1
        ).astype(np.float32),
        "fps": 29.97,
        "frame_size": (64, 48),
    }


# --------------------------------------------------------------------------
# atomic_output_dir
# --------------------------------------------------------------------------


def test_atomic_output_dir_success(tmp_path):
    target = tmp_path / "nested" / "result"
    with atomic_output_dir(target) as work:
        assert work.parent == target.parent and work.name.startswith(".result.tmp-")
        assert not target.exists()  # Nothing visible before the end.
        (work / "a.txt").write_text("done")
    assert (target / "a.txt").read_text() == "done"
    assert sorted(p.name for p in target.parent.iterdir()) == ["result"]


def test_atomic_output_dir_refuses_existing(tmp_path):
    target = tmp_path / "result"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(OutputError, match="already exists.*overwrite"):
        with atomic_output_dir(target):
            pytest.fail("the body must not run")
    assert (target / "old.txt").read_text() == "old"
    file_target = tmp_path / "file"
    file_target.write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        with atomic_output_dir(file_target, overwrite=True):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "result"]


def test_atomic_output_dir_overwrite_and_empty_target(tmp_path):
    target = tmp_path / "result"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_output_dir(target, overwrite=True) as work:
        (work / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]

    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_output_dir(empty) as work:  # An empty folder is not a result.
        (work / "x.txt").write_text("x")
    assert (empty / "x.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "result"]


@pytest.mark.parametrize("existing", [False, True])
def test_atomic_output_dir_exception_leaves_nothing(tmp_path, existing):
    target = tmp_path / "result"
    if existing:
        target.mkdir()
        (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output_dir(target, overwrite=True) as work:
            (work / "partial.txt").write_text("half")
            raise RuntimeError("boom")
    if existing:
        assert sorted(p.name for p in target.iterdir()) == ["old.txt"]  # Old result intact.
        assert [p.name for p in tmp_path.iterdir()] == ["result"]
    else:
        assert list(tmp_path.iterdir()) == []


def test_atomic_output_dir_refuses_target_created_meanwhile(tmp_path):
    target = tmp_path / "result"
    with pytest.raises(OutputError, match="already exists"):
        with atomic_output_dir(target) as work:
            (work / "mine.txt").write_text("mine")
            target.mkdir()
            (target / "theirs.txt").write_text("theirs")
    assert [p.name for p in target.iterdir()] == ["theirs.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["result"]


# --------------------------------------------------------------------------
# save_tracks / load_tracks
# --------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    result = _result()
    labels = np.array(["a", "b", "c"])
    path = save_tracks(tmp_path / "tracks.npz", **result, labels=labels)
    assert path == tmp_path / "tracks.npz"
    assert [p.name for p in tmp_path.iterdir()] == ["tracks.npz"]  # No temp file left.

    loaded = load_tracks(path)
    assert set(loaded) == {"tracks", "visibility", "confidence", "queries", "fps", "frame_size", "labels"}
    np.testing.assert_array_equal(loaded["tracks"], result["tracks"])  # NaN kept.
    assert loaded["tracks"].dtype == np.float32
    np.testing.assert_array_equal(loaded["visibility"], result["visibility"])
    assert loaded["visibility"].dtype == np.bool_
    np.testing.assert_array_equal(loaded["confidence"], result["confidence"])
    np.testing.assert_array_equal(loaded["queries"], result["queries"])
    assert loaded["fps"].dtype == np.float64 and loaded["fps"].shape == () and loaded["fps"] == 29.97
    assert loaded["frame_size"].dtype == np.int64 and loaded["frame_size"].tolist() == [64, 48]
    np.testing.assert_array_equal(loaded["labels"], labels)
    # A folder stands for <folder>/tracks.npz.
    assert load_tracks(tmp_path)["tracks"].shape == (4, 3, 2)


def test_save_tracks_zero_points(tmp_path):
    path = save_tracks(tmp_path / "t.npz", **_result(num_points=0))
    assert load_tracks(path)["tracks"].shape == (4, 0, 2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tracks": np.zeros((4, 3))}, "tracks must have shape"),
        ({"visibility": np.ones((4, 2), bool)}, "visibility must have shape"),
        ({"visibility": np.ones((4, 3), np.float32)}, "visibility must be a boolean"),
        ({"confidence": np.ones((3, 3))}, "confidence must have shape"),
        ({"queries": np.zeros((3, 2))}, "queries must have shape"),
        ({"fps": 0.0}, "fps must be one positive number"),
        ({"frame_size": (64.0, 48.0)}, "frame_size must be"),
        ({"frame_size": (64, 0)}, "frame_size must be"),
        ({"extra": np.array([object()])}, "Python objects"),
    ],
)
def test_save_tracks_rejects_bad_arrays(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        save_tracks(tmp_path / "t.npz", **{**_result(), **change})
    assert list(tmp_path.iterdir()) == []


def test_load_tracks_errors(tmp_path):
    with pytest.raises(ResultError, match="does not exist"):
        load_tracks(tmp_path / "missing.npz")

    text = tmp_path / "text.npz"
    text.write_text("not an archive")
    with pytest.raises(ResultError, match="cannot read .*text.npz"):
        load_tracks(text)

    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ResultError, match="single .npy array"):
        load_tracks(npy)

    partial = tmp_path / "partial.npz"
    result = _result()
    np.savez(partial, tracks=result["tracks"], visibility=result["visibility"])
    with pytest.raises(ResultError, match="lacks the key.*confidence, queries, fps, frame_size"):
        load_tracks(partial)

    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, **{**result, "frame_size": np.array([object()], dtype=object)})
    with pytest.raises(ResultError, match="pickle"):
        load_tracks(pickled)

    assert issubclass(ResultError, Track3DError) and issubclass(ResultError, ValueError)
