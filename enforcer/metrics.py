"""Prometheus metrics, so a spike in blocked or failed actions can alert.

Every audit record passes through Metrics.observe, the same single place that
writes it to the log, so the counters and the log cannot drift apart. Agent
labels are limited to agents the manifests know: agent ids in requests are
untrusted and would otherwise let a caller grow the label set without bound.
"""

from __future__ import annotations

from collections.abc import Callable, Container

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from enforcer.audit.records import AuthRefused, CallFields, DecisionRecord, PolicyReload, Record, RejectedRecord

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, known_agents: Callable[[], Container[str]]) -> None:
        self.registry = CollectorRegistry()
        self._known = known_agents
        self.actions = Counter(
            "aecl_actions_total", "Audit records by agent, kind and outcome "
            "(decisions: approve/block/escalate; executions: succeeded/failed; rejected input).",
            ["agent", "kind", "outcome"], registry=self.registry)
        self.shadow = Counter(
            "aecl_shadow_decisions_total", "Decisions made for agents in shadow mode, by the outcome "
            "that was NOT enforced.", ["agent", "outcome"], registry=self.registry)
        self.latency = Histogram(
            "aecl_decision_latency_seconds", "Time from request to logged decision, by RPC.",
            ["rpc"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.reloads = Counter("aecl_policy_reloads_total", "Policy reload attempts by result.",
                               ["result"], registry=self.registry)
        self.errors = Counter(
            "aecl_errors_total", "Requests refused with an error, by the error's stable code "
            "(enforcer.errors; the same code as in the gRPC status details and the audit record).",
            ["code"], registry=self.registry)
        self.auth_refusals = Counter(
            "aecl_auth_refusals_total", "Calls refused by authentication, by reason (missing_token, expired, "
            "bad_signature, wrong_agent, wrong_role, revoked, ...; the `refusal` of the auth_refused entry).",
            ["reason"], registry=self.registry)
        self.rollback_failed = Counter(
            "aecl_rollback_failed_total", "Rollback steps parked as rollback_failed (every attempt of the "
            "compensation failed), by compensating tool.", ["tool"], registry=self.registry)
        self.audit_failed = Gauge(
            "aecl_audit_log_failed", "1 once the audit log refuses appends (the service then refuses "
            "every call); 0 while it is healthy.", registry=self.registry)

    def observe(self, record: Record) -> None:
        """Count one durable record, read through its type."""
        if isinstance(record, PolicyReload):
            self.reloads.labels(record.outcome).inc()
            return
        if not isinstance(record, CallFields):
            return  # the writer's own records (checkpoints, key transitions)
        agent = record.agent_id if record.agent_id in self._known() else "unknown"
        self.actions.labels(agent, record.KIND, record.outcome).inc()
        if isinstance(record, AuthRefused):
            self.auth_refusals.labels(record.refusal).inc()
        if isinstance(record, RejectedRecord) and record.error_code:
            self.errors.labels(record.error_code).inc()
        if isinstance(record, DecisionRecord):
            self.latency.labels(record.rpc).observe(record.latency_ms / 1000)
            if record.shadow:
                self.shadow.labels(agent, record.outcome).inc()

    def serve(self, listen: str) -> int:
        """Start the /metrics HTTP endpoint; returns the bound port."""
        host, _, port = listen.rpartition(":")
        server, _thread = start_http_server(int(port), addr=host or "127.0.0.1", registry=self.registry)
        return server.server_address[1]
