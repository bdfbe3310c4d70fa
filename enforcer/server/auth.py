"""The one authentication gate: a gRPC interceptor in front of every RPC.

Each method has one rule (RULES); a method without one is refused, so a
new RPC is closed until someone says who may call it. Health checks and
reflection are open (they reveal nothing the repository does not).

    StartTask, RenewTaskToken      the agent's credential (API key in the
                                   request, or its client certificate)
    Decide, Execute                the task token; agent_id and task_id
                                   must be the token's
    ListTools, GetAgentPermissions the task token; agent_id must be its
    GetExecution, WaitForExecution the task token; agent_id and task_id must
                                   be its (the approval must be that task's)
    Rollback, RollbackTask         the task token, bound like Execute
    AdminService/*                 an administrator
    ApprovalService/*              an approver (never an agent's token or key)

A refusal is an `auth_refused` audit entry (durable before the answer) and
a count in aecl_auth_refusals_total{reason}, then UNAUTHENTICATED or
PERMISSION_DENIED. The proven principal travels to the service in
PRINCIPAL (a context variable, set for the one call).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message

from enforcer.audit.records import Principal
from enforcer.errors import AeclError, InvalidRequest, NotAuthorised, Unauthenticated
from enforcer.identity.authenticate import Authenticator, Presented, Proven
from enforcer.identity.certs import peer_certificate
from enforcer.pipeline.pipeline import Pipeline
from enforcer.server import wire
from enforcer.server.status import abort

log = logging.getLogger(__name__)

PRINCIPAL: ContextVar[Principal | None] = ContextVar("aecl_principal", default=None)

ENFORCER = wire.SERVICE
ADMIN = "aecl.v1.AdminService"
APPROVALS = "aecl.v1.ApprovalService"
OPEN_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                           "grpc.reflection.v1.ServerReflection"})


@dataclass(frozen=True)
class Rule:
    """How one method authenticates; `check(auth, presented, request)`."""

    check: Callable[[Authenticator, Presented, Any], Proven]
    decodes: bool  # the request body is needed (agent RPCs: ids, credential)


def _credential(auth: Authenticator, p: Presented, req: Any) -> Proven:
    return auth.agent_credential(p, req.agent_id, req.credential)


def _task_token(auth: Authenticator, p: Presented, req: Any) -> Proven:
    return auth.task_token(p, req.agent_id, req.task_id)


def _agent_token(auth: Authenticator, p: Presented, req: Any) -> Proven:
    return auth.task_token(p, req.agent_id, None)


def _admin(auth: Authenticator, p: Presented, req: Any) -> Proven:
    return auth.role(p, "admin")


def _approver(auth: Authenticator, p: Presented, req: Any) -> Proven:
    return auth.role(p, "approver")


RULES: dict[tuple[str, str], Rule] = {
    (ENFORCER, "StartTask"): Rule(_credential, True),
    (ENFORCER, "RenewTaskToken"): Rule(_credential, True),
    (ENFORCER, "Decide"): Rule(_task_token, True),
    (ENFORCER, "Execute"): Rule(_task_token, True),
    (ENFORCER, "ListTools"): Rule(_agent_token, True),
    (ENFORCER, "GetAgentPermissions"): Rule(_agent_token, True),
    (ADMIN, "ReloadPolicy"): Rule(_admin, False),
    (ADMIN, "GetPolicyStatus"): Rule(_admin, False),
    (ADMIN, "RevokeTask"): Rule(_admin, False),
    (ADMIN, "RevokeAgent"): Rule(_admin, False),
    (ENFORCER, "GetExecution"): Rule(_task_token, True),
    (ENFORCER, "WaitForExecution"): Rule(_task_token, True),
    (ENFORCER, "Rollback"): Rule(_task_token, True),
    (ENFORCER, "RollbackTask"): Rule(_task_token, True),
    (APPROVALS, "ListApprovals"): Rule(_approver, False),
    (APPROVALS, "GetApproval"): Rule(_approver, False),
    (APPROVALS, "ResolveApproval"): Rule(_approver, False),
    (APPROVALS, "WatchApprovals"): Rule(_approver, False),
}


def current_principal() -> Principal | None:
    return PRINCIPAL.get()


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, authenticator: Authenticator, pipeline: Pipeline) -> None:
        self.auth = authenticator
        self.pipeline = pipeline

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        service, _, method = details.method.lstrip("/").partition("/")
        if handler is None or service in OPEN_SERVICES:
            return handler
        rule = RULES.get((service, method))
        if rule is None or (handler.unary_unary is None and handler.unary_stream is None):
            return _refusing(handler, method, self)

        async def prove(request: Any, context: grpc.aio.ServicerContext) -> tuple[Any, Proven]:
            body = request
            if rule.decodes and not isinstance(request, Message):
                try:
                    body = wire.decode(method, request)
                except InvalidRequest:
                    body = None  # the service logs and refuses it (INVALID_ARGUMENT), once authenticated
            try:
                presented = _presented(context)
                proven = rule.check(self.auth, presented, body) if body is not None else \
                    self._token_only(presented, rule)
            except (Unauthenticated, NotAuthorised) as e:
                await self._refuse(method, e, body, context)
            return (body if body is not None else request), proven

        if handler.unary_stream is not None:
            streamed = handler.unary_stream

            async def authenticated_stream(request: Any, context: grpc.aio.ServicerContext):
                body, proven = await prove(request, context)
                token = PRINCIPAL.set(proven.principal)
                try:
                    async for response in streamed(body, context):
                        yield response
                finally:
                    PRINCIPAL.reset(token)

            return grpc.unary_stream_rpc_method_handler(
                authenticated_stream, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        inner = handler.unary_unary

        async def authenticated(request: Any, context: grpc.aio.ServicerContext):
            body, proven = await prove(request, context)
            token = PRINCIPAL.set(proven.principal)
            try:
                return await inner(body, context)
            finally:
                PRINCIPAL.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            authenticated, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)

    def _token_only(self, presented: Presented, rule: Rule) -> Proven:
        """An undecodable body: the caller must still prove who it is (a
        valid task token, or for StartTask a certificate) before the service
        logs its bad request under that identity."""
        if rule.check in (_task_token, _agent_token):
            return self.auth.token_holder(presented)
        raise Unauthenticated("missing_credential", "the request could not be read, so no credential in it "
                                                    "could be checked")

    async def _refuse(self, method: str, error: Unauthenticated | NotAuthorised, body: Any,
                      context: grpc.aio.ServicerContext):
        agent_id = str(getattr(body, "agent_id", "") or "")
        task_id = str(getattr(body, "task_id", "") or "")
        try:
            await self.pipeline.log_auth_refused(
                method, error, agent_id=agent_id, task_id=task_id, principal=getattr(error, "principal", None),
                peer=context.peer() or "", key_id=getattr(error, "key_id", None),
                token_id=getattr(error, "token_id", None))
        except AeclError as e:  # the refusal stands; the log being down is its own alarm
            log.critical("an authentication refusal could not be logged: %s", e)
        await abort(context, error)


def _presented(context: grpc.aio.ServicerContext) -> Presented:
    values = tuple(v for k, v in (context.invocation_metadata() or ()) if k == "authorization")
    return Presented(authorization=tuple(v if isinstance(v, str) else v.decode("latin-1") for v in values),
                     peer=peer_certificate(context.auth_context()))


def _refusing(handler, method: str, interceptor: AuthInterceptor):
    async def refuse(request: Any, context: grpc.aio.ServicerContext):
        await interceptor._refuse(method, NotAuthorised("no_rule", f"{method}: no authentication rule; refused"),
                                  None, context)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext):
        await refuse(request, context)
        yield  # pragma: no cover - refuse aborts

    make = grpc.unary_stream_rpc_method_handler if handler.unary_stream is not None \
        else grpc.unary_unary_rpc_method_handler
    return make(refuse_stream if handler.unary_stream is not None else refuse,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
