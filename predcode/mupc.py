"""Deprecated path: ``predcode.mupc`` moved to :mod:`predcode.models.mupc`; importing it warns once and
gives that module (kept for one release).  Import ``predcode.models.mupc`` instead."""

from ._moved import redirect

redirect(__name__, "predcode.models.mupc", "moved to")
