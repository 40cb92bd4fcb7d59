"""Deprecated path: ``predcode.data.errors`` is now :mod:`predcode.data.exceptions`; importing it warns once and
gives that module (kept for one release).  Import ``predcode.data.exceptions`` instead."""

from .._moved import redirect

redirect(__name__, "predcode.data.exceptions", "is now")
