"""Deprecated path: this module moved to :mod:`predcode.app.train`.

``import predcode.train`` keeps working for one release: it warns once and hands back
:mod:`predcode.app.train` itself (same objects, and monkeypatching either name patches the real
module).  Import ``predcode.app.train`` instead.
"""

import sys
import warnings

from .app import train as _module

warnings.warn(
    "predcode.train moved to predcode.app.train; import that instead (the old path goes next release)",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _module
