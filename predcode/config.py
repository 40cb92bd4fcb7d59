"""Deprecated path: this module moved to :mod:`predcode.app.config`.

``import predcode.config`` keeps working for one release: it warns once and hands back
:mod:`predcode.app.config` itself (same objects, and monkeypatching either name patches the real
module).  Import ``predcode.app.config`` instead.
"""

import sys
import warnings

from .app import config as _module

warnings.warn(
    "predcode.config moved to predcode.app.config; import that instead (the old path goes next release)",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _module
