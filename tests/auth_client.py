"""A client-side interceptor that authenticates like a well-behaved agent:
StartTask / RenewTaskToken carry the agent's API key, every other call the
task token the service issued. Tests that probe authentication itself use a
bare stub instead."""

from __future__ import annotations

import collections
import threading

import grpc

CREDENTIAL_RPCS = ("StartTask", "RenewTaskToken")


class _Details(collections.namedtuple("_Details", ("method", "timeout", "metadata", "credentials",
                                                   "wait_for_ready", "compression")),
               grpc.ClientCallDetails):
    pass


def with_metadata(details: grpc.ClientCallDetails, key: str, value: str) -> _Details:
    metadata = [*(details.metadata or ()), (key, value)]
    return _Details(details.method, details.timeout, metadata, details.credentials,
                    getattr(details, "wait_for_ready", None), getattr(details, "compression", None))


class AgentAuth(grpc.UnaryUnaryClientInterceptor):
    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = keys  # agent id -> API key
        self.by_task: dict[str, str] = {}
        self.by_agent: dict[str, str] = {}
        self._lock = threading.Lock()

    def intercept_unary_unary(self, continuation, details, request):
        method = details.method.rsplit("/", 1)[-1]
        if method in CREDENTIAL_RPCS:
            if not request.credential and request.agent_id in self.keys:
                copy = type(request)()
                copy.CopyFrom(request)
                copy.credential = self.keys[request.agent_id]
                request = copy
            outcome = continuation(details, request)
            if outcome.exception() is None:
                resp = outcome.result()
                task_id = getattr(resp, "task_id", "") or request.task_id
                with self._lock:
                    self.by_task[task_id] = resp.token
                    self.by_agent[request.agent_id] = resp.token
            return outcome
        if any(k == "authorization" for k, _ in (details.metadata or ())):
            return continuation(details, request)
        token = self.by_task.get(getattr(request, "task_id", "")) or self.by_agent.get(
            getattr(request, "agent_id", ""))
        if token:
            details = with_metadata(details, "authorization", f"Bearer {token}")
        return continuation(details, request)


class BearerKey(grpc.UnaryUnaryClientInterceptor):
    """Every call carries one API key as its bearer (an admin's, say)."""

    def __init__(self, key: str) -> None:
        self.key = key

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(with_metadata(details, "authorization", f"Bearer {self.key}"), request)
