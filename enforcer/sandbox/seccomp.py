"""The sandbox's seccomp filter, compiled once at startup with the system's
libseccomp (through the `pyseccomp` ctypes binding) and handed to bubblewrap
as BPF over a pipe (`--seccomp FD`), never on the command line.

Default allow, with a deny list for what a tool never needs and what widens
the kernel attack surface. Denied calls fail with EPERM (the tool sees an
error it can handle), except clone3, which fails with ENOSYS so that the C
library falls back to clone(2), whose flags the filter can inspect. Syscalls
from another ABI (i386 `int 0x80`, x32) fail with EPERM as a whole.
"""

from __future__ import annotations

import errno
import os
import tempfile
from dataclasses import dataclass

from enforcer.errors import SandboxError

# Calls that fail with EPERM, whatever their arguments.
DENIED_SYSCALLS: tuple[str, ...] = (
    # reading or writing other processes
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd",
    # io_uring: a second syscall interface the filter cannot see into
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # kernel keyrings
    "keyctl", "add_key", "request_key",
    # mount family
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr",
    # namespaces
    "unshare", "setns",
    # kernel attack surface no tool needs
    "bpf", "perf_event_open", "userfaultfd", "fanotify_init", "open_by_handle_at", "name_to_handle_at",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
    "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "lookup_dcookie", "syslog", "uselib",
    "vhangup", "iopl", "ioperm", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
)
# clone(2) with any namespace flag: a nested sandbox could reshape its view.
# (CLONE_NEWTIME is 0x80, which clone(2) reads as the exit signal: only
# clone3 and unshare take it, and both are denied.)
CLONE_NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
# Terminal injection and console control. The kernel reads the request as a
# 32-bit int, so only the low 32 bits are compared.
DENIED_IOCTLS = {"TIOCSTI": 0x5412, "TIOCLINUX": 0x541C}
AF_UNIX = 1
AF_INET = 2
AF_INET6 = 10


@dataclass(frozen=True)
class SeccompProgram:
    bpf: bytes
    denied: tuple[str, ...]     # syscalls denied outright
    unknown: tuple[str, ...]    # names this libseccomp does not know (so not filtered)
    libseccomp: str
    # socket() families allowed: AF_UNIX only, or AF_UNIX/AF_INET/AF_INET6
    # for a sandbox with a connector (compile_filter(allow_inet=True)).
    socket_families: tuple[str, ...] = ("AF_UNIX",)

    def describe(self) -> str:
        return (f"seccomp on ({len(self.denied)} syscalls denied, socket() other than "
                f"{'/'.join(self.socket_families)}, "
                f"clone() namespace flags, {'/'.join(DENIED_IOCTLS)} ioctls, 32-bit/x32 ABIs; "
                f"{len(self.bpf) // 8} BPF instructions)")

    def pipe(self) -> int:
        """A pipe's read end holding the program, for bubblewrap's --seccomp.
        The caller passes it to the child and closes it."""
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            if len(self.bpf) > 65536:  # more than a pipe buffer: would block
                raise SandboxError("seccomp program too large for a pipe")
            os.write(w, self.bpf)
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
        return r


def compile_filter(*, allow_inet: bool = False) -> SeccompProgram:
    """Build the filter for the machine's native ABI. Raises SandboxError when
    libseccomp or its binding is missing: the profile asked for seccomp, and a
    sandbox without it must not start.

    allow_inet: also allow socket(AF_INET) and socket(AF_INET6), for a
    sandbox that reaches its connectors through the in-sandbox bridge
    (enforcer/sandbox/bridge.py listens on 127.0.0.1 and the tool's HTTP
    client connects to it). This is safe because bubblewrap still unshares
    the network namespace: the sandbox's namespace holds only its own `lo`,
    with no route anywhere else, and the sandbox has no capability to add an
    interface or a route (nor CAP_NET_RAW for raw sockets). Every other
    family (netlink, packet, vsock, ...) and everything else the filter
    denies stays denied."""
    try:
        import pyseccomp as sc
    except (ImportError, RuntimeError, OSError) as e:
        raise SandboxError(
            f"seccomp is on in the sandbox profile but libseccomp is unusable ({e}): "
            "install the 'libseccomp2' Debian package and the 'pyseccomp' Python package "
            "(scripts/setup.sh does both)"
        ) from e
    eperm = sc.ERRNO(errno.EPERM)
    f = sc.SyscallFilter(sc.ALLOW)
    # Any other ABI (i386 via int 0x80; x32 calls on x86_64, which libseccomp
    # routes here when x32 is not in the filter) fails as a whole.
    f.set_attr(sc.Attr.ACT_BADARCH, eperm)
    denied, unknown = [], []
    for name in DENIED_SYSCALLS:
        if sc.resolve_syscall(sc.Arch.NATIVE, name) < 0:
            unknown.append(name)
            continue
        f.add_rule(eperm, name)
        denied.append(name)
    if allow_inet:
        # Deny every family but AF_UNIX (1), AF_INET (2) and AF_INET6 (10):
        # 0, 3..9 and >= 11 (the 64-bit argument compared whole, so a value
        # with high bits set is >= 11 and denied too).
        f.add_rule(eperm, "socket", sc.Arg(0, sc.GE, AF_INET6 + 1))
        for family in range(AF_INET6):
            if family not in (AF_UNIX, AF_INET):
                f.add_rule(eperm, "socket", sc.Arg(0, sc.EQ, family))
        families: tuple[str, ...] = ("AF_UNIX", "AF_INET", "AF_INET6")
    else:
        f.add_rule(eperm, "socket", sc.Arg(0, sc.NE, AF_UNIX))
        families = ("AF_UNIX",)
    for flag in CLONE_NAMESPACE_FLAGS.values():
        f.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    for request in DENIED_IOCTLS.values():
        f.add_rule(eperm, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, request))
    if sc.resolve_syscall(sc.Arch.NATIVE, "clone3") >= 0:
        f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    with tempfile.TemporaryFile() as tmp:
        f.export_bpf(tmp)
        tmp.seek(0)
        bpf = tmp.read()
    if not bpf or len(bpf) % 8:
        raise SandboxError(f"libseccomp produced an invalid BPF program ({len(bpf)} bytes)")
    return SeccompProgram(bpf=bpf, denied=tuple(denied), unknown=tuple(unknown),
                          libseccomp=getattr(sc, "_libseccomp_path", "libseccomp"), socket_families=families)
