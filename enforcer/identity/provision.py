"""Making credentials: the token key, API keys for agents, approvers and
administrators. A key is shown once (or written to a 0600 file for its
owner); the service keeps its hash under identity.credentials_dir. Used by
`aecl credentials` and by `make run` for the demo (var/credentials/).
"""

from __future__ import annotations

import os

import time
from dataclasses import dataclass
from pathlib import Path

from enforcer.config import ServiceConfig
from enforcer.errors import ConfigError
from enforcer.identity.apikeys import (KeyHash, generate_key, hash_file_path, make_private_dirs,
                                       read_hash_file, write_hash_file, write_key_file)
from enforcer.identity.directory import Kind
from enforcer.identity.tokens import generate_token_key, public_key_path
from enforcer.manifests import load_agents


@dataclass(frozen=True)
class NewKey:
    kind: Kind
    principal_id: str
    key: str  # the secret: shown once, never stored by the service
    hash: KeyHash
    key_file: Path | None  # where it was handed over, if to a file


def credentials_dir(config: ServiceConfig) -> Path:
    if config.identity.credentials_dir is None:
        raise ConfigError("identity.credentials_dir: not set; `aecl credentials` keeps key hashes there "
                          "(e.g. credentials_dir: ../var/credentials)")
    return config.identity.credentials_dir


def ensure_token_key(config: ServiceConfig) -> Path | None:
    """Create the token signing key if missing; its path when created."""
    path = config.identity.token_signing_key
    if path.exists():
        return None
    if public_key_path(path).exists():
        raise ConfigError(f"{public_key_path(path)}: a public token key without its private key {path.name}; "
                          "remove the stale .pub (tokens it verified are void without the key anyway)")
    make_private_dirs(path.parent)
    generate_token_key(path)
    return path


def principals(config: ServiceConfig) -> list[tuple[Kind, str]]:
    """Every principal the config and manifests name, agents first."""
    out: list[tuple[Kind, str]] = [("agent", a) for a in sorted(load_agents(config.agents_dir))]
    out += [("approver", p.id) for p in config.identity.approvers]
    out += [("admin", p.id) for p in config.identity.admins]
    return out


def check_known(config: ServiceConfig, kind: Kind, principal_id: str) -> None:
    if (kind, principal_id) not in principals(config):
        where = f"no manifest in {config.agents_dir}" if kind == "agent" else f"not in identity.{kind}s"
        raise ConfigError(f"{kind} {principal_id!r}: {where}")


def add_key(config: ServiceConfig, kind: Kind, principal_id: str, *, key_file: Path | None = None,
            now: float | None = None) -> NewKey:
    """A new API key for a known principal; its hash is appended to the
    principal's hash file. With `key_file`, the key is written there (0600,
    never over an existing file) before the hash is added."""
    check_known(config, kind, principal_id)
    path = hash_file_path(credentials_dir(config), kind, principal_id)
    existing = read_hash_file(path, kind=kind, principal_id=principal_id) if path.exists() else []
    key, digest = generate_key(time.time() if now is None else now)
    if key_file is not None:
        make_private_dirs(key_file.parent)
        write_key_file(key_file, key)
    write_hash_file(path, kind, principal_id, [*existing, digest])
    return NewKey(kind, principal_id, key, digest, key_file)


def remove_key(config: ServiceConfig, kind: Kind, principal_id: str, key_id: str) -> Path:
    """Withdraw one key: its hash leaves the hash file (a running service
    stops accepting it at its next reload; the file is watched)."""
    check_known(config, kind, principal_id)
    path = hash_file_path(credentials_dir(config), kind, principal_id)
    existing = read_hash_file(path, kind=kind, principal_id=principal_id) if path.exists() else []
    kept = [h for h in existing if h.key_id != key_id]
    if len(kept) == len(existing):
        raise ConfigError(f"{kind} {principal_id}: no key {key_id} in {path} (keys written into a manifest "
                          "or the config by hand are removed there)")
    write_hash_file(path, kind, principal_id, kept)
    return path


def demo_key_file(config: ServiceConfig, principal_id: str) -> Path:
    return credentials_dir(config) / f"{principal_id}.key"


def ensure_mcp_state(config: ServiceConfig) -> bool:
    """The MCP front end's requestState key (32 random bytes, hex, 0600) and
    the demo upstreams' workspaces (with a README.md), when the config names
    them and they are missing. True when something was made."""
    import secrets
    made = False
    path = config.mcp.state_key_file
    if path is not None and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        made = True
    for name, upstream in config.mcp.upstreams.items():
        ws = upstream.stdio.workspace if upstream.stdio is not None else None
        if ws is not None and not ws.exists():
            ws.mkdir(parents=True)
            (ws / "README.md").write_text(
                f"# The {name} workspace\n\nThe MCP server {name} sees this directory as /workspace, inside its "
                "sandbox. Through AECL, an agent may read here freely; every write waits for an approver; "
                "nothing outside it can be reached.\n")
            made = True
    return made


def provision_demo(config: ServiceConfig) -> list[NewKey]:
    """What `make run` needs on first start: the token key, and one API key
    (in <credentials_dir>/<id>.key, mode 0600) for every principal that has
    no key yet. Idempotent: a principal with a key is left alone."""
    ensure_token_key(config)
    ensure_mcp_state(config)
    made = []
    cdir = credentials_dir(config)
    seen: set[str] = set()
    for kind, pid in principals(config):
        if pid in seen:
            raise ConfigError(f"{pid!r} names two principals; demo key files are named by id "
                              f"({cdir}/{pid}.key): rename one")
        seen.add(pid)
        path = hash_file_path(cdir, kind, pid)
        if path.exists() and read_hash_file(path, kind=kind, principal_id=pid):
            continue
        key_file = demo_key_file(config, pid)
        if key_file.exists():
            raise ConfigError(f"{key_file}: a key file without its hash in {path}; remove the stale key file")
        made.append(add_key(config, kind, pid, key_file=key_file))
    return made


__all__ = ["NewKey", "add_key", "credentials_dir", "ensure_token_key", "principals", "provision_demo",
           "public_key_path", "remove_key"]
