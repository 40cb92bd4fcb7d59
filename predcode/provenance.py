"""Deprecated path: this module moved to :mod:`predcode.app.provenance`.

``import predcode.provenance`` keeps working for one release: it warns once and hands back
:mod:`predcode.app.provenance` itself (same objects, and monkeypatching either name patches the real
module).  Import ``predcode.app.provenance`` instead.
"""

import sys
import warnings

from .app import provenance as _module

warnings.warn(
    "predcode.provenance moved to predcode.app.provenance; import that instead (the old path goes next release)",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _module
