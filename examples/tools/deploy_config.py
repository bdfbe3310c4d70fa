"""Tool: deploy a service's configuration. Input: {"service": "billing", "config": {...}}.
The config service keeps a snapshot of the previous configuration. Output: the
deploy, plus rollback_token: that snapshot's id (restore_config puts it back)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _connector import args, call, done  # noqa: E402

a = args()
deployed = call("POST", "http://config/deploy", {"service": a["service"], "config": a["config"]})
done({**deployed, "rollback_token": deployed["snapshot_id"]})
