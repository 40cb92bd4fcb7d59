"""``python -m predcode.native``: build the native kernels now (setup.sh does this)."""

import sys

from .build import NativeUnavailable, load

try:
    native = load()
except NativeUnavailable as why:
    print(f"predcode native kernels: not built ({why})", file=sys.stderr)
    sys.exit(0)  # the PyTorch path still works; setup must not fail for this
print(f"predcode native kernels: {native.path}")
