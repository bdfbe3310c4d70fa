"""payments: API key, vendors, transfers, balances and ledger, reversal,
Idempotency-Key replay / 422 / 409, persistence across a restart."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from tests.world.conftest import Payments, call, stop

OPS = "ACC-OPS-EUR"


def transfer(p: Payments, body=None, idem=None, **kw):
    body = body or {"vendor": "V-221", "amount": 100000, "currency": "EUR", "reference": "INV-1002"}
    headers = {"Idempotency-Key": idem} if idem else {}
    return p.call("POST", "/transfers", body, headers=headers, **kw)


def test_api_key_is_required(payments):
    url = payments.url
    missing = call("GET", url + "/vendors")
    assert missing.status == 401
    assert "missing API key" in missing.body["error"]
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = payments.call("GET", "/vendors", key="0" * 64)
    assert wrong.status == 401
    assert wrong.body["error"] == "invalid API key"
    basic = call("GET", url + "/vendors", headers={"Authorization": "Basic " + payments.key})
    assert basic.status == 401
    assert payments.call("GET", "/vendors").status == 200
    assert call("GET", url + "/health").status == 200  # the only open endpoint


def test_a_transfer_without_the_key_moves_nothing(payments):
    before = payments.balance(OPS)
    reply = transfer(payments, idem="k-nokey", key="wrong")
    assert reply.status == 401
    assert payments.balance(OPS) == before
    # the refused request did not claim its Idempotency-Key
    assert transfer(payments, idem="k-nokey").status == 201


def test_the_key_never_reaches_the_log(payments):
    transfer(payments)
    payments.call("GET", "/vendors", key="not-the-key")
    log = payments.service.log_text()
    assert payments.key not in log
    assert "not-the-key" not in log


def test_seeded_vendors_and_accounts(payments):
    vendors = {v["vendor_id"]: v for v in payments.call("GET", "/vendors").body["vendors"]}
    assert {"V-17", "V-221"} <= set(vendors)
    assert vendors["V-221"]["account_id"] == "ACC-V-221"
    one = payments.call("GET", "/vendors/V-17")
    assert one.status == 200
    assert one.body["name"] == "Northwind Supplies"
    assert payments.call("GET", "/vendors/V-9999").status == 404
    accounts = {a["account_id"]: a for a in payments.call("GET", "/accounts").body["accounts"]}
    assert accounts[OPS]["kind"] == "operating"
    assert accounts["ACC-V-221"]["balance"] == 0
    assert payments.call("GET", "/accounts/ACC-NOPE").status == 404


def test_transfer_moves_money_and_is_in_the_ledger(payments):
    ops_before = payments.balance(OPS)
    reply = transfer(payments)
    assert reply.status == 201
    t = reply.body
    assert t["transfer_id"].startswith("tr_")
    assert (t["vendor"], t["amount"], t["currency"], t["status"]) == ("V-221", 100000, "EUR", "completed")
    assert t["reference"] == "INV-1002"
    assert payments.balance(OPS) == ops_before - 100000
    vendor = payments.call("GET", "/accounts/ACC-V-221").body
    assert vendor["balance"] == 100000
    assert [(e["transfer_id"], e["delta"], e["kind"]) for e in vendor["ledger"]] == \
        [(t["transfer_id"], 100000, "transfer")]
    got = payments.call("GET", f"/transfers/{t['transfer_id']}")
    assert got.status == 200
    assert got.body == t
    assert payments.call("GET", "/transfers/tr_0000000000000000").status == 404


@pytest.mark.parametrize("change, message", [
    ({"amount": 0}, "positive integer"),
    ({"amount": -5}, "positive integer"),
    ({"amount": 1.5}, "positive integer"),
    ({"amount": 100.0}, "positive integer"),
    ({"amount": "100"}, "positive integer"),
    ({"amount": True}, "positive integer"),
    ({"amount": 10**13}, "at most"),
    ({"currency": "eur"}, "three-letter"),
    ({"currency": None}, "three-letter"),
    ({"vendor": ""}, "vendor must be"),
    ({"vendor": "V 17"}, "vendor must be"),
    ({"reference": "x" * 141}, "reference must be"),
    ({"reference": "line\nbreak"}, "control characters"),
    ({"to_account": "DE89"}, "unknown field(s): to_account"),
])
def test_invalid_transfers_are_400_and_move_nothing(payments, change, message):
    before = payments.balance(OPS)
    body = {"vendor": "V-17", "amount": 100, "currency": "EUR"} | change
    reply = transfer(payments, body)
    assert reply.status == 400
    assert message in reply.body["error"]
    assert payments.balance(OPS) == before


def test_missing_fields_are_400(payments):
    reply = transfer(payments, {"vendor": "V-17"})
    assert reply.status == 400
    assert reply.body["error"] == "missing field(s): amount, currency"
    assert payments.call("POST", "/transfers").status == 400  # no body at all


def test_unknown_vendor_is_404_currency_mismatch_and_no_funds_422(payments):
    unknown = transfer(payments, {"vendor": "V-999", "amount": 100, "currency": "EUR"})
    assert unknown.status == 404
    assert "V-999" in unknown.body["error"]
    mismatch = transfer(payments, {"vendor": "V-17", "amount": 100, "currency": "USD"})
    assert mismatch.status == 422
    assert mismatch.body["code"] == "currency_mismatch"
    usd = payments.balance("ACC-OPS-USD")
    broke = transfer(payments, {"vendor": "V-305", "amount": usd + 1, "currency": "USD"})
    assert broke.status == 422
    assert broke.body["code"] == "insufficient_funds"
    assert payments.balance("ACC-OPS-USD") == usd
    assert payments.balance("ACC-V-305") == 0


def test_reverse_restores_balances_and_a_second_reverse_is_409(payments):
    ops_before = payments.balance(OPS)
    t = transfer(payments).body
    assert payments.balance(OPS) == ops_before - 100000
    reply = payments.call("POST", f"/transfers/{t['transfer_id']}/reverse")
    assert reply.status == 200
    assert reply.body["status"] == "reversed"
    assert reply.body["reversed_at"]
    assert payments.balance(OPS) == ops_before
    assert payments.balance("ACC-V-221") == 0
    ledger = payments.call("GET", "/accounts/ACC-V-221").body["ledger"]
    assert [(e["kind"], e["delta"]) for e in ledger] == [("transfer", 100000), ("reversal", -100000)]
    assert payments.call("GET", f"/transfers/{t['transfer_id']}").body["status"] == "reversed"
    again = payments.call("POST", f"/transfers/{t['transfer_id']}/reverse")
    assert again.status == 409
    assert again.body["code"] == "already_reversed"
    assert payments.balance(OPS) == ops_before


def test_reverse_of_unknown_transfer_is_404_and_takes_no_fields(payments):
    assert payments.call("POST", "/transfers/tr_0000000000000000/reverse").status == 404
    t = transfer(payments).body
    bad = payments.call("POST", f"/transfers/{t['transfer_id']}/reverse", {"amount": 5})
    assert bad.status == 400
    assert "unknown field(s): amount" in bad.body["error"]
    assert payments.call("POST", f"/transfers/{t['transfer_id']}/reverse", {}).status == 200


def test_same_idempotency_key_and_body_replays_the_first_result(payments):
    ops_before = payments.balance(OPS)
    first = transfer(payments, idem="order-1")
    second = transfer(payments, idem="order-1")
    assert first.status == second.status == 201
    assert second.body == first.body
    assert second.headers["Idempotent-Replayed"] == "true"
    assert first.headers["Idempotent-Replayed"] is None
    # the same JSON written differently is the same request
    same = payments.call("POST", "/transfers", raw=b'{"reference":"INV-1002","currency":"EUR",  "amount":100000,'
                                                   b'"vendor":"V-221"}', headers={"Idempotency-Key": "order-1"})
    assert same.status == 201
    assert same.body["transfer_id"] == first.body["transfer_id"]
    assert payments.balance(OPS) == ops_before - 100000  # paid once
    assert len(payments.call("GET", "/accounts/ACC-V-221").body["ledger"]) == 1


def test_same_idempotency_key_other_body_is_422(payments):
    first = transfer(payments, idem="order-2")
    assert first.status == 201
    other = transfer(payments, {"vendor": "V-221", "amount": 100001, "currency": "EUR"}, idem="order-2")
    assert other.status == 422
    assert other.body["code"] == "idempotency_key_reused"
    # the key is bound to its endpoint too
    elsewhere = payments.call("POST", f"/transfers/{first.body['transfer_id']}/reverse",
                              headers={"Idempotency-Key": "order-2"})
    assert elsewhere.status == 422
    assert payments.call("GET", f"/transfers/{first.body['transfer_id']}").body["status"] == "completed"


def test_other_keys_are_other_transfers(payments):
    a = transfer(payments, idem="order-a").body
    b = transfer(payments, idem="order-b").body
    c = transfer(payments).body
    assert len({a["transfer_id"], b["transfer_id"], c["transfer_id"]}) == 3
    assert payments.balance("ACC-V-221") == 300000


def test_a_business_error_is_replayed_too(payments):
    first = transfer(payments, {"vendor": "V-999", "amount": 100, "currency": "EUR"}, idem="order-3")
    again = transfer(payments, {"vendor": "V-999", "amount": 100, "currency": "EUR"}, idem="order-3")
    assert first.status == again.status == 404
    assert again.body == first.body
    assert again.headers["Idempotent-Replayed"] == "true"


def test_a_validation_error_does_not_use_up_the_key(payments):
    bad = transfer(payments, {"vendor": "V-221", "amount": -1, "currency": "EUR"}, idem="order-4")
    assert bad.status == 400
    good = transfer(payments, {"vendor": "V-221", "amount": 1, "currency": "EUR"}, idem="order-4")
    assert good.status == 201


def test_malformed_idempotency_key_is_400(payments):
    reply = transfer(payments, idem="has space")
    assert reply.status == 400
    assert "Idempotency-Key" in reply.body["error"]
    assert transfer(payments, idem="x" * 256).status == 400
    assert payments.balance("ACC-V-221") == 0


def test_key_in_flight_is_409(payments):
    # a first request that holds the key and has not finished yet
    with sqlite3.connect(payments.service.db) as conn:
        conn.execute("INSERT INTO idempotency (key, fingerprint, state, created_at)"
                     " VALUES ('order-5', 'x', 'in_flight', '2026-01-01T00:00:00Z')")
    reply = transfer(payments, idem="order-5")
    assert reply.status == 409
    assert reply.body["code"] == "idempotency_in_flight"
    assert payments.balance("ACC-V-221") == 0


def test_concurrent_requests_with_one_key_pay_once(payments):
    ops_before = payments.balance(OPS)
    replies = []
    lock = threading.Lock()

    def go():
        r = transfer(payments, idem="order-6")
        with lock:
            replies.append(r)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {r.status for r in replies} <= {201, 409}
    created = [r.body for r in replies if r.status == 201]
    assert created and all(b == created[0] for b in created)
    assert payments.balance(OPS) == ops_before - 100000
    assert transfer(payments, idem="order-6").body == created[0]


def test_transfers_and_keys_survive_a_restart(spawn, key_file):
    key, path = key_file
    first = spawn("payments", args=("--api-key-file", str(path)))
    p = Payments(first, key, path)
    t = transfer(p, idem="order-7").body
    assert stop(first.proc) == 0
    # a claim left behind by a process that died mid-request
    with sqlite3.connect(first.db) as conn:
        conn.execute("INSERT INTO idempotency (key, fingerprint, state, created_at)"
                     " VALUES ('order-8', 'x', 'in_flight', '2026-01-01T00:00:00Z')")
    p = Payments(spawn("payments", db=first.db, args=("--api-key-file", str(path))), key, path)
    assert p.call("GET", f"/transfers/{t['transfer_id']}").body == t
    replay = transfer(p, idem="order-7")
    assert replay.body == t
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert transfer(p, idem="order-8").status == 201  # freed at startup
    assert p.balance("ACC-V-221") == 200000
