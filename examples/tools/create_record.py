"""Tool: create a finance record. Input: {"record_id": "INV-2001", "fields": {...}}."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _connector import args, call, done  # noqa: E402

a = args()
done(call("POST", "http://records/records", {"record_id": a["record_id"], "fields": a.get("fields", {})}))
