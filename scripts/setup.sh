#!/usr/bin/env bash
# Set up everything on a fresh machine: virtual environment, PyTorch (CPU build 2.13.0),
# predcode with its test, plotting, TensorBoard, documentation and reproduction extras, and the MNIST and
# Fashion-MNIST data.
# Re-running is safe: each step is skipped or quick when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[test,plots,tb,docs,repro]"
.venv/bin/python -m predcode.native   # the native kernels, compiled once for this machine
.venv/bin/predcode data fetch mnist fashion-mnist shakespeare
# Headless Chromium for the documentation site's browser test (Debian's package; needs root).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "note: could not install chromium; the docs browser test will be skipped" >&2
fi
echo "setup complete: activate with 'source .venv/bin/activate'"
