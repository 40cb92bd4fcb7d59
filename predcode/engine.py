"""Deprecated path: ``predcode.engine`` is now :mod:`predcode.learning`; importing it warns once and
gives that module (kept for one release).  Import ``predcode.learning`` instead."""

from ._moved import redirect

redirect(__name__, "predcode.learning", "is now")
