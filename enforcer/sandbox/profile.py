"""The isolation profile, validated at startup: what a sandbox sees, and the
resources it may use. Per-tool overrides (tool registry) are validated here too."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from enforcer._yaml import describe_validation_error, read_document

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
RESERVED_MOUNTS = ("/proc", "/dev", "/tmp", "/opt/aecl/tools")

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
