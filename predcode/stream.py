"""Deprecated path: this module moved to :mod:`predcode.bio.stream`.

``import predcode.stream`` keeps working for one release: it warns once and hands back
:mod:`predcode.bio.stream` itself (same objects, and monkeypatching either name patches the real
module).  Import ``predcode.bio.stream`` instead.
"""

import sys
import warnings

from .bio import stream as _module

warnings.warn(
    "predcode.stream moved to predcode.bio.stream; import that instead (the old path goes next release)",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _module
