"""Fixtures shared by the policy tests that need a real OPA server."""

from __future__ import annotations

import pytest

from enforcer.policy.opa import OpaProcess, free_port
from tests.policy.opa_helpers import opa_binary


@pytest.fixture
def sidecar():
    """A real `opa run --server` on a free loopback port, for one test."""
    proc = OpaProcess(opa_binary(), "127.0.0.1", free_port())
    proc.start()
    yield proc
    proc.stop()
