#!/usr/bin/env python3
"""Check Rego line coverage of the policy files, leaving out the tests.

`opa test --coverage` counts *_test.rego files too, which are always fully
covered and would lift a weak policy over the bar. Reads OPA's coverage JSON
on stdin; exits 1 when the policy files together are below --threshold,
printing each file's coverage and its uncovered lines.
"""

from __future__ import annotations

import argparse
import json
import sys


def main() -> int:
    from enforcer.policy_cli import policy_coverage  # the one measure, shared with `aecl policy test`

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threshold", type=float, default=95.0, help="minimum percent (default 95)")
    args = p.parse_args()
    report = json.load(sys.stdin)
    if not any(not name.endswith("_test.rego") for name in report.get("files", {})):
        print("rego coverage: no policy files in the report", file=sys.stderr)
        return 1
    total, rows = policy_coverage(report)
    ok = total >= args.threshold
    if not ok:
        for row in rows:
            print(f"  {row}", file=sys.stderr)
    print(f"rego coverage of policy files (tests excluded): {total:.2f}% "
          f"({'ok' if ok else 'below'} the {args.threshold:g}% bar)", file=sys.stderr if not ok else sys.stdout)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
