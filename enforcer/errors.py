"""The one exception hierarchy of AECL.

Every error the service raises derives from AeclError, and every class has a
stable `code`: the string a client reads in the gRPC status details
(google.rpc.ErrorInfo.reason), the label of `aecl_errors_total`, and the
`error_code` of the audit record. Codes never change once shipped; messages
may. The mapping from each class to a gRPC status lives in one table
(enforcer.server.status), so a reader finds how any failure surfaces to a
client in one place.

Two audit families are kept apart on purpose: `AuditUnavailable` (the log
cannot be written right now: retry later) and `IntegrityError` (what was read
does not verify: retrying cannot help, someone must look).
"""

from __future__ import annotations


class AeclError(Exception):
    """Root of every AECL error."""

    code = "internal"


class ConfigError(AeclError):
    """Configuration, manifest or registry is invalid; raised at load time."""

    code = "config_invalid"


class InvalidRequest(AeclError):
    """The caller's request is malformed. `field` names the offending field
    (in the proto's terms); it travels as a google.rpc.BadRequest detail."""

    code = "invalid_argument"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.description = message


class NotFound(AeclError):
    """A referenced object (task, approval) does not exist."""

    code = "not_found"


class PermissionDenied(AeclError):
    """The caller may not act on the referenced object."""

    code = "permission_denied"


class Unauthenticated(AeclError):
    """The caller did not prove who it is: a missing, malformed, expired,
    forged or revoked token or credential. `reason` is the stable label of
    `aecl_auth_refusals_total` and of the `auth_refused` audit entry; the
    message never carries the secret."""

    code = "unauthenticated"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class NotAuthorised(PermissionDenied):
    """The caller proved who it is, but that identity may not make this call:
    a token used for another agent or task, an agent calling AdminService."""

    code = "not_authorised"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class TaskOver(AeclError):
    """The task has ended (its task-loop timeout passed, or it was revoked):
    nothing more can be done in it, a token cannot be renewed."""

    code = "task_over"


class ApprovalStateError(AeclError):
    """An approval cannot do what was asked in its current state: resolved
    already, expired, cancelled, consumed, made for another call, or a
    notification link used already. `reason` says which."""

    code = "approval_state"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class IdempotencyConflict(AeclError):
    """An idempotency key used again with another call (tool or arguments)."""

    code = "idempotency_conflict"


class CallInFlight(AeclError):
    """A repeat of a call (same idempotency key) while the first still runs,
    past the caller's deadline; or a rollback of a step being rolled back."""

    code = "call_in_flight"


class ResourceExhausted(AeclError):
    """A service-wide bound is reached (e.g. concurrent sandboxes); retry later."""

    code = "resource_exhausted"


class WatcherLagged(ResourceExhausted):
    """A watcher of approvals fell too far behind and was dropped: list again."""

    code = "watcher_lagged"


class PolicyError(AeclError):
    """The policy engine failed to produce a well-formed decision.

    Never surfaces as an RPC error: the pipeline turns it into BLOCK.
    """

    code = "policy_error"


class EngineUnavailable(PolicyError):
    """The policy engine could not be reached or did not answer in time."""

    code = "engine_unavailable"


class MalformedDecision(PolicyError):
    """The policy answered with a document outside the decision schema."""

    code = "malformed_decision"


class SandboxError(AeclError):
    """The sandbox could not be started (not a tool failure)."""

    code = "sandbox_unavailable"


class SandboxBusy(ResourceExhausted):
    """Every sandbox slot is taken and the wait queue is full."""

    code = "sandbox_busy"


class StoreError(AeclError):
    """The state store failed (I/O, corruption, lost connection)."""

    code = "store_unavailable"


class AuditError(AeclError):
    """Root of the audit log's errors. Raise a subclass."""

    code = "audit_error"


class AuditUnavailable(AuditError):
    """The audit log cannot be written now (write failed, poisoned, closed):
    nothing was acted on; retryable once the log is healthy again."""

    code = "audit_unavailable"


class RecordError(AuditError):
    """A record cannot be canonicalised or does not have its kind's shape."""

    code = "audit_record_invalid"


class SigningKeyError(AuditError):
    """A signing key is missing, malformed or has unsafe permissions."""

    code = "signing_key_invalid"


class IntegrityError(AuditError):
    """What was read does not verify: an entry, a proof or a checkpoint.
    Not retryable."""

    code = "audit_integrity"


class VerificationError(IntegrityError):
    """An audit log failed verification. `line` is 1-based; `kind` names the
    check that failed (signature, chain, malformed, checkpoint, ...)."""

    code = "verification_failed"

    def __init__(self, line: int, kind: str, message: str) -> None:
        super().__init__(f"line {line}: {kind}: {message}")
        self.line = line
        self.kind = kind
        self.detail = message
