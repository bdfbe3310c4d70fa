"""The sandbox backend interface. bubblewrap (enforcer.sandbox.runner.BwrapRunner)
is the shipped and tested backend; sandbox/README.md says what another
backend (nsjail) must map to satisfy it."""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path
from typing import Protocol

from enforcer.sandbox.profile import SandboxOverrides, SandboxProfile
from enforcer.sandbox.runner import SandboxResult


class SandboxBackend(Protocol):
    name: str
    profile: SandboxProfile

    async def run(
        self, command: list[str], stdin: bytes, timeout_s: float, tools_dir: Path | None,
        *, sandbox: SandboxOverrides | None = None, release: Awaitable[object] | None = None,
        sandbox_id: str | None = None, connector_socket: Path | None = None,
    ) -> SandboxResult:
        """Run `command` isolated as the profile says, `stdin` on its standard
        input, for at most min(timeout_s, profile.lifetime_s); kill the whole
        process tree on timeout or cancellation. Raises SandboxError only when
        the sandbox could not be set up (nothing of the tool ran).

        connector_socket: the execution's connector endpoint (a Unix socket,
        enforcer.connectors.ConnectorGateway.endpoint). When given, the
        sandbox reaches it at /run/aecl/connector.sock and the tool runs with
        HTTP_PROXY=http://127.0.0.1:3128 pointing at an in-sandbox bridge to
        it (enforcer/sandbox/bridge.py); the sandbox still has no other
        network and no secret. When None, nothing of the sort exists.

        release: set the sandbox up while it is pending and let the tool
        start only once it has succeeded; if it raises (CancelledError
        included), kill the sandbox unreleased (no tool code ran), clean up
        and re-raise that exception.

        Service-wide cap: at most max_concurrent sandboxes at once, further
        callers wait in FIFO order; past max_waiting waiters, raise
        SandboxBusy at once (nothing started)."""
        ...

    @property
    def running(self) -> int:
        """Sandboxes holding a slot."""
        ...

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot."""
        ...

    def kill_all(self) -> None:
        """Kill every running sandbox now (service shutdown)."""
        ...

    def describe(self) -> str:
        """One line for the startup log: which isolation and limits apply here."""
        ...
