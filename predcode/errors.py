"""Deprecated path: ``predcode.errors`` is now :mod:`predcode.exceptions`; importing it warns once and
gives that module (kept for one release).  Import ``predcode.exceptions`` instead."""

from ._moved import redirect

redirect(__name__, "predcode.exceptions", "is now")
