"""The local HTTP endpoint: GET /healthz (200 ok or degraded, 503 failed; JSON per component with its
reason) and GET /metrics (Prometheus text format). Bound to 127.0.0.1 by default."""
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edge.service.health import FAILED

log = logging.getLogger("edge.service")


class _Server(ThreadingMixIn, HTTPServer):  # http.server.ThreadingHTTPServer is 3.7+
    daemon_threads = True
    allow_reuse_address = True


class HealthServer:
    def __init__(self, host, port, health_fn, registry):
        self.health_fn = health_fn
        self.registry = registry
        handler = self._handler()
        self.server = _Server((host, port), handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)

    def _handler(self):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    body = outer.health_fn()
                    data = json.dumps(body, sort_keys=True).encode("utf-8")
                    self._send(503 if body["status"] == FAILED else 200, "application/json", data)
                elif path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(outer.registry))
                else:
                    self._send(404, "text/plain", b"not found: try /healthz or /metrics\n")

            def _send(self, code, ctype, data):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, fmt, *args):  # one line per request is noise for a daemon
                log.debug("http: " + fmt, *args)

        return Handler

    def start(self):
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
