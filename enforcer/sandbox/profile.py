"""The isolation profile, validated at startup."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from enforcer._yaml import describe_validation_error, read_document

# Paths a profile may never expose: the host's secrets and live sockets.
FORBIDDEN_BINDS = ("/", "/etc", "/home", "/root", "/run", "/var", "/tmp", "/proc", "/sys", "/dev")


class SandboxProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ro_binds: list[str] = ["/usr"]
    symlinks: dict[str, str] = {}
    env: dict[str, str] = {"PATH": "/usr/bin:/bin"}
    tmpfs_size_bytes: Annotated[int, Field(gt=0, le=1 << 34)] = 64 << 20
    uid: Annotated[int, Field(gt=0)] = 65534
    gid: Annotated[int, Field(gt=0)] = 65534

    @field_validator("ro_binds")
    @classmethod
    def _safe_binds(cls, binds: list[str]) -> list[str]:
        for b in binds:
            if not b.startswith("/"):
                raise ValueError(f"bind '{b}' must be an absolute path")
            norm = str(Path(b))
            if norm in FORBIDDEN_BINDS:
                raise ValueError(f"bind '{b}' would expose host state; bind narrower paths")
        return binds


def load_profile(path: Path) -> SandboxProfile:
    try:
        return SandboxProfile.model_validate(read_document(path) or {})
    except ValidationError as e:
        raise describe_validation_error(path, e) from e
