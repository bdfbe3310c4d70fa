"""`aecl mcp` end to end: the official Python SDK's client against a real
`aecl serve`, in front of two real MCP servers from npm that no one here
wrote (@modelcontextprotocol/server-filesystem, launched inside the sandbox
over a temporary workspace, and server-everything), as issue 16's
acceptance list says. Approvals go through the real ApprovalService."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
from enforcer._gen.aecl.v1 import enforcer_pb2_grpc as pb_grpc
from enforcer.audit.keys import load_public_key
from enforcer.audit.verify import verify_log
from tests.auth_client import BearerKey
from tests.conftest import EXAMPLES, REPO, Service, free_port, require_bwrap, write_config
from tests.mcp.conftest import everything_upstream, filesystem_upstream

AGENT = "mcp_test_agent"
FS_TOOLS = ["read_text_file", "list_directory", "list_allowed_directories", "get_file_info", "write_file"]
EVERYTHING_TOOLS = {
    "echo": {"mcp": {"upstream": "everything", "tool": "echo"}, "access": "read"},
    "get_sum": {"mcp": {"upstream": "everything", "tool": "get-sum"}, "access": "read"},
    "long_operation": {"mcp": {"upstream": "everything", "tool": "trigger-long-running-operation"},
                       "access": "read", "timeout_s": 60},
}


class Gateway:
    def __init__(self, tmp: Path, node_modules: Path) -> None:
        self.workspace = tmp / "workspace"
        self.workspace.mkdir(parents=True)
        (self.workspace / "README.md").write_text("hello from the workspace\n")
        agents = tmp / "agents"
        agents.mkdir()
        for p in (EXAMPLES / "agents").glob("*.yaml"):
            (agents / p.name).write_text(p.read_text())
        (agents / f"{AGENT}.yaml").write_text(yaml.safe_dump({
            "agent_id": AGENT, "allowed_actions": [*FS_TOOLS, *EVERYTHING_TOOLS], "max_tool_calls_per_run": 500,
            "auto_approve_threshold": 0.6}))
        registry = yaml.safe_load((EXAMPLES / "tools.yaml").read_text())
        registry["tools_dir"] = str((EXAMPLES / registry["tools_dir"]).resolve())
        registry["tools"].update(EVERYTHING_TOOLS)
        (tmp / "tools.yaml").write_text(yaml.safe_dump(registry))
        state_key = tmp / "mcp-state.key"
        state_key.write_text(secrets.token_hex(32))
        state_key.chmod(0o600)
        self.console_port, self.mcp_port = free_port(), free_port()
        fs = filesystem_upstream(node_modules, self.workspace).model_dump(mode="json", exclude_defaults=True)
        ev = everything_upstream(node_modules).model_dump(mode="json", exclude_defaults=True)
        self.svc = Service(write_config(
            tmp / "svc", agents_dir=str(agents), tool_registry=str(tmp / "tools.yaml"),
            console={"listen": f"127.0.0.1:{self.console_port}"},
            mcp={"listen": f"127.0.0.1:{self.mcp_port}", "state_key_file": str(state_key),
                 "upstreams": {"fs": fs, "everything": ev}}))
        self.url = f"http://127.0.0.1:{self.mcp_port}/mcp"
        self.approvals = pb_grpc.ApprovalServiceStub(
            grpc.intercept_channel(self.svc.channel, BearerKey(self.svc.key("approver"))))

    def key(self, agent: str = AGENT) -> str:
        return self.svc.key(agent)

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line)["record"] for line in self.svc.log_lines()]

    def approve(self, approval_id: str) -> None:
        self.approvals.ResolveApproval(pb.ResolveApprovalRequest(approval_id=approval_id,
                                                                 resolution=pb.RESOLUTION_APPROVE))

    def wait_final(self, approval_id: str) -> pb.Approval:
        for _ in range(600):
            a = self.approvals.GetApproval(pb.GetApprovalRequest(approval_id=approval_id)).approval
            if a.status in (pb.APPROVAL_STATUS_EXECUTED, pb.APPROVAL_STATUS_FAILED, pb.APPROVAL_STATUS_REJECTED):
                return a
            import time
            time.sleep(0.05)
        raise AssertionError(f"approval {approval_id} did not end")


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mcp_node_modules):
    require_bwrap()
    g = Gateway(tmp_path_factory.mktemp("mcp"), mcp_node_modules)
    yield g
    g.svc.stop()


async def _elicit(context, params):  # declares URL elicitation; the tests drive the rounds themselves
    from mcp.types import ElicitResult
    return ElicitResult(action="accept")


def session(gw: Gateway, key: str | None = None, *, legacy: bool = False):
    """An SDK client on the gateway, as the agent (its API key as bearer)."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    class Open:
        async def __aenter__(self):
            self.http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key or gw.key()}"})
            kwargs: dict[str, Any] = {"mode": "legacy"} if legacy else {"elicitation_callback": _elicit}
            self.client = Client(streamable_http_client(gw.url, http_client=self.http), **kwargs)
            return await self.client.__aenter__()

        async def __aexit__(self, *exc):
            await self.client.__aexit__(*exc)
            await self.http.aclose()
    return Open()


def run(coro):
    return asyncio.run(coro)


def text_of(result) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


def test_tools_list_shows_only_what_the_agents_manifest_allows(gw):
    async def go():
        async with session(gw) as c:
            return sorted(t.name for t in (await c.list_tools()).tools)
    names = run(go())
    assert names == sorted([*FS_TOOLS, *EVERYTHING_TOOLS])  # not move_file, edit_file, ... (not allowed)


def test_a_read_inside_the_workspace_is_approved_and_returns_the_file(gw):
    async def go():
        async with session(gw) as c:
            return await c.call_tool("read_text_file", {"path": "/workspace/README.md"})
    r = run(go())
    assert not r.is_error and text_of(r) == "hello from the workspace\n"
    assert r.meta["aecl/decision_id"].startswith("dec_")


def test_a_write_outside_the_workspace_is_blocked_on_its_arguments(gw):
    async def go():
        async with session(gw) as c:
            return await c.call_tool("write_file", {"path": "/workspace/../etc/evil", "content": "x"})
    r = run(go())
    assert r.is_error and "outside the tool's root '/workspace'" in text_of(r)
    decision = next(x for x in gw.records() if x.get("decision_id") == r.meta["aecl/decision_id"]
                    and x["kind"] == "decision")
    assert decision["rule"] == "paths.outside_root" and decision["outcome"] == "block"


def test_an_escalated_write_waits_for_approval_then_writes_exactly_once(gw):
    from mcp.types import ElicitResult, InputRequiredResult

    args = {"path": "/workspace/approved.txt", "content": "written once\n"}

    async def go():
        async with session(gw) as c:
            r = await c.session.call_tool("write_file", args, allow_input_required=True)
            assert isinstance(r, InputRequiredResult), r
            request = r.input_requests["aecl_approval"]
            approval_id = r.meta["aecl/approval_id"]
            assert request.params.mode == "url" and request.params.url.endswith(f"/approvals/{approval_id}")
            assert not (gw.workspace / "approved.txt").exists()
            again = await c.session.call_tool("write_file", args, request_state=r.request_state,
                                              input_responses={"aecl_approval": ElicitResult(action="accept")},
                                              allow_input_required=True)
            assert isinstance(again, InputRequiredResult)  # not approved yet: asked again
            gw.approve(approval_id)
            gw.wait_final(approval_id)
            done = await c.session.call_tool("write_file", args, request_state=again.request_state,
                                             input_responses={"aecl_approval": ElicitResult(action="accept")},
                                             allow_input_required=True)
            from mcp.shared.exceptions import MCPError
            with pytest.raises(MCPError):  # the same sealed state, used twice
                await c.session.call_tool("write_file", args, request_state=again.request_state,
                                          input_responses={"aecl_approval": ElicitResult(action="accept")},
                                          allow_input_required=True)
            return approval_id, done
    approval_id, done = run(go())
    assert not done.is_error, text_of(done)
    assert (gw.workspace / "approved.txt").read_text() == "written once\n"
    runs = [x for x in gw.records() if x["kind"] == "execution" and x.get("hitl_approval_id") == approval_id]
    assert [x["outcome"] for x in runs] == ["succeeded"]  # exactly once


def test_a_client_without_mrtr_gets_is_error_with_the_approval_and_can_retry(gw):
    args = {"path": "/workspace/legacy.txt", "content": "legacy\n"}

    async def go():
        async with session(gw, legacy=True) as c:
            first = await c.call_tool("write_file", args)
            approval_id = first.meta["aecl/approval_id"]
            gw.approve(approval_id)
            gw.wait_final(approval_id)
            done = await c.call_tool("write_file", args, meta={"aecl/approval_id": approval_id})
            return first, done
    first, done = run(go())
    assert first.is_error and "approval required" in text_of(first)
    assert not done.is_error and (gw.workspace / "legacy.txt").read_text() == "legacy\n"


def test_a_tool_the_registry_does_not_name_is_refused_and_malformed_calls_get_the_specs_error(gw):
    from mcp.shared.exceptions import MCPError

    async def go():
        async with session(gw) as c:
            with pytest.raises(MCPError) as unknown:
                await c.call_tool("get-env", {})
            bad = await c.call_tool("get_sum", {"a": "one", "b": 2})
            ok = await c.call_tool("get_sum", {"a": 1, "b": 2})
            return unknown.value, bad, ok
    unknown, bad, ok = run(go())
    assert unknown.error.code == -32602 and "Unknown tool" in unknown.error.message
    assert bad.is_error and "invalid arguments" in text_of(bad)
    assert not ok.is_error and "3" in text_of(ok)


def test_killing_the_upstream_mid_call_fails_clearly_and_the_next_call_restarts_it(gw):
    async def go():
        async with session(gw) as c:
            call = asyncio.ensure_future(c.call_tool("long_operation", {"duration": 20, "steps": 20}))
            pid = None
            for _ in range(400):
                pid = _everything_pid()
                if pid is not None and _running_long(gw):
                    break
                await asyncio.sleep(0.05)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            failed = await asyncio.wait_for(call, 60)
            after = await c.call_tool("echo", {"message": "back"})
            return failed, after
    failed, after = run(go())
    assert failed.is_error and "upstream" in text_of(failed).lower()
    assert not after.is_error and "back" in text_of(after)
    logged = [x for x in gw.records() if x["kind"] == "execution" and x["action_name"] == "long_operation"]
    assert logged and logged[-1]["cause"] == "upstream_unavailable"


def _everything_pid() -> int | None:
    out = subprocess.run(["pgrep", "-f", "-o", "bwrap.*server-everything"], capture_output=True, text=True).stdout
    return int(out.split()[0]) if out.strip() else None


def _running_long(gw: Gateway) -> bool:
    return any(x["kind"] == "decision" and x["action_name"] == "long_operation" for x in gw.records())


def test_a_bad_or_missing_bearer_is_refused_before_any_mcp(gw):
    import httpx
    r = httpx.post(gw.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}, timeout=10)
    assert r.status_code == 401 and "WWW-Authenticate" in r.headers
    r = httpx.post(gw.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}, timeout=10,
                   headers={"Authorization": f"Bearer {gw.svc.key('approver')}"})
    assert r.status_code == 403
    assert any(x["kind"] == "auth_refused" and x["rpc"] == "mcp" for x in gw.records())


def test_every_call_is_logged_with_its_mcp_request_id_and_the_log_verifies(gw):
    async def go():
        async with session(gw) as c:
            return await c.call_tool("echo", {"message": "logged"})
    r = run(go())
    decision = next(x for x in gw.records() if x.get("decision_id") == r.meta["aecl/decision_id"])
    assert decision["input_payload"]["mcp_request_id"]
    execution = next(x for x in gw.records() if x["kind"] == "execution"
                     and x["decision_id"] == r.meta["aecl/decision_id"])
    assert execution["output_sha256"].startswith("sha256:") and execution["input_payload"]["mcp_request_id"]
    verify_log(gw.svc.audit_path, [load_public_key(gw.svc.pubkey)])


def test_the_stdio_front_end_speaks_for_one_agent_through_the_service(gw, tmp_path):
    from mcp import Client, StdioServerParameters
    key_file = tmp_path / "agent.key"
    key_file.write_text(gw.key())
    key_file.chmod(0o600)

    async def go():
        params = StdioServerParameters(command=sys.executable, args=[
            "-m", "enforcer", "mcp", "stdio", "--agent", AGENT, "--credential-file", str(key_file), "--url", gw.url],
            cwd=str(REPO), env={"PYTHONPATH": str(REPO)})
        async with Client(params) as c:
            names = sorted(t.name for t in (await c.list_tools()).tools)
            read = await c.call_tool("read_text_file", {"path": "/workspace/README.md"})
            return names, read
    names, read = run(go())
    assert "read_text_file" in names and text_of(read) == "hello from the workspace\n"


def test_a_request_state_is_bound_to_its_agent(gw):
    from mcp.shared.exceptions import MCPError
    from mcp.types import ElicitResult, InputRequiredResult
    args = {"path": "/workspace/bound.txt", "content": "x"}

    async def go():
        async with session(gw) as c:
            r = await c.session.call_tool("write_file", args, allow_input_required=True)
            assert isinstance(r, InputRequiredResult)
        async with session(gw, key=gw.key("mcp_demo_agent")) as other:
            with pytest.raises(MCPError) as stolen:
                await other.session.call_tool("write_file", args, request_state=r.request_state,
                                              input_responses={"aecl_approval": ElicitResult(action="accept")},
                                              allow_input_required=True)
        return stolen.value
    stolen = run(go())
    assert stolen.error.code == -32602 and not (gw.workspace / "bound.txt").exists()
