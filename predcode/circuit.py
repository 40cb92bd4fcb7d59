"""Deprecated path: ``predcode.circuit`` moved to :mod:`predcode.bio.circuit`; importing it warns once and
gives that module (kept for one release).  Import ``predcode.bio.circuit`` instead."""

from ._moved import redirect

redirect(__name__, "predcode.bio.circuit", "moved to")
