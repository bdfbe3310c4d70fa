"""Tool: delete a finance record. Input: {"record_id": "INV-1001"}."""
import json
import sys

args = json.load(sys.stdin)
json.dump({"deleted": str(args.get("record_id"))}, sys.stdout)
