"""Tool: reverse a transfer (the compensation of transfer_funds). Input:
{"transfer_id": "tr_..."} and/or {"idempotency_key": "aecl-..."}: with a
transfer id, reverse that transfer; without one, reverse the transfer made
under that Idempotency-Key, if there is one.

Output: {"status": "reversed", "transfer_id", "transfer": {...}} once reversed;
{"status": "already_reversed", "transfer_id", "detail": the service's message}
when it was reversed before; {"status": "never_happened", "idempotency_key", "transfer_id":
null} when no transfer was made under the key. A key whose request is still
in flight, or an unknown transfer id, is an error (exit 1)."""
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _connector import args, call, done, fail, request, unexpected  # noqa: E402

a = args()
transfer_id, key = a.get("transfer_id"), a.get("idempotency_key")
if transfer_id is None and key is None:
    fail("give transfer_id or idempotency_key: without either there is nothing to find")

if transfer_id is None:
    found = call("GET", "http://payments/transfers?" + urllib.parse.urlencode({"idempotency_key": key}))
    if found.get("idempotency_key") != key:
        fail(f"GET /transfers answered for another key: {found.get('idempotency_key')!r}")
    made = found.get("transfers", [])
    if not made:
        done({"status": "never_happened", "idempotency_key": key, "transfer_id": None})
        sys.exit(0)
    if len(made) > 1:
        fail(f"{len(made)} transfers were made under idempotency key {key}; reverse them by transfer_id")
    transfer_id = made[0]["transfer_id"]

url = f"http://payments/transfers/{urllib.parse.quote(transfer_id, safe='')}/reverse"
status, answer = request("POST", url, {})
if status == 200:
    done({"status": "reversed", "transfer_id": transfer_id, "transfer": answer})
elif status == 409 and answer.get("code") == "already_reversed":
    done({"status": "already_reversed", "transfer_id": transfer_id, "detail": answer.get("error")})
else:
    unexpected("POST", url, status, answer)
