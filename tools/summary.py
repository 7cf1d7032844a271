#!/usr/bin/env python
"""Print the short summary of the last prod_restore run (artifacts/last-summary.json, written by the playbook)."""

from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    path = os.environ.get("PGSHIFT_SUMMARY", os.path.join(ROOT, "artifacts", "last-summary.json"))
    if not os.path.exists(path):
        print("no run summary at %s (the run did not finish)" % path)
        return 1
    with open(path, encoding="utf-8") as handle:
        summary = json.load(handle)
    print("")
    print("pgshift: production %r released (run %s)" % (summary["production_database"], summary["run_id"]))
    print("  schema changes applied (migrations): %s" % (", ".join(summary["migrations_applied"]) or "none"))
    print("  backup: %s (verified: %s)" % (summary["backup"], summary["backup_verified"] or "no"))
    print("  rows carried per table:")
    for table, info in sorted(summary.get("rows", {}).items()):
        rows = info.get("rows", info) if isinstance(info, dict) else info
        print("    %-40s %12s" % (table, rows))
    print("  total rows: %s" % summary["total_rows"])
    large_objects = int(summary.get("large_objects") or 0)
    checks = "integrity %s over %s tables%s, %s API checks passed" % (
        "proven" if summary["integrity_ok"] in (True, "True", "true") else "NOT proven",
        summary["integrity_tables"],
        " and %d large objects" % large_objects if large_objects else "",
        summary["api_checks"],
    )
    print("  checks: " + checks)
    print("  previous production kept as: %s" % summary["previous_database"])
    print("  production was in maintenance for %s s" % summary["maintenance_seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
