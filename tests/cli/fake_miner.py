"""A stand-in miner for the process-management tests of ``twinchain up``/``down``.

Started as ``python fake_miner.py node start --config FILE`` (the real command line's
shape, so ``down`` recognises it), it serves ``GET /status`` on the config's
``[rpc].listen``. ``FAKE_MINER_MODE`` picks a behaviour: ``ok`` (height 1), ``stuck``
(height 0 forever), ``crash`` (exit 3 at once), ``stubborn`` (ignores SIGTERM).
Standard library only, so it starts in milliseconds.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main(argv: list[str]) -> int:
    """Serve /status until SIGTERM (or forever, when stubborn)."""
    config = Path(argv[argv.index("--config") + 1])
    mode = os.environ.get("FAKE_MINER_MODE", "ok")
    print(f"fake miner {config.name}: mode {mode}", flush=True)
    if mode == "crash":
        print("fake miner: crashing on purpose", flush=True)
        return 3
    doc = tomllib.loads(config.read_text())
    host, _, port = doc["rpc"]["listen"].rpartition(":")
    status = {"name": doc["node"]["name"], "height": 0 if mode == "stuck" else 1}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(status).encode()
            self.send_response(200 if self.path == "/status" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, int(port)), Handler)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()
    print("fake miner: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
