"""``python -m track3d``: the ``track3d`` command (what ``torchrun -m track3d train ...`` runs)."""

import sys

from track3d.cli import main

if __name__ == "__main__":
    sys.exit(main())
