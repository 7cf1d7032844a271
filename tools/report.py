#!/usr/bin/env python
"""Print the path of the last run report (the HTML page the pgshift.ops.progress callback wrote) and open it in a
browser when this is a graphical session.

    tools/report.py [--dir REPORT_DIR] [--json] [--no-open]

REPORT_DIR defaults to $PGSHIFT_REPORT_DIR, else artifacts/runs in the repository (the callback's default).
Exit status 1 when there is no report yet.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import webbrowser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def report_dir(option: str | None) -> str:
    path = option or os.environ.get("PGSHIFT_REPORT_DIR") or "artifacts/runs"
    return path if os.path.isabs(path) else os.path.join(ROOT, path)


def graphical_session() -> bool:
    """Only then open a browser: on a headless machine webbrowser would start a text browser in the terminal."""
    return sys.platform == "darwin" or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="report folder (default: $PGSHIFT_REPORT_DIR or artifacts/runs)")
    parser.add_argument("--json", action="store_true", help="print the JSON report's path instead of the HTML page's")
    parser.add_argument("--no-open", action="store_true", help="never start a browser")
    args = parser.parse_args(argv)
    last = os.path.join(report_dir(args.dir), "last-run.json")
    try:
        with open(last, encoding="utf-8") as handle:
            report = json.load(handle)
    except FileNotFoundError:
        print(
            "no run report yet: %s does not exist (enable the pgshift.ops.progress callback and run a playbook)" % last,
            file=sys.stderr,
        )
        return 1
    files = report.get("files") or {}
    path = files.get("json") if args.json else files.get("html")
    if not path or not os.path.exists(path):
        print("the last report's files are gone (%s); last-run.json is still there: %s" % (path, last), file=sys.stderr)
        print(last)
        return 1
    print(path)
    status = report.get("status", "?")
    print(
        "run %s of %s: %s, %s steps"
        % (report.get("run_id"), report.get("playbook"), status, (report.get("totals") or {}).get("steps")),
        file=sys.stderr,
    )
    if not args.no_open and not args.json and graphical_session():
        webbrowser.open("file://" + os.path.abspath(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
