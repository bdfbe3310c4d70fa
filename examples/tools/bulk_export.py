"""Tool: export a whole table. Input: {"table": "invoices"}."""
import json
import sys

args = json.load(sys.stdin)
data = json.load(open("/opt/aecl/tools/data/finance.json"))
table = data.get(str(args.get("table")), {})
json.dump({"table": args.get("table"), "rows": [{"id": k, **v} for k, v in table.items()]}, sys.stdout)
