"""Tool: put a service's configuration back as a snapshot holds it (the
compensation of deploy_config). Input: {"service": "billing-api"} with
"snapshot_id": "snap_..." (restore that snapshot; refused unless it is the
service's) and/or "idempotency_key": "aecl-..." (without a snapshot id:
restore the snapshot the first deploy under that key took).

Output: {"status": "restored", "service", "restored_from": the snapshot id,
"config": the config now (null: none), "version", "snapshot_id": the snapshot
of what the restore replaced}; {"status": "never_happened", "service",
"idempotency_key"} when nothing was deployed under the key. An unknown
snapshot id is an error (exit 1)."""
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _connector import args, call, done, fail, request, unexpected  # noqa: E402

a = args()
service, snapshot_id, key = a.get("service"), a.get("snapshot_id"), a.get("idempotency_key")
if not isinstance(service, str) or not service:
    fail("service is required")
if snapshot_id is None and key is None:
    fail("give snapshot_id or idempotency_key: without either there is nothing to restore")

if snapshot_id is None:
    url = f"http://config/config/{urllib.parse.quote(service, safe='')}/snapshots"
    found = call("GET", f"{url}?" + urllib.parse.urlencode({"idempotency_key": key}))
    if found.get("idempotency_key") != key:
        fail(f"GET {url} answered for another key: {found.get('idempotency_key')!r}")
    snapshots = found.get("snapshots", [])
    if not snapshots:
        done({"status": "never_happened", "service": service, "idempotency_key": key})
        sys.exit(0)
    snapshot_id = snapshots[0]["snapshot_id"]  # oldest first: the config before the deploys under the key

status, answer = request("POST", "http://config/restore", {"snapshot_id": snapshot_id, "service": service})
if status == 200:
    done({"status": "restored", **answer})
else:
    unexpected("POST", "http://config/restore", status, answer)
