"""Deprecated path: this module moved to :mod:`predcode.app.cli`.

``import predcode.cli`` keeps working for one release: it warns once and hands back
:mod:`predcode.app.cli` itself (same objects, and monkeypatching either name patches the real
module).  Import ``predcode.app.cli`` instead.

The ``predcode`` command's wrapper script imports this path while the package metadata
(``[project.scripts]``) still names it; that import does not warn, since the user running
the command can do nothing about it.
"""

import os
import sys
import warnings

from .app import cli as _module

_main_file = getattr(sys.modules.get("__main__"), "__file__", None) or ""
if os.path.splitext(os.path.basename(_main_file))[0] not in ("predcode", "predcode-script"):
    warnings.warn(
        "predcode.cli moved to predcode.app.cli; import that instead (the old path goes next release)",
        DeprecationWarning,
        stacklevel=2,
    )
sys.modules[__name__] = _module
