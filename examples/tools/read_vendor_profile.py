"""Tool: read a vendor profile. Input: {"vendor_id": "V-17"}."""
import json
import sys

args = json.load(sys.stdin)
data = json.load(open("/opt/aecl/tools/data/finance.json"))
vendor = data["vendors"].get(str(args.get("vendor_id")))
if vendor is None:
    print(f"no vendor {args.get('vendor_id')!r}", file=sys.stderr)
    sys.exit(3)
json.dump({"vendor_id": args["vendor_id"], **vendor}, sys.stdout)
