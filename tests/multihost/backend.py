"""A tiny app backend for the multi-host harness: answers every GET with JSON naming its host.

    python backend.py ADDRESS PORT NAME

GET /health -> {"status": "ok", "host": NAME}; any other path -> {"host": NAME, "path": PATH}. Loopback only.
"""

from __future__ import annotations

import json
import sys
import typing as t
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = "app"


class Handler(BaseHTTPRequestHandler):
    server_version = "pgshift-backend/1"

    def log_message(self, fmt: str, *args: t.Any) -> None:
        return

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = {"status": "ok", "host": NAME} if self.path == "/health" else {"host": NAME, "path": self.path}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main() -> None:
    global NAME  # noqa: PLW0603
    address, port, NAME = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if not address.startswith("127."):
        raise SystemExit("loopback addresses only")
    ThreadingHTTPServer((address, port), Handler).serve_forever()


if __name__ == "__main__":
    main()
