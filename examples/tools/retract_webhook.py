"""Tool: call back a delivered webhook event, the compensation of
fire_webhook. Input: {"event_id": "evt-42", "reason": "..."}. An event that
was never delivered succeeds with {"status": "never_happened"}."""
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _connector import args, call, done  # noqa: E402

a = args()
done(call("POST", f"http://webhooks/events/{urllib.parse.quote(a['event_id'], safe='')}/retractions",
          {"reason": a.get("reason", "rolled back by AECL")}))
