"""Tool: deliver a webhook. Input: {"event_id": "evt-42", "payload": {...}}."""
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _connector import args, call, done  # noqa: E402

a = args()
done(call("POST", f"http://webhooks/events/{urllib.parse.quote(a['event_id'], safe='')}",
          {"payload": a.get("payload", {})}))
