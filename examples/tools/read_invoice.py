"""Tool: read one invoice. Input on stdin: {"invoice_id": "INV-1001"}."""
import json
import sys

args = json.load(sys.stdin)
data = json.load(open("/opt/aecl/tools/data/finance.json"))
invoice = data["invoices"].get(str(args.get("invoice_id")))
if invoice is None:
    print(f"no invoice {args.get('invoice_id')!r}", file=sys.stderr)
    sys.exit(3)
json.dump({"invoice_id": args["invoice_id"], **invoice}, sys.stdout)
