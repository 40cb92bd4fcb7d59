"""One release of grace for a module that moved or was renamed: importing the old path
warns once (a ``DeprecationWarning`` at the importer's line, naming the new path) and gives
the new module itself, so the same objects are reached by either name and monkeypatching
either patches the real module."""

from __future__ import annotations

import importlib
import sys
import warnings


def redirect(old: str, new: str, how: str = "is now") -> None:
    """Make the module being imported as ``old`` the module ``new`` (``how``: ``"moved to"``
    or ``"is now"``, for the warning)."""
    module = importlib.import_module(new)
    warnings.warn(
        f"{old} {how} {new}; import that instead (the old path goes next release)",
        DeprecationWarning,
        stacklevel=3,  # past this function and the old module's body: the importer's line
    )
    sys.modules[old] = module
