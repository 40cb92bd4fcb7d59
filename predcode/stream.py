"""Deprecated path: ``predcode.stream`` moved to :mod:`predcode.bio.stream`; importing it warns once and
gives that module (kept for one release).  Import ``predcode.bio.stream`` instead."""

from ._moved import redirect

redirect(__name__, "predcode.bio.stream", "moved to")
