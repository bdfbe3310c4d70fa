"""A real `aecl serve` with the console on a free port, over the example
world (so an approved transfer_funds really runs in bubblewrap and moves
money through the payments connector), and helpers to drive it."""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from google.protobuf import struct_pb2

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
from tests.conftest import Service, World, free_port, require_bwrap, write_config

AGENT = "finance_agent_v2"
PAYLOAD = "<script>alert(1)</script><img src=x onerror=alert(2)>"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
T = TypeVar("T")


class WebhookSink:
    """A real webhook receiver on loopback: keeps every JSON body posted to it
    (the notifier's payloads, with the console links and their link token)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                sink.bodies.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def links(self, approval_id: str) -> dict[str, str]:
        def found() -> dict[str, str] | None:
            for b in self.bodies:
                if b.get("approval", {}).get("approval_id") == approval_id and b.get("links"):
                    return b["links"]
            return None
        return wait_for(found, what=f"the webhook for {approval_id}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ConsoleService:
    def __init__(self, svc: Service, world: World, port: int, sink: WebhookSink) -> None:
        self.svc = svc
        self.world = world
        self.sink = sink
        self.url = f"http://127.0.0.1:{port}"
        wait_for(self._up, what="the console to answer")

    def _up(self) -> bool:
        try:
            httpx.get(self.url + "/login", timeout=5)
            return True
        except httpx.TransportError:
            return False

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=20, follow_redirects=False)

    def login(self, principal: str = "approver") -> httpx.Client:
        c = self.client()
        r = login(c, self.svc.key(principal))
        assert r.status_code == 303, (r.status_code, r.text[:500])
        return c

    def escalate(self, *, triggering_input: str = "invoice INV-1001 says: pay V-221", amount: int = 100000,
                 vendor: str = "V-221", read_first: bool = False) -> str:
        """A transfer_funds call that escalates (after a read_invoice call in
        the same task, so it has history, when asked); its approval id."""
        task = self.svc.stub.StartTask(pb.StartTaskRequest(
            agent_id=AGENT, declared_goal="pay the invoices",
            declared_actions=["read_invoice", "transfer_funds"])).task_id
        if read_first:
            read = struct_pb2.Struct()
            read.update({"invoice_id": "INV-1001"})
            r = self.svc.stub.Execute(pb.ExecuteRequest(task_id=task, agent_id=AGENT,
                                                        call=pb.ToolCall(name="read_invoice", args=read)))
            assert r.status == pb.EXECUTION_STATUS_SUCCEEDED, (r.status, r.error)
        args = struct_pb2.Struct()
        args.update({"vendor": vendor, "amount": amount})
        r = self.svc.stub.Execute(pb.ExecuteRequest(
            task_id=task, agent_id=AGENT, call=pb.ToolCall(name="transfer_funds", args=args),
            context=pb.CallContext(untrusted_input_source=True, triggering_input=triggering_input)))
        assert r.status == pb.EXECUTION_STATUS_PENDING_APPROVAL, (r.status, r.error)
        return r.approval_id

    def approval(self, c: httpx.Client, approval_id: str) -> dict[str, Any]:
        r = c.get(f"/api/approvals/{approval_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def records(self, kind: str) -> list[dict[str, Any]]:
        return [rec for rec in (json.loads(x)["record"] for x in self.svc.log_lines()) if rec["kind"] == kind]


def wait_for(check: Callable[[], T], *, what: str, attempts: int = 600, pause_s: float = 0.1) -> T:
    """Bounded polling for a state (no timing assertion: only the state matters)."""
    for _ in range(attempts):
        value = check()
        if value:
            return value
        time.sleep(pause_s)
    raise AssertionError(f"gave up waiting for {what}")


def hidden(html: str, name: str) -> str:
    m = re.search(rf'name="{re.escape(name)}" value="([^"]*)"', html)
    assert m, f"no hidden field {name}"
    return m.group(1)


def login(c: httpx.Client, key: str, next_url: str = "/") -> httpx.Response:
    page = c.get("/login", params={"next": next_url})
    assert page.status_code == 200
    return c.post("/login", data={"csrf_token": hidden(page.text, "csrf_token"), "next": next_url,
                                  "api_key": key})


def csrf_of(c: httpx.Client, path: str = "/") -> str:
    r = c.get(path)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    return hidden(r.text, "csrf_token")


def start_console(tmp: Path, world: World) -> tuple[ConsoleService, Callable[[], None]]:
    """`aecl serve` over `world` with the console on a free port and a
    webhook sink; and how to stop both."""
    sink = WebhookSink()
    secret = tmp / "webhook.secret"
    secret.write_text(secrets.token_hex(32))
    secret.chmod(0o600)
    port = free_port()
    try:
        svc = Service(write_config(
            tmp / "svc", world=world.urls, console={"listen": f"127.0.0.1:{port}"},
            approvals={"webhooks": [{"url": sink.url, "secret_file": str(secret), "backoff_s": 0.2}]}))
    except BaseException:
        sink.close()
        raise

    def stop() -> None:
        svc.stop()
        sink.close()
    try:
        return ConsoleService(svc, world, port, sink), stop
    except BaseException:
        stop()
        raise


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleService]:
    require_bwrap()
    tmp = tmp_path_factory.mktemp("console")
    world = World(tmp / "world")
    try:
        service, stop = start_console(tmp, world)
    except BaseException:
        world.stop()
        raise
    try:
        yield service
    finally:
        stop()
        world.stop()
