"""Tests of cotracker3.eval.tapvid: coordinates, query sampling and TAP-Vid metrics.

Expected values are worked out by hand in the comments, or follow from
properties of the definitions (perfect predictions score 1, frames that are
not evaluated do not matter, ...).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from cotracker3.errors import DatasetError
from cotracker3.eval.tapvid import (
    EVAL_RESOLUTION,
    METRIC_KEYS,
    THRESHOLDS,
    compute_tapvid_metrics,
    evaluate_tracks,
    mean_metrics,
    pixels_to_tapvid,
    sample_queries_first,
    sample_queries_strided,
    tapvid_queries,
    tapvid_to_pixels,
)

# ---------------------------------------------------------------------------
# Coordinates
# ---------------------------------------------------------------------------


def test_tapvid_to_pixels_anchor_values():
    # px = norm * size - 0.5 on an 8 (wide) x 4 (high) image:
    # norm 0 -> -0.5 (outer edge of the first pixel), norm 1 -> size - 0.5
    # (outer edge of the last pixel), norm 0.5 -> the image centre size/2 - 0.5,
    # norm (1/16, 1/8) -> the centre of pixel (0, 0).
    norm = np.array([[0.0, 0.0], [1.0, 1.0], [0.5, 0.5], [1 / 16, 1 / 8]])
    expected = np.array([[-0.5, -0.5], [7.5, 3.5], [3.5, 1.5], [0.0, 0.0]])
    np.testing.assert_allclose(tapvid_to_pixels(norm, 8, 4), expected, atol=1e-12)
    np.testing.assert_allclose(pixels_to_tapvid(expected, 8, 4), norm, atol=1e-12)


def test_tapvid_to_pixels_matches_tapnet_raster():
    # tapnet multiplies normalised points by (width, height) to get raster
    # coordinates whose origin is the image corner: ours are half a pixel less.
    norm = np.random.default_rng(0).random((5, 7, 2))
    np.testing.assert_allclose(tapvid_to_pixels(norm, 256, 256) + 0.5, norm * 256, atol=1e-12)


def test_coordinate_round_trip_and_dtypes():
    rng = np.random.default_rng(1)
    pixels = (rng.random((3, 4, 2)) * 100 - 10).astype(np.float32)
    back = tapvid_to_pixels(pixels_to_tapvid(pixels, 640, 480), 640, 480)
    assert back.dtype == np.float32 and back.shape == pixels.shape
    np.testing.assert_allclose(back, pixels, atol=1e-4)
    assert tapvid_to_pixels(np.zeros((2, 2)), 4, 4).dtype == np.float64
    assert tapvid_to_pixels(np.zeros((2, 2), dtype=np.int64), 4, 4).dtype == np.float64


@pytest.mark.parametrize(
    "points, size, match",
    [
        (np.zeros((3, 3)), (4, 4), r"\(\.\.\., 2\)"),
        (np.zeros((3, 2)), (0, 4), "width"),
        (np.zeros((3, 2)), (4, -1), "height"),
        (np.zeros((3, 2), dtype=bool), (4, 4), "numeric"),
    ],
)
def test_coordinate_conversion_rejects_bad_input(points, size, match):
    with pytest.raises(ValueError, match=match):
        tapvid_to_pixels(points, *size)
    with pytest.raises(ValueError, match=match):
        pixels_to_tapvid(points, *size)


def test_constants():
    assert EVAL_RESOLUTION == (256, 256)
    assert THRESHOLDS == (1, 2, 4, 8, 16)
    assert len(METRIC_KEYS) == 13 and len(set(METRIC_KEYS)) == 13
    assert METRIC_KEYS[:3] == ("average_jaccard", "average_pts_within_thresh", "occlusion_accuracy")


# ---------------------------------------------------------------------------
# Query sampling
# ---------------------------------------------------------------------------


def test_sample_queries_first_drops_never_visible_tracks():
    # Track 0 first visible at frame 2, track 1 never visible (dropped),
    # track 2 visible from frame 0.
    occluded = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 0, 1]], dtype=bool)
    points = np.arange(3 * 4 * 2, dtype=np.float32).reshape(3, 4, 2)
    frames = np.zeros((4, 2, 3, 3), np.uint8)
    out = sample_queries_first(occluded, points, frames)
    # Queries (t, y, x): track 0 at frame 2 is points[0, 2] = (4, 5) -> (2, 5, 4);
    # track 2 at frame 0 is points[2, 0] = (16, 17) -> (0, 17, 16).
    np.testing.assert_array_equal(out["query_points"], [[[2, 5, 4], [0, 17, 16]]])
    assert out["query_points"].dtype == np.float64
    np.testing.assert_array_equal(out["trackgroup"], [[0, 2]])
    np.testing.assert_array_equal(out["target_points"], points[[0, 2]][None])
    np.testing.assert_array_equal(out["occluded"], occluded[[0, 2]][None])
    assert out["video"].shape == (1, 4, 2, 3, 3)
    assert "video" not in sample_queries_first(occluded, points)


def test_sample_queries_strided_frames_and_order():
    # 7 frames, stride 3 -> query frames 0, 3, 6; queries grouped by frame,
    # tracks in order within a frame.
    occluded = np.ones((3, 7), dtype=bool)
    occluded[0, [0, 3]] = False  # track 0 visible on frames 0 and 3
    occluded[1, [1, 6]] = False  # track 1 visible on frames 1 (not a query frame) and 6
    occluded[2, [0, 6]] = False  # track 2 visible on frames 0 and 6
    points = np.random.default_rng(0).random((3, 7, 2))
    out = sample_queries_strided(occluded, points, query_stride=3)
    # Frame 0: tracks 0, 2; frame 3: track 0; frame 6: tracks 1, 2.
    np.testing.assert_array_equal(out["trackgroup"], [[0, 2, 0, 1, 2]])
    np.testing.assert_array_equal(out["query_points"][0, :, 0], [0, 0, 3, 6, 6])
    for q, (track, frame) in enumerate([(0, 0), (2, 0), (0, 3), (1, 6), (2, 6)]):
        np.testing.assert_array_equal(out["query_points"][0, q, 1:], points[track, frame, ::-1])  # (y, x)
        np.testing.assert_array_equal(out["target_points"][0, q], points[track])
        np.testing.assert_array_equal(out["occluded"][0, q], occluded[track])


def test_sample_queries_default_stride_is_five():
    occluded = np.ones((1, 11), dtype=bool)
    occluded[0, [0, 4, 5, 10]] = False  # frames 0, 5, 10 are query frames; 4 is not
    out = sample_queries_strided(occluded, np.zeros((1, 11, 2)))
    np.testing.assert_array_equal(out["query_points"][0, :, 0], [0, 5, 10])


def test_sample_queries_empty_raises():
    occluded = np.ones((2, 6), dtype=bool)
    with pytest.raises(DatasetError, match="none of the 2 tracks is visible"):
        sample_queries_first(occluded, np.zeros((2, 6, 2)))
    occluded[:, 1] = False  # visible on frame 1 only, not a query frame with stride 5
    with pytest.raises(DatasetError, match="query frames"):
        sample_queries_strided(occluded, np.zeros((2, 6, 2)))


@pytest.mark.parametrize("sampler", [sample_queries_first, sample_queries_strided])
def test_sample_queries_wrong_shapes(sampler):
    with pytest.raises(ValueError, match=r"target_occluded \(2, 5\), target_points \(2, 4, 2\)"):
        sampler(np.zeros((2, 5), bool), np.zeros((2, 4, 2)))
    with pytest.raises(ValueError, match="boolean"):
        sampler(np.zeros((2, 5)), np.zeros((2, 5, 2)))


def test_sample_queries_strided_rejects_bad_stride():
    with pytest.raises(ValueError, match="query_stride"):
        sample_queries_strided(np.zeros((1, 3), bool), np.zeros((1, 3, 2)), query_stride=0)


def test_tapvid_queries_in_our_convention():
    # Time-major (T, N) visibility; point 1 never visible.
    visibility = np.array([[False, False, True], [True, False, True], [True, False, False]])
    tracks = np.arange(3 * 3 * 2, dtype=np.float32).reshape(3, 3, 2)
    queries, index = tapvid_queries(visibility, tracks, "first")
    # Point 0 first visible at t=1: tracks[1, 0] = (6, 7); point 2 at t=0: tracks[0, 2] = (4, 5).
    np.testing.assert_array_equal(queries, [[1, 6, 7], [0, 4, 5]])
    assert queries.dtype == np.float32
    np.testing.assert_array_equal(index, [0, 2])

    queries, index = tapvid_queries(visibility, tracks, "strided", query_stride=2)
    # Query frames 0 and 2: frame 0 has point 2 visible, frame 2 point 0.
    np.testing.assert_array_equal(queries, [[0, 4, 5], [2, 12, 13]])
    np.testing.assert_array_equal(index, [2, 0])


def test_tapvid_queries_wrong_input():
    with pytest.raises(ValueError, match=r"gt_tracks \(4, 3, 2\), gt_visibility \(4, 2\)"):
        tapvid_queries(np.ones((4, 2), bool), np.zeros((4, 3, 2)), "first")
    with pytest.raises(ValueError, match="query_mode"):
        tapvid_queries(np.ones((4, 3), bool), np.zeros((4, 3, 2)), "last")
    with pytest.raises(DatasetError):
        tapvid_queries(np.zeros((4, 3), bool), np.zeros((4, 3, 2)), "strided")


# ---------------------------------------------------------------------------
# Metrics, worked by hand
# ---------------------------------------------------------------------------

# One point, four frames, coordinates already on the 256x256 raster.
# Ground truth: at (10, 10) on every frame, visible on frames 1 and 2 only.
GT_VIS = np.array([[False], [True], [True], [False]])
GT_TRACKS = np.full((4, 1, 2), 10.0, dtype=np.float32)
# Prediction: 3 px to the right on frame 2, exact elsewhere; predicted
# visible on frames 1, 2, 3 (occluded on frame 0).
PRED_TRACKS = GT_TRACKS.copy()
PRED_TRACKS[2, 0, 0] += 3.0
PRED_VIS = np.array([[False], [True], [True], [True]])


def test_hand_worked_first_mode():
    # 'first': query at the first visible frame, 1; evaluated frames 2 and 3.
    # Occlusion: frame 2 visible/visible (right), frame 3 occluded/visible
    # (wrong) -> 1/2.
    # pts_within: the only evaluated visible frame is 2, at distance 3:
    # within 1, 2: no; within 4, 8, 16: yes.
    # Jaccard: frame 3 is a false positive (predicted visible, occluded) for
    # every threshold; frame 2 is a true positive when 3 < d, else also a false
    # positive. d = 1, 2: TP 0 -> 0. d = 4, 8, 16: TP 1, FP 1, GT visible 1
    # -> 1 / (1 + 1) = 0.5. Averages: jaccard (0 + 0 + .5 + .5 + .5) / 5 = 0.3,
    # pts_within 3 / 5 = 0.6.
    queries, index = tapvid_queries(GT_VIS, GT_TRACKS, "first")
    np.testing.assert_array_equal(queries, [[1, 10, 10]])
    np.testing.assert_array_equal(index, [0])
    m = evaluate_tracks(GT_TRACKS, GT_VIS, PRED_TRACKS, PRED_VIS, "first")
    expected = {
        "occlusion_accuracy": 0.5,
        "pts_within_1": 0.0, "pts_within_2": 0.0, "pts_within_4": 1.0, "pts_within_8": 1.0, "pts_within_16": 1.0,
        "jaccard_1": 0.0, "jaccard_2": 0.0, "jaccard_4": 0.5, "jaccard_8": 0.5, "jaccard_16": 0.5,
        "average_jaccard": 0.3, "average_pts_within_thresh": 0.6,
    }  # fmt: skip
    assert list(m) == list(METRIC_KEYS)
    assert all(type(v) is float for v in m.values())
    assert m == pytest.approx(expected, abs=1e-12)


def test_hand_worked_strided_mode():
    # 'strided' with stride 2: query frames 0 (point occluded: no query) and 2
    # (visible: one query at t=2). Evaluated frames: all but 2, i.e. 0, 1, 3.
    # Occlusion: frame 0 occluded/occluded (right), 1 visible/visible (right),
    # 3 occluded/visible (wrong) -> 2/3.
    # pts_within: evaluated visible frame 1 at distance 0 -> 1 at every d.
    # Jaccard: TP frame 1, FP frame 3 (frame 0 is predicted occluded): 1 / (1 + 1).
    queries, _ = tapvid_queries(GT_VIS, GT_TRACKS, "strided", query_stride=2)
    np.testing.assert_array_equal(queries, [[2, 10, 10]])
    m = evaluate_tracks(GT_TRACKS, GT_VIS, PRED_TRACKS, PRED_VIS, "strided", query_stride=2)
    assert m["occlusion_accuracy"] == pytest.approx(2 / 3)
    for d in THRESHOLDS:
        assert m[f"pts_within_{d}"] == 1.0
        assert m[f"jaccard_{d}"] == 0.5
    assert m["average_jaccard"] == 0.5 and m["average_pts_within_thresh"] == 1.0


def test_hand_worked_tapnet_layout():
    # The same 'strided' case in tapnet's layout: (B, N, T, ...), queries
    # (t, y, x), occlusion flags.
    m = compute_tapvid_metrics(
        query_points=np.array([[[2.0, 10.0, 10.0]]]),
        gt_occluded=~GT_VIS.T[None],
        gt_tracks=GT_TRACKS.transpose(1, 0, 2)[None],
        pred_occluded=~PRED_VIS.T[None],
        pred_tracks=PRED_TRACKS.transpose(1, 0, 2)[None],
        query_mode="strided",
    )
    assert list(m) == list(METRIC_KEYS)
    assert all(v.shape == (1,) and v.dtype == np.float64 for v in m.values())
    assert m["occlusion_accuracy"][0] == pytest.approx(2 / 3)
    assert m["jaccard_1"][0] == 0.5 and m["pts_within_16"][0] == 1.0


def test_threshold_is_strict_and_euclidean():
    # Query at frame 0, evaluated frame 1 with the prediction off by (3, 4):
    # distance exactly 5 -> not within 4, within 8; exactly 4 -> not within 4.
    gt = np.zeros((2, 2, 2), np.float32)
    vis = np.ones((2, 2), bool)
    pred = gt.copy()
    pred[1, 0] = (3, 4)
    pred[1, 1] = (4, 0)
    m = compute_tapvid_metrics(
        np.zeros((1, 2, 3)), ~vis.T[None], gt.transpose(1, 0, 2)[None], ~vis.T[None],
        pred.transpose(1, 0, 2)[None], "first", get_trackwise_metrics=True,
    )  # fmt: skip
    assert m["pts_within_4"].shape == (1, 2)
    np.testing.assert_array_equal(m["pts_within_4"], [[0.0, 0.0]])
    np.testing.assert_array_equal(m["pts_within_8"], [[1.0, 1.0]])
    np.testing.assert_array_equal(m["pts_within_2"], [[0.0, 0.0]])


def test_trackwise_and_per_video_sums():
    # Two tracks, query frame 0, 'first' mode, 3 frames (evaluated: 1, 2).
    # Track 0 exact everywhere; track 1 far (100 px) on both evaluated frames.
    # Per track: pts_within_16 = [1, 0]. Per video the counts are pooled:
    # (2 + 0) / (2 + 2) = 0.5. Jaccard_16 per track: [2/2, 0/(2 + 2)] = [1, 0];
    # per video: TP 2 / (GT 4 + FP 2) = 1/3 (not the mean of the tracks).
    gt = np.zeros((1, 2, 3, 2))
    pred = gt.copy()
    pred[0, 1, 1:] = 100.0
    occ = np.zeros((1, 2, 3), bool)
    q = np.zeros((1, 2, 3))
    per_track = compute_tapvid_metrics(q, occ, gt, occ, pred, "first", get_trackwise_metrics=True)
    per_video = compute_tapvid_metrics(q, occ, gt, occ, pred, "first")
    np.testing.assert_array_equal(per_track["pts_within_16"], [[1.0, 0.0]])
    np.testing.assert_array_equal(per_track["jaccard_16"], [[1.0, 0.0]])
    assert per_video["pts_within_16"][0] == 0.5
    assert per_video["jaccard_16"][0] == pytest.approx(1 / 3)


def test_query_frame_is_rounded():
    # Query t = 0.4 rounds to frame 0 ('first': frames 1, 2 evaluated), t = 1.6
    # to frame 2 (nothing after it: NaN). Track 0 is exact, so its scores are 1.
    gt = np.zeros((1, 2, 3, 2))
    occ = np.zeros((1, 2, 3), bool)
    q = np.array([[[0.4, 0, 0], [1.6, 0, 0]]])
    m = compute_tapvid_metrics(q, occ, gt, occ, gt, "first", get_trackwise_metrics=True)
    assert m["average_jaccard"][0, 0] == 1.0
    assert np.isnan(m["average_jaccard"][0, 1])


def test_perfect_prediction_scores_one():
    rng = np.random.default_rng(3)
    tracks = (rng.random((12, 6, 2)) * 256).astype(np.float32)
    vis = rng.random((12, 6)) < 0.7
    vis[0] = True  # every point queryable in both modes
    for mode in ("first", "strided"):
        _, index = tapvid_queries(vis, tracks, mode)
        m = evaluate_tracks(tracks, vis, tracks[:, index], vis[:, index], mode)
        assert m == pytest.approx({key: 1.0 for key in METRIC_KEYS})


def test_frames_not_evaluated_do_not_matter():
    # 'first' ignores frames up to and including the query frame; 'strided'
    # ignores only the query frame.
    rng = np.random.default_rng(4)
    T, N = 10, 5
    gt = (rng.random((T, N, 2)) * 256).astype(np.float32)
    vis = rng.random((T, N)) < 0.8
    vis[3] = True
    for mode in ("first", "strided"):
        queries, index = tapvid_queries(vis, gt, mode)
        pred = gt[:, index] + rng.normal(size=(T, len(index), 2)).astype(np.float32) * 3
        pred_vis = rng.random((T, len(index))) < 0.7
        before = evaluate_tracks(gt, vis, pred, pred_vis, mode)
        garbage_pred, garbage_vis = pred.copy(), pred_vis.copy()
        for q, t in enumerate(queries[:, 0].astype(int)):
            frames = slice(0, t + 1) if mode == "first" else slice(t, t + 1)
            garbage_pred[frames, q] = 1e4
            garbage_vis[frames, q] = ~garbage_vis[frames, q]
        assert evaluate_tracks(gt, vis, garbage_pred, garbage_vis, mode) == before


def test_image_size_scales_to_the_256_raster():
    # On 512x512 frames a 6 px error is 3 px of the 256x256 raster:
    # (px + 0.5) * 256 / 512 halves differences. So within 4 but not within 2.
    gt = np.full((2, 1, 2), 100.0, np.float32)
    vis = np.ones((2, 1), bool)
    pred = gt.copy()
    pred[1, 0, 0] += 6
    m = evaluate_tracks(gt, vis, pred, vis, "first", image_size=(512, 512))
    assert m["pts_within_2"] == 0.0 and m["pts_within_4"] == 1.0
    m = evaluate_tracks(gt, vis, pred, vis, "first")  # taken as 256x256: 6 px
    assert m["pts_within_4"] == 0.0 and m["pts_within_8"] == 1.0


def test_nan_prediction_is_a_miss():
    gt = np.zeros((2, 1, 2), np.float32)
    vis = np.ones((2, 1), bool)
    pred = np.full_like(gt, np.nan)
    m = evaluate_tracks(gt, vis, pred, vis, "first")
    # Frame 1: visible, predicted visible but not within -> TP 0, FP 1.
    assert m["pts_within_16"] == 0.0 and m["jaccard_16"] == 0.0 and m["occlusion_accuracy"] == 1.0


def test_nan_when_nothing_to_evaluate_is_logged(caplog):
    # 'first' with the query on the last frame: no evaluated frame, 0/0 = NaN
    # (as tapnet), and a warning says so.
    gt = np.zeros((1, 1, 3, 2))
    occ = np.zeros((1, 1, 3), bool)
    with caplog.at_level(logging.WARNING, logger="cotracker3.eval.tapvid"):
        m = compute_tapvid_metrics(np.array([[[2.0, 0, 0]]]), occ, gt, occ, gt, "first")
    assert all(np.isnan(v[0]) for v in m.values())
    assert "NaN" in caplog.text


def test_evaluate_tracks_refuses_undefined_metrics():
    # The only point is visible only on the last frame: one 'first' query
    # there and no frame after it.
    vis = np.array([[False], [False], [True]])
    tracks = np.zeros((3, 1, 2), np.float32)
    with pytest.raises(ValueError, match="undefined"):
        evaluate_tracks(tracks, vis, tracks, vis, "first")
    with pytest.raises(DatasetError, match="none of the 1 tracks"):
        evaluate_tracks(tracks, np.zeros((3, 1), bool), tracks, vis, "first")


def test_evaluate_tracks_wrong_shapes():
    vis = np.ones((4, 3), bool)
    tracks = np.zeros((4, 3, 2), np.float32)
    # Strided (stride 5) on 4 frames: query frame 0 only -> 3 queries; 2 given.
    with pytest.raises(ValueError, match=r"\(4, 3, 2\), one track per query.*got pred_tracks \(4, 2, 2\)"):
        evaluate_tracks(tracks, vis, tracks[:, :2], vis[:, :2], "strided")
    with pytest.raises(ValueError, match=r"got pred_tracks \(4, 3, 2\), pred_visibility \(3, 3\)"):
        evaluate_tracks(tracks, vis, tracks, vis[:3], "first")
    with pytest.raises(ValueError, match="boolean"):
        evaluate_tracks(tracks, vis.astype(float), tracks, vis, "first")
    with pytest.raises(ValueError, match="image_size"):
        evaluate_tracks(tracks, vis, tracks, vis, "first", image_size=256)


def test_compute_tapvid_metrics_wrong_input():
    q = np.zeros((1, 2, 3))
    occ = np.zeros((1, 2, 5), bool)
    tracks = np.zeros((1, 2, 5, 2))
    with pytest.raises(ValueError, match=r"pred_tracks must be \(1, 2, 5, 2\).*pred_tracks \(1, 2, 4, 2\)"):
        compute_tapvid_metrics(q, occ, tracks, occ, tracks[:, :, :4], "first")
    with pytest.raises(ValueError, match=r"query_points must be \(1, 2, 3\)"):
        compute_tapvid_metrics(q[:, :1], occ, tracks, occ, tracks, "first")
    with pytest.raises(ValueError, match=r"gt_tracks must be \(B, N, T, 2\)"):
        compute_tapvid_metrics(q, occ, tracks[..., 0], occ, tracks, "first")
    with pytest.raises(ValueError, match="pred_occluded must be a boolean"):
        compute_tapvid_metrics(q, occ, tracks, occ.astype(np.float32), tracks, "first")
    with pytest.raises(ValueError, match="query_mode"):
        compute_tapvid_metrics(q, occ, tracks, occ, tracks, "all")
    with pytest.raises(ValueError, match=r"query frames must lie in \[0, 5\)"):
        compute_tapvid_metrics(q + [5, 0, 0], occ, tracks, occ, tracks, "strided")


def test_mean_metrics():
    a = {key: 1.0 for key in METRIC_KEYS}
    b = {key: 0.5 for key in METRIC_KEYS}
    assert mean_metrics([a, b]) == {key: 0.75 for key in METRIC_KEYS}
    with pytest.raises(ValueError, match="at least one"):
        mean_metrics([])
    with pytest.raises(ValueError, match="jaccard_1"):
        mean_metrics([{k: v for k, v in a.items() if k != "jaccard_1"}])
