"""Who can prove what: every principal's API-key hashes and certificate
identity, gathered once per policy revision.

Sources, all operator-written: the agent manifests (`credentials`), the
service config's approvers and admins, and the hash files `aecl
credentials` keeps under identity.credentials_dir (hashes/<kind>.<id>.yaml).
Built at start-up and on every reload (it lives in the ActivePolicy), so
removing a hash and reloading is how a single key is withdrawn.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from enforcer.errors import ConfigError, Unauthenticated
from enforcer.identity.apikeys import KeyHash, check_key, hash_file_path, read_hash_file
from enforcer.identity.models import ApiKeyEntry, CertificateIdentity

Kind = Literal["agent", "approver", "admin"]


@dataclass(frozen=True)
class Credential:
    """An API key that checked out, and whose it is."""

    kind: Kind
    principal_id: str
    key: KeyHash


@dataclass(frozen=True)
class Directory:
    keys: Mapping[str, Credential] = field(default_factory=dict)  # key id -> owner
    certificates: Mapping[tuple[str, str], tuple[Kind, str]] = field(default_factory=dict)
    # approver id -> the agents that person also runs (never approves their tasks)
    approver_agents: Mapping[str, frozenset[str]] = field(default_factory=dict)
    digest: str = ""

    def check_key(self, text: str) -> Credential:
        """The owner of a presented API key; Unauthenticated if no key matches."""
        found = check_key(text, {kid: c.key for kid, c in self.keys.items()})
        return self.keys[found.key_id]

    def by_certificate(self, uri_sans: tuple[str, ...], subject: str) -> tuple[Kind, str] | None:
        """The principal a verified client certificate proves, if any names it."""
        for uri in uri_sans:
            hit = self.certificates.get(("uri_san", uri))
            if hit is not None:
                return hit
        return self.certificates.get(("subject", subject))

    def has_credentials(self, kind: Kind, principal_id: str) -> bool:
        return any(c.kind == kind and c.principal_id == principal_id for c in self.keys.values()) or any(
            v == (kind, principal_id) for v in self.certificates.values())


def build_directory(agents: Mapping[str, object], approvers: list, admins: list,
                    credentials_dir: Path | None) -> Directory:
    """Raises ConfigError for a key id or certificate identity claimed twice,
    or an unreadable hash file (naming it)."""
    keys: dict[str, Credential] = {}
    certs: dict[tuple[str, str], tuple[Kind, str]] = {}
    listed: list[tuple[Kind, str, list[ApiKeyEntry], CertificateIdentity | None]] = []
    for agent_id, manifest in sorted(agents.items()):
        creds = manifest.credentials  # type: ignore[attr-defined]
        listed.append(("agent", agent_id, creds.api_keys, creds.certificate))
    for kind, people in (("approver", approvers), ("admin", admins)):
        for p in people:
            listed.append((kind, p.id, p.api_keys, p.certificate))  # type: ignore[arg-type]
    for kind, pid, inline, cert in listed:
        hashes = [KeyHash(e.key_id, e.sha256, e.created_at) for e in inline]
        if credentials_dir is not None:
            path = hash_file_path(credentials_dir, kind, pid)
            if path.exists():
                hashes += read_hash_file(path, kind=kind, principal_id=pid)
        for h in hashes:
            if h.key_id in keys and keys[h.key_id] != Credential(kind, pid, h):
                other = keys[h.key_id]
                raise ConfigError(f"API key id {h.key_id} is claimed by {other.kind} {other.principal_id} "
                                  f"and by {kind} {pid}: each key belongs to one principal")
            keys[h.key_id] = Credential(kind, pid, h)
        if cert is not None:
            slot = ("uri_san", cert.uri_san) if cert.uri_san is not None else ("subject", cert.subject or "")
            if slot in certs and certs[slot] != (kind, pid):
                raise ConfigError(f"certificate {slot[0]} {slot[1]!r} names both {certs[slot][0]} "
                                  f"{certs[slot][1]} and {kind} {pid}")
            certs[slot] = (kind, pid)
    approver_agents = {p.id: frozenset(p.agent_ids) for p in approvers}
    doc = {"keys": sorted((k, c.kind, c.principal_id, c.key.sha256, c.key.created_at) for k, c in keys.items()),
           "certs": sorted([*k, *v] for k, v in certs.items()),
           "approver_agents": {k: sorted(v) for k, v in sorted(approver_agents.items())}}
    digest = "sha256:" + hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    return Directory(keys, certs, approver_agents, digest)


__all__ = ["Credential", "Directory", "Kind", "Unauthenticated", "build_directory"]
