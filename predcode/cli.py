"""Deprecated path: this module moved to :mod:`predcode.app.cli`.

``import predcode.cli`` keeps working for one release: it warns once and hands back
:mod:`predcode.app.cli` itself (same objects, and monkeypatching either name patches the real
module).  Import ``predcode.app.cli`` instead; the ``predcode`` command runs it directly.
"""

import sys
import warnings

from .app import cli as _module

warnings.warn(
    "predcode.cli moved to predcode.app.cli; import that instead (the old path goes next release)",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _module
