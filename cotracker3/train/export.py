"""Writing a training run's model into the package as the embedded model.

:func:`export_run` is what ``track3d train --export-embedded`` (and
``pseudo-label --export-embedded``) does when training ends: round the run's
weights to 16 bits as they will be shipped, choose the visibility threshold
and refinement iterations on calibration scenes
(:func:`cotracker3.eval.scoring.calibrate_visibility`), evaluate the model with
them on the held-out synthetic set, and :func:`export` it: 16-bit safetensors
plus ``provenance.json`` (:mod:`cotracker3.embedded` reads them back). Every
figure in the provenance is therefore one of the shipped weights, the figure
``track3d eval synthetic --tracker embedded`` prints.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from pathlib import Path

import torch

from cotracker3.embedded import MAX_BYTES, NAME, PROVENANCE_FILE, WEIGHTS_FILE, weights_dir
from cotracker3.errors import CheckpointError
from cotracker3.eval.scoring import CALIBRATION_ITERS, calibrate_visibility, calibration_videos
from cotracker3.predictor import Predictor
from cotracker3.train.loop import CHECKPOINT, _load_checkpoint, evaluate_model, load_run_model

logger = logging.getLogger(__name__)


def export(run_dir: str | Path, dest: str | Path | None = None, *, metrics: dict | None = None,
           command: str = "", wall_time_s: float | None = None, calibration: dict | None = None) -> Path:
    """Write a training run's model as the embedded model (16-bit weights plus provenance).

    Args:
        run_dir: a ``track3d train`` / ``pseudo-label`` run folder (its ``checkpoint.pt``).
        dest: folder to write into (default: :func:`cotracker3.embedded.weights_dir`).
        metrics: evaluation figures to record (e.g. AJ / delta_avg / OA per tier).
        command: the command line(s) that trained it.
        wall_time_s: training wall time to record (default: what the run's
            checkpoint recorded, plus that of the run it was initialised from).
        calibration: :meth:`cotracker3.eval.scoring.Calibration.to_json` of the model:
            its ``threshold`` becomes the embedded model's visibility threshold
            (``visibility_threshold`` in the provenance) and its ``iters``, if
            calibrated, the model's refinement iterations (``iters``); without
            them, the predictors' defaults apply.

    Returns:
        The folder.

    Raises:
        CheckpointError: no usable checkpoint in ``run_dir``, or the weights exceed :data:`MAX_BYTES`.
    """
    from safetensors.torch import save_file

    ckpt = _load_checkpoint(Path(run_dir) / CHECKPOINT)
    config = ckpt["config"]
    parent = _parent_run(config.get("init"))
    if wall_time_s is None and ckpt.get("wall_s") is not None:
        wall_time_s = float(ckpt["wall_s"]) + float((parent or {}).get("wall_time_s") or 0.0)
    dest = Path(dest) if dest is not None else weights_dir()
    dest.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in ckpt["model"].items()}
    tmp = dest / f".{WEIGHTS_FILE}.tmp"
    tmp_record = dest / f".{PROVENANCE_FILE}.tmp"
    try:
        save_file(state, str(tmp))
        size = tmp.stat().st_size
        if size > MAX_BYTES:
            raise CheckpointError(f"the model takes {size / 2**20:.1f} MiB in 16 bits; the embedded model must "
                                  f"fit in {MAX_BYTES / 2**20:.0f} MiB")
        tmp_record.write_text(json.dumps(_record(ckpt, config, state, size, parent, metrics, command,
                                                 wall_time_s, calibration), indent=1))
        # Both files are complete before either replaces its old version; the old record goes first,
        # so the folder never pairs new weights with an old record (or the reverse): in between it
        # holds no model (embedded.available() is False), then the new pair.
        (dest / PROVENANCE_FILE).unlink(missing_ok=True)
        os.replace(tmp, dest / WEIGHTS_FILE)
        os.replace(tmp_record, dest / PROVENANCE_FILE)
    finally:
        tmp.unlink(missing_ok=True)
        tmp_record.unlink(missing_ok=True)
    return dest


def _record(ckpt: dict, config: dict, state: dict, size: int, parent: dict | None, metrics: dict | None,
            command: str, wall_time_s: float | None, calibration: dict | None) -> dict:
    """The content of ``provenance.json``."""
    return {
        "name": NAME,
        "architecture": config["model"],
        "parameters": int(sum(v.numel() for v in state.values())),
        "bytes": size,
        "steps": int(ckpt["step"]),
        "training": {k: v for k, v in config.items() if k != "model"},
        "data": {"training_stream_seed": config.get("seed"), "real_videos": ckpt.get("videos"),
                 "evaluation": "the held-out synthetic set (cotracker3.synthetic.EVAL_TIERS, eval_seed)"},
        "initialised_from": parent,
        "visibility_threshold": (calibration or {}).get("threshold"),
        "iters": (calibration or {}).get("iters"),
        "calibration": calibration,
        "metrics": metrics or {},
        "command": command,
        "wall_time_s": wall_time_s,
        "torch": torch.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _parent_run(init: str | None) -> dict | None:
    """The record of the run whose weights ``init`` are (its folder's checkpoint), if there is one."""
    if not init or not (Path(init).parent / CHECKPOINT).is_file():
        return None
    ckpt = _load_checkpoint(Path(init).parent / CHECKPOINT)
    return {"run": Path(init).parent.name, "steps": int(ckpt["step"]),
            "training": {k: v for k, v in ckpt["config"].items() if k != "model"},
            "wall_time_s": ckpt.get("wall_s")}


def as_shipped(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every parameter and buffer rounded to 16 bits and back, as
    :func:`export` stores them and :func:`cotracker3.embedded.load` reads them (in place)."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(torch.float16).to(tensor.dtype))
    return model


def export_run(run_dir: str | Path, dest: str | Path | None = None, *, command: str = "") -> tuple[Path, dict]:
    """Calibrate, evaluate and export a finished run's model as the embedded model.

    The run's weights are first rounded to 16 bits (:func:`as_shipped`): the
    visibility threshold and refinement iterations are chosen on calibration
    scenes (:func:`cotracker3.eval.scoring.calibration_videos`, never the
    held-out set), the model is evaluated with them on the held-out synthetic
    set (5 scenes per tier), and :func:`export` writes it with both in the
    provenance. Progress goes to the log.

    Args:
        run_dir: a ``track3d train`` / ``pseudo-label`` run folder.
        dest: folder to write into (default: :func:`cotracker3.embedded.weights_dir`).
        command: the command line(s) that trained it, for the provenance.

    Returns:
        ``(folder, metrics)``: where it was written, and its figures (percent) per tier.

    Raises:
        CheckpointError: no usable checkpoint in ``run_dir``, or the weights are too large.
    """
    model = as_shipped(load_run_model(run_dir))
    logger.info("choosing the visibility threshold and refinement iterations on calibration scenes ...")
    calibration = calibrate_visibility(Predictor(model), calibration_videos(), iterations=CALIBRATION_ITERS)
    model.visibility_threshold, model.iters = calibration.threshold, calibration.iters
    logger.info("visibility threshold %s, %s iterations; evaluating on the synthetic set for the provenance "
                "record ...", calibration.threshold, calibration.iters)
    metrics = evaluate_model(model, videos_per_tier=5)
    folder = export(run_dir, dest, metrics=metrics, command=command, calibration=calibration.to_json())
    return folder, metrics
