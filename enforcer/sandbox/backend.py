"""The sandbox backend interface. bubblewrap (enforcer.sandbox.runner.BwrapRunner)
is the shipped and tested backend; sandbox/README.md says what another
backend (nsjail) must map to satisfy it."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from enforcer.sandbox.profile import SandboxOverrides, SandboxProfile
from enforcer.sandbox.runner import SandboxResult


class SandboxBackend(Protocol):
    name: str
    profile: SandboxProfile

    async def run(
        self, command: list[str], stdin: bytes, timeout_s: float, tools_dir: Path | None,
        *, sandbox: SandboxOverrides | None = None,
    ) -> SandboxResult:
        """Run `command` isolated as the profile says, `stdin` on its standard
        input, for at most min(timeout_s, profile.lifetime_s); kill the whole
        process tree on timeout or cancellation. Raises SandboxError only when
        the sandbox could not be set up (nothing of the tool ran)."""
        ...

    def kill_all(self) -> None:
        """Kill every running sandbox now (service shutdown)."""
        ...

    def describe(self) -> str:
        """One line for the startup log: which isolation and limits apply here."""
        ...
