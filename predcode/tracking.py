"""Deprecated path: ``predcode.tracking`` moved to :mod:`predcode.app.tracking`; importing it warns once and
gives that module (kept for one release).  Import ``predcode.app.tracking`` instead."""

from ._moved import redirect

redirect(__name__, "predcode.app.tracking", "moved to")
