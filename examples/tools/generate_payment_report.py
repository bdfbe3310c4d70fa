"""Tool: report a vendor's open invoices. Input: {"vendor_id": "V-17"}."""
import json
import sys

args = json.load(sys.stdin)
data = json.load(open("/opt/aecl/tools/data/finance.json"))
vendor_id = str(args.get("vendor_id"))
open_invoices = {
    k: v for k, v in data["invoices"].items() if v["vendor_id"] == vendor_id and v["status"] == "open"
}
json.dump(
    {
        "vendor_id": vendor_id,
        "open_invoices": sorted(open_invoices),
        "total_due": round(sum(v["amount"] for v in open_invoices.values()), 2),
    },
    sys.stdout,
)
