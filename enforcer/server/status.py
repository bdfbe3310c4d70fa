"""The single table from AECL errors to gRPC status codes."""

from __future__ import annotations

import grpc

from enforcer import errors

# Most specific first; the first isinstance match wins.
STATUS_TABLE: tuple[tuple[type[errors.AeclError], grpc.StatusCode], ...] = (
    (errors.InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    # Audit and sandbox infrastructure failures: the call did not happen, retry later.
    (errors.AuditError, grpc.StatusCode.UNAVAILABLE),
    (errors.SandboxError, grpc.StatusCode.UNAVAILABLE),
    (errors.PolicyError, grpc.StatusCode.INTERNAL),  # normally turned into BLOCK before here
    (errors.ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.AeclError, grpc.StatusCode.INTERNAL),
)


def status_for(error: errors.AeclError) -> grpc.StatusCode:
    for cls, code in STATUS_TABLE:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL
