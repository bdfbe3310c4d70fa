"""Tool: update a finance record's fields. Input: {"record_id": "INV-1001", "fields": {...}}.
The records service keeps a snapshot of the previous version (its id is in the answer)."""
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _connector import args, call, done  # noqa: E402

a = args()
rid = urllib.parse.quote(a["record_id"], safe="")
done(call("PATCH", f"http://records/records/{rid}", {"fields": a["fields"]}))
