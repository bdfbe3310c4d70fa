"""Run one tool call under bubblewrap: JSON in on stdin, bounded output out,
and a timeout after which the whole process tree is killed.

Sandboxes are started from the event-loop thread, which lives as long as the
service: bubblewrap's --die-with-parent follows the parent *thread*, so a
sandbox started from a short-lived worker thread would die with it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from enforcer.errors import SandboxError
from enforcer.sandbox.bwrap import bwrap_argv
from enforcer.sandbox.profile import SandboxProfile

_CHUNK = 64 << 10


@dataclass(frozen=True)
class SandboxResult:
    sandbox_id: str
    exit_code: int | None  # None when killed by a signal
    signal: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool
    output_truncated: bool
    duration_s: float


class BwrapRunner:
    def __init__(self, bwrap: str, profile: SandboxProfile, max_output_bytes: int) -> None:
        if not (os.path.isfile(bwrap) and os.access(bwrap, os.X_OK)):
            raise SandboxError(f"bubblewrap not found at {bwrap}: install the 'bubblewrap' package")
        self.bwrap = bwrap
        self.profile = profile
        self.max_output_bytes = max_output_bytes
        self._running: set[asyncio.subprocess.Process] = set()

    async def run(
        self, command: list[str], stdin: bytes, timeout_s: float, tools_dir: Path | None
    ) -> SandboxResult:
        sandbox_id = "sbx_" + uuid.uuid4().hex
        argv = bwrap_argv(self.bwrap, self.profile, command, tools_dir)
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                # bubblewrap gets only the profile's environment: with --clearenv alone
                # the service's environment would stay readable in /proc/1/environ.
                env=dict(self.profile.env),
                close_fds=True,
                start_new_session=True,
            )
        except OSError as e:
            raise SandboxError(f"cannot start bubblewrap: {e}") from e
        self._running.add(proc)
        truncated = False
        timed_out = False

        async def feed() -> None:
            try:
                proc.stdin.write(stdin)
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the tool did not read its input; its exit status tells the rest
            finally:
                proc.stdin.close()

        async def read_capped(stream: asyncio.StreamReader) -> bytes:
            nonlocal truncated
            buf = bytearray()
            while chunk := await stream.read(_CHUNK):
                room = self.max_output_bytes - len(buf)
                if len(chunk) > room:
                    buf += chunk[:room]
                    truncated = True
                    _kill_tree(proc)  # never buffer unbounded output
                    break
                buf += chunk
            return bytes(buf)

        gather = asyncio.gather(feed(), read_capped(proc.stdout), read_capped(proc.stderr), proc.wait())
        try:
            _, out, err, _ = await asyncio.wait_for(asyncio.shield(gather), timeout_s)
        except asyncio.TimeoutError:
            timed_out = True
            _kill_tree(proc)
            _, out, err, _ = await gather
        except asyncio.CancelledError:
            _kill_tree(proc)
            await asyncio.shield(gather)
            raise
        finally:
            self._running.discard(proc)
        rc = proc.returncode
        return SandboxResult(
            sandbox_id=sandbox_id,
            exit_code=rc if rc is not None and rc >= 0 else None,
            signal=-rc if rc is not None and rc < 0 else None,
            stdout=out,
            stderr=err,
            timed_out=timed_out,
            output_truncated=truncated,
            duration_s=time.monotonic() - started,
        )

    def kill_all(self) -> None:
        for proc in list(self._running):
            _kill_tree(proc)


def _kill_tree(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL bubblewrap's process group. Its pid-namespace init then dies with
    its parent (--die-with-parent), and the kernel kills everything left in
    the namespace, including double-forked children that ignore SIGTERM."""
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
