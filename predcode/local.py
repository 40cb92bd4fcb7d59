"""Deprecated path: ``predcode.local`` is now :mod:`predcode.closed_form`; importing it warns once and
gives that module (kept for one release).  Import ``predcode.closed_form`` instead."""

from ._moved import redirect

redirect(__name__, "predcode.closed_form", "is now")
