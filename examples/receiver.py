"""A webhook receiver that checks cityvitals' signature and drops duplicate deliveries.

Run it, then point a route's receiver at it::

    CITYVITALS_WEBHOOK_SECRET=<the receiver's secret> python examples/receiver.py --port 9901

or ``CITYVITALS_WEBHOOK_SECRET_FILE=<a file holding it>``, e.g. one of the secrets
``cityvitals demo`` generates (it prints their directory).

Only the standard library is used, so it can be copied into any service. For
every POST it:

1. reads the raw body (verify before parsing: the signature is over the bytes);
2. parses ``X-Cityvitals-Signature: t=<unix seconds>,v1=<hex>``, recomputes
   HMAC-SHA256(secret, "<t>." + body) and compares in constant time;
3. refuses a timestamp more than 5 minutes from its own clock (replays);
4. answers 200 to an ``Idempotency-Key`` it has seen, without acting again;
5. otherwise acts (here: prints one line, and the responder link of each
   firing alert of a native body) and answers 204.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_S = 300


def verify(secret: bytes, header: str, body: bytes, now: float) -> bool:
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > TOLERANCE_S:
        return False
    expected = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields.get("v1", ""))


def make_handler(secret: bytes) -> type[BaseHTTPRequestHandler]:
    seen: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if not verify(
                secret, self.headers.get("X-Cityvitals-Signature", ""), body, time.time()
            ):
                self.send_response(401)
                self.end_headers()
                return
            key = self.headers.get("Idempotency-Key", "")
            if key in seen:
                self.send_response(200)  # a resend: already handled
                self.end_headers()
                return
            seen.add(key)
            kind = self.headers.get("Content-Type", "")
            doc = json.loads(body) if "json" in kind else {}
            summary = doc.get("status", "?") if doc else kind
            print(f"notification {key}: {summary} ({len(body)} bytes)", flush=True)
            # native bodies: a link per firing alert to acknowledge it or report from the field
            for alert_id, url in (doc.get("respond_links") or {}).items():
                print(f"  respond to {alert_id}: {url}", flush=True)
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9901)
    args = parser.parse_args()
    secret = os.environ.get("CITYVITALS_WEBHOOK_SECRET", "")
    if not secret and os.environ.get("CITYVITALS_WEBHOOK_SECRET_FILE"):
        with open(os.environ["CITYVITALS_WEBHOOK_SECRET_FILE"], encoding="utf-8") as held:
            secret = held.read().rstrip("\r\n")
    if not secret:
        print(
            "set CITYVITALS_WEBHOOK_SECRET (or CITYVITALS_WEBHOOK_SECRET_FILE) to the "
            "receiver's secret",
            file=sys.stderr,
        )
        return 2
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(secret.encode()))
    print(f"listening on http://127.0.0.1:{args.port}/", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
