"""Deprecated path: this module moved to :mod:`predcode.models.mupc`.

``import predcode.mupc`` keeps working for one release: it warns once and hands back
:mod:`predcode.models.mupc` itself (same objects, and monkeypatching either name patches the real
module).  Import ``predcode.models.mupc`` instead.
"""

import sys
import warnings

from .models import mupc as _module

warnings.warn(
    "predcode.mupc moved to predcode.models.mupc; import that instead (the old path goes next release)",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _module
