"""Deprecated path: this module moved to :mod:`predcode.app.checkpoint`.

``import predcode.checkpoint`` keeps working for one release: it warns once and hands back
:mod:`predcode.app.checkpoint` itself (same objects, and monkeypatching either name patches the real
module).  Import ``predcode.app.checkpoint`` instead.
"""

import sys
import warnings

from .app import checkpoint as _module

warnings.warn(
    "predcode.checkpoint moved to predcode.app.checkpoint; import that instead (the old path goes next release)",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _module
