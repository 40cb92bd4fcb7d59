"""Deprecated path: this module is now :mod:`predcode.exceptions`.

``import predcode.errors`` keeps working for one release: it warns once and hands back
:mod:`predcode.exceptions` itself (same objects).  Import ``predcode.exceptions`` instead.
"""

import sys
import warnings

from . import exceptions as _module

warnings.warn(
    "predcode.errors is now predcode.exceptions; import that instead (the old path goes next release)",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _module
