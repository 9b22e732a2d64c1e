"""Shared pytest setup.

Puts the repository root (for ``import cotracker3``, ``recon``, ... without an
install) and this folder (for test helpers such as ``recipe_weights``) on
``sys.path``.
"""

from __future__ import annotations

import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent

for _path in (str(REPO_ROOT), str(TESTS_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)
