"""A client that knows nothing but server reflection: it discovers the
service, builds messages from the served descriptors, and gets the same
answers as the generated client. It authenticates the way the descriptors
say: the agent's API key in StartTask's `credential`, then the returned
`token` as `authorization: Bearer` on every other call."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

SERVICE = "aecl.v1.EnforcerService"


class ReflectionClient:
    def __init__(self, channel, keys: dict[str, str] | None = None) -> None:
        self.db = ProtoReflectionDescriptorDatabase(channel)
        self.pool = descriptor_pool.DescriptorPool(self.db)
        self.channel = channel
        self.service = self.pool.FindServiceByName(SERVICE)
        self.keys = keys or {}  # agent id -> API key
        self.by_task: dict[str, str] = {}  # task id -> token
        self.by_agent: dict[str, str] = {}  # agent id -> its latest token

    def call(self, method_name: str, body: dict) -> dict:
        body = dict(body)
        metadata = ()
        if method_name in ("StartTask", "RenewTaskToken"):
            if "credential" not in body and body.get("agent_id") in self.keys:
                body["credential"] = self.keys[body["agent_id"]]
        else:
            token = self.by_task.get(body.get("task_id", "")) or self.by_agent.get(body.get("agent_id", ""))
            if token:
                metadata = (("authorization", f"Bearer {token}"),)
        resp = self._call(method_name, body, metadata)
        if method_name in ("StartTask", "RenewTaskToken"):
            task = resp.get("task_id") or body.get("task_id", "")
            self.by_task[task] = self.by_agent[body["agent_id"]] = resp["token"]
        return resp

    def _call(self, method_name: str, body: dict, metadata) -> dict:
        method = self.service.FindMethodByName(method_name)
        req_cls = message_factory.GetMessageClass(method.input_type)
        resp_cls = message_factory.GetMessageClass(method.output_type)
        rpc = self.channel.unary_unary(
            f"/{SERVICE}/{method_name}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=resp_cls.FromString,
        )
        resp = rpc(json_format.ParseDict(body, req_cls()), metadata=metadata)
        return json_format.MessageToDict(resp, preserving_proto_field_name=True)


def test_reflection_lists_the_services(service):
    client = ReflectionClient(service.channel)
    names = set(client.db.get_services())
    assert {SERVICE, "aecl.v1.ApprovalService", "grpc.health.v1.Health"} <= names
    assert [m.name for m in client.service.methods] == [
        "StartTask", "RenewTaskToken", "Decide", "Execute", "ListTools", "GetAgentPermissions", "GetExecution",
        "WaitForExecution", "Rollback", "RollbackTask"]
    start = client.service.FindMethodByName("StartTask")
    assert "credential" in start.input_type.fields_by_name and "token" in start.output_type.fields_by_name


def test_reflection_client_gets_the_acceptance_answers(service):
    c = ReflectionClient(service.channel, {"finance_agent_v2": service.key("finance_agent_v2")})
    agent = "finance_agent_v2"
    task = c.call("StartTask", {"agent_id": agent, "declared_goal": "pay invoices: transfer funds"})["task_id"]

    def call(rpc, name, args, agent=agent, task=task, untrusted=False):
        return c.call(rpc, {"task_id": task, "agent_id": agent, "call": {"name": name, "args": args},
                            "context": {"untrusted_input_source": untrusted}})

    assert call("Decide", "read_invoice", {"invoice_id": "INV-1001"})["decision"]["outcome"] == "OUTCOME_APPROVE"
    r = call("Execute", "read_invoice", {"invoice_id": "INV-1001"})
    assert r["status"] == "EXECUTION_STATUS_SUCCEEDED" and r["output"]["invoice_id"] == "INV-1001"
    assert call("Decide", "delete_record", {"record_id": "1"})["decision"]["outcome"] == "OUTCOME_BLOCK"
    big = {"vendor": "V-221", "amount": 100000}
    d = call("Decide", "transfer_funds", big, untrusted=True)["decision"]
    assert d["outcome"] == "OUTCOME_ESCALATE" and d["risk_score"] >= 0.7
    r = call("Execute", "transfer_funds", big, untrusted=True)
    assert r["status"] == "EXECUTION_STATUS_PENDING_APPROVAL" and r["approval_id"] and "sandbox_id" not in r
    # An agent without a manifest has no key: it cannot even start a task.
    with pytest.raises(grpc.RpcError) as err:
        c.call("StartTask", {"agent_id": "ghost", "declared_goal": "x"})
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    scoped = c.call("StartTask", {"agent_id": agent, "declared_goal": "review", "declared_actions": ["read_invoice"]})
    d = call("Decide", "generate_payment_report", {"vendor_id": "V-17"}, task=scoped["task_id"])["decision"]
    assert d["outcome"] == "OUTCOME_BLOCK" and d["reason"].startswith("Action scope exceeds declared task intent")
    budget = c.call("StartTask", {"agent_id": agent, "declared_goal": "read"})["task_id"]
    for _ in range(50):
        assert call("Execute", "read_invoice", {"invoice_id": "INV-1001"}, task=budget)["status"] == "EXECUTION_STATUS_SUCCEEDED"
    assert call("Execute", "read_invoice", {"invoice_id": "INV-1001"}, task=budget)["status"] == "EXECUTION_STATUS_BLOCKED"


def test_reflection_client_discovers_tools_and_permissions(service):
    """Knowing only the served descriptors, a client learns what it may call
    and the JSON Schema of each call's args, then makes a call that passes."""
    agent = "finance_agent_v2"
    c = ReflectionClient(service.channel, {agent: service.key(agent)})
    c.call("StartTask", {"agent_id": agent, "declared_goal": "read invoices"})  # discovery needs a task token
    tools = {t["name"]: t for t in c.call("ListTools", {"agent_id": agent})["tools"]}
    # examples/agents/finance_agent_v2.yaml: its allowed actions and its context rule's action.
    assert sorted(tools) == ["create_record", "fire_webhook", "generate_payment_report", "read_invoice",
                             "read_vendor_profile", "send_email", "transfer_funds", "update_record"]
    invoice = tools["read_invoice"]
    assert invoice["access"] == "TOOL_ACCESS_READ" and invoice["description"] == "Read one invoice by id."
    assert invoice["args_schema"]["required"] == ["invoice_id"]
    assert invoice["args_schema"]["properties"]["invoice_id"]["type"] == "string"
    assert tools["transfer_funds"]["context_rule"] == "requires_human_approval"
    assert tools["transfer_funds"]["access"] == "TOOL_ACCESS_WRITE"

    perms = c.call("GetAgentPermissions", {"agent_id": agent})
    assert perms["blocked_actions"] == ["delete_record", "modify_iam_policy", "bulk_export"]
    assert perms["context_rules"] == {"transfer_funds": "requires_human_approval"}
    assert perms["max_tool_calls_per_run"] == "50" and perms["auto_approve_threshold"] == 0.6  # int64: a string

    task = c.call("StartTask", {"agent_id": agent, "declared_goal": "read invoices"})["task_id"]
    args = {name: "INV-1001" for name in invoice["args_schema"]["required"]}
    r = c.call("Execute", {"task_id": task, "agent_id": agent, "call": {"name": "read_invoice", "args": args}})
    assert r["status"] == "EXECUTION_STATUS_SUCCEEDED" and r["output"]["invoice_id"] == "INV-1001"

    with pytest.raises(grpc.RpcError) as err:  # no token of its own
        c.call("ListTools", {"agent_id": "ghost_agent"})
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as err:  # another agent's token
        c._call("ListTools", {"agent_id": "ghost_agent"}, (("authorization", f"Bearer {c.by_agent[agent]}"),))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
