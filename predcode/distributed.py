"""Deprecated path: ``predcode.distributed`` moved to :mod:`predcode.app.distributed`; importing it warns once and
gives that module (kept for one release).  Import ``predcode.app.distributed`` instead."""

from ._moved import redirect

redirect(__name__, "predcode.app.distributed", "moved to")
