"""Deprecated path: ``predcode.cli`` moved to :mod:`predcode.app.cli`; importing it warns once and
gives that module (kept for one release).  Import ``predcode.app.cli`` instead."""

from ._moved import redirect

redirect(__name__, "predcode.app.cli", "moved to")
