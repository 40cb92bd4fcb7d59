"""Deprecated path: ``predcode.train`` moved to :mod:`predcode.app.train`; importing it warns once and
gives that module (kept for one release).  Import ``predcode.app.train`` instead."""

from ._moved import redirect

redirect(__name__, "predcode.app.train", "moved to")
