"""Deprecated path: this module is now :mod:`predcode.learning`.

``import predcode.engine`` keeps working for one release: it warns once and hands back
:mod:`predcode.learning` itself (same objects).  Import ``predcode.learning`` instead.
"""

import sys
import warnings

from . import learning as _module

warnings.warn(
    "predcode.engine is now predcode.learning; import that instead (the old path goes next release)",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _module
