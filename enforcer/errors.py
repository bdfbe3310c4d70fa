"""The one exception hierarchy of AECL.

Every error the service raises derives from AeclError. The mapping from each
class to a gRPC status lives in one table (enforcer.server.status), so a reader
finds how any failure surfaces to a client in one place.
"""

from __future__ import annotations


class AeclError(Exception):
    """Root of every AECL error."""


class ConfigError(AeclError):
    """Configuration, manifest or registry is invalid; raised at load time."""


class InvalidRequest(AeclError):
    """The caller's request is malformed. `field` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(AeclError):
    """A referenced object (task, approval) does not exist."""


class PermissionDenied(AeclError):
    """The caller may not act on the referenced object."""


class PolicyError(AeclError):
    """The policy engine failed to produce a well-formed decision.

    Never surfaces as an RPC error: the pipeline turns it into BLOCK.
    """


class EngineUnavailable(PolicyError):
    """The policy engine could not be reached or did not answer in time."""


class MalformedDecision(PolicyError):
    """The policy answered with a document outside the decision schema."""


class SandboxError(AeclError):
    """The sandbox could not be started (not a tool failure)."""


class AuditError(AeclError):
    """The audit log could not be written, read or verified."""


class SigningKeyError(AuditError):
    """A signing key is missing, malformed or has unsafe permissions."""


class VerificationError(AuditError):
    """An audit log failed verification. `line` is 1-based."""

    def __init__(self, line: int, kind: str, message: str) -> None:
        super().__init__(f"line {line}: {kind}: {message}")
        self.line = line
        self.kind = kind
