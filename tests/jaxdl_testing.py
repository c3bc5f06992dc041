"""Helpers shared by the tests (imported as a plain module: tests/ is on sys.path via its conftest)."""

from __future__ import annotations

import os

import pytest

REQUIRE_DATA = os.environ.get("JAXDL_REQUIRE_DATA", "") == "1"


def missing_data(reason: str):
    """Skip (or, under JAXDL_REQUIRE_DATA=1, fail) a test whose data set is not installed."""
    if REQUIRE_DATA:
        pytest.fail(f"required data set missing: {reason}")
    pytest.skip(reason)
