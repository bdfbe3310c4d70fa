"""Discovery: an agent asks which tools it may call (with their argument
schemas) and what its manifest grants, through the generated client against
a real `aecl serve`. The answers are reads of the policy in force: they are
not logged, but every refusal is. Discovery needs a task token (the
agent's latest, through `svc.stub`), so each test starts a task first."""

from __future__ import annotations

import json
import shutil

import grpc
import pytest
import yaml
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
from tests.conftest import EXAMPLES, Service, provision, write_config
from tests.server.test_acceptance import decide, execute, start

FINANCE = "finance_agent_v2"
# allowed twice over, blocked (block wins), a context rule, and a name the
# registry does not have.
MIXED = {
    "agent_id": "mixed_agent",
    "allowed_actions": ["read_invoice", "bulk_export", "no_such_tool"],
    "blocked_actions": ["bulk_export", "modify_iam_policy"],
    "context_rules": {"delete_record": "requires_human_approval", "modify_iam_policy": "requires_human_approval"},
    "max_tool_calls_per_run": 7,
    "auto_approve_threshold": 0.25,
}


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("discovery")
    agents = tmp / "agents"
    shutil.copytree(EXAMPLES / "agents", agents)
    (agents / "mixed_agent.yaml").write_text(yaml.safe_dump(MIXED))
    service = Service(write_config(tmp, agents_dir=str(agents), policy={"shadow_agents": ["mixed_agent"]}))
    yield service
    service.stop()


def registry() -> dict:
    return yaml.safe_load((EXAMPLES / "tools.yaml").read_text())["tools"]


def manifest(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / "agents" / f"{name}.yaml").read_text())


def records(service) -> list[dict]:
    return [json.loads(line)["record"] for line in service.log_lines()]


def bearer(service, agent: str = FINANCE) -> tuple[tuple[str, str], ...]:
    """The metadata of a call made with the agent's latest task token."""
    return (("authorization", f"Bearer {service.auth.by_agent[agent]}"),)


def test_list_tools_is_what_the_manifest_allows_or_governs_and_not_what_it_blocks(svc):
    task = start(svc)
    resp = svc.stub.ListTools(pb.ListToolsRequest(agent_id=FINANCE))
    m = manifest(FINANCE)
    expected = sorted((set(m["allowed_actions"]) | set(m["context_rules"])) - set(m["blocked_actions"]))
    assert [t.name for t in resp.tools] == expected == [
        "create_record", "fire_webhook", "generate_payment_report", "read_invoice", "read_vendor_profile",
        "send_email", "transfer_funds", "update_record"]
    tools = {t.name: t for t in resp.tools}
    reg = registry()
    for name, tool in tools.items():
        assert tool.description == reg[name]["description"]
        assert tool.access == {"read": pb.TOOL_ACCESS_READ, "write": pb.TOOL_ACCESS_WRITE}[reg[name]["access"]]
        # The schema the registry declares, as JSON (Struct numbers are doubles: 64 == 64.0).
        assert json_format.MessageToDict(tool.args_schema) == reg[name]["args_schema"]
    assert tools["transfer_funds"].context_rule == "requires_human_approval"
    assert all(not t.context_rule for n, t in tools.items() if n != "transfer_funds")
    # The revision the answer was read from is the one decisions are made by.
    assert resp.policy_revision == decide(svc, task, "read_invoice", {"invoice_id": "INV-1001"}).policy_revision


def test_block_wins_and_unregistered_names_are_left_out(svc):
    start(svc, agent="mixed_agent")
    names = [t.name for t in svc.stub.ListTools(pb.ListToolsRequest(agent_id="mixed_agent")).tools]
    assert names == ["delete_record", "read_invoice"]


def test_the_listed_schema_is_the_one_enforced(svc):
    """An agent that follows ListTools builds calls that are admitted; one
    that leaves out a required field is refused before the policy."""
    task = start(svc)
    [tool] = [t for t in svc.stub.ListTools(pb.ListToolsRequest(agent_id=FINANCE)).tools if t.name == "read_invoice"]
    required = list(json_format.MessageToDict(tool.args_schema)["required"])
    assert required == ["invoice_id"]
    assert execute(svc, task, "read_invoice", {"invoice_id": "INV-1001"}).status == pb.EXECUTION_STATUS_SUCCEEDED
    with pytest.raises(grpc.RpcError) as err:
        execute(svc, task, "read_invoice", {})
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "call.args.invoice_id: is required"


def test_get_agent_permissions_is_the_manifest_as_the_policy_sees_it(svc):
    start(svc)
    p = svc.stub.GetAgentPermissions(pb.GetAgentPermissionsRequest(agent_id=FINANCE))
    m = manifest(FINANCE)
    assert p.agent_id == FINANCE
    assert list(p.allowed_actions) == m["allowed_actions"]
    assert list(p.blocked_actions) == m["blocked_actions"]
    assert dict(p.context_rules) == m["context_rules"]
    assert p.max_tool_calls_per_run == m["max_tool_calls_per_run"]
    assert p.auto_approve_threshold == m["auto_approve_threshold"]
    assert p.token_ttl_seconds == m["token_ttl_seconds"]
    assert list(p.credential_scope) == m["credential_scope"]
    assert p.shadow is False
    assert p.policy_revision == svc.stub.ListTools(pb.ListToolsRequest(agent_id=FINANCE)).policy_revision

    start(svc, agent="mixed_agent")
    mixed = svc.stub.GetAgentPermissions(pb.GetAgentPermissionsRequest(agent_id="mixed_agent"))
    assert mixed.shadow is True
    assert (mixed.max_tool_calls_per_run, mixed.auto_approve_threshold) == (7, 0.25)
    assert mixed.token_ttl_seconds == 900 and list(mixed.credential_scope) == []  # the manifest defaults


def test_answers_are_not_logged(svc):
    """Reads that decide and change nothing: no audit entry (README, The API)."""
    start(svc)
    before = len(svc.log_lines())
    for _ in range(3):
        svc.stub.ListTools(pb.ListToolsRequest(agent_id=FINANCE))
        svc.stub.GetAgentPermissions(pb.GetAgentPermissionsRequest(agent_id=FINANCE))
    assert len(svc.log_lines()) == before


RPCS = [("ListTools", pb.ListToolsRequest), ("GetAgentPermissions", pb.GetAgentPermissionsRequest)]


def refusal(err, code: grpc.StatusCode) -> str:
    """The status code, and the stable reason (ErrorInfo) the client reads."""
    assert err.value.code() == code, err.value.details()
    info = error_details_pb2.ErrorInfo()
    assert rpc_status.from_call(err.value).details[0].Unpack(info) and info.domain == "aecl"
    return info.reason


@pytest.mark.parametrize("rpc,request_type", RPCS)
def test_an_agent_without_a_manifest_is_refused_and_logged(svc, rpc, request_type):
    """An agent without a manifest has no key, so no task token: asking
    without one is UNAUTHENTICATED, asking with another agent's token is
    PERMISSION_DENIED. Either way an `auth_refused` entry names the probed id.
    (The service's own NOT_FOUND behind the gate is unreachable over the wire.)"""
    before = len(svc.log_lines())
    with pytest.raises(grpc.RpcError) as err:
        getattr(svc.stub, rpc)(request_type(agent_id="ghost_agent"))
    assert refusal(err, grpc.StatusCode.UNAUTHENTICATED) == "unauthenticated"
    [record] = records(svc)[before:]
    assert (record["kind"], record["outcome"], record["status"]) == ("auth_refused", "refused", "UNAUTHENTICATED")
    assert (record["rpc"], record["agent_id"], record["refusal"]) == (rpc, "ghost_agent", "missing_token")

    start(svc)
    before = len(svc.log_lines())
    with pytest.raises(grpc.RpcError) as err:
        getattr(svc.stub, rpc)(request_type(agent_id="ghost_agent"), metadata=bearer(svc))
    assert refusal(err, grpc.StatusCode.PERMISSION_DENIED) == "not_authorised"
    assert err.value.details().startswith("agent_id: ") and "ghost_agent" in err.value.details()
    [record] = records(svc)[before:]
    assert (record["kind"], record["rpc"], record["agent_id"], record["refusal"]) == (
        "auth_refused", rpc, "ghost_agent", "wrong_agent")
    assert record["principal"]["id"] == FINANCE


def reload(svc) -> None:
    """Reload now. The directory watcher may have applied the change first
    (then `applied` is False), so only a rejection is an error."""
    r = svc.admin.ReloadPolicy(pb.ReloadPolicyRequest())
    assert r.applied or r.message == "policy unchanged", r.message


def test_a_token_whose_agent_lost_its_manifest_is_refused_and_logged(svc):
    """A manifest removed (and reloaded) after its agent got a token: the
    token no longer proves an agent the policy knows."""
    agents = svc.config_path.parent / "agents"
    (agents / "leaving_agent.yaml").write_text(yaml.safe_dump({**MIXED, "agent_id": "leaving_agent"}))
    provision(svc.config_path)
    svc.refresh_keys()
    reload(svc)
    try:
        start(svc, agent="leaving_agent")
        assert [t.name for t in svc.stub.ListTools(pb.ListToolsRequest(agent_id="leaving_agent")).tools] == [
            "delete_record", "read_invoice"]
    finally:
        (agents / "leaving_agent.yaml").unlink()
        reload(svc)
    for rpc, request_type in RPCS:
        before = len(svc.log_lines())
        with pytest.raises(grpc.RpcError) as err:
            getattr(svc.stub, rpc)(request_type(agent_id="leaving_agent"))
        assert refusal(err, grpc.StatusCode.UNAUTHENTICATED) == "unauthenticated"
        [record] = records(svc)[before:]
        assert (record["kind"], record["rpc"], record["agent_id"], record["refusal"]) == (
            "auth_refused", rpc, "leaving_agent", "unknown_agent")


@pytest.mark.parametrize("rpc,request_type", RPCS)
@pytest.mark.parametrize("agent_id", ["", "bad agent!", "finance_agent_v2\n"])
def test_a_malformed_agent_id_is_refused_and_logged(svc, rpc, request_type, agent_id):
    """A malformed id is never the token's: PERMISSION_DENIED naming the
    field, before any validation, and logged."""
    start(svc)
    before = len(svc.log_lines())
    with pytest.raises(grpc.RpcError) as err:
        getattr(svc.stub, rpc)(request_type(agent_id=agent_id), metadata=bearer(svc))
    assert refusal(err, grpc.StatusCode.PERMISSION_DENIED) == "not_authorised"
    assert err.value.details().startswith("agent_id: ")
    [record] = records(svc)[before:]
    assert (record["kind"], record["rpc"], record["refusal"]) == ("auth_refused", rpc, "wrong_agent")
    assert record["agent_id"] == agent_id and record["principal"]["id"] == FINANCE
