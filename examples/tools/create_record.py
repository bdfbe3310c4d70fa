"""Tool: create a finance record. Input: {"record_id": "INV-2001", "fields": {...}}.
Output: the record, plus rollback_token: its record id (delete_record undoes it)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _connector import args, call, done  # noqa: E402

a = args()
record = call("POST", "http://records/records", {"record_id": a["record_id"], "fields": a.get("fields", {})})
done({**record, "rollback_token": record["record_id"]})
