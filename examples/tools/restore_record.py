"""Tool: put a finance record back as a snapshot holds it (the compensation
of update_record and delete_record). Input: {"record_id": "INV-1001"} with
"snapshot_id": "snap_..." (restore that snapshot) and/or "idempotency_key":
"aecl-..." (without a snapshot id: restore the snapshot the first write under
that key took, i.e. the record as it was before it).

Output: {"status": "restored", "record_id", "restored_from": the snapshot id,
"fields": the record's fields now (null: no record), "deleted", "version",
"snapshot_id": the snapshot of what the restore replaced}; {"status":
"never_happened", "record_id", "idempotency_key"} when no write was made under
the key. An unknown snapshot id is an error (exit 1)."""
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _connector import args, call, done, fail, request, unexpected  # noqa: E402

a = args()
record_id, snapshot_id, key = a.get("record_id"), a.get("snapshot_id"), a.get("idempotency_key")
if not isinstance(record_id, str) or not record_id:
    fail("record_id is required")
if snapshot_id is None and key is None:
    fail("give snapshot_id or idempotency_key: without either there is nothing to restore")
base = f"http://records/records/{urllib.parse.quote(record_id, safe='')}"

if snapshot_id is None:
    found = call("GET", f"{base}/snapshots?" + urllib.parse.urlencode({"idempotency_key": key}))
    if found.get("idempotency_key") != key:
        fail(f"GET {base}/snapshots answered for another key: {found.get('idempotency_key')!r}")
    snapshots = found.get("snapshots", [])
    if not snapshots:
        done({"status": "never_happened", "record_id": record_id, "idempotency_key": key})
        sys.exit(0)
    snapshot_id = snapshots[0]["snapshot_id"]  # oldest first: the record before the writes under the key

status, answer = request("POST", f"{base}/restore", {"snapshot_id": snapshot_id})
if status == 200:
    done({"status": "restored", **answer})
else:
    unexpected("POST", f"{base}/restore", status, answer)
