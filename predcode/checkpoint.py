"""Deprecated path: ``predcode.checkpoint`` moved to :mod:`predcode.app.checkpoint`; importing it warns once and
gives that module (kept for one release).  Import ``predcode.app.checkpoint`` instead."""

from ._moved import redirect

redirect(__name__, "predcode.app.checkpoint", "moved to")
