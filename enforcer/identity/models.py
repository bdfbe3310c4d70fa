"""How operators write identities down: the credential entries of agent
manifests and of the service config's approvers and administrators.

Only hashes and public identities live here (and so in git): an API key is
shown once when it is made (`aecl credentials`), and the service keeps its
SHA-256. Validated strictly at load, like every other operator input.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_NAME = r"[A-Za-z][A-Za-z0-9_.:-]{0,127}"
PrincipalName = Annotated[str, Field(pattern=rf"^{_NAME}\z")]
_HEX12 = re.compile(r"\A[0-9a-f]{12}\Z")
_HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ApiKeyEntry(_Strict):
    """One API key, as its hash: `aecl credentials` writes these."""

    key_id: str
    sha256: str
    # RFC 3339; revoking an agent refuses every key created at or before the revocation.
    created_at: str

    @field_validator("key_id")
    @classmethod
    def _key_id(cls, v: str) -> str:
        if not _HEX12.match(v):
            raise ValueError("must be 12 lowercase hex characters (the middle part of aecl_<key id>_<secret>)")
        return v

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, v: str) -> str:
        if not _HEX64.match(v):
            raise ValueError("must be the 64 lowercase hex characters of the key's SHA-256 (never the key itself)")
        return v

    @field_validator("created_at")
    @classmethod
    def _created_at(cls, v: str) -> str:
        try:
            at = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("must be an RFC 3339 time, e.g. 2026-12-01T23:00:00Z") from None
        if at.tzinfo is None:
            raise ValueError("must carry a time zone (Z for UTC)")
        return v


class CertificateIdentity(_Strict):
    """A client certificate that proves the principal on an mTLS connection:
    exactly one of a URI SAN (SPIFFE style) or an RFC 4514 subject."""

    uri_san: str | None = None
    subject: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> CertificateIdentity:
        if (self.uri_san is None) == (self.subject is None):
            raise ValueError("give exactly one of uri_san (e.g. spiffe://aecl.dev/agent/NAME) or subject "
                             "(e.g. CN=NAME,O=Example)")
        return self


class AgentCredentials(_Strict):
    """How an agent proves who it is (the `credentials` block of a manifest).
    Keys written by `aecl credentials add-agent-key` into the service's
    credentials_dir count as well."""

    api_keys: list[ApiKeyEntry] = []
    certificate: CertificateIdentity | None = None


class HumanPrincipal(_Strict):
    """An approver or administrator of the service config."""

    id: PrincipalName
    api_keys: list[ApiKeyEntry] = []
    certificate: CertificateIdentity | None = None
    # The agents this person also runs: they never approve those agents' tasks.
    agent_ids: list[PrincipalName] = []
