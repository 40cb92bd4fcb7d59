"""Deprecated path: ``predcode.provenance`` moved to :mod:`predcode.app.provenance`; importing it warns once and
gives that module (kept for one release).  Import ``predcode.app.provenance`` instead."""

from ._moved import redirect

redirect(__name__, "predcode.app.provenance", "moved to")
