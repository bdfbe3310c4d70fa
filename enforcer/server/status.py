"""The single table from AECL errors to gRPC status codes, and the one way an
RPC fails with one.

A client reads the failure three ways, each stable: the status code (from
STATUS_TABLE), the error's `code` as google.rpc.ErrorInfo.reason (domain
"aecl") and, for a malformed request, the offending field as a
google.rpc.BadRequest field violation. Only the message is free text.
"""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from enforcer import errors

log = logging.getLogger(__name__)

ERROR_DOMAIN = "aecl"

# Most specific first; the first isinstance match wins.
STATUS_TABLE: tuple[tuple[type[errors.AeclError], grpc.StatusCode], ...] = (
    (errors.InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.TaskOver, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ApprovalStateError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.IdempotencyConflict, grpc.StatusCode.ALREADY_EXISTS),
    (errors.CallInFlight, grpc.StatusCode.ABORTED),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),  # SandboxBusy: retry later
    # Infrastructure down: the call did not happen, retry later.
    (errors.AuditUnavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.StoreError, grpc.StatusCode.UNAVAILABLE),
    (errors.SandboxError, grpc.StatusCode.UNAVAILABLE),
    # What was read does not verify: retrying cannot help.
    (errors.IntegrityError, grpc.StatusCode.DATA_LOSS),
    (errors.SigningKeyError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.RecordError, grpc.StatusCode.INTERNAL),
    (errors.ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.PolicyError, grpc.StatusCode.INTERNAL),  # normally turned into BLOCK before here
    (errors.AeclError, grpc.StatusCode.INTERNAL),
)


def status_for(error: errors.AeclError) -> grpc.StatusCode:
    for cls, code in STATUS_TABLE:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _packed(message) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


def rich_status(error: errors.AeclError) -> status_pb2.Status:
    """The google.rpc.Status a client receives for `error`."""
    code = status_for(error)
    # An authentication refusal also says why, as ErrorInfo metadata (never the secret).
    why = getattr(error, "reason", None)
    info = error_details_pb2.ErrorInfo(reason=error.code, domain=ERROR_DOMAIN,
                                       metadata={"reason": why} if isinstance(why, str) else {})
    details = [_packed(info)]
    if isinstance(error, errors.InvalidRequest):
        violation = error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.description)
        details.append(_packed(error_details_pb2.BadRequest(field_violations=[violation])))
    return status_pb2.Status(code=code.value[0], message=str(error), details=details)


async def abort(context: grpc.aio.ServicerContext, error: errors.AeclError) -> NoReturn:
    """End the RPC with `error`'s status code, message and details."""
    if isinstance(error, errors.AuditError):
        log.critical("audit failure, call refused: %s", error)
    await context.abort_with_status(rpc_status.to_status(rich_status(error)))
    raise AssertionError("unreachable: abort_with_status raises")  # pragma: no cover
