"""Deprecated path: this module moved to :mod:`predcode.app.distributed`.

``import predcode.distributed`` keeps working for one release: it warns once and hands back
:mod:`predcode.app.distributed` itself (same objects, and monkeypatching either name patches the real
module).  Import ``predcode.app.distributed`` instead.
"""

import sys
import warnings

from .app import distributed as _module

warnings.warn(
    "predcode.distributed moved to predcode.app.distributed; import that instead (the old path goes next release)",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _module
