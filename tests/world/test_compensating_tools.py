"""The example write tools' rollback_token and the compensating tools
(reverse_transfer, restore_record, restore_config, delete_record as
create_record's undo), run as the sandbox runs them (`python -I tool.py`,
args on stdin) against the real world services.

Between the tool and the world stands a stand-in for AECL's connector proxy:
HTTP_PROXY points at it, it maps the connector name (http://payments/...) to
the service, adds the payments API key and, like the real proxy during an
execution with an idempotency key, the Idempotency-Key header. The sandbox
and the real proxy are exercised by the enforcer's own tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from tests.world.conftest import GUARD, REPO, Payments, call

TOOLS = REPO / "examples" / "tools"
OPS = "ACC-OPS-EUR"
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class StandInProxy:
    """connector name -> service URL; adds the credential and the key."""

    def __init__(self, upstream: dict[str, str], credentials: dict[str, str]):
        self.upstream, self.credentials = upstream, credentials
        self.key: str | None = None  # the Idempotency-Key of the "execution" in progress
        self.seen: list[tuple[str, str, str | None]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self):
                target = urlsplit(self.path)
                base = proxy.upstream.get(target.hostname or "")
                if base is None:
                    return self._answer(403, b'{"error": "unknown connector"}')
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
                if target.hostname in proxy.credentials:
                    headers["Authorization"] = f"Bearer {proxy.credentials[target.hostname]}"
                if proxy.key is not None:
                    headers["Idempotency-Key"] = proxy.key
                proxy.seen.append((self.command, target.path, proxy.key))
                url = base + target.path + (f"?{target.query}" if target.query else "")
                req = urllib.request.Request(url, data=body, method=self.command, headers=headers)
                try:
                    with _direct.open(req, timeout=GUARD) as r:
                        return self._answer(r.status, r.read())
                except urllib.error.HTTPError as e:
                    with e:
                        return self._answer(e.code, e.read())

            def _answer(self, status: int, data: bytes):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _forward

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(GUARD)


@dataclass
class Ran:
    code: int
    out: dict | None
    err: str


@dataclass
class World:
    proxy: StandInProxy
    payments: Payments
    urls: dict[str, str]

    def run(self, tool: str, args: dict, *, key: str | None = None) -> Ran:
        """Run examples/tools/<tool>.py as the sandbox does, its requests under key."""
        self.proxy.key = key
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HTTP_PROXY": self.proxy.url,
               "http_proxy": self.proxy.url}
        proc = subprocess.run([sys.executable, "-I", str(TOOLS / f"{tool}.py")], input=json.dumps(args),
                              capture_output=True, text=True, env=env, timeout=GUARD, check=False)
        out = json.loads(proc.stdout) if proc.stdout.strip() else None
        return Ran(proc.returncode, out, proc.stderr)

    def ok(self, tool: str, args: dict, *, key: str | None = None) -> dict:
        ran = self.run(tool, args, key=key)
        assert ran.code == 0, ran.err
        assert isinstance(ran.out, dict)
        return ran.out


@pytest.fixture
def world(spawn, payments):
    urls = {name: spawn(name).url for name in ("records", "config", "webhooks")}
    urls["payments"] = payments.url
    proxy = StandInProxy(urls, {"payments": payments.key})
    try:
        yield World(proxy, payments, urls)
    finally:
        proxy.close()


def key(n: int) -> str:
    return f"aecl-{n:032x}"


TRANSFER = {"vendor": "V-221", "amount": 100000, "currency": "EUR", "reference": "INV-1002"}


# ---- payments


def test_transfer_funds_returns_its_transfer_id_and_reverse_transfer_undoes_it(world):
    before = world.payments.balance(OPS)
    made = world.ok("transfer_funds", TRANSFER, key=key(1))
    assert made["rollback_token"] == made["transfer_id"]
    assert made["status"] == "completed"
    assert world.payments.balance(OPS) == before - 100000
    undone = world.ok("reverse_transfer", {"transfer_id": made["rollback_token"], "idempotency_key": key(1)},
                      key=key(2))
    assert undone["status"] == "reversed"
    assert undone["transfer_id"] == made["transfer_id"]
    assert undone["transfer"]["status"] == "reversed"
    assert world.payments.balance(OPS) == before
    # run again (a retried rollback under the same key: the service replays; under another: already reversed)
    assert world.ok("reverse_transfer", {"transfer_id": made["transfer_id"]}, key=key(2))["status"] == "reversed"
    again = world.ok("reverse_transfer", {"transfer_id": made["transfer_id"]}, key=key(3))
    assert (again["status"], again["transfer_id"]) == ("already_reversed", made["transfer_id"])
    assert world.ok("reverse_transfer", {"idempotency_key": key(1)}, key=key(4))["status"] == "already_reversed"
    assert world.payments.balance(OPS) == before


def test_reverse_transfer_by_key_finds_what_a_timed_out_call_did(world):
    auth = {"Authorization": f"Bearer {world.payments.key}"}
    call("POST", world.payments.url + "/_control/faults",
         {"method": "POST", "path_prefix": "/transfers", "delay_s": 2, "commit": True}, headers=auth)
    before = world.payments.balance(OPS)
    req = urllib.request.Request(world.payments.url + "/transfers", data=json.dumps(TRANSFER).encode(), method="POST",
                                 headers={**auth, "Content-Type": "application/json", "Idempotency-Key": key(10)})
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        _direct.open(req, timeout=0.3)  # the call "timed out": its outcome is unknown
    assert world.payments.balance(OPS) == before - 100000  # it happened
    undone = world.ok("reverse_transfer", {"idempotency_key": key(10)}, key=key(11))  # no rollback_token
    assert undone["status"] == "reversed"
    assert world.payments.balance(OPS) == before


def test_reverse_transfer_by_key_tolerates_never_happened(world):
    auth = {"Authorization": f"Bearer {world.payments.key}"}
    call("POST", world.payments.url + "/_control/faults",
         {"method": "POST", "path_prefix": "/transfers", "delay_s": 0.5, "commit": False}, headers=auth)
    before = world.payments.balance(OPS)
    failed = world.run("transfer_funds", TRANSFER, key=key(20))
    assert failed.code == 1
    assert "HTTP 503" in failed.err and "injected_fault" in failed.err
    undone = world.ok("reverse_transfer", {"idempotency_key": key(20)}, key=key(21))
    assert undone == {"status": "never_happened", "idempotency_key": key(20), "transfer_id": None}
    assert world.payments.balance(OPS) == before


def test_reverse_transfer_errors(world):
    neither = world.run("reverse_transfer", {}, key=key(30))
    assert neither.code == 1 and "transfer_id or idempotency_key" in neither.err
    unknown = world.run("reverse_transfer", {"transfer_id": "tr_0000000000000000"}, key=key(31))
    assert unknown.code == 1 and "HTTP 404" in unknown.err and "unknown transfer" in unknown.err
    assert unknown.out is None


# ---- records


def test_create_record_is_undone_by_delete_record_which_tolerates_never_happened(world):
    made = world.ok("create_record", {"record_id": "INV-4001", "fields": {"amount": 5}}, key=key(40))
    assert made["rollback_token"] == "INV-4001" == made["record_id"]
    deleted = world.ok("delete_record", {"record_id": made["rollback_token"]}, key=key(41))
    assert deleted["status"] == "deleted" and deleted["deleted"] is True
    assert deleted["rollback_token"] == deleted["snapshot_id"]
    assert call("GET", world.urls["records"] + "/records/INV-4001").status == 404
    assert world.ok("delete_record", {"record_id": "INV-4001"}, key=key(42)) == \
        {"status": "never_happened", "record_id": "INV-4001", "deleted": False}
    # the delete is undone by restore_record with its token
    back = world.ok("restore_record", {"record_id": "INV-4001", "snapshot_id": deleted["rollback_token"]}, key=key(43))
    assert (back["status"], back["fields"], back["deleted"]) == ("restored", {"amount": 5}, False)


def test_delete_record_with_a_key_deletes_only_what_was_created_under_it(world):
    spared = world.ok("delete_record", {"record_id": "INV-1001", "idempotency_key": key(50)}, key=key(51))
    assert spared == {"status": "never_happened", "record_id": "INV-1001", "deleted": False}
    assert call("GET", world.urls["records"] + "/records/INV-1001").status == 200
    world.ok("create_record", {"record_id": "INV-5001", "fields": {"a": 1}}, key=key(52))
    gone = world.ok("delete_record", {"record_id": "INV-5001", "idempotency_key": key(52)}, key=key(53))
    assert gone["status"] == "deleted"


def test_update_record_is_undone_by_restore_record_by_token_or_by_key(world):
    url = world.urls["records"]
    before = call("GET", url + "/records/INV-1001").body["fields"]
    updated = world.ok("update_record", {"record_id": "INV-1001", "fields": {"status": "paid"}}, key=key(60))
    assert updated["rollback_token"] == updated["snapshot_id"]
    back = world.ok("restore_record", {"record_id": "INV-1001", "snapshot_id": updated["rollback_token"],
                                       "idempotency_key": key(60)}, key=key(61))
    assert (back["status"], back["restored_from"], back["fields"]) == ("restored", updated["snapshot_id"], before)
    # without the token (the outcome was unknown): the snapshot the write under the key took
    world.ok("update_record", {"record_id": "INV-1001", "fields": {"status": "void"}}, key=key(62))
    by_key = world.ok("restore_record", {"record_id": "INV-1001", "idempotency_key": key(62)}, key=key(63))
    assert by_key["status"] == "restored"
    assert call("GET", url + "/records/INV-1001").body["fields"] == before
    never = world.ok("restore_record", {"record_id": "INV-1001", "idempotency_key": key(64)}, key=key(65))
    assert never == {"status": "never_happened", "record_id": "INV-1001", "idempotency_key": key(64)}
    assert call("GET", url + "/records/INV-1001").body["fields"] == before


def test_delete_record_is_undone_by_restore_record_by_key(world):
    url = world.urls["records"]
    before = call("GET", url + "/records/INV-1002").body["fields"]
    world.ok("delete_record", {"record_id": "INV-1002"}, key=key(70))
    back = world.ok("restore_record", {"record_id": "INV-1002", "idempotency_key": key(70)}, key=key(71))
    assert back["status"] == "restored"
    assert call("GET", url + "/records/INV-1002").body["fields"] == before


def test_restore_record_errors(world):
    unknown = world.run("restore_record", {"record_id": "INV-1001", "snapshot_id": "snap_nope"}, key=key(80))
    assert unknown.code == 1 and "HTTP 404" in unknown.err and "no_snapshot" in unknown.err
    neither = world.run("restore_record", {"record_id": "INV-1001"}, key=key(81))
    assert neither.code == 1 and "snapshot_id or idempotency_key" in neither.err


# ---- config


def test_deploy_config_is_undone_by_restore_config_by_token_or_by_key(world):
    url = world.urls["config"]
    before = call("GET", url + "/config/billing-api").body["config"]
    deployed = world.ok("deploy_config", {"service": "billing-api", "config": {"maintenance": True}}, key=key(90))
    assert deployed["rollback_token"] == deployed["snapshot_id"]
    back = world.ok("restore_config", {"service": "billing-api", "snapshot_id": deployed["rollback_token"]},
                    key=key(91))
    assert (back["status"], back["service"], back["config"]) == ("restored", "billing-api", before)
    world.ok("deploy_config", {"service": "billing-api", "config": {"maintenance": "soon"}}, key=key(92))
    assert world.ok("restore_config", {"service": "billing-api", "idempotency_key": key(92)},
                    key=key(93))["status"] == "restored"
    assert call("GET", url + "/config/billing-api").body["config"] == before
    assert world.ok("restore_config", {"service": "billing-api", "idempotency_key": key(94)}, key=key(95)) == \
        {"status": "never_happened", "service": "billing-api", "idempotency_key": key(94)}
    # a new service's deploy is undone to "no config"
    made = world.ok("deploy_config", {"service": "search", "config": {"replicas": 2}}, key=key(96))
    gone = world.ok("restore_config", {"service": "search", "snapshot_id": made["rollback_token"]}, key=key(97))
    assert gone["config"] is None
    assert call("GET", url + "/config/search").status == 404


def test_restore_config_refuses_another_services_snapshot(world):
    deployed = world.ok("deploy_config", {"service": "billing-api", "config": {"x": 1}}, key=key(100))
    wrong = world.run("restore_config", {"service": "webhook-dispatcher", "snapshot_id": deployed["snapshot_id"]},
                      key=key(101))
    assert wrong.code == 1 and "HTTP 409" in wrong.err and "wrong_service" in wrong.err


# ---- webhooks: the tool under one key delivers once


def test_fire_webhook_three_times_under_one_key_delivers_once(world):
    outs = [world.ok("fire_webhook", {"event_id": "evt-7", "payload": {"n": 1}}, key=key(110)) for _ in range(3)]
    assert outs == [{"event_id": "evt-7", "deliveries": 1}] * 3
    assert call("GET", world.urls["webhooks"] + "/events/evt-7").body["deliveries"] == 1
    other = world.run("fire_webhook", {"event_id": "evt-7", "payload": {"n": 2}}, key=key(110))
    assert other.code == 1 and "HTTP 422" in other.err


def test_the_tools_requests_carried_the_key(world):
    world.ok("update_record", {"record_id": "INV-1001", "fields": {"a": 1}}, key=key(120))
    world.ok("restore_record", {"record_id": "INV-1001", "idempotency_key": key(120)}, key=key(121))
    assert world.proxy.seen[-3:] == [("PATCH", "/records/INV-1001", key(120)),
                                     ("GET", "/records/INV-1001/snapshots", key(121)),
                                     ("POST", "/records/INV-1001/restore", key(121))]
