#!/usr/bin/env bash
# Set up track3d in ./.venv on a fresh machine (Python 3.11, CPU-only works).
#
#   bash install.sh            # runtime + test dependencies + the 'depth' extra (transformers)
#
# Environment:
#   PYTHON       interpreter to build the venv with (default: python3.11, else python3)
#   TORCH_SPEC   torch requirement installed first (default: torch==2.13.0, the CPU wheel
#                on our machines). Installing torch first matters: a bare `torch`
#                requirement with no torch installed pulls several GB of CUDA wheels.
#   VENV         where to create the virtual environment (default: .venv)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
VENV=${VENV:-.venv}

# Open3D's shared library needs libusb at import time.
if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1\.0\.so\.0'; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""
        [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        echo "install.sh: installing libusb-1.0-0 (needed by Open3D)"
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null
    else
        echo "install.sh: warning: libusb-1.0 not found; install it for Open3D (e.g. apt-get install libusb-1.0-0)" >&2
    fi
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$TORCH_SPEC"
# TORCH_SPEC again, so that nothing the extras pull in can replace the torch installed above.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[test,depth]" "$TORCH_SPEC"
"$VENV/bin/python" -c "import torch, open3d, pycolmap, rerun, av, cv2, transformers, ray, track3d; print('track3d', track3d.__version__, 'with torch', torch.__version__, 'and transformers', transformers.__version__, 'and ray', ray.__version__, 'is ready in $VENV')"
