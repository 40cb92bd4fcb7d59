"""Biologically plausible variants of predictive coding.

:mod:`~predcode.bio.stream` (continuous-time PC on a stream of inputs, no separate inference
and learning phases) and :mod:`~predcode.bio.circuit` (explicit error neurons with local
connections and signs).
"""
