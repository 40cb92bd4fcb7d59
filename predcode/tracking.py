"""Deprecated path: this module moved to :mod:`predcode.app.tracking`.

``import predcode.tracking`` keeps working for one release: it warns once and hands back
:mod:`predcode.app.tracking` itself (same objects, and monkeypatching either name patches the real
module).  Import ``predcode.app.tracking`` instead.
"""

import sys
import warnings

from .app import tracking as _module

warnings.warn(
    "predcode.tracking moved to predcode.app.tracking; import that instead (the old path goes next release)",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _module
