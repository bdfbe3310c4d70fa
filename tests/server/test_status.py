"""Every AECL error reaches a client as one status code, its stable code as
google.rpc.ErrorInfo.reason and, for a malformed request, the field."""

from __future__ import annotations

import asyncio
import inspect

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from enforcer import errors
from enforcer.audit import checkpoint, merkle
from enforcer.policy import replay
from enforcer.server.status import ERROR_DOMAIN, STATUS_TABLE, abort, status_for

S = grpc.StatusCode
EXPECTED = {
    errors.AeclError: S.INTERNAL,
    errors.ConfigError: S.FAILED_PRECONDITION,
    errors.InvalidRequest: S.INVALID_ARGUMENT,
    errors.NotFound: S.NOT_FOUND,
    errors.PermissionDenied: S.PERMISSION_DENIED,
    errors.NotAuthorised: S.PERMISSION_DENIED,
    errors.Unauthenticated: S.UNAUTHENTICATED,
    errors.TaskOver: S.FAILED_PRECONDITION,
    errors.ApprovalStateError: S.FAILED_PRECONDITION,
    errors.WatcherLagged: S.RESOURCE_EXHAUSTED,
    errors.IdempotencyConflict: S.ALREADY_EXISTS,
    errors.CallInFlight: S.ABORTED,
    errors.ResourceExhausted: S.RESOURCE_EXHAUSTED,
    errors.SandboxBusy: S.RESOURCE_EXHAUSTED,
    errors.PolicyError: S.INTERNAL,
    errors.EngineUnavailable: S.INTERNAL,
    errors.MalformedDecision: S.INTERNAL,
    errors.SandboxError: S.UNAVAILABLE,
    errors.StoreError: S.UNAVAILABLE,
    errors.AuditError: S.INTERNAL,
    errors.AuditUnavailable: S.UNAVAILABLE,
    errors.RecordError: S.INTERNAL,
    errors.SigningKeyError: S.FAILED_PRECONDITION,
    errors.IntegrityError: S.DATA_LOSS,
    errors.VerificationError: S.DATA_LOSS,
}


def make(cls: type[errors.AeclError]) -> errors.AeclError:
    if issubclass(cls, errors.InvalidRequest):
        return cls("call.args.amount", "must be a number")
    if issubclass(cls, errors.ApprovalStateError):
        return cls("expired", "approval apr_1 expired")
    if issubclass(cls, (errors.Unauthenticated, errors.NotAuthorised)):
        return cls("expired", "the task token expired")
    if issubclass(cls, errors.VerificationError):
        return cls(3, "chain", "prev does not match")
    if issubclass(cls, checkpoint.InvalidSignatureError):
        return cls("origin", 0x1234ABCD)
    if issubclass(cls, merkle.RootMismatch):
        return cls("root", b"\0" * 32, b"\1" * 32)
    if issubclass(cls, replay.LogReadError):
        return cls("audit.jsonl", 2, "not valid JSON")
    return cls("something failed")


def defined_in(module) -> list[type[errors.AeclError]]:
    return [c for _, c in inspect.getmembers(module, inspect.isclass)
            if issubclass(c, errors.AeclError) and c.__module__ == module.__name__]


def test_every_error_class_has_its_status_and_a_unique_code():
    classes = defined_in(errors)
    assert set(classes) == set(EXPECTED), "a new error class needs its row here and in STATUS_TABLE"
    for cls in classes:
        assert status_for(make(cls)) == EXPECTED[cls], cls.__name__
    codes = [c.code for c in classes]
    assert len(set(codes)) == len(codes), sorted(codes)


def test_audit_errors_of_other_modules_have_their_own_codes_and_family():
    classes = [*defined_in(errors), *defined_in(checkpoint), *defined_in(merkle), *defined_in(replay)]
    codes = [c.code for c in classes]
    assert len(set(codes)) == len(codes), sorted(codes)
    for cls in [*defined_in(checkpoint), *defined_in(merkle), replay.LogReadError]:
        assert issubclass(cls, errors.IntegrityError), cls.__name__
        assert status_for(make(cls)) == S.DATA_LOSS


def test_table_is_most_specific_first():
    for i, (cls, _) in enumerate(STATUS_TABLE):
        for later, _ in STATUS_TABLE[i + 1:]:
            assert not issubclass(later, cls), f"{later.__name__} is shadowed by {cls.__name__}"


_CASES = {
    "invalid": errors.InvalidRequest("call.args.amount", "must be a number"),
    "unavailable": errors.AuditUnavailable("the audit log is closed"),
    "integrity": errors.VerificationError(7, "signature", "Ed25519 signature does not verify"),
    "busy": errors.SandboxBusy("every sandbox slot is taken"),
    "expired": errors.Unauthenticated("expired", "the task token expired at 2026-12-01T23:15:00Z"),
}


async def _fail(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await abort(context, _CASES[request.decode()])


async def _call(case: str):
    handler = grpc.method_handlers_generic_handler(
        "aecl.test.Errors", {"Fail": grpc.unary_unary_rpc_method_handler(_fail)})
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/aecl.test.Errors/Fail")(case.encode())
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
            status = await rpc_status.aio.from_call(call)
            return raised.value, status
    finally:
        await server.stop(None)


def _details(status) -> tuple[list[error_details_pb2.ErrorInfo], list[error_details_pb2.BadRequest]]:
    infos, bad = [], []
    for d in status.details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            infos.append(info)
        elif d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            d.Unpack(br)
            bad.append(br)
    return infos, bad


def test_invalid_request_carries_reason_and_field():
    err, status = asyncio.run(_call("invalid"))
    assert err.code() == S.INVALID_ARGUMENT
    assert err.details() == "call.args.amount: must be a number"
    assert status.code == S.INVALID_ARGUMENT.value[0] and status.message == err.details()
    infos, bad = _details(status)
    assert [(i.reason, i.domain) for i in infos] == [("invalid_argument", ERROR_DOMAIN)]
    assert len(bad) == 1 and [(v.field, v.description) for v in bad[0].field_violations] == [
        ("call.args.amount", "must be a number")]


def test_an_authentication_refusal_says_why_in_the_error_info():
    err, status = asyncio.run(_call("expired"))
    assert err.code() == S.UNAUTHENTICATED
    infos, _ = _details(status)
    assert [(i.reason, i.domain, dict(i.metadata)) for i in infos] == [
        ("unauthenticated", ERROR_DOMAIN, {"reason": "expired"})]


@pytest.mark.parametrize("case, code, reason", [
    ("unavailable", S.UNAVAILABLE, "audit_unavailable"),
    ("integrity", S.DATA_LOSS, "verification_failed"),
    ("busy", S.RESOURCE_EXHAUSTED, "sandbox_busy"),
])
def test_other_errors_carry_their_reason_only(case, code, reason):
    err, status = asyncio.run(_call(case))
    assert err.code() == code and err.details() == str(_CASES[case])
    infos, bad = _details(status)
    assert [(i.reason, i.domain) for i in infos] == [(reason, ERROR_DOMAIN)]
    assert bad == []
