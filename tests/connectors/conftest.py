"""Fixtures shared by the connector tests."""

from __future__ import annotations

import pytest

from tests.connectors import Upstream


@pytest.fixture
def upstream():
    """A real HTTP server on loopback that echoes what it received."""
    u = Upstream()
    yield u
    u.close()
