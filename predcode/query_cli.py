"""Deprecated path: ``predcode.query_cli`` moved to :mod:`predcode.app.query_cli`; importing it warns once and
gives that module (kept for one release).  Import ``predcode.app.query_cli`` instead."""

from ._moved import redirect

redirect(__name__, "predcode.app.query_cli", "moved to")
