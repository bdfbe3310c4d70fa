"""Tool: send an email (the world's outbox; sending cannot be undone).
Input: {"to": "a@example.com", "subject": "...", "body": "..."}."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _connector import args, call, done  # noqa: E402

a = args()
done(call("POST", "http://mail/send", {"to": a["to"], "subject": a["subject"], "body": a["body"]}))
