"""Shared fixtures. Tests run on the CPU with tiny shapes; data sets that are not installed are skipped, unless
JAXDL_REQUIRE_DATA=1 (set by CI), in which case a missing data set fails its test."""

from __future__ import annotations


import pytest

from jaxdl_testing import REQUIRE_DATA, missing_data  # noqa: F401  (re-exported for tests)


@pytest.fixture
def load_dataset():
    """``load_dataset(DataConfig(...))`` -> Dataset, or skip/fail when its files are not installed."""
    from jaxdl.data import load
    from jaxdl.errors import DataError

    def _load(cfg):
        try:
            return load(cfg)
        except DataError as e:
            if "not found" in str(e) or "not installed" in str(e):
                missing_data(str(e))
            raise

    return _load
