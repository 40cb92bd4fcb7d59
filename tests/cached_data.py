"""Which datasets are cached here, as skip markers for tests that read real data."""

from __future__ import annotations

import pytest

from predcode import data


def have_dataset(name: str) -> bool:
    """Whether ``name``'s test split loads from the cache (``predcode data fetch NAME``)."""
    try:
        data.load(name, "test")
        return True
    except data.DatasetNotFoundError:
        return False


def needs_datasets(*names: str) -> pytest.MarkDecorator:
    """Skip unless every dataset in ``names`` is cached, saying how to fetch them."""
    missing = [n for n in names if not have_dataset(n)]
    return pytest.mark.skipif(bool(missing), reason=f"run `predcode data fetch {' '.join(missing)}`")
