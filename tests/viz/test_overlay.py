"""Tests of viz.overlay: colours, drawing one frame, writing an overlay video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from track3d.video import probe, read_video
from viz.overlay import draw_tracks, track_colors, write_overlay_video

RED = np.array([[255, 0, 0]], np.uint8)


def _black(height: int = 40, width: int = 60) -> np.ndarray:
    return np.zeros((height, width, 3), np.uint8)


def test_track_colors_follow_first_visible_x():
    tracks = np.array(
        [[[50.0, 5.0], [np.nan, np.nan], [30.0, 1.0], [np.nan, np.nan]],
         [[51.0, 5.0], [10.0, 2.0], [31.0, 1.0], [np.nan, np.nan]]],
        np.float32,
    )  # (T=2, N=4, 2)
    visibility = np.array([[True, False, False, False], [True, True, True, False]])
    colors = track_colors(tracks, visibility)
    assert colors.shape == (4, 3) and colors.dtype == np.uint8
    assert np.array_equal(colors, track_colors(tracks, visibility))  # Deterministic.
    assert tuple(colors[1]) == (255, 0, 0)  # Leftmost first-visible x: red.
    assert tuple(colors[3]) == (128, 128, 128)  # No position at all: grey.
    assert len({tuple(c) for c in colors[:3]}) == 3
    assert track_colors(np.zeros((3, 0, 2), np.float32), np.zeros((3, 0), bool)).shape == (0, 3)
    with pytest.raises(ValueError, match="visibility must have shape"):
        track_colors(tracks, visibility[:1])


def test_visible_point_is_a_filled_disc():
    frame = _black()
    out = draw_tracks(frame, np.array([[20.0, 15.0]]), np.array([True]), RED, radius=4)
    assert not frame.any()  # The input is not modified.
    assert tuple(out[15, 20]) == (255, 0, 0)  # Centre (x=20, y=15) filled.
    assert tuple(out[15, 22]) == (255, 0, 0) and tuple(out[13, 20]) == (255, 0, 0)
    assert not out[15, 30].any() and not out[30, 20].any()  # Far away: untouched.
    assert not out[..., 1:].any()  # Only red was drawn.


def test_occluded_point_is_a_ring():
    out = draw_tracks(_black(), np.array([[30.0, 20.0]]), np.array([False]), RED, radius=6)
    assert out[20, 30, 0] < 40  # Centre stays black-ish.
    assert out[20, 36, 0] > 150 and out[14, 30, 0] > 150  # Ring at the radius.
    assert out[20, 24, 0] > 150 and out[26, 30, 0] > 150


def test_nan_points_are_skipped_and_zero_points_ok():
    points = np.array([[np.nan, 10.0], [np.nan, np.nan]])
    out = draw_tracks(_black(), points, np.array([True, False]), np.repeat(RED, 2, axis=0))
    assert not out.any()
    out = draw_tracks(_black(), np.zeros((0, 2)), np.zeros(0, bool), np.zeros((0, 3), np.uint8))
    assert not out.any()


def test_tails_are_drawn_behind_visible_points():
    tails = np.array([[[5.0, 30.0]], [[15.0, 30.0]], [[np.nan, np.nan]]])  # (L=3, N=1, 2)
    out = draw_tracks(
        _black(), np.array([[45.0, 30.0]]), np.array([True]), RED, tails=tails, radius=2
    )
    assert out[30, 10, 0] > 0  # Segment 5 -> 15 drawn (faded).
    assert not out[30, 30].any()  # 15 -> NaN and NaN -> 45 broken.
    assert tuple(out[30, 45]) == (255, 0, 0)


def test_draw_tracks_checks_inputs():
    with pytest.raises(ValueError, match="frame must be"):
        draw_tracks(np.zeros((4, 4), np.uint8), np.zeros((0, 2)), np.zeros(0, bool), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="visible must be"):
        draw_tracks(_black(), np.zeros((1, 2)), np.array([1]), RED)
    with pytest.raises(ValueError, match="tails must have shape"):
        draw_tracks(_black(), np.zeros((1, 2)), np.array([True]), RED, tails=np.zeros((2, 2, 2)))


def _moving_tracks(num_steps: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(num_steps, dtype=np.float32)
    tracks = np.stack(
        [np.stack([5 + 2 * t, np.full_like(t, height / 2)], axis=1),
         np.stack([np.full_like(t, width / 2), 3 + t], axis=1)],
        axis=1,
    )  # (T, 2, 2)
    visibility = np.ones((num_steps, 2), bool)
    visibility[3:5, 1] = False
    return tracks, visibility


def _frames(num_steps: int, width: int, height: int):
    for i in range(num_steps):  # A generator: the video is never in memory.
        yield np.full((height, width, 3), 10 * i, np.uint8)


@pytest.mark.parametrize(("width", "height"), [(64, 48), (33, 25)])
def test_write_overlay_video_round_trip(tmp_path, width, height):
    num_steps = 8
    tracks, visibility = _moving_tracks(num_steps, width, height)
    target = tmp_path / "out" / "overlay.mp4"
    result = write_overlay_video(
        target, _frames(num_steps, width, height), tracks, visibility, fps=12, tail_length=3
    )
    assert result == target and target.is_file()
    assert [p.name for p in target.parent.iterdir()] == ["overlay.mp4"]  # No temp file left.
    frames, info = read_video(target)
    even = (width + width % 2, height + height % 2)
    assert frames.shape == (num_steps, even[1], even[0], 3)
    assert probe(target).fps == pytest.approx(12)
    x, y = (int(round(v)) for v in tracks[5, 0])
    assert frames[5, y, x].astype(int).sum() > 200  # The visible point is drawn.


def test_write_overlay_video_frame_count_mismatch(tmp_path):
    tracks, visibility = _moving_tracks(5, 32, 24)
    target = tmp_path / "overlay.mp4"
    with pytest.raises(ValueError, match="got 4 frames but tracks has T = 5"):
        write_overlay_video(target, _frames(4, 32, 24), tracks, visibility, fps=10)
    with pytest.raises(ValueError, match="more frames than tracks"):
        write_overlay_video(target, _frames(6, 32, 24), tracks, visibility, fps=10)
    assert list(tmp_path.iterdir()) == []  # Nothing left behind, not even a temp file.


def test_write_overlay_video_checks_inputs(tmp_path):
    tracks, visibility = _moving_tracks(3, 32, 24)
    with pytest.raises(ValueError, match="visibility must have shape"):
        write_overlay_video(tmp_path / "a.mp4", _frames(3, 32, 24), tracks, visibility[:, :1], fps=10)
    with pytest.raises(ValueError, match="fps must be"):
        write_overlay_video(tmp_path / "a.mp4", _frames(3, 32, 24), tracks, visibility, fps=0)
    frames = [np.zeros((24, 32, 3), np.uint8), np.zeros((20, 32, 3), np.uint8), np.zeros((24, 32, 3), np.uint8)]
    with pytest.raises(ValueError, match="same size"):
        write_overlay_video(tmp_path / "a.mp4", frames, tracks, visibility, fps=10)
    assert not Path(tmp_path / "a.mp4").exists() and list(tmp_path.iterdir()) == []
