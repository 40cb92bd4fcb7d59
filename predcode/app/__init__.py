"""The application around the library: the ``predcode`` command line and what it runs.

:mod:`~predcode.app.cli` (``python -m predcode``), :mod:`~predcode.app.config` (the training
configuration), :mod:`~predcode.app.train` (the trainer), :mod:`~predcode.app.query_cli`,
:mod:`~predcode.app.checkpoint`, :mod:`~predcode.app.distributed`, :mod:`~predcode.app.tracking`
(TensorBoard) and :mod:`~predcode.app.provenance` (versions and commits written next to results).

The library (everything under ``predcode/`` outside ``app/``, ``experiments/`` and ``bench/``)
never imports this package; the app imports the library.
"""
