"""Registering the agents' service so that AECL, not the generated code,
decodes each request.

The generated registration hands grpc a deserializer (`Message.FromString`);
a request it cannot parse (invalid UTF-8 in a string field, a Struct nested
past the protobuf parser's recursion limit) then fails inside grpc with
UNKNOWN before any AECL code runs, and leaves no audit entry. Here grpc
passes the raw bytes, and decoding happens in the handler: an undecodable
request is INVALID_ARGUMENT with the reason, and a `rejected` entry.

What still cannot be logged, because grpc refuses it before any handler or
interceptor sees the request: a message over `limits.max_message_bytes`
(RESOURCE_EXHAUSTED from grpc core) and metadata over grpc's header size
limit (the HTTP/2 stream is reset). Both are bounded by grpc, and nothing of
them reaches the pipeline.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
from enforcer.errors import InvalidRequest

SERVICE = "aecl.v1.EnforcerService"
# method -> (request type, response type): every method of the service in the
# proto (tests/server/test_wire.py checks none is missing; one missing here
# would answer UNIMPLEMENTED).
METHODS: dict[str, tuple[type[Message], type[Message]]] = {
    "StartTask": (pb.StartTaskRequest, pb.StartTaskResponse),
    "RenewTaskToken": (pb.RenewTaskTokenRequest, pb.RenewTaskTokenResponse),
    "Decide": (pb.DecideRequest, pb.DecideResponse),
    "Execute": (pb.ExecuteRequest, pb.ExecuteResponse),
    "ListTools": (pb.ListToolsRequest, pb.ListToolsResponse),
    "GetAgentPermissions": (pb.GetAgentPermissionsRequest, pb.GetAgentPermissionsResponse),
    "GetExecution": (pb.GetExecutionRequest, pb.GetExecutionResponse),
    "WaitForExecution": (pb.WaitForExecutionRequest, pb.WaitForExecutionResponse),
    "Rollback": (pb.RollbackRequest, pb.RollbackResponse),
    "RollbackTask": (pb.RollbackTaskRequest, pb.RollbackTaskResponse),
}
# The methods whose responses are a server stream.
STREAMING = frozenset({"WaitForExecution"})


def decode(rpc: str, raw: bytes) -> Message:
    """Parse a request, or raise InvalidRequest saying why not."""
    request_type = METHODS[rpc][0]
    msg = request_type()
    try:
        msg.ParseFromString(raw)
    except (DecodeError, RecursionError, ValueError) as e:
        raise InvalidRequest("<request>", f"is not a valid {request_type.DESCRIPTOR.full_name}: {e} "
                                          "(invalid UTF-8 in a string field, or nested too deep)") from None
    return msg


def add_enforcer_service(server: grpc.aio.Server, service: Any,
                         on_undecodable: Callable[[str, InvalidRequest, grpc.aio.ServicerContext, int],
                                                  Awaitable[None]]) -> None:
    """Register `service` (an EnforcerServiceServicer) with raw-bytes
    handlers; `on_undecodable(rpc, error, context, size)` logs and aborts."""
    handlers = {}
    for rpc, (_, response_type) in METHODS.items():
        make = grpc.unary_stream_rpc_method_handler if rpc in STREAMING else grpc.unary_unary_rpc_method_handler
        wrap = _stream_handler if rpc in STREAMING else _handler
        handlers[rpc] = make(
            wrap(rpc, getattr(service, rpc), on_undecodable),
            request_deserializer=None,  # raw bytes: AECL decodes them
            response_serializer=response_type.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


def _handler(rpc: str, method, on_undecodable):
    async def handle(raw: bytes | Message, context: grpc.aio.ServicerContext):
        if isinstance(raw, Message):  # the authenticator decoded it already (enforcer.server.auth)
            return await method(raw, context)
        try:
            request = decode(rpc, raw)
        except InvalidRequest as e:
            await on_undecodable(rpc, e, context, len(raw))
            raise AssertionError("unreachable: on_undecodable aborts")  # pragma: no cover
        return await method(request, context)
    return handle


def _stream_handler(rpc: str, method, on_undecodable):
    async def handle(raw: bytes | Message, context: grpc.aio.ServicerContext):
        if isinstance(raw, Message):
            request = raw
        else:
            try:
                request = decode(rpc, raw)
            except InvalidRequest as e:
                await on_undecodable(rpc, e, context, len(raw))
                raise AssertionError("unreachable: on_undecodable aborts")  # pragma: no cover
        async for response in method(request, context):
            yield response
    return handle
