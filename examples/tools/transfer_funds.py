"""Tool: move money to a vendor. Input: {"vendor": "V-221", "amount": 100000,
"currency": "EUR", "reference": "..."}: amount in minor units. Through the
payments connector, which adds the payments API key outside the sandbox.
Output: the transfer, plus rollback_token: its transfer id (reverse_transfer)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _connector import args, call, done  # noqa: E402

a = args()
body = {"vendor": a["vendor"], "amount": a["amount"], "currency": a.get("currency", "EUR"),
        "reference": a.get("reference", "")}
transfer = call("POST", "http://payments/transfers", body)
done({**transfer, "rollback_token": transfer["transfer_id"]})
