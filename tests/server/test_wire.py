"""Requests the protobuf parser refuses (invalid UTF-8 in a string field, a
Struct nested past the parser's depth limit) reach AECL's own handler: a
real service answers INVALID_ARGUMENT with the reason and logs a `rejected`
entry, instead of grpc answering UNKNOWN with nothing logged.

Authentication comes first: an undecodable body is INVALID_ARGUMENT only for
a caller whose task token is valid (logged under that principal); without
one it is UNAUTHENTICATED (`auth_refused`). StartTask carries its credential
in the body, so an undecodable StartTask has none: UNAUTHENTICATED."""

from __future__ import annotations

import json

import grpc
import pytest
from grpc_status import rpc_status

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
from google.rpc import error_details_pb2


def _len(b: bytes) -> bytes:
    out, n = bytearray(), len(b)
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return bytes([number << 3 | 2]) + _len(payload) + payload


def deep_struct_value(levels: int) -> bytes:
    """A google.protobuf.Value holding Structs nested `levels` deep, encoded
    by hand (the Python runtime refuses to build such a message)."""
    value = _field(3, b"x")  # Value.string_value
    for _ in range(levels):
        entry = _field(1, b"a") + _field(2, value)  # map entry: key, value
        value = _field(5, _field(1, entry))  # Value.struct_value = Struct{fields: [entry]}
    return value


AGENT = "finance_agent_v2"


def raw_rpc(service, method: str):
    return service.channel.unary_unary(f"/aecl.v1.EnforcerService/{method}")


def token_metadata(service) -> tuple[tuple[str, str], ...]:
    """A valid task token of AGENT (a fresh task's)."""
    task = service.stub.StartTask(pb.StartTaskRequest(agent_id=AGENT, declared_goal="read invoices")).task_id
    return (("authorization", f"Bearer {service.auth.by_task[task]}"),)


def records_after(service, before: int, kind: str) -> list[dict]:
    return [json.loads(line)["record"] for line in service.log_lines()[before:]
            if json.loads(line)["record"]["kind"] == kind]


def rejected_after(service, before: int) -> list[dict]:
    return records_after(service, before, "rejected")


def invalid_utf8(method: str) -> bytes:
    cls = getattr(pb, f"{method}Request")
    return cls(agent_id="AAAA").SerializeToString().replace(b"AAAA", b"\xff\xfe\xfd\xfc")


TOKEN_METHODS = ["Decide", "Execute", "ListTools", "GetAgentPermissions"]


@pytest.mark.parametrize("method", TOKEN_METHODS)
def test_invalid_utf8_in_a_string_field_is_invalid_argument_and_logged(service, method):
    raw = invalid_utf8(method)
    metadata = token_metadata(service)
    before = len(service.log_lines())
    with pytest.raises(grpc.RpcError) as e:
        raw_rpc(service, method)(raw, timeout=10, metadata=metadata)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "UTF-8" in e.value.details()
    status = rpc_status.from_call(e.value)
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.reason == "invalid_argument"
    [record] = rejected_after(service, before)
    assert record["rpc"] == method and record["error_code"] == "invalid_argument"
    assert record["input_payload"] == {"request_bytes": len(raw)}
    assert record["principal"]["kind"] == "agent" and record["principal"]["id"] == AGENT
    assert records_after(service, before, "auth_refused") == []


@pytest.mark.parametrize("method", TOKEN_METHODS)
def test_an_undecodable_request_without_a_token_is_unauthenticated_and_logged(service, method):
    raw = invalid_utf8(method)
    before = len(service.log_lines())
    with pytest.raises(grpc.RpcError) as e:
        raw_rpc(service, method)(raw, timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert rejected_after(service, before) == []
    [record] = records_after(service, before, "auth_refused")
    assert (record["rpc"], record["refusal"], record["status"]) == (method, "missing_token", "UNAUTHENTICATED")


def test_an_undecodable_request_with_a_revoked_token_is_unauthenticated(service):
    """The body cannot be read, so the ids cannot be bound, but the token is
    still checked in full: a revoked task's token proves no one."""
    task = service.stub.StartTask(pb.StartTaskRequest(agent_id=AGENT, declared_goal="read invoices")).task_id
    metadata = (("authorization", f"Bearer {service.auth.by_task[task]}"),)
    service.admin.RevokeTask(pb.RevokeTaskRequest(task_id=task, reason="test"))
    before = len(service.log_lines())
    with pytest.raises(grpc.RpcError) as e:
        raw_rpc(service, "Decide")(invalid_utf8("Decide"), timeout=10, metadata=metadata)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert rejected_after(service, before) == []
    [record] = records_after(service, before, "auth_refused")
    assert record["refusal"] == "revoked"


def test_an_undecodable_start_task_has_no_readable_credential(service):
    """The credential is in the body that could not be read: UNAUTHENTICATED,
    logged as a refusal, whatever else the call carries."""
    raw = invalid_utf8("StartTask")
    metadata = token_metadata(service)
    for md in ((), metadata):
        before = len(service.log_lines())
        with pytest.raises(grpc.RpcError) as e:
            raw_rpc(service, "StartTask")(raw, timeout=10, metadata=md)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        info = error_details_pb2.ErrorInfo()
        assert rpc_status.from_call(e.value).details[0].Unpack(info) and info.reason == "unauthenticated"
        assert rejected_after(service, before) == []
        [record] = records_after(service, before, "auth_refused")
        assert (record["rpc"], record["refusal"]) == ("StartTask", "missing_credential")


def test_a_struct_nested_past_the_parsers_limit_is_invalid_argument_and_logged(service):
    call = _field(1, b"read_invoice") + _field(2, _field(1, _field(1, b"x") + _field(2, deep_struct_value(150))))
    raw = _field(1, b"tsk_x") + _field(2, b"finance_agent_v2") + _field(3, call)
    metadata = token_metadata(service)
    before = len(service.log_lines())
    with pytest.raises(grpc.RpcError) as e:
        raw_rpc(service, "Decide")(raw, timeout=10, metadata=metadata)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "nested too deep" in e.value.details() or "Depth" in e.value.details()
    [record] = rejected_after(service, before)
    assert record["rpc"] == "Decide"


def test_a_well_formed_request_still_reaches_the_pipeline(service):
    r = service.stub.StartTask(pb.StartTaskRequest(agent_id="finance_agent_v2", declared_goal="read invoices"))
    assert r.task_id.startswith("tsk_")


def test_every_method_of_the_service_is_decoded_by_aecl():
    """A method missing from wire.METHODS would answer UNIMPLEMENTED; one with
    the wrong types would misparse."""
    from enforcer.server.wire import METHODS, SERVICE

    service = pb.DESCRIPTOR.services_by_name["EnforcerService"]
    assert service.full_name == SERVICE
    assert {m.name: (m.input_type.full_name, m.output_type.full_name) for m in service.methods} == {
        rpc: (req.DESCRIPTOR.full_name, resp.DESCRIPTOR.full_name) for rpc, (req, resp) in METHODS.items()}
