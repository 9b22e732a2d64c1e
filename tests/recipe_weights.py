"""Deterministic CoTracker3 weights made by the recipe of the parity fixtures.

The recipe (tests/fixtures/parity/README.md) seeds one numpy generator per
parameter name with ``zlib.crc32(name)``, so the weights are the same on every
machine and match the ones the reference implementation was run with. Buffers
are not made here: the model computes them.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).parent / "fixtures"
PARITY = FIXTURES / "parity"

CONFIGS = {
    "offline": "offline_window_len_60",
    "online": "online_window_len_16",
}


def recipe_tensor(name: str, shape: list[int]) -> torch.Tensor:
    """One parameter of the recipe: float32, seeded by the CRC-32 of its name."""
    rng = np.random.default_rng(zlib.crc32(name.encode("utf-8")))
    z = rng.standard_normal(shape)
    if name.endswith("bias"):
        w = 0.1 * z
    elif len(shape) == 1:
        w = 1.0 + 0.1 * z
    else:
        w = z / math.sqrt(float(np.prod(shape[1:])))
    if name.startswith("updateformer.vis_conf_head."):
        w = 0.1 * w
    return torch.from_numpy(np.asarray(w, dtype=np.float32))


def state_dict_keys(kind: str = "offline") -> dict[str, dict]:
    """``{name: {"shape": [...], "kind": "parameter" | "buffer"}}`` of the reference."""
    table = json.loads((PARITY / "state_dict_keys.json").read_text())
    return table[CONFIGS[kind]]


def recipe_parameters(kind: str = "offline") -> dict[str, torch.Tensor]:
    """Every *parameter* of the published ``kind`` model, made by the recipe."""
    return {
        name: recipe_tensor(name, entry["shape"])
        for name, entry in state_dict_keys(kind).items()
        if entry["kind"] == "parameter"
    }
