"""Tool: change an IAM policy. Input: {"principal": "...", "grant": ["..."]}."""
import json
import sys

args = json.load(sys.stdin)
json.dump({"principal": str(args.get("principal")), "granted": list(args.get("grant", []))}, sys.stdout)
