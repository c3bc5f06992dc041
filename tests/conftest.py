"""Shared fixtures. Tests run on the CPU with tiny shapes; data sets that are not installed are skipped, unless
JAXDL_REQUIRE_DATA=1 (set by CI), in which case a missing data set fails its test."""

from __future__ import annotations

import os

import pytest

REQUIRE_DATA = os.environ.get("JAXDL_REQUIRE_DATA", "") == "1"


def missing_data(reason: str):
    """Skip (or, under JAXDL_REQUIRE_DATA=1, fail) a test whose data set is not installed."""
    if REQUIRE_DATA:
        pytest.fail(f"required data set missing: {reason}")
    pytest.skip(reason)


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
