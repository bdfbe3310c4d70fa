"""Tool: deploy a service's configuration. Input: {"service": "billing", "config": {...}}.
The config service keeps a snapshot of the previous configuration."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _connector import args, call, done  # noqa: E402

a = args()
done(call("POST", "http://config/deploy", {"service": a["service"], "config": a["config"]}))
