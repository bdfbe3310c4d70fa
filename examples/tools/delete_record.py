"""Tool: delete a finance record. Input: {"record_id": "INV-1002"}."""
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _connector import args, call, done  # noqa: E402

a = args()
done(call("DELETE", f"http://records/records/{urllib.parse.quote(a['record_id'], safe='')}"))
