"""Deprecated path: this module moved to :mod:`predcode.bio.circuit`.

``import predcode.circuit`` keeps working for one release: it warns once and hands back
:mod:`predcode.bio.circuit` itself (same objects, and monkeypatching either name patches the real
module).  Import ``predcode.bio.circuit`` instead.
"""

import sys
import warnings

from .bio import circuit as _module

warnings.warn(
    "predcode.circuit moved to predcode.bio.circuit; import that instead (the old path goes next release)",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _module
