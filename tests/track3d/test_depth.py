"""track3d.depth and ``track3d reconstruct --depth-model``, with a tiny Depth Anything written here.

The model is the Depth Anything architecture (DINOv2 backbone, DPT neck and
head) at toy sizes, randomly initialised and saved with ``save_pretrained``
into a temporary folder: nothing is downloaded, and the Hugging Face cache is
an empty temporary folder with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from tests.track3d.test_cli import _write_video
import torch

transformers = pytest.importorskip("transformers", reason="the 'depth' extra (pip install track3d[depth])")

from cotracker3 import synthetic  # noqa: E402
from track3d.cli import main  # noqa: E402
from track3d.depth import DEFAULT_MODEL, DepthEstimator, DepthPreprocessing, resolve_name  # noqa: E402
from track3d.errors import Track3DError  # noqa: E402

INPUT = 56  # The tiny model's input size (its preprocessor_config.json): 4x4 patches of 14 px.


def _tiny_depth_anything(folder: Path, metric: bool = False) -> Path:
    """A randomly initialised Depth Anything of about 40 k parameters, saved as safetensors."""
    backbone = transformers.Dinov2Config(hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                                         intermediate_size=32, patch_size=14, image_size=INPUT,
                                         out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    config = transformers.DepthAnythingConfig(
        backbone_config=backbone, patch_size=14, reassemble_hidden_size=16, neck_hidden_sizes=[4, 8, 16, 16],
        fusion_hidden_size=8, head_hidden_size=4, depth_estimation_type="metric" if metric else "relative",
        max_depth=20 if metric else 1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = transformers.DepthAnythingForDepthEstimation(config)
    with torch.no_grad():  # Positive outputs (random weights put almost every pixel at the ReLU's 0).
        model.head.conv3.bias.fill_(1.0)
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "DPTImageProcessor", "size": {"height": INPUT, "width": INPUT},
        "keep_aspect_ratio": True, "ensure_multiple_of": 14, "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}))
    return folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return _tiny_depth_anything(tmp_path_factory.mktemp("depth-anything-tiny"))


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """A short moving-camera clip (10 frames, 160x128) of the synthetic engine, as an mp4."""
    cfg = dataclasses.replace(synthetic.EVAL_TIERS["moving_camera"], num_frames=10, height=128, width=160,
                              num_points=8, supersample=1)
    return _write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", synthetic.render_scene(cfg, 3).frames)


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    # No test downloads anything: empty caches, downloads off.
    monkeypatch.setenv("TRACK3D_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TRACK3D_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _one_line_error(rc, capsys, *needles) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("track3d: error: "), err
    for needle in needles:
        assert needle in lines[0], err
    return lines[0]


# -- the estimator ------------------------------------------------------------------------------


@pytest.mark.parametrize("height, width", [(1080, 1920), (480, 854), (128, 160), (720, 405), (518, 518), (40, 30)])
def test_input_size_is_the_image_processors(height, width):
    try:
        from transformers.models.dpt.image_processing_pil_dpt import get_resize_output_image_size
    except ImportError:  # transformers 4.x
        from transformers.models.dpt.image_processing_dpt import get_resize_output_image_size
    expected = get_resize_output_image_size(np.zeros((3, height, width)), (518, 518), True, 14)
    expected = (expected["height"], expected["width"]) if not isinstance(expected, tuple) else expected
    assert DepthPreprocessing().input_size(height, width) == tuple(expected)
    h, w = DepthPreprocessing().input_size(height, width)
    assert h % 14 == 0 and w % 14 == 0
    assert 518 in (h, w)  # one side at the input size, by the factor closest to 1


def test_estimator_maps_shape_batches_and_kind(tiny_model):
    est = DepthEstimator.from_pretrained(str(tiny_model), batch_size=3)
    assert est.kind == "affine_disparity" and est.preprocessing.size == (INPUT, INPUT)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (7, 96, 128, 3), dtype=np.uint8)
    x = est.preprocess(frames[:2])
    h, w = est.preprocessing.input_size(96, 128)
    assert (h, w) == (56, 70) and x.shape == (2, 3, h, w) and x.dtype == torch.float32
    maps = est.estimate(iter(frames), num_frames=7)  # batches of 3, 3, 1
    assert maps.shape == (7, h, w) and maps.dtype == np.float32 and (maps > 0).all()
    np.testing.assert_allclose(est.estimate(iter(frames)), maps, rtol=1e-5, atol=1e-6)  # length unknown
    one = DepthEstimator(est.model, est.preprocessing, batch_size=1)
    np.testing.assert_allclose(one.estimate(iter(frames), num_frames=7), maps, rtol=1e-4, atol=1e-6)
    with pytest.raises(Track3DError, match="gave 7 frames"):
        est.estimate(iter(frames), num_frames=8)
    with pytest.raises(Track3DError, match="more than the 5"):
        est.estimate(iter(frames), num_frames=5)
    with pytest.raises(ValueError, match="uint8"):
        est(frames.astype(np.float32))


def test_metric_variant_says_metric(tmp_path):
    est = DepthEstimator.from_pretrained(str(_tiny_depth_anything(tmp_path / "metric", metric=True)))
    assert est.kind == "metric"


def test_default_name_and_aliases():
    assert resolve_name("default") == resolve_name("Depth-Anything-V2") == resolve_name(None) == DEFAULT_MODEL
    assert resolve_name("org/other-depth") == "org/other-depth"


def test_not_cached_offline_is_one_line_naming_the_model_and_the_way(tmp_path):
    with pytest.raises(Track3DError) as info:
        DepthEstimator.from_pretrained("nobody/depth-model-that-is-not-cached")
    message = str(info.value)
    assert "\n" not in message and "nobody/depth-model-that-is-not-cached" in message
    assert "HF_HUB_OFFLINE" in message and "local folder" in message
    with pytest.raises(Track3DError, match="no such folder"):
        DepthEstimator.from_pretrained(str(tmp_path / "missing"))


def test_without_the_extra_the_message_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(Track3DError, match=r"track3d\[depth\]"):
        DepthEstimator.from_pretrained("default")


# -- track3d reconstruct --depth-model ----------------------------------------------------------


def test_reconstruct_with_a_depth_model_end_to_end(video, tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["-q", "reconstruct", str(video), "--depth-model", str(tiny_model), "--grid", "6",
               "--model", "baseline", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["depth"] == {"source": "model", "model": str(tiny_model), "kind": "affine_disparity",
                                "map_size": [70, 56]}  # 160x128 -> short side 56, long side 70
    assert summary["options"]["depth_kind"] == "affine_disparity"
    assert summary["options"]["depth_model"] == str(tiny_model)
    assert {"load_depth_model", "depth"} <= set(summary["timings"]) and "depth" in summary["peak_memory_mb"]
    assert f"depth from model {tiny_model} (affine_disparity)" in capsys.readouterr().out


def test_depth_model_not_cached_offline_is_a_one_line_error(video, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["reconstruct", str(video), "--depth-model", "nobody/not-cached-depth", "--model", "baseline",
               "--out", str(out)])
    _one_line_error(rc, capsys, "nobody/not-cached-depth", "HF_HUB_OFFLINE")
    assert not out.exists()


def test_depth_folder_and_depth_model_together_is_a_usage_error(video, tiny_model, tmp_path, capsys):
    (tmp_path / "maps").mkdir()
    out = tmp_path / "out"
    rc = main(["reconstruct", str(video), "--depth", str(tmp_path / "maps"), "--depth-model", str(tiny_model),
               "--model", "baseline", "--out", str(out)])
    _one_line_error(rc, capsys, "--depth and --depth-model")
    assert not out.exists()
