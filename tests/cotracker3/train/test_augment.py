"""Tests of cotracker3.train.augment: training-clip augmentation with exact track mapping.

The geometric tests draw coloured dots at the track positions and check that,
after padding, resizing, cropping and flipping, each visible track still sits
on its dot: the colour at the rounded position is the dot's colour and the
centroid of the dot's colour is the track position (to a fraction of a pixel).
Hand-computed cases pin the flip and resize formulas of the pixel-centre
convention.
"""

from __future__ import annotations

import numpy as np
import pytest

from cotracker3.train.augment import (AugmentConfig, augment_clip, erase_patches, flip_clip, photometric_augment,
                                replace_patches, resize_points, spatial_augment)
from cotracker3.errors import InputError

BACKGROUND = 128
COLOURS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255)],
                   dtype=np.uint8)
GEOMETRY_ONLY = dict(eraser=False, color_prob=0.0, blur_prob=0.0)


def dot_clip(T: int = 6, H: int = 48, W: int = 64, radius: int = 2):
    """Six 5x5 dots of distinct colours on grey, moving by whole pixels; tracks at their centres."""
    starts = np.array([[12, 10], [30, 10], [50, 12], [12, 34], [31, 30], [50, 36]], dtype=np.float64)
    velocity = np.array([[1, 0], [0, 1], [-1, 0], [1, -1], [0, 0], [-1, -1]], dtype=np.float64)
    tracks = starts[None] + np.arange(T)[:, None, None] * velocity[None]
    frames = np.full((T, H, W, 3), BACKGROUND, dtype=np.uint8)
    for t in range(T):
        for n, (x, y) in enumerate(tracks[t].astype(int)):
            frames[t, y - radius:y + radius + 1, x - radius:x + radius + 1] = COLOURS[n]
    return frames, tracks.astype(np.float32), np.ones((T, len(starts)), dtype=bool)


def nearest_pixel(xy):
    """Index of the pixel containing (x, y) under the pixel-centre convention."""
    return np.floor(np.asarray(xy, dtype=np.float64) + 0.5).astype(int)


def dot_centroid(frame, colour, px, py, radius):
    """Centroid of the share of ``colour`` (against the grey background) in a window around (px, py)."""
    window = frame[py - radius:py + radius + 1, px - radius:px + radius + 1].astype(np.float64) - BACKGROUND
    direction = colour.astype(np.float64) - BACKGROUND
    share = np.clip(window @ direction / (direction @ direction), 0.0, None)
    yy, xx = np.mgrid[py - radius:py + radius + 1, px - radius:px + radius + 1]
    return np.array([(share * xx).sum(), (share * yy).sum()]) / share.sum()


# --------------------------------------------------------------------------
# Geometry: the tracks follow the pixels
# --------------------------------------------------------------------------


@pytest.mark.parametrize("config, crop_size, window, tolerance", [
    # the reference's Kubric ranges: flips, drift, mild anisotropic zoom; odd crop size
    (AugmentConfig(**GEOMETRY_ONLY), (37, 51), 6, 0.2),
    # flips forced on both axes
    (AugmentConfig(**GEOMETRY_ONLY, h_flip_prob=1.0, v_flip_prob=1.0), (40, 52), 6, 0.2),
    # near 2x zoom: a half-pixel slip in the resize formula would move tracks by 0.5 px
    (AugmentConfig(**GEOMETRY_ONLY, resize_range=(1.8, 2.0)), (40, 52), 9, 0.15),
])
def test_visible_tracks_stay_on_their_dots(config, crop_size, window, tolerance):
    frames, tracks, visibility = dot_clip()
    checked_colour = checked_centroid = 0
    for seed in range(12):
        out, out_tracks, out_vis = augment_clip(frames, tracks, visibility, np.random.default_rng(seed), config,
                                                crop_size)
        H, W = out.shape[1:3]
        for t, n in zip(*np.nonzero(out_vis)):
            px, py = nearest_pixel(out_tracks[t, n])
            assert 0 <= px < W and 0 <= py < H
            colour = out[t, py, px].astype(int)
            # the dot's own colour, and nearer to it than to any other dot's
            assert np.abs(colour - COLOURS[n]).max() <= 3, (seed, t, n, colour)
            assert np.argmin(np.abs(COLOURS.astype(int) - colour).sum(1)) == n
            checked_colour += 1
            if window <= px < W - window and window <= py < H - window:
                centroid = dot_centroid(out[t], COLOURS[n], px, py, window)
                np.testing.assert_allclose(centroid, out_tracks[t, n], atol=tolerance, err_msg=f"{seed, t, n}")
                checked_centroid += 1
    assert checked_colour > 100 and checked_centroid > 40


def test_points_leaving_the_crop_keep_coordinates_and_become_invisible():
    frames, tracks, visibility = dot_clip()
    visibility[2, 0] = False  # hidden in the input: stays hidden
    config = AugmentConfig(**GEOMETRY_ONLY)
    outside_seen = 0
    for seed in range(8):
        out, out_tracks, out_vis = augment_clip(frames, tracks, visibility, np.random.default_rng(seed), config,
                                                (16, 20))
        assert out.shape == (6, 16, 20, 3) and out_tracks.shape == tracks.shape
        assert np.isfinite(out_tracks).all()
        x, y = out_tracks[..., 0], out_tracks[..., 1]
        inside = (x >= -0.5) & (x < 20 - 0.5) & (y >= -0.5) & (y < 16 - 0.5)
        assert not (out_vis & ~inside).any()
        np.testing.assert_array_equal(out_vis, inside & visibility)  # no occluders in this config
        assert not out_vis[2, 0]
        outside_seen += int((~inside).sum())
    assert outside_seen > 0


def test_still_clips_keep_a_still_scene_still():
    frames, tracks, visibility = dot_clip()
    frames[:] = frames[0]  # the dots stand still
    tracks[:] = tracks[0]
    still = AugmentConfig(**GEOMETRY_ONLY, still_prob=1.0)
    moving = AugmentConfig(**GEOMETRY_ONLY)
    moved = 0
    for seed in range(6):
        out, out_tracks, out_vis = augment_clip(frames, tracks, visibility, np.random.default_rng(seed), still,
                                                (36, 48))
        assert (out == out[0]).all() and (out_tracks == out_tracks[0]).all() and (out_vis == out_vis[0]).all()
        _, moving_tracks, _ = augment_clip(frames, tracks, visibility, np.random.default_rng(seed), moving, (36, 48))
        moved += int(np.abs(moving_tracks - moving_tracks[0]).max() > 1.0)
    assert moved >= 4  # without it the reference's scale and crop drift move the still scene


def test_still_prob_is_the_share_of_still_clips():
    frames, tracks, visibility = dot_clip()
    frames[:] = frames[0]
    tracks[:] = tracks[0]
    config = AugmentConfig(**GEOMETRY_ONLY, still_prob=0.5)
    still = 0
    for seed in range(60):
        _, out_tracks, _ = augment_clip(frames, tracks, visibility, np.random.default_rng(seed), config, (36, 48))
        still += int((out_tracks == out_tracks[0]).all())
    assert 18 <= still <= 42  # binomial(60, 0.5): mean 30, sd 3.9


def test_flip_clip_by_hand():
    frames = np.arange(6, dtype=np.uint8).reshape(1, 2, 3, 1)  # H=2, W=3
    tracks = np.array([[[0.0, 0.0], [2.0, 1.0], [0.25, 0.5], [-0.5, 1.5]]], dtype=np.float32)

    out, xy = flip_clip(frames, tracks, horizontal=True, vertical=False)
    np.testing.assert_array_equal(out[0, :, :, 0], [[2, 1, 0], [5, 4, 3]])
    np.testing.assert_allclose(xy[0], [[2.0, 0.0], [0.0, 1.0], [1.75, 0.5], [2.5, 1.5]])  # x -> 2 - x

    out, xy = flip_clip(frames, tracks, horizontal=False, vertical=True)
    np.testing.assert_array_equal(out[0, :, :, 0], [[3, 4, 5], [0, 1, 2]])
    np.testing.assert_allclose(xy[0], [[0.0, 1.0], [2.0, 0.0], [0.25, 0.5], [-0.5, -0.5]])  # y -> 1 - y

    out, xy = flip_clip(frames, tracks, horizontal=True, vertical=True)
    np.testing.assert_array_equal(out[0, :, :, 0], [[5, 4, 3], [2, 1, 0]])
    np.testing.assert_allclose(xy[0], [[2.0, 1.0], [0.0, 0.0], [1.75, 0.5], [2.5, -0.5]])
    assert tracks[0, 0, 0] == 0.0  # input untouched


def test_forced_flips_through_augment_clip_by_hand():
    # no padding, scale 1, no drift: the clip is cropped at a known corner, then flipped
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, size=(3, 30, 40, 3), dtype=np.uint8)
    tracks = np.array([[[10.0, 8.0], [30.0, 20.0], [12.5, 3.0]]] * 3, dtype=np.float32)
    visibility = np.ones((3, 3), dtype=bool)
    visibility[0, 2] = False  # not counted in the crop centre
    config = AugmentConfig(**GEOMETRY_ONLY, pad_max=0, resize_range=(1.0, 1.0), resize_delta=0.0,
                           max_crop_offset=0, h_flip_prob=1.0, v_flip_prob=1.0)
    out, xy, vis = augment_clip(frames, tracks, visibility, np.random.default_rng(0), config, (20, 30))
    # frame 30x40 = crop + margin 10: not resized. Crop centre = mean of the visible points
    # (20, 14): x0 = int(20 - 15) = 5, y0 = int(14 - 10) = 4 (inside [0, 40-30-1] and [0, 30-20-1]).
    np.testing.assert_array_equal(out, frames[:, 4:24, 5:35][:, ::-1, ::-1])
    expected = np.stack([29 - (tracks[..., 0] - 5), 19 - (tracks[..., 1] - 4)], axis=-1)
    np.testing.assert_allclose(xy, expected)
    # (30, 20) -> (4, 3) inside; (10, 8) -> (24, 15) inside; (12.5, 3) -> (21.5, 20): below the crop
    np.testing.assert_array_equal(vis, [[True, True, False]] * 3)


def test_resize_mapping_by_hand():
    assert resize_points([[0.0, 0.0]], (4, 4), (8, 8)).tolist() == [[0.5, 0.5]]
    # pixel edges map to pixel edges: -0.5 -> -0.5, W - 0.5 -> W' - 0.5
    np.testing.assert_allclose(resize_points([[-0.5, -0.5], [9.5, 3.5]], (4, 10), (6, 25)),
                               [[-0.5, -0.5], [24.5, 5.5]])

    # a single white pixel at (3, 2) of a 10x8 image, zoomed exactly 2x (no margin, no drift):
    frames = np.zeros((1, 8, 10, 3), dtype=np.uint8)
    frames[0, 2, 3] = 255
    tracks = np.array([[[3.0, 2.0]]], dtype=np.float32)
    config = AugmentConfig(**GEOMETRY_ONLY, pad_max=0, resize_range=(2.0, 2.0), resize_delta=0.0,
                           crop_margin=0, max_crop_offset=0, h_flip_prob=0.0, v_flip_prob=0.0)
    out, xy, vis = spatial_augment(frames, tracks, np.ones((1, 1), bool), np.random.default_rng(0), config)
    # 3 -> (3.5) * 2 - 0.5 = 6.5, 2 -> 4.5 in the 20x16 image; crop 10x8 at x0 = int(6.5 - 5) = 1,
    # y0 = int(4.5 - 4) = 0: the track is at (5.5, 4.5), between the four pixels the dot became.
    np.testing.assert_allclose(xy, [[[5.5, 4.5]]])
    assert vis.all()
    grey = out[0, :, :, 0].astype(float)
    bright = np.argwhere(grey == grey.max())
    assert sorted(map(tuple, bright)) == [(4, 5), (4, 6), (5, 5), (5, 6)]  # (row, column)
    yy, xx = np.mgrid[0:8, 0:10]
    np.testing.assert_allclose([(grey * xx).sum() / grey.sum(), (grey * yy).sum() / grey.sum()], [5.5, 4.5])


# --------------------------------------------------------------------------
# Occluders
# --------------------------------------------------------------------------


def _noise_clip(T=4, H=40, W=50, N=400, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(T, H, W, 3), dtype=np.uint8)
    tracks = rng.uniform([-2, -2], [W + 1, H + 1], size=(T, N, 2)).astype(np.float32)
    visibility = rng.random((T, N)) < 0.9
    return frames, tracks, visibility


def _expected_visibility(tracks, visibility, boxes):
    expected = visibility.copy()
    px, py = nearest_pixel(tracks[..., 0]), nearest_pixel(tracks[..., 1])
    for t, x0, y0, x1, y1 in boxes:
        expected[t] &= ~((px[t] >= x0) & (px[t] < x1) & (py[t] >= y0) & (py[t] < y1))
    return expected


def test_eraser_fills_boxes_with_one_colour_and_hides_points_under_them():
    frames, tracks, visibility = _noise_clip()
    tracks_in = tracks.copy()
    config = AugmentConfig(eraser_prob=1.0)
    out, vis, boxes = erase_patches(frames, tracks, visibility, np.random.default_rng(3), config)

    np.testing.assert_array_equal(tracks, tracks_in)
    np.testing.assert_array_equal(out[0], frames[0])  # the first frame is never erased
    np.testing.assert_array_equal(vis[0], visibility[0])
    assert sorted(set(boxes[:, 0])) == [1, 2, 3]  # probability 1: every later frame
    assert len(boxes) >= 3 and np.all(boxes[:, 3] >= boxes[:, 1]) and np.all(boxes[:, 4] >= boxes[:, 2])

    for t in range(1, len(frames)):
        frame_boxes = [b[1:] for b in boxes if b[0] == t]
        covered_later = np.zeros(frames.shape[1:3], dtype=bool)
        for x0, y0, x1, y1 in frame_boxes[::-1]:  # last drawn first: it is fully visible
            mask = np.zeros_like(covered_later)
            mask[y0:y1, x0:x1] = True
            own = mask & ~covered_later
            if own.any():  # every pixel the box still shows holds one colour
                colours = out[t][own]
                assert (colours == colours[0]).all()
            covered_later |= mask
        union = covered_later
        np.testing.assert_array_equal(out[t][~union], frames[t][~union])  # nothing else changes

    expected = _expected_visibility(tracks, visibility, boxes)
    np.testing.assert_array_equal(vis, expected)
    assert (visibility & ~vis).sum() > 10  # the test exercised occlusion


def test_eraser_first_box_fill_is_region_mean():
    frames, tracks, visibility = _noise_clip(T=2)
    config = AugmentConfig(eraser_prob=1.0, eraser_max=1, eraser_size=(10, 20))
    out, vis, boxes = erase_patches(frames, tracks, visibility, np.random.default_rng(1), config)
    (t, x0, y0, x1, y1), = boxes
    assert t == 1 and x1 > x0 and y1 > y0
    fill = np.rint(frames[1, y0:y1, x0:x1].reshape(-1, 3).mean(0)).astype(np.uint8)
    assert (out[1, y0:y1, x0:x1] == fill).all()
    np.testing.assert_array_equal(vis, _expected_visibility(tracks, visibility, boxes))


def test_replace_pastes_patches_and_hides_points_under_them():
    frames, tracks, visibility = _noise_clip(seed=2)
    config = AugmentConfig(replace=True, replace_prob=1.0)
    out, vis, boxes = replace_patches(frames, tracks, visibility, np.random.default_rng(4), config)
    np.testing.assert_array_equal(out[0], frames[0])
    assert sorted(set(boxes[:, 0])) == [1, 2, 3]
    for t in range(1, len(frames)):
        union = np.zeros(frames.shape[1:3], dtype=bool)
        for _, x0, y0, x1, y1 in boxes[boxes[:, 0] == t]:
            union[y0:y1, x0:x1] = True
        np.testing.assert_array_equal(out[t][~union], frames[t][~union])
        assert (out[t][union] != frames[t][union]).any()
    np.testing.assert_array_equal(vis, _expected_visibility(tracks, visibility, boxes))


def test_photometric_augment_runs_the_eraser_first_and_keeps_tracks():
    frames, tracks, visibility = _noise_clip()
    config = AugmentConfig(eraser_prob=1.0, color_prob=0.0, blur_prob=0.0)
    out, vis = photometric_augment(frames, tracks, visibility, np.random.default_rng(7), config)
    erased, erased_vis, _ = erase_patches(frames, tracks, visibility, np.random.default_rng(7), config)
    np.testing.assert_array_equal(out, erased)
    np.testing.assert_array_equal(vis, erased_vis)


# --------------------------------------------------------------------------
# Colour and blur
# --------------------------------------------------------------------------


def test_colour_jitter_with_zero_ranges_is_identity():
    frames, tracks, visibility = _noise_clip()
    config = AugmentConfig(eraser=False, color_prob=1.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0,
                           blur_prob=0.0)
    out, vis = photometric_augment(frames, tracks, visibility, np.random.default_rng(0), config)
    np.testing.assert_array_equal(out, frames)
    np.testing.assert_array_equal(vis, visibility)


def test_colour_jitter_differs_per_frame_and_keeps_grey_grey():
    frames, tracks, visibility = dot_clip(T=4)
    frames[:] = frames[0]  # four identical frames
    config = AugmentConfig(eraser=False, color_prob=1.0, blur_prob=0.0)
    out, vis = photometric_augment(frames, tracks, visibility, np.random.default_rng(0), config)
    assert out.dtype == np.uint8 and out.shape == frames.shape
    assert all(not np.array_equal(out[0], out[t]) for t in range(1, 4))  # per-frame factors
    np.testing.assert_array_equal(vis, visibility)
    background = out[:, 0, 0].astype(int)  # grey has no hue nor saturation: R = G = B stays
    assert (np.abs(background - background[:, :1]) <= 1).all()


def test_blur_keeps_flat_frames_and_smooths_texture_per_frame():
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, size=(1, 24, 24, 3), dtype=np.uint8).repeat(3, axis=0)
    flat = np.full((3, 24, 24, 3), 90, dtype=np.uint8)
    tracks, visibility = np.zeros((3, 0, 2), np.float32), np.zeros((3, 0), bool)
    config = AugmentConfig(eraser=False, color_prob=0.0, blur_prob=1.0)
    out, _ = photometric_augment(flat, tracks, visibility, np.random.default_rng(1), config)
    np.testing.assert_array_equal(out, flat)
    out, _ = photometric_augment(texture, tracks, visibility, np.random.default_rng(1), config)
    assert (out.astype(float).std(axis=(1, 2, 3)) < texture.astype(float).std(axis=(1, 2, 3))).all()
    assert not np.array_equal(out[0], out[1])  # a sigma per frame


# --------------------------------------------------------------------------
# Shapes, determinism, edge cases, errors
# --------------------------------------------------------------------------


@pytest.mark.parametrize("crop_size", [None, (37, 45), (80, 100), (1, 1)])
def test_output_shapes_and_dtypes(crop_size):
    frames, tracks, visibility = dot_clip()
    out, xy, vis = augment_clip(frames, tracks, visibility, np.random.default_rng(0), crop_size=crop_size)
    H, W = crop_size or frames.shape[1:3]
    assert out.shape == (6, H, W, 3) and out.dtype == np.uint8
    assert xy.shape == tracks.shape and xy.dtype == np.float32
    assert vis.shape == visibility.shape and vis.dtype == np.bool_


def test_crop_size_from_config_and_argument_wins():
    frames, tracks, visibility = dot_clip()
    config = AugmentConfig(crop_size=(30, 40))
    assert augment_clip(frames, tracks, visibility, np.random.default_rng(0), config)[0].shape[1:3] == (30, 40)
    out = augment_clip(frames, tracks, visibility, np.random.default_rng(0), config, crop_size=(20, 24))[0]
    assert out.shape[1:3] == (20, 24)


def test_deterministic_given_the_generator():
    frames, tracks, visibility = dot_clip()
    config = AugmentConfig(eraser_prob=1.0, color_prob=1.0, blur_prob=1.0, replace=True)
    a = augment_clip(frames, tracks, visibility, np.random.default_rng(11), config, (32, 40))
    b = augment_clip(frames, tracks, visibility, np.random.default_rng(11), config, (32, 40))
    c = augment_clip(frames, tracks, visibility, np.random.default_rng(12), config, (32, 40))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])


def test_inputs_are_not_modified():
    frames, tracks, visibility = dot_clip()
    copies = frames.copy(), tracks.copy(), visibility.copy()
    augment_clip(frames, tracks, visibility, np.random.default_rng(0),
                 AugmentConfig(eraser_prob=1.0, replace=True, color_prob=1.0, blur_prob=1.0))
    for original, copy in zip((frames, tracks, visibility), copies):
        np.testing.assert_array_equal(original, copy)


def test_single_frame_and_no_points():
    frames, tracks, visibility = dot_clip(T=1)
    out, xy, vis = augment_clip(frames, tracks, visibility, np.random.default_rng(0),
                                AugmentConfig(eraser_prob=1.0), (20, 30))
    assert out.shape == (1, 20, 30, 3) and xy.shape == (1, 6, 2)
    frames, _, _ = dot_clip(T=3)
    out, xy, vis = augment_clip(frames, np.zeros((3, 0, 2), np.float32), np.zeros((3, 0), bool),
                                np.random.default_rng(0), crop_size=(20, 30))
    assert out.shape == (3, 20, 30, 3) and xy.shape == (3, 0, 2) and vis.shape == (3, 0)


def test_invalid_inputs_raise():
    frames, tracks, visibility = dot_clip()
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="uint8"):
        augment_clip(frames.astype(np.float32), tracks, visibility, rng)
    with pytest.raises(InputError, match="tracks"):
        augment_clip(frames, tracks[:-1], visibility, rng)
    with pytest.raises(InputError, match="tracks"):
        augment_clip(frames, tracks.astype(np.int32), visibility, rng)
    with pytest.raises(InputError, match="visibility"):
        augment_clip(frames, tracks, visibility.astype(np.uint8), rng)
    with pytest.raises(ValueError, match="crop_size"):
        augment_clip(frames, tracks, visibility, rng, crop_size=(0, 10))
    with pytest.raises(ValueError, match="eraser_prob"):
        AugmentConfig(eraser_prob=1.5)
    with pytest.raises(ValueError, match="blur_kernel"):
        AugmentConfig(blur_kernel=4)


def test_defaults_are_the_reference_kubric_values():
    c = AugmentConfig()
    assert (c.brightness, c.contrast, c.saturation, c.hue) == (0.2, 0.2, 0.2, 0.25 / 3.14)
    assert (c.color_prob, c.blur_prob, c.blur_kernel, c.blur_sigma) == (0.25, 0.25, 11, (0.1, 2.0))
    assert (c.eraser, c.eraser_prob, c.eraser_max, c.eraser_size) == (True, 0.5, 10, (2, 99))
    assert (c.replace, c.replace_prob, c.replace_max, c.replace_size) == (False, 0.5, 10, (2, 99))
    assert (c.pad_max, c.resize_range, c.resize_delta, c.max_crop_offset) == (24, (0.75, 1.25), 0.05, 15)
    assert (c.scale_limits, c.crop_margin, c.h_flip_prob, c.v_flip_prob) == ((0.2, 2.0), 10, 0.5, 0.5)
    assert c.still_prob == 0.0  # no such stage in the reference
