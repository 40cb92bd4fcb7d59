"""Deprecated path: this module is now :mod:`predcode.closed_form`.

``import predcode.local`` keeps working for one release: it warns once and hands back
:mod:`predcode.closed_form` itself (same objects).  Import ``predcode.closed_form`` instead.
"""

import sys
import warnings

from . import closed_form as _module

warnings.warn(
    "predcode.local is now predcode.closed_form; import that instead (the old path goes next release)",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _module
