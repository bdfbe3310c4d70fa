"""Turning a profile and a tool into a bubblewrap command line. Pure: no I/O
beyond checking which host paths exist."""

from __future__ import annotations

import os
from pathlib import Path

from enforcer.sandbox.profile import SandboxProfile

SANDBOX_TOOLS_DIR = "/opt/aecl/tools"
WORKDIR = "/tmp"


def bwrap_argv(
    bwrap: str,
    profile: SandboxProfile,
    command: list[str],
    tools_dir: Path | None,
    *,
    tmpfs_size_bytes: int | None = None,
) -> list[str]:
    argv = [
        bwrap,
        "--unshare-all",  # user, ipc, pid, net, uts, cgroup: no network at all
        "--unshare-user",
        "--disable-userns",  # no nested user namespace: `unshare -r` fails inside
        "--uid", str(profile.uid),
        "--gid", str(profile.gid),
        "--cap-drop", "ALL",
        "--new-session",  # no controlling terminal: blocks TIOCSTI injection
        "--die-with-parent",
        "--hostname", "aecl-sandbox",
    ]
    for path in profile.ro_binds:
        if os.path.exists(path):
            argv += ["--ro-bind", path, path]
    for link, target in sorted(profile.symlinks.items()):
        argv += ["--symlink", target, link]
    if tools_dir is not None:
        argv += ["--ro-bind", str(tools_dir), SANDBOX_TOOLS_DIR]
    argv += [
        "--proc", "/proc",
        "--dev", "/dev",
        "--size", str(tmpfs_size_bytes or profile.tmpfs_size_bytes),
        "--tmpfs", WORKDIR,
        # bwrap's root is itself an unbounded tmpfs: make it read-only so the
        # size-capped /tmp is the only writable place.
        "--remount-ro", "/",
        "--chdir", WORKDIR,
        "--",
        *command,
    ]
    return argv
