"""The isolation profile, validated at startup: what a sandbox sees, and the
resources it may use. Per-tool overrides (tool registry) are validated here too."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from enforcer._yaml import describe_validation_error, read_document

# The shipped profile (package data), used when sandbox.profile is unset.
DEFAULT_PROFILE = Path(__file__).resolve().parent / "profiles" / "default.yaml"

# Paths a profile may never expose: the host's secrets and live sockets.
FORBIDDEN_BINDS = ("/", "/etc", "/home", "/root", "/run", "/var", "/tmp", "/proc", "/sys", "/dev")
# ...nor anything under these: live sockets (/run, /var/run, /tmp), home
# directories, service state and logs, kernel interfaces, credentials.
FORBIDDEN_TREES = (
    "/run", "/var/run", "/tmp", "/var/tmp", "/home", "/root", "/proc", "/sys", "/dev", "/boot",
    "/var/lib", "/var/log", "/var/spool", "/var/mail", "/var/cache",
    "/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/sudoers", "/etc/sudoers.d",
    "/etc/ssh", "/etc/ssl/private", "/etc/aecl",
)
# Where the sandbox's own mounts go: a bind there would shadow them.
RESERVED_MOUNTS = ("/proc", "/dev", "/tmp", "/opt/aecl/tools", "/opt/aecl/bridge.py")

Size = Annotated[int, Field(gt=0, le=1 << 40)]


def check_bind(path: str) -> str:
    """Refuse a read-only bind that would expose host state. Checked on the
    path as written and, where it exists, on where its symlinks lead."""
    if not path.startswith("/"):
        raise ValueError(f"bind '{path}' must be an absolute path")
    norm = os.path.normpath(path)
    if norm != path.rstrip("/") and path != "/":
        raise ValueError(f"bind '{path}' must be normalised (no '..', '.' or '//'): '{norm}'")
    candidates = {norm, os.path.realpath(norm)}
    for p in candidates:
        if p in FORBIDDEN_BINDS:
            raise ValueError(f"bind '{path}' would expose host state; bind narrower paths")
        for tree in FORBIDDEN_TREES + RESERVED_MOUNTS:
            if p == tree or p.startswith(tree + "/"):
                what = "is a sandbox mount point" if tree in RESERVED_MOUNTS else "would expose host state"
                raise ValueError(f"bind '{path}'{' (-> ' + p + ')' if p != norm else ''} {what} (under {tree})")
    return path


# Where a registry's tools_dir may never be: the kernel's and the host's
# runtime state, system configuration, service state and logs. Unlike the
# profile's binds (mounted at their own path, so /tmp and /home are refused
# wholesale), tools_dir is mounted at /opt/aecl/tools and is usually a folder
# of a checkout, which may live in a home directory or under /tmp: there it
# is judged by what it holds (check_tools_dir), not by where it is.
TOOLS_DIR_FORBIDDEN_TREES = (
    "/proc", "/sys", "/dev", "/run", "/var/run", "/boot", "/etc",
    "/var/lib", "/var/log", "/var/spool", "/var/mail", "/var/cache", "/opt/aecl/tools",
)
MAX_TOOLS_DIR_ENTRIES = 10_000


def check_tools_dir(tools_dir: Path, secrets: Iterable[Path]) -> None:
    """Refuse a registry `tools_dir` (bound read-only at /opt/aecl/tools in
    every sandbox) that would expose more than tools:

    1. it must be absolute and normalised, and neither a top-level host
       directory (FORBIDDEN_BINDS), a home directory itself, nor inside
       TOOLS_DIR_FORBIDDEN_TREES, as written and after resolving symlinks;
    2. it must hold none of `secrets` (the audit signing keys, the log, the
       state database: the caller passes them), compared after resolving;
    3. nothing in it may be a socket, FIFO or device node (a read-only bind
       still lets a sandbox connect to a socket), and no directory in it may
       be writable by group or others (anyone could plant a tool or socket).
    A tools_dir that does not exist yet passes 1 and 2 (it binds nothing)."""
    path = str(tools_dir)
    if not path.startswith("/"):
        raise ValueError(f"tools_dir: bind '{path}' must be an absolute path")
    norm = os.path.normpath(path)
    if norm != path.rstrip("/") and path != "/":
        raise ValueError(f"tools_dir: bind '{path}' must be normalised (no '..', '.' or '//'): '{norm}'")
    root = os.path.realpath(norm)
    for p in {norm, root}:
        shown = f"'{path}'" + (f" (-> '{p}')" if p != norm else "")
        parts = p.strip("/").split("/")
        if p in FORBIDDEN_BINDS or (len(parts) == 2 and parts[0] == "home"):
            raise ValueError(f"tools_dir: bind {shown} would expose host state; name a folder of tools")
        for tree in TOOLS_DIR_FORBIDDEN_TREES:
            if p == tree or p.startswith(tree + "/"):
                raise ValueError(f"tools_dir: bind {shown} would expose host state (under {tree})")
    for secret in secrets:
        real = os.path.realpath(secret)
        if real == root or real.startswith(root.rstrip("/") + "/"):
            shown = f"'{secret}'" + (f" (-> '{real}')" if real != str(secret) else "")
            raise ValueError(f"tools_dir '{tools_dir}' would expose {shown} to every sandbox: "
                             f"keep the service's secrets and state outside it")
    if not os.path.isdir(root):
        return
    seen = 0
    for dirpath, dirnames, filenames in os.walk(root):
        st = os.lstat(dirpath)
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ValueError(f"tools_dir: '{dirpath}' is writable by group or others "
                             f"(mode {stat.S_IMODE(st.st_mode):04o}): anyone could plant a tool in it")
        for name in filenames + dirnames:
            seen += 1
            if seen > MAX_TOOLS_DIR_ENTRIES:
                raise ValueError(f"tools_dir: '{tools_dir}' holds more than {MAX_TOOLS_DIR_ENTRIES} entries; "
                                 "name the folder of tools, not a whole tree")
            mode = os.lstat(os.path.join(dirpath, name)).st_mode
            if stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                raise ValueError(f"tools_dir: '{os.path.join(dirpath, name)}' is a socket, FIFO or device: "
                                 "it must not be reachable from a sandbox")


def _check_binds(binds: list[str]) -> list[str]:
    for b in binds:
        check_bind(b)
    return binds


# Read-only host paths for a sandbox: the profile's and a tool's own.
SafeBinds = Annotated[list[str], AfterValidator(_check_binds)]


class ResourceLimits(BaseModel):
    """Per-sandbox resource caps. cgroup limits cover the whole sandbox (every
    process in it); rlimits are per process and are set on the sandbox's
    init before the tool starts, so every process in it inherits them.
    null disables a limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # cgroup (v1 or v2), applied where the machine allows (see `cgroups`).
    cpus: Annotated[float, Field(gt=0, le=4096)] | None = 2.0
    memory_bytes: Annotated[int, Field(ge=16 << 20, le=1 << 40)] | None = 512 << 20
    pids: Annotated[int, Field(ge=4, le=1 << 22)] | None = 128
    # rlimits, always applied.
    cpu_seconds: Annotated[int, Field(gt=0)] | None = 60          # RLIMIT_CPU (per process)
    address_space_bytes: Size | None = 1 << 30                    # RLIMIT_AS (per process)
    file_size_bytes: Size | None = 64 << 20                       # RLIMIT_FSIZE
    open_files: Annotated[int, Field(ge=16, le=1 << 20)] | None = 256  # RLIMIT_NOFILE
    # RLIMIT_NPROC counts every process of the sandbox's *host* uid, and is not
    # enforced at all for root: a backstop only, the per-sandbox cap is `pids`.
    processes: Annotated[int, Field(ge=16)] | None = 1024
    # auto: apply the cgroup limits the machine allows, log the rest at startup.
    # required: refuse to start unless memory, pids and cpu limits all apply.
    # off: rlimits only.
    cgroups: Literal["auto", "required", "off"] = "auto"


class SandboxProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ro_binds: SafeBinds = ["/usr"]
    symlinks: dict[str, str] = {}
    env: dict[str, str] = {"PATH": "/usr/bin:/bin"}
    tmpfs_size_bytes: Annotated[int, Field(gt=0, le=1 << 34)] = 64 << 20
    # /dev/shm (POSIX shared memory, semaphores): its own small tmpfs; the rest
    # of /dev is read-only.
    shm_size_bytes: Annotated[int, Field(gt=0, le=1 << 34)] = 1 << 20
    uid: Annotated[int, Field(gt=0)] = 65534
    gid: Annotated[int, Field(gt=0)] = 65534
    # The seccomp filter (enforcer/sandbox/seccomp.py). Startup fails if it is
    # on and libseccomp is missing.
    seccomp: bool = True
    limits: ResourceLimits = ResourceLimits()
    # Absolute lifetime: no sandbox outlives this, whatever its call timeout
    # says and even if the runner's own bookkeeping loses track of it.
    lifetime_s: Annotated[float, Field(gt=0, le=7 * 24 * 3600)] = 3600


class SandboxOverrides(BaseModel):
    """A tool's own sandbox settings in the tool registry (`sandbox:` under
    the tool): extra read-only binds and a larger or smaller scratch tmpfs.
    A longer timeout is the tool's `timeout_s`."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    ro_binds: SafeBinds = []
    tmpfs_size_bytes: Annotated[int, Field(gt=0, le=1 << 34)] | None = None


def load_profile(path: Path) -> SandboxProfile:
    try:
        return SandboxProfile.model_validate(read_document(path) or {})
    except ValidationError as e:
        raise describe_validation_error(path, e) from e
