"""Issue 15's world: transfers found by Idempotency-Key, snapshots that
remember the key of the write that took them, webhooks delivered once per key,
the loopback-only fault control, and the schema migrations that add them."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.world.conftest import WORLD, Payments, call

OPS = "ACC-OPS-EUR"
BODY = {"vendor": "V-221", "amount": 100000, "currency": "EUR", "reference": "INV-1002"}
KEY = "aecl-" + "0123456789abcdef" * 2  # the shape of the enforcer's derived key


def transfer(p: Payments, idem: str | None = None, body: dict | None = None):
    return p.call("POST", "/transfers", body or BODY, headers={"Idempotency-Key": idem} if idem else {})


def by_key(p: Payments, key: str):
    return p.call("GET", f"/transfers?idempotency_key={key}")


def arm(url: str, fault: dict, headers: dict | None = None):
    reply = call("POST", url + "/_control/faults", fault, headers=headers)
    assert reply.status == 201, reply.body
    return reply


def post_with_timeout(url: str, body: dict, headers: dict, timeout: float) -> str:
    """POST and give up after timeout seconds: 'timeout' or the status."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **headers})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as r:
            return str(r.status)
    except urllib.error.HTTPError as e:
        return str(e.code)
    except (TimeoutError, urllib.error.URLError):
        return "timeout"


# ---- payments: GET /transfers?idempotency_key=K


def test_the_transfer_made_under_a_key_is_found_by_it(payments):
    made = transfer(payments, KEY)
    assert made.status == 201
    found = by_key(payments, KEY)
    assert found.status == 200
    assert found.body == {"idempotency_key": KEY, "key_used": True, "transfers": [made.body]}
    assert transfer(payments, KEY).headers["Idempotent-Replayed"] == "true"  # a replay makes no second transfer
    assert by_key(payments, KEY).body["transfers"] == [made.body]


def test_a_key_nothing_was_made_under_finds_nothing(payments):
    transfer(payments)  # without a key: not found under any
    assert by_key(payments, "aecl-never").body == {"idempotency_key": "aecl-never", "key_used": False,
                                                   "transfers": []}
    # a request refused by the service is recorded against the key, but made no transfer
    refused = transfer(payments, "aecl-refused", {**BODY, "vendor": "V-9999"})
    assert refused.status == 404
    assert by_key(payments, "aecl-refused").body == {"idempotency_key": "aecl-refused", "key_used": True,
                                                     "transfers": []}


@pytest.mark.parametrize("query", ["idempotency_key=", "idempotency_key=a&idempotency_key=b",
                                   "idempotency_key=a%20b"])
def test_a_bad_key_in_the_query_is_400(payments, query):
    reply = payments.call("GET", f"/transfers?{query}")
    assert reply.status == 400
    assert "idempotency_key" in reply.body["error"]


def test_without_a_key_the_latest_transfers_are_listed(payments):
    first, second = transfer(payments).body, transfer(payments).body
    assert payments.call("GET", "/transfers").body == {"transfers": [first, second]}
    assert call("GET", payments.url + "/transfers").status == 401  # behind the API key like the rest


def test_an_old_database_is_migrated_in_place(spawn, key_file, tmp_path):
    spec = importlib.util.spec_from_file_location("world_payments_v1", WORLD / "payments.py")
    sys.path.insert(0, str(WORLD))
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(WORLD))
    db = tmp_path / "old-payments.db"
    with sqlite3.connect(db) as conn:  # what the service made before issue 15: version 1
        conn.execute("PRAGMA journal_mode=WAL")
        for statement in module.SCHEMA:
            conn.execute(statement)
        module.seed(conn)
        conn.execute("PRAGMA user_version = 1")
    conn.close()
    key, path = key_file
    p = Payments(spawn("payments", db=db, args=("--api-key-file", str(path))), key, path)
    made = transfer(p, KEY)
    assert made.status == 201
    assert by_key(p, KEY).body["transfers"] == [made.body]
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1 + len(module.MIGRATIONS)
        assert conn.execute("SELECT idempotency_key FROM transfers").fetchall() == [(KEY,)]
    conn.close()


# ---- records and config: the snapshot a write under a key took


def test_records_snapshots_remember_the_key_of_their_write(spawn):
    records = spawn("records")
    url = records.url
    before = call("GET", url + "/records/INV-1001").body["fields"]
    updated = call("PATCH", url + "/records/INV-1001", {"fields": {"status": "paid"}},
                   headers={"Idempotency-Key": KEY})
    assert updated.status == 200
    call("PATCH", url + "/records/INV-1001", {"fields": {"status": "void"}})  # another write, no key
    found = call("GET", url + f"/records/INV-1001/snapshots?idempotency_key={KEY}").body
    assert found["record_id"] == "INV-1001"
    assert found["idempotency_key"] == KEY
    [snap] = found["snapshots"]
    assert (snap["snapshot_id"], snap["taken_before"], snap["fields"], snap["idempotency_key"]) == \
        (updated.body["snapshot_id"], "update", before, KEY)
    assert call("GET", url + f"/snapshots/{snap['snapshot_id']}").body == snap
    every = call("GET", url + "/records/INV-1001/snapshots").body["snapshots"]
    assert [s["idempotency_key"] for s in every] == [KEY, None]
    assert call("GET", url + "/records/INV-1001/snapshots?idempotency_key=aecl-other").body["snapshots"] == []
    assert call("GET", url + "/records/INV-1001/snapshots?idempotency_key=").status == 400
    # a create under a key: its snapshot is of "no record yet"
    created = call("POST", url + "/records", {"record_id": "INV-3001", "fields": {"amount": 1}},
                   headers={"Idempotency-Key": "aecl-create"})
    [snap] = call("GET", url + "/records/INV-3001/snapshots?idempotency_key=aecl-create").body["snapshots"]
    assert (snap["snapshot_id"], snap["taken_before"], snap["fields"]) == (created.body["snapshot_id"], "create", None)
    bad = call("PATCH", url + "/records/INV-1001", {"fields": {"x": 1}}, headers={"Idempotency-Key": "a b"})
    assert bad.status == 400
    assert "Idempotency-Key" in bad.body["error"]


def test_config_snapshots_remember_the_key_and_restore_checks_the_service(spawn):
    config = spawn("config")
    url = config.url
    before = call("GET", url + "/config/billing-api").body["config"]
    deployed = call("POST", url + "/deploy", {"service": "billing-api", "config": {"maintenance": True}},
                    headers={"Idempotency-Key": KEY})
    assert deployed.status == 200
    found = call("GET", url + f"/config/billing-api/snapshots?idempotency_key={KEY}").body
    [snap] = found["snapshots"]
    assert (found["service"], snap["snapshot_id"], snap["config"], snap["idempotency_key"]) == \
        ("billing-api", deployed.body["snapshot_id"], before, KEY)
    assert call("GET", url + f"/config/webhook-dispatcher/snapshots?idempotency_key={KEY}").body["snapshots"] == []
    wrong = call("POST", url + "/restore", {"snapshot_id": snap["snapshot_id"], "service": "webhook-dispatcher"})
    assert (wrong.status, wrong.body["code"]) == (409, "wrong_service")
    assert call("GET", url + "/config/billing-api").body["config"] == {"maintenance": True}
    right = call("POST", url + "/restore", {"snapshot_id": snap["snapshot_id"], "service": "billing-api"})
    assert right.status == 200
    assert call("GET", url + "/config/billing-api").body["config"] == before


# ---- webhooks: one delivery per Idempotency-Key


@pytest.fixture
def webhooks(spawn):
    return spawn("webhooks")


def deliver(url: str, event: str, payload, key: str | None):
    return call("POST", f"{url}/events/{event}", {"payload": payload}, headers={"Idempotency-Key": key} if key else {})


def test_three_posts_with_one_key_deliver_once(webhooks):
    replies = [deliver(webhooks.url, "evt-42", {"n": 1}, KEY) for _ in range(3)]
    assert [r.status for r in replies] == [200, 200, 200]
    assert [r.body for r in replies] == [{"event_id": "evt-42", "deliveries": 1}] * 3
    assert replies[0].headers.get("Idempotent-Replayed") is None
    assert [r.headers["Idempotent-Replayed"] for r in replies[1:]] == ["true", "true"]
    got = call("GET", webhooks.url + "/events/evt-42").body
    assert (got["deliveries"], got["duplicates"], got["last_payload"]) == (1, 2, {"n": 1})


def test_the_same_key_with_another_body_or_event_is_422_and_not_delivered(webhooks):
    assert deliver(webhooks.url, "evt-1", {"n": 1}, KEY).status == 200
    other_body = deliver(webhooks.url, "evt-1", {"n": 2}, KEY)
    assert (other_body.status, other_body.body["code"]) == (422, "idempotency_key_reused")
    other_event = deliver(webhooks.url, "evt-2", {"n": 1}, KEY)
    assert other_event.status == 422
    assert call("GET", webhooks.url + "/events/evt-1").body["deliveries"] == 1
    assert call("GET", webhooks.url + "/events/evt-2").body["deliveries"] == 0
    # without a key, or with another, a delivery still counts
    assert deliver(webhooks.url, "evt-1", {"n": 1}, None).body["deliveries"] == 2
    assert deliver(webhooks.url, "evt-1", {"n": 1}, "aecl-other").body["deliveries"] == 3


def test_concurrent_posts_with_one_key_deliver_once(webhooks):
    replies, barrier = [], threading.Barrier(3)

    def post():
        barrier.wait()
        replies.append(deliver(webhooks.url, "evt-c", {"n": 1}, KEY))

    threads = [threading.Thread(target=post) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r.status for r in replies) == [200, 200, 200]
    assert all(r.body == {"event_id": "evt-c", "deliveries": 1} for r in replies)
    assert call("GET", webhooks.url + "/events/evt-c").body["deliveries"] == 1


def test_a_refused_delivery_does_not_use_up_the_key(webhooks):
    assert call("POST", webhooks.url + "/events/evt-1", {"payload": 1, "x": 2},
                headers={"Idempotency-Key": KEY}).status == 400
    assert deliver(webhooks.url, "evt-1", 1, KEY).body["deliveries"] == 1


# ---- the fault control


def test_a_status_fault_fails_the_next_n_requests_then_the_service_works(payments):
    auth = {"Authorization": f"Bearer {payments.key}"}
    assert call("POST", payments.url + "/_control/faults", {"path_prefix": "/transfers", "times": 2}).status == 401
    arm(payments.url, {"method": "POST", "path_prefix": "/transfers", "times": 2, "status": 503}, auth)
    listed = payments.call("GET", "/_control/faults").body["faults"]
    assert listed == [{"method": "POST", "path_prefix": "/transfers", "times": 2, "status": 503, "delay_s": 0.0,
                       "commit": False}]
    before = payments.balance(OPS)
    assert payments.call("GET", "/transfers").status == 200  # another method: untouched
    failed = [transfer(payments, KEY) for _ in range(2)]
    assert [(f.status, f.body["code"]) for f in failed] == [(503, "injected_fault")] * 2
    assert payments.balance(OPS) == before  # nothing was done
    assert by_key(payments, KEY).body == {"idempotency_key": KEY, "key_used": False, "transfers": []}
    assert payments.call("GET", "/_control/faults").body["faults"] == []
    ok = transfer(payments, KEY)
    assert ok.status == 201
    assert payments.balance(OPS) == before - BODY["amount"]


def test_faults_match_method_and_path_prefix_and_are_cleared(spawn):
    records = spawn("records")
    url = records.url
    arm(url, {"method": "PATCH", "path_prefix": "/records/INV-1001", "times": 5, "status": 500})
    arm(url, {"path_prefix": "/records/INV-1002", "times": 1, "status": 429})  # any method
    assert call("PATCH", url + "/records/INV-1002", {"fields": {"a": 1}}).status == 429
    assert call("PATCH", url + "/records/INV-1002", {"fields": {"a": 1}}).status == 200
    assert call("GET", url + "/records/INV-1001").status == 200
    assert call("PATCH", url + "/records/INV-1001", {"fields": {"a": 1}}).status == 500
    assert call("GET", url + "/_control/faults").body["faults"][0]["times"] == 4
    cleared = call("DELETE", url + "/_control/faults")
    assert cleared.body == {"cleared": 1, "faults": []}
    assert call("PATCH", url + "/records/INV-1001", {"fields": {"a": 1}}).status == 200
    assert call("GET", url + "/records/INV-1001").body["fields"]["a"] == 1


@pytest.mark.parametrize("fault, message", [
    ({}, "missing field(s): path_prefix"),
    ({"path_prefix": "transfers"}, "path_prefix must start with /"),
    ({"path_prefix": "/_control/faults"}, "path_prefix must start with /"),
    ({"path_prefix": "/x", "method": "BREW"}, "method must be one of"),
    ({"path_prefix": "/x", "times": 0}, "times must be between"),
    ({"path_prefix": "/x", "status": 200}, "status must be between"),
    ({"path_prefix": "/x", "delay_s": 31}, "delay_s must be"),
    ({"path_prefix": "/x", "commit": True}, "commit: true needs a delay_s"),
    ({"path_prefix": "/x", "commit": True, "delay_s": 1, "status": 503}, "takes no status"),
    ({"path_prefix": "/x", "colour": "red"}, "unknown field(s): colour"),
])
def test_a_bad_fault_is_400(spawn, fault, message):
    webhooks = spawn("webhooks")
    reply = call("POST", webhooks.url + "/_control/faults", fault)
    assert reply.status == 400
    assert message in reply.body["error"]
    assert call("GET", webhooks.url + "/_control/faults").body["faults"] == []


def test_the_fault_control_is_for_loopback_clients_only():
    sys.path.insert(0, str(WORLD))
    try:
        import common
    finally:
        sys.path.remove(str(WORLD))
    assert common._is_loopback("127.0.0.1") and common._is_loopback("::1")
    assert not common._is_loopback("10.0.0.7") and not common._is_loopback("192.168.1.2")


def test_a_delayed_commit_happens_although_the_client_timed_out(payments):
    auth = {"Authorization": f"Bearer {payments.key}"}
    arm(payments.url, {"method": "POST", "path_prefix": "/transfers", "delay_s": 3, "commit": True}, auth)
    before = payments.balance(OPS)
    started = time.monotonic()
    outcome = post_with_timeout(payments.url + "/transfers", BODY, {**auth, "Idempotency-Key": KEY}, timeout=0.5)
    assert outcome == "timeout"
    assert time.monotonic() - started < 2.5
    # it happened: the money moved and the transfer is found under the key, while the answer is still held back
    assert payments.balance(OPS) == before - BODY["amount"]
    [made] = by_key(payments, KEY).body["transfers"]
    replay = transfer(payments, KEY)  # the client's retry gets the first result, no second transfer
    assert (replay.status, replay.body, replay.headers["Idempotent-Replayed"]) == (201, made, "true")
    assert payments.balance(OPS) == before - BODY["amount"]


def test_a_delayed_failure_changes_nothing(payments):
    auth = {"Authorization": f"Bearer {payments.key}"}
    arm(payments.url, {"method": "POST", "path_prefix": "/transfers", "delay_s": 1, "commit": False,
                       "status": 504}, auth)
    before = payments.balance(OPS)
    assert post_with_timeout(payments.url + "/transfers", BODY, {**auth, "Idempotency-Key": KEY}, timeout=0.3) \
        == "timeout"
    time.sleep(1.2)  # past the delay: the service answered 504 to nobody
    assert payments.balance(OPS) == before
    assert by_key(payments, KEY).body == {"idempotency_key": KEY, "key_used": False, "transfers": []}
    assert transfer(payments, KEY).status == 201  # the key was never used: the retry runs
    # a client that waits sees the status after the delay
    arm(payments.url, {"method": "POST", "path_prefix": "/transfers", "delay_s": 0.5, "status": 504}, auth)
    started = time.monotonic()
    assert post_with_timeout(payments.url + "/transfers", BODY, auth, timeout=10) == "504"
    assert time.monotonic() - started >= 0.5


def test_clearing_the_faults_releases_a_delayed_answer(spawn):
    webhooks = spawn("webhooks")
    arm(webhooks.url, {"method": "POST", "path_prefix": "/events/", "delay_s": 20, "commit": True})
    box = []
    t = threading.Thread(target=lambda: box.append(deliver(webhooks.url, "evt-d", 1, KEY)))
    t.start()
    deadline = time.monotonic() + 10
    while call("GET", webhooks.url + "/events/evt-d").body["deliveries"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert call("DELETE", webhooks.url + "/_control/faults").status == 200
    t.join(10)
    assert box and box[0].status == 200 and box[0].body["deliveries"] == 1


def test_a_retraction_calls_back_a_delivered_event_once_per_key(webhooks):
    never = call("POST", f"{webhooks.url}/events/evt-none/retractions", {"reason": "rollback"})
    assert (never.status, never.body["status"]) == (200, "never_happened")
    assert call("GET", webhooks.url + "/events/evt-none").body["retractions"] == 0
    assert deliver(webhooks.url, "evt-7", {"n": 1}, None).status == 200
    replies = [call("POST", f"{webhooks.url}/events/evt-7/retractions", {"reason": "rollback"},
                    headers={"Idempotency-Key": "rb-1"}) for _ in range(2)]
    assert [r.body["status"] for r in replies] == ["retracted", "retracted"]
    assert replies[1].headers["Idempotent-Replayed"] == "true"
    got = call("GET", webhooks.url + "/events/evt-7").body
    assert (got["deliveries"], got["retractions"]) == (1, 1)
