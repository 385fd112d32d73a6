"""The ``store`` fixture: one fresh backend per test, for each backend in turn."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance._harness import Store, open_store


@pytest.fixture
def store(backend_url: str) -> Iterator[Store]:
    """A checked, synchronous handle on a fresh store (its own SQLite file)."""
    yield from open_store(backend_url)
