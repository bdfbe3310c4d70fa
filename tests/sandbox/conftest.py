"""Shared helpers for the sandbox tests: every test runs real bubblewrap."""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
from pathlib import Path

import pytest

from enforcer.sandbox.profile import SandboxProfile, load_profile
from enforcer.sandbox.runner import BwrapRunner, SandboxResult
from tests.conftest import REPO, require_bwrap

PROFILE = load_profile(REPO / "enforcer" / "sandbox" / "profiles" / "default.yaml")
PY = ["/usr/bin/python3", "-I", "-c"]


def profile_with(**changes) -> SandboxProfile:
    """The default profile with some fields or limits changed (validated)."""
    limits = changes.pop("limits", {})
    data = PROFILE.model_dump()
    data["limits"].update(limits)
    data.update(changes)
    return SandboxProfile.model_validate(data)


RUNNER_ARGS = ("max_concurrent", "max_waiting", "total_memory_bytes", "total_pids")


def make_runner(max_output_bytes: int = 1 << 20, **changes) -> BwrapRunner:
    """A runner over the default profile with `changes`; the runner's own
    keyword arguments (RUNNER_ARGS) go to the runner."""
    require_bwrap()
    kw = {k: changes.pop(k) for k in RUNNER_ARGS if k in changes}
    return BwrapRunner("/usr/bin/bwrap", profile_with(**changes) if changes else PROFILE, max_output_bytes, **kw)


def run_py(runner: BwrapRunner, code: str, timeout: float = 30, stdin: bytes = b"{}",
           tools_dir: Path | None = None, sandbox=None) -> SandboxResult:
    if code.startswith(TRY):  # the prelude, then the test's own (indented) code
        code = TRY + textwrap.dedent(code[len(TRY):])
    cmd = PY + [textwrap.dedent(code)]
    return asyncio.run(runner.run(cmd, stdin, timeout, tools_dir, sandbox=sandbox))


def probe(runner: BwrapRunner, code: str, **kw) -> dict:
    """Run code that prints one JSON object; return it (the tool must exit 0)."""
    r = run_py(runner, code, **kw)
    assert r.exit_code == 0, (r.exit_code, r.signal, r.stderr.decode(errors="replace")[-2000:])
    return json.loads(r.stdout)


def host_pids_with(marker: str) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{p}/cmdline").read_bytes():
                    out.append(int(p))
            except OSError:
                pass
    return out


# A Python prelude for probes: errno name of an OSError raised by a call.
TRY = '''
import errno as _errno
def attempt(fn, *a, **k):
    try:
        r = fn(*a, **k)
        return "ok" if r is None or not isinstance(r, int) or r >= 0 else "failed"
    except OSError as e:
        return _errno.errorcode.get(e.errno, str(e.errno))
'''


@pytest.fixture
def runner() -> BwrapRunner:
    return make_runner()
