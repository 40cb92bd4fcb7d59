"""Deprecated path: this module is now :mod:`predcode.data.exceptions`.

``import predcode.data.errors`` keeps working for one release: it warns once and hands back
:mod:`predcode.data.exceptions` itself (same objects).  Import ``predcode.data.exceptions`` instead.
"""

import sys
import warnings

from . import exceptions as _module

warnings.warn(
    "predcode.data.errors is now predcode.data.exceptions; import that instead (the old path goes next release)",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _module
