"""The console's views of the verified audit log, against a real `aecl
serve` over the example world: a task's timeline, "needs attention", and a
tampered log (last: it breaks this module's log for good)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import struct_pb2

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
from tests.console.conftest import ConsoleService, csrf_of, start_console, wait_for


def approve(console: ConsoleService, approval_id: str, comment: str = "ok") -> dict:
    c = console.login()
    r = c.post(f"/approvals/{approval_id}/resolve", data={"csrf_token": csrf_of(c), "decision": "approve",
                                                           "comment": comment})
    assert r.status_code == 303, r.text[:500]
    return wait_for(lambda: (a := console.approval(c, approval_id))["status"] in ("executed", "failed") and a,
                    what=f"{approval_id} to run")


def test_the_task_view_is_the_verified_timeline_in_order(console: ConsoleService) -> None:
    approval_id = console.escalate(triggering_input="pay <b>now</b>")
    a = approve(console, approval_id)
    assert a["status"] == "executed"
    c = console.login()
    r = c.get(f"/tasks/{a['task_id']}")
    assert r.status_code == 200
    page = r.text
    assert 'data-verified="true"' in page and "Audit log verified" in page
    kinds = [k for k in ("task_started", "decision", "approval", "execution", "connector_request")
             if f'data-kind="{k}"' in page]
    assert kinds == ["task_started", "decision", "approval", "execution", "connector_request"]
    order = [page.index(f'data-kind="{k}"') for k in ("task_started", "decision", "approval", "execution")]
    assert order == sorted(order)
    assert approval_id in page and "pending -&gt; approved" in page
    entries = len(console.svc.log_lines())
    assert "Audit log verified: " in page and entries >= int(page.split("Audit log verified: ")[1].split()[0])
    assert c.get("/tasks/tsk_doesnotexist").status_code == 404


def test_a_failed_write_needs_attention(console: ConsoleService) -> None:
    c = console.login()
    assert "Nothing needs attention" in c.get("/attention").text or 'id="attention"' in c.get("/attention").text
    approval_id = console.escalate(vendor="V-99999999")  # no such vendor: the payments service says 404
    a = approve(console, approval_id)
    assert a["status"] == "failed" and a["result"]["status"] == "failed"
    page = c.get("/attention").text
    assert 'data-verified="true"' in page
    row = page[page.index(approval_id) - 2000: page.index(approval_id)]
    assert 'data-why="failed_write"' in row and "transfer_funds" in row
    failed = [x for x in console.records("execution") if x.get("hitl_approval_id") == approval_id]
    assert failed and failed[-1]["outcome"] == "failed" and failed[-1]["cause"] == ""


def test_a_read_tool_that_succeeded_does_not_need_attention(console: ConsoleService) -> None:
    c = console.login()
    before = c.get("/attention").text.count("<tr class=\"w-")
    t = console.svc.stub.StartTask(pb.StartTaskRequest(agent_id="finance_agent_v2", declared_goal="read")).task_id
    args = struct_pb2.Struct()
    args.update({"invoice_id": "INV-1001"})
    r = console.svc.stub.Execute(pb.ExecuteRequest(task_id=t, agent_id="finance_agent_v2",
                                                   call=pb.ToolCall(name="read_invoice", args=args)))
    assert r.status == pb.EXECUTION_STATUS_SUCCEEDED, r.error
    assert c.get("/attention").text.count("<tr class=\"w-") == before


@pytest.fixture
def own_console(console: ConsoleService, tmp_path: Path) -> Iterator[ConsoleService]:
    """A service of its own (over the same world): this test breaks its log."""
    service, stop = start_console(tmp_path, console.world)
    try:
        yield service
    finally:
        stop()


def test_a_tampered_log_shows_failure_not_a_timeline(own_console: ConsoleService) -> None:
    console = own_console
    approval_id = console.escalate(triggering_input="tamper with me")
    c = console.login()
    task_id = console.approval(c, approval_id)["task_id"]
    assert 'data-verified="true"' in c.get(f"/tasks/{task_id}").text
    # Change one byte of the escalation's decision entry (same length, so the file stays line-aligned).
    path = console.svc.audit_path
    data = path.read_bytes()
    lines = data.split(b"\n")
    n = next(i for i, line in enumerate(lines) if line and approval_id.encode() in line
             and json.loads(line)["record"]["kind"] == "decision")
    lines[n] = lines[n].replace(b"tamper with me", b"tamper with ME")
    with open(path, "r+b") as f:
        f.write(b"\n".join(lines))
    page = c.get(f"/tasks/{task_id}")
    assert page.status_code == 200
    assert 'data-verified="false"' in page.text and "verification FAILED" in page.text
    assert 'id="timeline"' not in page.text and "tamper with" not in page.text
    assert f"line {n + 1}" in page.text
    attention = c.get("/attention").text
    assert 'data-verified="false"' in attention
