"""The project's own small CoTracker3, shipped inside the package (registry name ``embedded``).

It has the CoTracker3 architecture at smaller sizes (:data:`SMALL_MODEL`), is
trained by ``track3d train`` on the synthetic engine (and optionally
fine-tuned by ``track3d pseudo-label``), and is written into the package by
:func:`cotracker3.train.export.export` as 16-bit safetensors (at most
:data:`MAX_BYTES`) with ``provenance.json``: the architecture, the training
configuration, steps, data seeds, metrics and the command that made it.
``track3d track`` / ``reconstruct`` use it when the published weights cannot
be had; until a build ships it, they fall back to the classical baseline.

This module is the inference side only (where the files are, reading them):
:func:`cotracker3.weights.from_pretrained` finds the model through it without
importing any training code.

``TRACK3D_EMBEDDED_DIR`` points at another folder holding the two files
(for tests, or to try a model before shipping it).
"""

from __future__ import annotations

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

SMALL_MODEL: dict = dict(
    window_len=24, model_resolution=(256, 256), latent_dim=64, hidden_size=128, num_heads=4, time_depth=2,
    space_depth=2, corr_hidden_dim=128, corr_embed_dim=64, num_virtual_tracks=16,
)
"""Sizes of the small model the project trains on a CPU (about 2.6 M parameters): the
embedded model's unless its provenance says otherwise, and ``track3d train``'s default."""


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
            f"{weights_dir()}); train one with 'track3d train --export-embedded' (or export a run with "
            "cotracker3.train.export.export), or use the published weights or --model baseline")


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
