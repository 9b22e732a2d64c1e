"""The project's own small CoTracker3, shipped inside the package (registry name ``embedded``).

It has the CoTracker3 architecture at smaller sizes
(:data:`cotracker3.training.SMALL_MODEL`), is trained by ``track3d train`` on
the synthetic engine (and optionally fine-tuned by ``track3d pseudo-label``),
and is written into the package by :func:`export` as 16-bit safetensors
(at most :data:`MAX_BYTES`) with ``provenance.json``: the architecture, the
training configuration, steps, data seeds, metrics and the command that made
it. ``track3d track`` / ``reconstruct`` use it when the published weights
cannot be had; until a build ships it, they fall back to the classical
baseline.

``TRACK3D_EMBEDDED_DIR`` points at another folder holding the two files
(for tests, or to try a model before shipping it).
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import torch

from cotracker3.errors import CheckpointError, WeightsUnavailableError

NAME = "embedded"
WEIGHTS_FILE = "model.safetensors"
PROVENANCE_FILE = "provenance.json"
MAX_BYTES = 10 * 1024 * 1024
PACKAGE_DIR = Path(__file__).with_name("embedded_weights")


def weights_dir() -> Path:
    """Where the embedded model lives: ``TRACK3D_EMBEDDED_DIR``, else inside the package."""
    return Path(os.environ.get("TRACK3D_EMBEDDED_DIR") or PACKAGE_DIR)


def available() -> bool:
    """Whether this build ships the embedded model."""
    folder = weights_dir()
    return (folder / WEIGHTS_FILE).is_file() and (folder / PROVENANCE_FILE).is_file()


def provenance() -> dict:
    """The record of how the embedded model was made."""
    if not available():
        raise WeightsUnavailableError(_missing())
    return json.loads((weights_dir() / PROVENANCE_FILE).read_text())


def _missing() -> str:
    return (f"the embedded model is not shipped in this build (no {WEIGHTS_FILE} and {PROVENANCE_FILE} in "
            f"{weights_dir()}); train one with 'track3d train' and export it with "
            "cotracker3.embedded.export, or use the published weights or --model baseline")


def load() -> torch.nn.Module:
    """The embedded model, float32, in eval mode, on the CPU.

    Raises:
        WeightsUnavailableError: this build does not ship it.
        CheckpointError: the shipped files are damaged.
    """
    from safetensors.torch import load_file

    from cotracker3.model import CoTracker3Offline

    record = provenance()
    model = CoTracker3Offline(**record["architecture"])
    try:
        state = {k: v.float() for k, v in load_file(str(weights_dir() / WEIGHTS_FILE)).items()}
        model.load_state_dict(state)
    except Exception as exc:  # safetensors and torch raise many types: all mean a damaged file
        raise CheckpointError(f"the embedded model in {weights_dir()} is damaged: {exc}") from None
    threshold = record.get("visibility_threshold")
    if threshold is not None:  # predictors built on the model use its calibrated threshold
        model.visibility_threshold = float(threshold)
    iters = record.get("iters")
    if iters is not None:  # ... and its calibrated number of refinement iterations
        model.iters = int(iters)
    return model.eval()


def export(run_dir: str | Path, dest: str | Path | None = None, *, metrics: dict | None = None,
           command: str = "", wall_time_s: float | None = None, calibration: dict | None = None) -> Path:
    """Write a training run's model as the embedded model (16-bit weights plus provenance).

    Args:
        run_dir: a ``track3d train`` / ``pseudo-label`` run folder (its ``checkpoint.pt``).
        dest: folder to write into (default: :func:`weights_dir`).
        metrics: evaluation figures to record (e.g. AJ / delta_avg / OA per tier).
        command: the command line(s) that trained it.
        wall_time_s: training wall time to record (default: what the run's
            checkpoint recorded, plus that of the run it was initialised from).
        calibration: :meth:`cotracker3.evaluation.Calibration.to_json` of the model:
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

    from cotracker3.training import CHECKPOINT, _load_checkpoint

    ckpt = _load_checkpoint(Path(run_dir) / CHECKPOINT)
    config = ckpt["config"]
    parent = _parent_run(config.get("init"))
    if wall_time_s is None and ckpt.get("wall_s") is not None:
        wall_time_s = float(ckpt["wall_s"]) + float((parent or {}).get("wall_time_s") or 0.0)
    dest = Path(dest) if dest is not None else weights_dir()
    dest.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in ckpt["model"].items()}
    tmp = dest / f".{WEIGHTS_FILE}.tmp"
    save_file(state, str(tmp))
    size = tmp.stat().st_size
    if size > MAX_BYTES:
        tmp.unlink()
        raise CheckpointError(f"the model takes {size / 2**20:.1f} MiB in 16 bits; the embedded model must fit "
                              f"in {MAX_BYTES / 2**20:.0f} MiB")
    os.replace(tmp, dest / WEIGHTS_FILE)
    record = {
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
    (dest / PROVENANCE_FILE).write_text(json.dumps(record, indent=1))
    return dest


def _parent_run(init: str | None) -> dict | None:
    """The record of the run whose weights ``init`` are (its folder's checkpoint), if there is one."""
    from cotracker3.training import CHECKPOINT, _load_checkpoint

    if not init or not (Path(init).parent / CHECKPOINT).is_file():
        return None
    ckpt = _load_checkpoint(Path(init).parent / CHECKPOINT)
    return {"run": Path(init).parent.name, "steps": int(ckpt["step"]),
            "training": {k: v for k, v in ckpt["config"].items() if k != "model"},
            "wall_time_s": ckpt.get("wall_s")}
