r"""One release of grace for what moved or was renamed.  A module's old path
(:func:`redirect`) warns once and gives the new module itself, so the same objects are
reached by either name and monkeypatching either patches the real module; an old name of a
function, class or method (:func:`renamed`) warns at each use and gives the new object.
Both warnings are ``DeprecationWarning``\ s at the user's line, naming the replacement."""

from __future__ import annotations

import importlib
import sys
import warnings
from typing import TypeVar

T = TypeVar("T")


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


def renamed(old: str, new: str, obj: T) -> T:
    """``obj``, reached by its old name ``old`` (from a module's ``__getattr__`` or a
    deprecated method), after a warning that names ``new``."""
    warnings.warn(
        f"{old} is now {new}; use that instead (the old name goes next release)",
        DeprecationWarning,
        stacklevel=3,  # past this function and the module __getattr__ or method: the user's line
    )
    return obj
