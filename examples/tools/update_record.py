"""Tool: update a finance record's fields. Input: {"record_id": "INV-1001", "fields": {...}}.
The records service keeps a snapshot of the previous version. Output: the
record, plus rollback_token: that snapshot's id (restore_record puts it back)."""
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _connector import args, call, done  # noqa: E402

a = args()
rid = urllib.parse.quote(a["record_id"], safe="")
record = call("PATCH", f"http://records/records/{rid}", {"fields": a["fields"]})
done({**record, "rollback_token": record["snapshot_id"]})
