"""Relative depth per frame from a monocular depth network (an optional extra).

``track3d reconstruct VIDEO --depth-model default`` places the moving points
with depth maps that :class:`DepthEstimator` computes from the video itself:
Depth Anything V2 (Yang et al., 2024, `arXiv 2406.09414
<https://arxiv.org/abs/2406.09414>`_) through Hugging Face ``transformers``
(``AutoModelForDepthEstimation``), installed with ``pip install track3d[depth]``
and imported only here, only when used.

Weights: a Hugging Face model name (default :data:`DEFAULT_MODEL`, Apache-2.0)
or a local folder (``config.json`` and ``model.safetensors``, as
``save_pretrained`` writes them). A name is looked up in the Hugging Face cache
(``$HF_HOME/hub``, default ``~/.cache/huggingface/hub``) and downloaded there on
first use, like any ``transformers`` model; with ``HF_HUB_OFFLINE=1`` or
``TRACK3D_OFFLINE=1`` only the cache is read. Weights load from safetensors
only (``use_safetensors=True``): nothing in a file is executed.

What the maps hold: Depth Anything's relative models output *relative inverse
depth* (disparity up to an unknown scale and shift, per frame), which
:mod:`recon` fits to the static points frame by frame
(``depth_kind="affine_disparity"``); its metric variants
(``depth_estimation_type="metric"``) output depth in metres (``"metric"``).
:attr:`DepthEstimator.kind` says which.

Pre-processing, in one place (:meth:`DepthEstimator.preprocess`), as the
model's own image processor does it (Depth Anything's ``DPTImageProcessor``),
without its torchvision dependency: the whole frame is resized (OpenCV: area
when shrinking, bicubic when enlarging), keeping its aspect ratio, by the
factor closest to 1 that brings one side to the model's input size (518 px for
Depth Anything: a frame larger than that gets its shorter side at 518), both
sides rounded to a multiple of the patch size (14 for DINOv2 backbones),
then scaled to ``[0, 1]`` and normalised with the ImageNet mean and standard
deviation. The values come from the model's
``preprocessor_config.json`` when it has one. The maps come back at the
network's output resolution, covering the whole frame (they are not
upsampled to the video's size: :mod:`recon` samples any resolution).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from track3d.errors import Track3DError

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"
"""The model ``--depth-model default`` names: Depth Anything V2 Small (24.8 M parameters, Apache-2.0;
the Base and Large V2 models are CC-BY-NC-4.0, non-commercial)."""

DEFAULT_ALIASES = ("default", "depth-anything", "depth-anything-v2")
"""Names that mean :data:`DEFAULT_MODEL`."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

INSTALL_HINT = "pip install 'track3d[depth]'"


@dataclass(frozen=True)
class DepthPreprocessing:
    """How frames are prepared for a depth network (Depth Anything's ``DPTImageProcessor`` values).

    Attributes:
        size: ``(height, width)`` the frame is resized towards.
        keep_aspect_ratio: scale both sides alike, by the factor closest to 1 of
            the two (for a frame larger than ``size``: its shorter side becomes
            the target's); otherwise each side to its target.
        multiple: both sides are rounded to a multiple of this (the patch size).
        mean, std: per-channel normalisation of values in ``[0, 1]``.
    """

    size: tuple[int, int] = (518, 518)
    keep_aspect_ratio: bool = True
    multiple: int = 14
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def from_config(cls, config: dict, patch_size: int = 14) -> "DepthPreprocessing":
        """From a ``preprocessor_config.json`` dict; missing entries keep Depth Anything's values."""
        size = config.get("size") or {}
        if isinstance(size, int):
            size = {"height": size, "width": size}
        height = int(size.get("height", size.get("shortest_edge", 518)))
        width = int(size.get("width", size.get("shortest_edge", 518)))
        normalise = config.get("do_normalize", True)
        return cls(
            size=(height, width),
            keep_aspect_ratio=bool(config.get("keep_aspect_ratio", True)),
            multiple=int(config.get("ensure_multiple_of") or patch_size),
            mean=tuple(config.get("image_mean", IMAGENET_MEAN)) if normalise else (0.0, 0.0, 0.0),
            std=tuple(config.get("image_std", IMAGENET_STD)) if normalise else (1.0, 1.0, 1.0),
        )

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` the network sees for a ``height x width`` frame (the image processor's rule)."""
        scale_h, scale_w = self.size[0] / height, self.size[1] / width
        if self.keep_aspect_ratio:
            scale_h = scale_w = scale_w if abs(1 - scale_w) < abs(1 - scale_h) else scale_h

        def multiple_of(value: float) -> int:
            return max(self.multiple, int(round(value / self.multiple)) * self.multiple)

        return multiple_of(scale_h * height), multiple_of(scale_w * width)


class DepthEstimator:
    """Depth maps of video frames from a loaded ``transformers`` depth model.

    The constructor only wires what it is given; :meth:`from_pretrained` loads
    weights. Call it on a batch of frames, or :meth:`estimate` on a stream.

    Args:
        model: a ``transformers`` depth-estimation model (``AutoModelForDepthEstimation``),
            already on ``device``; it is put in eval mode.
        preprocessing: how frames are prepared (:class:`DepthPreprocessing`).
        device: where the model runs (the tracker's device).
        name: the model's name or folder, for messages and the summary.
        dtype: arithmetic: ``torch.float32``, or ``bfloat16`` / ``float16`` for
            mixed precision (autocast); the maps are float32 either way.
        batch_size: frames per forward pass in :meth:`estimate`.
    """

    def __init__(self, model: torch.nn.Module, preprocessing: DepthPreprocessing | None = None, *,
                 device: str | torch.device = "cpu", name: str = "", dtype: torch.dtype = torch.float32,
                 batch_size: int = 4):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model.eval()
        self.preprocessing = preprocessing or DepthPreprocessing()
        self.device = torch.device(device)
        self.name = name
        self.dtype = dtype
        self.batch_size = int(batch_size)

    @property
    def kind(self) -> str:
        """What the maps hold, as :mod:`recon` names it: ``"affine_disparity"`` (relative
        inverse depth: Depth Anything's relative models) or ``"metric"`` (its metric ones)."""
        config = getattr(self.model, "config", None)
        return "metric" if getattr(config, "depth_estimation_type", "relative") == "metric" else "affine_disparity"

    @classmethod
    def from_pretrained(cls, name: str = DEFAULT_MODEL, *, device: str | torch.device = "cpu",
                        download: bool = True, **kwargs) -> "DepthEstimator":
        """Load a depth model by Hugging Face name or local folder.

        Args:
            name: a Hugging Face model name, one of :data:`DEFAULT_ALIASES` for
                :data:`DEFAULT_MODEL`, or a folder written by ``save_pretrained``.
            device: where it runs.
            download: fetch missing weights into the Hugging Face cache; also off
                when ``HF_HUB_OFFLINE=1`` or ``TRACK3D_OFFLINE=1``.
            **kwargs: passed to the constructor (``dtype``, ``batch_size``).

        Raises:
            Track3DError: ``transformers`` is not installed, or the weights can be
                neither found nor downloaded (one line saying how to get them).
        """
        try:
            import transformers
        except ImportError:
            raise Track3DError(f"--depth-model needs the 'depth' extra (Hugging Face transformers): "
                               f"{INSTALL_HINT}") from None
        name = resolve_name(name)
        local = Path(name).expanduser()
        is_folder = local.is_dir()
        if not is_folder and (name.startswith((".", "/", "~")) or name.count("/") > 1):  # a path, not 'org/name'
            raise Track3DError(f"--depth-model {name}: no such folder")
        offline = not download or _env_true("HF_HUB_OFFLINE") or _env_true("TRACK3D_OFFLINE")
        source = str(local) if is_folder else name
        from transformers.utils import logging as tf_logging

        bars = tf_logging.is_progress_bar_enabled()
        tf_logging.disable_progress_bar()  # the 'Loading weights' bar; downloads keep theirs
        try:
            model = transformers.AutoModelForDepthEstimation.from_pretrained(
                source, use_safetensors=True, local_files_only=offline and not is_folder)
        except (OSError, ValueError) as exc:
            raise Track3DError(_unavailable_message(name, is_folder, offline, exc)) from None
        finally:
            if bars:
                tf_logging.enable_progress_bar()
        patch = getattr(model.config, "patch_size", 14)
        patch = int(patch[0] if isinstance(patch, (list, tuple)) else patch)
        preprocessing = DepthPreprocessing.from_config(_preprocessor_config(source, is_folder, offline), patch)
        logger.info("depth model %s (%s) on %s, input %s", name, type(model).__name__, device, preprocessing.size)
        return cls(model.to(device), preprocessing, device=device, name=name, **kwargs)

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """Frames to the network's input (resize, scale, normalise; see the module documentation).

        Shape:
            frames: ``(B, H, W, 3)`` uint8 RGB. Returns ``(B, 3, h, w)`` float32 on :attr:`device`,
            ``(h, w)`` from :meth:`DepthPreprocessing.input_size`.
        """
        import cv2

        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be (B, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
        H, W = frames.shape[1:3]
        h, w = self.preprocessing.input_size(H, W)
        interpolation = cv2.INTER_AREA if h * w < H * W else cv2.INTER_CUBIC
        resized = np.stack([cv2.resize(f, (w, h), interpolation=interpolation) for f in frames])
        x = torch.from_numpy(resized).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.preprocessing.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.preprocessing.std, device=self.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """Depth maps of a batch of frames.

        Args:
            frames: RGB frames.

        Returns:
            The network's output (:attr:`kind`), float32, at its output resolution
            (for Depth Anything the input size, e.g. 518 x 924 for a 16:9 frame),
            covering the whole frame; 0 where the network gives nothing.

        Shape:
            frames: ``(B, H, W, 3)`` uint8. Returns ``(B, h, w)`` float32.
        """
        x = self.preprocess(frames)
        autocast = self.dtype != torch.float32
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=autocast):
            out = self.model(pixel_values=x).predicted_depth
        if out.ndim == 4:  # (B, 1, h, w) from some heads
            out = out[:, 0]
        return out.float().cpu().numpy()

    def estimate(self, frames: Iterable[np.ndarray], num_frames: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Depth maps of a stream of frames, :attr:`batch_size` at a time.

        Memory holds one batch of frames and the maps: with ``num_frames`` the
        output is allocated once (a longer stream is an error).

        Args:
            frames: RGB frames, e.g. :func:`track3d.video.iter_frames` (a generator is fine).
            num_frames: how many there are, when known.
            progress: called as ``progress(done, total)`` after each batch (total 0: unknown).

        Returns:
            ``(T, h, w)`` float32 (see :meth:`__call__`).
        """
        out: np.ndarray | None = None
        parts: list[np.ndarray] = []
        done = 0
        for batch in _batches(frames, self.batch_size):
            maps = self(batch)
            if num_frames is None:
                parts.append(maps)
            else:
                if done + len(maps) > num_frames:
                    raise Track3DError(f"the video gave more than the {num_frames} frames it was tracked on")
                if out is None:
                    out = np.empty((num_frames, *maps.shape[1:]), np.float32)
                out[done:done + len(maps)] = maps
            done += len(maps)
            if progress is not None:
                progress(done, num_frames or 0)
        if num_frames is None:
            if not parts:
                raise Track3DError("no frame to estimate depth on")
            return np.concatenate(parts)
        if done != num_frames:
            raise Track3DError(f"the video gave {done} frames for depth, {num_frames} were tracked")
        return out


def resolve_name(name: str | None) -> str:
    """``None`` or an alias (:data:`DEFAULT_ALIASES`) -> :data:`DEFAULT_MODEL`; anything else as given."""
    if name is None or name.strip().lower() in DEFAULT_ALIASES:
        return DEFAULT_MODEL
    return name


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _batches(frames: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


def _unavailable_message(name: str, is_folder: bool, offline: bool, exc: Exception) -> str:
    reason = " ".join(str(exc).split())
    reason = reason if len(reason) <= 200 else reason[:197] + "..."
    if is_folder:
        return (f"cannot load the depth model in {name}: {reason} (a folder needs config.json and "
                "model.safetensors, as save_pretrained(..., safe_serialization=True) writes them)")
    how = ("it is not in the Hugging Face cache and downloads are off (HF_HUB_OFFLINE / TRACK3D_OFFLINE)"
           if offline else f"it is not in the Hugging Face cache and could not be downloaded ({reason})")
    return (f"depth model {name!r} is not available: {how}; run once with network access to download it "
            "into the cache (then HF_HUB_OFFLINE=1 works offline), or pass a local folder "
            "written by save_pretrained")


def _preprocessor_config(source: str, is_folder: bool, offline: bool) -> dict:
    """The model's ``preprocessor_config.json`` as a dict, or ``{}`` (Depth Anything's defaults)."""
    try:
        if is_folder:
            path = Path(source) / "preprocessor_config.json"
            if not path.is_file():
                return {}
        else:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(source, "preprocessor_config.json", local_files_only=offline)
        return json.loads(Path(path).read_text())
    except Exception as exc:  # The defaults are Depth Anything's: say so and go on.
        logger.warning("no preprocessor_config.json for %s (%s); using Depth Anything's pre-processing", source,
                       " ".join(str(exc).split())[:120])
        return {}
