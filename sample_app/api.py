#!/usr/bin/env python
"""The sample shop's HTTP API (demo and tests): reads the production database, listens on 127.0.0.1 only.

Configuration: a 0600 JSON file named by $PGSHIFT_API_CONFIG (host, port, user, password, database, listen_port,
maintenance_flag). While the maintenance flag file exists, data endpoints answer 503 with a maintenance page, like
the web tier would; operators' checks pass the header ``X-Maintenance-Bypass: 1`` to reach the application.

    GET /health              {"status": "ok", "schema_version": <last applied migration>, "maintenance": bool}
    GET /customers/<id>      one customer, every column of the current schema
    GET /products?limit=N    products ordered by id
    GET /orders/<id>         an order with its lines and total
"""

from __future__ import annotations

import json
import os
import re
import typing as t
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import psycopg2

CONFIG: t.Dict[str, t.Any] = {}


def connect() -> t.Any:
    return psycopg2.connect(
        host=CONFIG["host"],
        port=CONFIG["port"],
        user=CONFIG["user"],
        password=CONFIG["password"],
        dbname=CONFIG["database"],
        application_name="shop-api",
        connect_timeout=3,
        options="-c TimeZone=UTC",
    )


def query(sql: str, params: t.Tuple[t.Any, ...] = ()) -> t.List[t.Any]:
    conn = connect()
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())
    finally:
        conn.close()


class Handler(BaseHTTPRequestHandler):
    server_version = "shop-api/1"

    def log_message(self, fmt: str, *args: t.Any) -> None:  # quieter log, no query strings
        return

    def _send(self, status: int, body: t.Any) -> None:
        data = json.dumps(body, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlparse(self.path)
        maintenance = os.path.exists(CONFIG.get("maintenance_flag", "/nonexistent"))
        try:
            if url.path == "/health":
                rows = query("SELECT name FROM pgmigrations ORDER BY run_on DESC, id DESC LIMIT 1")
                self._send(
                    200, {"status": "ok", "schema_version": rows[0][0] if rows else None, "maintenance": maintenance}
                )
                return
            if maintenance and self.headers.get("X-Maintenance-Bypass") != "1":
                self._send(503, {"maintenance": True, "message": "The shop is being upgraded. Back soon."})
                return
            match = re.fullmatch(r"/customers/(\d+)", url.path)
            if match:
                rows = query("SELECT to_jsonb(c) FROM customers c WHERE id = %s", (int(match.group(1)),))
                self._send(200 if rows else 404, rows[0][0] if rows else {"error": "not found"})
                return
            if url.path == "/products":
                limit = int(parse_qs(url.query).get("limit", ["10"])[0])
                rows = query("SELECT to_jsonb(p) FROM products p ORDER BY id LIMIT %s", (min(limit, 1000),))
                self._send(200, [r[0] for r in rows])
                return
            match = re.fullmatch(r"/orders/(\d+)", url.path)
            if match:
                order_id = int(match.group(1))
                rows = query(
                    "SELECT to_jsonb(o), (SELECT total_cents FROM order_totals t WHERE t.order_id = o.id) "
                    "FROM orders o WHERE id = %s",
                    (order_id,),
                )
                if not rows:
                    self._send(404, {"error": "not found"})
                    return
                lines = query("SELECT to_jsonb(l) FROM order_lines l WHERE order_id = %s ORDER BY line_no", (order_id,))
                body = dict(rows[0][0], total_cents=rows[0][1], lines=[r[0] for r in lines])
                self._send(200, body)
                return
            self._send(404, {"error": "no such endpoint"})
        except psycopg2.Error as exc:
            self._send(503, {"status": "database unavailable", "error": type(exc).__name__})
        except ValueError:
            self._send(400, {"error": "bad request"})


def main() -> None:
    with open(os.environ["PGSHIFT_API_CONFIG"]) as handle:
        CONFIG.update(json.load(handle))
    server = ThreadingHTTPServer(("127.0.0.1", int(CONFIG["listen_port"])), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
