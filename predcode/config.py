"""Deprecated path: ``predcode.config`` moved to :mod:`predcode.app.config`; importing it warns once and
gives that module (kept for one release).  Import ``predcode.app.config`` instead."""

from ._moved import redirect

redirect(__name__, "predcode.app.config", "moved to")
