"""Tool: delete a finance record. Input: {"record_id": "INV-1002"}, and
optionally "idempotency_key": delete it only if it was created under that key
(the compensation of a create_record whose answer never came).

Output: {"status": "deleted", "record_id", "deleted": true, "version",
"snapshot_id", "rollback_token": the snapshot id (restore_record undoes it)};
a record that does not exist (or, with idempotency_key, was not created under
it) is not an error: {"status": "never_happened", "record_id", "deleted": false}.
It is also the compensation of create_record, which must tolerate that."""
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _connector import args, done, fail, request, unexpected  # noqa: E402

a = args()
record_id = a.get("record_id")
if not isinstance(record_id, str) or not record_id:
    fail("record_id is required")
url = f"http://records/records/{urllib.parse.quote(record_id, safe='')}"
key = a.get("idempotency_key")
if key is not None:
    query = urllib.parse.urlencode({"idempotency_key": key})
    status, found = request("GET", f"{url}/snapshots?{query}")
    if status != 200 or found.get("idempotency_key") != key:
        unexpected("GET", f"{url}/snapshots", status, found)
    if not any(s.get("taken_before") == "create" for s in found.get("snapshots", [])):
        done({"status": "never_happened", "record_id": record_id, "deleted": False})
        sys.exit(0)
status, answer = request("DELETE", url)
if status == 404 and answer.get("code") == "no_record":
    done({"status": "never_happened", "record_id": record_id, "deleted": False})
elif status == 200:
    done({"status": "deleted", **answer, "rollback_token": answer["snapshot_id"]})
else:
    unexpected("DELETE", url, status, answer)
