"""Tool: move money. Input: {"amount": 1250.0, "to_account": "<IBAN>", "currency": "EUR"}.

The demo has no payment API behind it: it validates the order and returns the
receipt a payment connector would. Credentials never enter the sandbox.
"""
import hashlib
import json
import sys

args = json.load(sys.stdin)
amount = args.get("amount")
if not isinstance(amount, (int, float)) or amount <= 0:
    print("amount must be a positive number", file=sys.stderr)
    sys.exit(2)
account = str(args.get("to_account", ""))
if not account:
    print("to_account is required", file=sys.stderr)
    sys.exit(2)
order = json.dumps({"amount": amount, "to": account, "currency": args.get("currency", "EUR")}, sort_keys=True)
json.dump({"status": "submitted", "transfer_id": "TR-" + hashlib.sha256(order.encode()).hexdigest()[:12],
           "amount": amount, "to_account": account}, sys.stdout)
