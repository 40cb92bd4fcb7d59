"""Deprecated path: this module moved to :mod:`predcode.app.query_cli`.

``import predcode.query_cli`` keeps working for one release: it warns once and hands back
:mod:`predcode.app.query_cli` itself (same objects, and monkeypatching either name patches the real
module).  Import ``predcode.app.query_cli`` instead.
"""

import sys
import warnings

from .app import query_cli as _module

warnings.warn(
    "predcode.query_cli moved to predcode.app.query_cli; import that instead (the old path goes next release)",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _module
