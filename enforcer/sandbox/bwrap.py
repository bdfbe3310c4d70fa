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

# A sandbox with connectors (enforcer/connectors): the execution's Unix
# socket and the bridge that serves it as an HTTP proxy on the sandbox's own
# loopback (HTTP_PROXY=http://127.0.0.1:3128 for the tool).
BRIDGE_SOURCE = Path(__file__).resolve().parent / "bridge.py"
SANDBOX_BRIDGE = "/opt/aecl/bridge.py"
SANDBOX_CONNECTOR_SOCKET = "/run/aecl/connector.sock"
BRIDGE_LISTEN = "127.0.0.1:3128"


def bridge_command(command: list[str]) -> list[str]:
    """`command` run under the in-sandbox bridge. -I: the bridge imports the
    standard library only, whatever PYTHON* variables a profile sets."""
    return ["/usr/bin/python3", "-I", SANDBOX_BRIDGE, "--listen", BRIDGE_LISTEN,
            "--socket", SANDBOX_CONNECTOR_SOCKET, "--", *command]


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
    connector_socket: Path | str | None = None,
) -> list[str]:
    """connector_socket: the host path of the execution's connector socket
    (ConnectorGateway.endpoint). When given, it is bound read-only at
    SANDBOX_CONNECTOR_SOCKET (connect() on a socket works through a read-only
    bind: only writes to files and directories get EROFS), the bridge at
    SANDBOX_BRIDGE, and `command` runs under the bridge. The runner pairs it
    with the seccomp variant that allows AF_INET/AF_INET6 sockets."""
    argv = [
        bwrap,
        "--unshare-all",  # user, ipc, pid, net, uts, cgroup: no network (at most its own loopback)
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
    if connector_socket is not None:
        argv += ["--ro-bind", str(connector_socket), SANDBOX_CONNECTOR_SOCKET,
                 "--ro-bind", str(BRIDGE_SOURCE), SANDBOX_BRIDGE]
        command = bridge_command(command)
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
