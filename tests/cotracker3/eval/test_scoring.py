"""Running trackers on evaluation videos, reports, and ``track3d eval`` as a user runs it."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import cotracker3
from cotracker3 import synthetic
from cotracker3.eval import scoring as evaluation, tapvid
from cotracker3.baseline import LucasKanadeTracker
from cotracker3.eval.datasets import EvalVideo
from cotracker3.errors import CheckpointError
from cotracker3.predictor import TrackingResult
from cotracker3.weights import UnknownModelError, model_from_checkpoint
from small_models import one_thread, small_model  # noqa: F401  (fixture)
from track3d.cli import main

SCENE = dict(num_frames=12, num_points=48, supersample=1)


@pytest.fixture(scope="module")
def scene():
    cfg = dataclasses.replace(synthetic.EVAL_TIERS["moving_camera"], **SCENE)
    return synthetic.render_scene(cfg, 7, name="moving_camera/07")


class Oracle:
    """Answers each query with the ground truth of the track it came from, moved by ``shift`` px."""

    def __init__(self, video: EvalVideo, query_mode: str, shift=(0.0, 0.0)):
        self.gt, self.vis = video.tracks, video.visibility
        _, self.index = tapvid.tapvid_queries(video.visibility, video.tracks, query_mode)
        self.shift = np.asarray(shift, np.float32)
        self.calls = []

    def __call__(self, frames, queries=None, backward_tracking=False, **_):
        self.calls.append((tuple(frames.shape), tuple(queries.shape), backward_tracking))
        tracks = torch.from_numpy(self.gt[:, self.index] + self.shift)[None]
        vis = torch.from_numpy(self.vis[:, self.index])[None]
        return TrackingResult(tracks, vis, vis.float(), queries)


@pytest.mark.parametrize("mode", ["first", "strided"])
def test_perfect_tracker_scores_one(scene, mode):
    video = evaluation.scene_to_video(scene)
    oracle = Oracle(video, mode)
    m = evaluation.evaluate_video(oracle, video, mode)
    for key in tapvid.METRIC_KEYS:
        assert m[key] == pytest.approx(1.0), key
    frames_shape, queries_shape, backward = oracle.calls[0]
    assert frames_shape == (1, SCENE["num_frames"], 3, 256, 256)
    assert queries_shape == (1, int(m["num_queries"]), 3)
    assert backward == (mode == "strided")  # strided queries need tracking back in time


def test_three_pixel_error_scores_by_hand(scene):
    # Every prediction 3 px off (x): within 4, 8 and 16 px, not within 1 or 2, so
    # delta_avg = 3/5; visibility is right, so jaccard_d = 1 for d >= 4 and 0 below
    # (each visible point is a false positive and a false negative): AJ = 3/5; OA = 1.
    video = evaluation.scene_to_video(scene)
    m = evaluation.evaluate_video(Oracle(video, "first", shift=(3.0, 0.0)), video, "first")
    assert m["pts_within_1"] == m["pts_within_2"] == 0.0
    assert m["pts_within_4"] == m["pts_within_8"] == m["pts_within_16"] == 1.0
    assert m["average_pts_within_thresh"] == pytest.approx(0.6)
    assert m["average_jaccard"] == pytest.approx(0.6)
    assert m["occlusion_accuracy"] == 1.0


def test_videos_are_scored_at_256_pixels(scene):
    # The same scene at half resolution: the oracle (at 256x256, after resizing) still scores 1.
    small = EvalVideo("half", scene.frames[:, ::2, ::2].copy(),
                      (scene.tracks + 0.5) / 2 - 0.5, scene.visibility.copy())
    m = evaluation.evaluate_video(Oracle(evaluation.scene_to_video(scene), "first"), small, "first")
    assert m["average_jaccard"] == pytest.approx(1.0, abs=1e-6)


def test_unscorable_videos_are_skipped_not_zeroed(scene):
    good = evaluation.scene_to_video(scene)
    never = EvalVideo("never_visible", good.video, good.tracks, np.zeros_like(good.visibility))
    one = EvalVideo("one_frame", good.video[:1], good.tracks[:1], good.visibility[:1])
    report = evaluation.evaluate(Oracle(good, "first"), [never, good, one], "first")
    assert list(report.videos) == ["moving_camera/07"]
    assert set(report.skipped) == {"never_visible", "one_frame"}
    assert "visible" in report.skipped["never_visible"] and "frame" in report.skipped["one_frame"]
    assert report.mean["average_jaccard"] == pytest.approx(1.0)
    empty = evaluation.evaluate(Oracle(good, "first"), [never], "first")
    assert np.isnan(empty.mean["average_jaccard"])


def test_report_json_and_table(scene):
    video = evaluation.scene_to_video(scene)
    other = dataclasses.replace(video, name="static_camera/00")
    report = evaluation.evaluate(Oracle(video, "first", shift=(3.0, 0.0)), [video, other], "first",
                                 tracker_name="oracle", dataset_name="synthetic")
    data = json.loads(json.dumps(report.to_json()))
    assert set(data) == {"moving_camera/07", "static_camera/00", "moving_camera/mean", "static_camera/mean",
                         "mean", "_meta"}
    assert set(tapvid.METRIC_KEYS) <= set(data["mean"])
    assert data["mean"]["average_jaccard"] == pytest.approx(0.6)
    assert data["_meta"]["tracker"] == "oracle" and data["_meta"]["query_mode"] == "first"
    table = report.table()
    assert "moving_camera/07" in table and "60.0" in table and table.splitlines()[-1].startswith("mean")


def test_bad_query_mode():
    with pytest.raises(ValueError, match="query_mode"):
        evaluation.evaluate(None, [], "random")


def test_run_tracker_with_every_kind_of_tracker(scene, one_thread):  # noqa: F811
    video = scene.frames[:5, ::4, ::4].copy()  # 5 frames: shorter than the small models' window of 8
    queries = np.array([[0, 10.0, 12.0], [2, 30.0, 40.0], [4, 60.0, 5.0]], np.float32)
    trackers = [
        LucasKanadeTracker(),
        cotracker3.Predictor(small_model("offline")),
        cotracker3.OnlinePredictor(small_model("online")),
    ]
    for tracker in trackers:
        tracks, vis = evaluation.run_tracker(tracker, video, queries, backward=True)
        assert tracks.shape == (5, 3, 2) and vis.shape == (5, 3) and vis.dtype == bool
        assert np.isfinite(tracks).all()
        if not isinstance(tracker, cotracker3.OnlinePredictor):  # (the online model does not write queries back)
            # The track passes through its query, at the query frame.
            np.testing.assert_allclose(tracks[queries[:, 0].astype(int), [0, 1, 2]], queries[:, 1:], atol=1e-3)


def test_load_tracker_names_and_errors(tmp_path):
    tracker, label = evaluation.load_tracker("baseline")
    assert isinstance(tracker, LucasKanadeTracker) and label == "baseline"
    with pytest.raises(UnknownModelError, match="baseline"):
        evaluation.load_tracker("cotracker7")
    with pytest.raises(CheckpointError, match="does not exist"):
        evaluation.load_tracker(str(tmp_path / "missing.pth"))


def test_checkpoint_kind_comes_from_its_window(tmp_path):
    online = cotracker3.build_model("online")
    torch.save(online.state_dict(), tmp_path / "online.pth")  # carries time_emb of 16 frames
    loaded = model_from_checkpoint(tmp_path / "online.pth")
    assert isinstance(loaded, cotracker3.CoTracker3Online)
    torch.testing.assert_close(loaded.state_dict()["fnet.conv1.weight"], online.state_dict()["fnet.conv1.weight"])
    params = {k: v for k, v in online.state_dict().items() if k != "time_emb"}
    torch.save(params, tmp_path / "bare.pth")  # no window stored: offline
    assert isinstance(model_from_checkpoint(tmp_path / "bare.pth"), cotracker3.CoTracker3Offline)
    tracker, _ = evaluation.load_tracker(str(tmp_path / "online.pth"))
    assert isinstance(tracker, cotracker3.OnlinePredictor)


# -- track3d eval ----------------------------------------------------------------


def _write_davis(path: Path, videos: list[EvalVideo]) -> Path:
    """The TAP-Vid DAVIS layout: {name: {video, points (N, T, 2) normalised, occluded (N, T)}}."""
    data = {}
    for v in videos:
        H, W = v.video.shape[1:3]
        data[v.name] = {
            "video": v.video,
            "points": np.transpose(tapvid.pixels_to_tapvid(v.tracks, W, H), (1, 0, 2)),
            "occluded": ~v.visibility.T,
        }
    path.write_bytes(pickle.dumps(data))
    return path


def _user_error(rc, capsys, *needles):
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("track3d: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_eval_on_a_davis_file_matches_the_python_api(scene, tmp_path, capsys):
    video = evaluation.scene_to_video(scene)
    video = dataclasses.replace(video, name="bear")
    pkl = _write_davis(tmp_path / "tapvid_davis.pkl", [video])
    out = tmp_path / "m.json"
    assert main(["-q", "eval", str(pkl), "--tracker", "baseline", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "bear" in printed and "mean" in printed and "AJ" in printed
    data = json.loads(out.read_text())
    direct = evaluation.evaluate_video(LucasKanadeTracker(), video, "first")
    for key in tapvid.METRIC_KEYS:
        assert data["bear"][key] == pytest.approx(direct[key], abs=1e-6), key
        assert data["mean"][key] == pytest.approx(direct[key], abs=1e-6), key


def test_eval_synthetic_tier(tmp_path, capsys):
    out = tmp_path / "s.json"
    rc = main(["-q", "eval", "synthetic", "--tracker", "baseline", "--tiers", "static_camera",
               "--videos-per-tier", "1", "--json", str(out), "--query-mode", "strided"])
    assert rc == 0, capsys.readouterr().err
    data = json.loads(out.read_text())
    assert set(data) == {"static_camera/00", "static_camera/mean", "mean", "_meta"}
    assert data["_meta"]["query_mode"] == "strided"
    assert 0.0 <= data["mean"]["average_jaccard"] <= 1.0


@pytest.mark.parametrize("args, needles", [
    (["synthetic", "--tracker", "nope"], ["unknown tracker", "baseline"]),
    (["synthetic", "--tracker", "missing/ckpt.pth"], ["does not exist"]),
    (["synthetic", "--tracker", "baseline", "--tiers", "underwater"], ["unknown tier"]),
    (["no_such_dataset.pkl", "--tracker", "baseline"], ["no_such_dataset.pkl"]),
    (["synthetic", "--tracker", "baseline", "--json", "no/such/dir/m.json"], ["does not exist"]),
])
def test_eval_bad_input(args, needles, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _user_error(main(["-q", "eval", *args]), capsys, *needles)


def test_eval_wrong_structure_file(tmp_path, capsys):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"v": {"video": np.zeros((2, 4, 4, 3), np.uint8)}}))
    _user_error(main(["-q", "eval", str(bad), "--tracker", "baseline"]), capsys, "bad.pkl")


class ScoredOracle(Oracle):
    """The ground-truth tracks, with a soft visibility of 0.3 where the point is visible and 0.1 where not."""

    def __call__(self, frames, queries=None, backward_tracking=False, **_):
        r = super().__call__(frames, queries, backward_tracking)
        r.visibility_score = torch.where(r.visibility, 0.3, 0.1)
        return r


def test_calibration_picks_a_threshold_between_the_scores(scene):
    # Thresholds 0.10 to 0.25 separate the scores exactly: AJ = OA = 1 (positions are
    # exact). At 0.30 and above every point reads occluded: AJ = 0. At 0.05 every point
    # reads visible: OA is the visible share of the scored frames, below 1.
    video = evaluation.scene_to_video(scene)
    v = evaluation.resize_to_eval(video)
    cal = evaluation.calibrate_visibility(ScoredOracle(v, "first"), [video])
    assert cal.threshold == 0.1  # the first of the best
    for t in (0.1, 0.15, 0.2, 0.25):
        assert cal.table[t] == {"average_jaccard": pytest.approx(1.0), "occlusion_accuracy": pytest.approx(1.0)}
    for t in (0.3, 0.5, 0.95):
        assert cal.table[t]["average_jaccard"] == 0.0
    assert cal.table[0.05]["occlusion_accuracy"] < 1.0
    assert cal.scenes == [video.name]
    record = cal.to_json()
    assert record["threshold"] == 0.1 and record["table"]["0.10"]["average_jaccard"] == 1.0


class IteratedOracle(ScoredOracle):
    """Exact after exactly 2 refinement iterations; 3 px off in x per iteration more or fewer."""

    def __init__(self, video, query_mode):
        super().__init__(video, query_mode)
        self.iters = 6

    def __call__(self, frames, queries=None, backward_tracking=False, **_):
        self.shift = np.array([3.0 * abs(self.iters - 2), 0.0], np.float32)
        return super().__call__(frames, queries, backward_tracking)


def test_calibration_over_iterations_picks_the_best_and_restores_the_trackers(scene):
    video = evaluation.scene_to_video(scene)
    tracker = IteratedOracle(evaluation.resize_to_eval(video), "first")
    cal = evaluation.calibrate_visibility(tracker, [video], iterations=(1, 2, 4))
    assert cal.iters == 2 and cal.threshold == 0.1
    assert cal.iters_table[2] == {"threshold": 0.1, "average_jaccard": pytest.approx(1.0),
                                  "occlusion_accuracy": pytest.approx(1.0)}
    # 3 px off: within 4, 8 and 16 px but not 1 and 2, so AJ = 3/5; 6 px off: within 8 and 16 only.
    assert cal.iters_table[1]["average_jaccard"] == pytest.approx(0.6)
    assert cal.iters_table[4]["average_jaccard"] == pytest.approx(0.4)
    assert cal.table[0.1]["average_jaccard"] == pytest.approx(1.0)  # the table is the chosen iterations'
    assert len(tracker.calls) == 3 and tracker.iters == 6  # one run per candidate, then its own again
    record = cal.to_json()
    assert record["iters"] == 2 and record["iters_table"]["4"]["average_jaccard"] == pytest.approx(0.4, abs=1e-4)
    assert "iters" not in evaluation.calibrate_visibility(tracker, [video]).to_json()  # not calibrated


def test_calibration_skips_videos_without_visible_points_and_needs_one(scene):
    video = evaluation.scene_to_video(scene)
    blind = EvalVideo("blind", video.video, video.tracks, np.zeros_like(video.visibility))
    with pytest.raises(cotracker3.DatasetError, match="no calibration video"):
        evaluation.calibrate_visibility(ScoredOracle(evaluation.resize_to_eval(video), "first"), [blind])


def test_calibration_videos_are_the_calibration_set():
    names = [v.name for v in evaluation.calibration_videos(2)]
    assert names == ["calibration/0", "calibration/1"]
