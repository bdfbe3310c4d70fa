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
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threshold", type=float, default=95.0, help="minimum percent (default 95)")
    args = p.parse_args()
    report = json.load(sys.stdin)
    covered = not_covered = 0
    rows = []
    for name, f in sorted(report.get("files", {}).items()):
        if name.endswith("_test.rego"):
            continue
        c = sum(r["end"]["row"] - r["start"]["row"] + 1 for r in f.get("covered", []))
        n = sum(r["end"]["row"] - r["start"]["row"] + 1 for r in f.get("not_covered", []))
        covered, not_covered = covered + c, not_covered + n
        missing = [r["start"]["row"] for r in f.get("not_covered", [])]
        rows.append((name, 100.0 * c / (c + n) if c + n else 100.0, missing))
    if not rows:
        print("rego coverage: no policy files in the report", file=sys.stderr)
        return 1
    total = 100.0 * covered / (covered + not_covered) if covered + not_covered else 100.0
    ok = total >= args.threshold
    if not ok:
        for name, pct, missing in rows:
            print(f"  {pct:6.2f}%  {name}" + (f"  (uncovered lines {missing})" if missing else ""), file=sys.stderr)
    print(f"rego coverage of policy files (tests excluded): {total:.2f}% "
          f"({'ok' if ok else 'below'} the {args.threshold:g}% bar)", file=sys.stderr if not ok else sys.stdout)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
