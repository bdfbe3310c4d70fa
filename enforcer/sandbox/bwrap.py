"""Turning a profile and a tool into a bubblewrap command line. Pure: no I/O
beyond checking which host paths exist.

Nothing secret ever goes on this command line (it is readable in the
sandbox's /proc/1/cmdline): data goes over pipes, and the file descriptors
named here (--seccomp, --info-fd, --block-fd) are passed by number only."""

from __future__ import annotations

import os
from collections.abc import Sequence
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
    extra_ro_binds: Sequence[str] = (),
    seccomp_fd: int | None = None,
    info_fd: int | None = None,
    block_fd: int | None = None,
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
    for path in [*profile.ro_binds, *extra_ro_binds]:
        if os.path.exists(path):
            argv += ["--ro-bind", path, path]
    for link, target in sorted(profile.symlinks.items()):
        argv += ["--symlink", target, link]
    if tools_dir is not None:
        argv += ["--ro-bind", str(tools_dir), SANDBOX_TOOLS_DIR]
    argv += [
        "--proc", "/proc",
        # Read-only /proc: when the service runs as root the sandbox's processes
        # are host uid 0 without capabilities, and global sysctls under
        # /proc/sys (kernel.core_pattern...) check only the uid.
        "--remount-ro", "/proc",
        "--dev", "/dev",
        # --dev is a tmpfs of its own, writable and unbounded (half the RAM):
        # /dev/shm gets a small capped tmpfs, the rest of /dev goes read-only.
        "--size", str(profile.shm_size_bytes),
        "--tmpfs", "/dev/shm",
        "--remount-ro", "/dev",
        "--size", str(tmpfs_size_bytes or profile.tmpfs_size_bytes),
        "--tmpfs", WORKDIR,
        # bwrap's root is itself an unbounded tmpfs: make it read-only so the
        # size-capped /tmp is the only writable place.
        "--remount-ro", "/",
        "--chdir", WORKDIR,
    ]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    if info_fd is not None:
        argv += ["--info-fd", str(info_fd)]
    if block_fd is not None:
        argv += ["--block-fd", str(block_fd)]
    argv += ["--", *command]
    return argv
