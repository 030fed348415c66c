"""The local HTTP endpoint: GET /healthz (200 ok or degraded, 503 failed; JSON per component with its
reason), GET /metrics (Prometheus text format), and the installer's views the app adds as routes
(/snapshot.jpg?camera=ID, /reads?camera=ID). Bound to 127.0.0.1 by default.

Bounded, so a flood or a slow-loris cannot take the daemon's threads and file descriptors: at most
MAX_CONNECTIONS at once (a new connection closes the oldest open one, which a slow client holds, so a
real probe always gets in), and each connection lives at most REQUEST_DEADLINE_S however slowly it
sends. A client that hangs up mid-answer is a debug line, not a traceback."""
import errno
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn
from urllib.parse import parse_qsl

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edge.service.health import FAILED

log = logging.getLogger("edge.service")

MAX_CONNECTIONS = 32
REQUEST_DEADLINE_S = 5.0


class _Server(ThreadingMixIn, HTTPServer):  # http.server.ThreadingHTTPServer is 3.7+
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address, handler, max_connections=MAX_CONNECTIONS, deadline_s=REQUEST_DEADLINE_S):
        self.max_connections, self.deadline_s = max_connections, deadline_s
        self._open = {}  # socket -> accepted at (monotonic)
        self._lock = threading.Lock()
        self.evicted = 0
        HTTPServer.__init__(self, address, handler)

    def get_request(self):
        try:
            return HTTPServer.get_request(self)
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):  # out of fds: wait instead of spinning on accept
                log.warning("http: cannot accept a connection: %s", exc)
                time.sleep(0.2)
            raise

    def process_request(self, request, client_address):
        with self._lock:
            while len(self._open) >= self.max_connections:
                oldest = min(self._open, key=self._open.get)
                self._close(oldest)
                self.evicted += 1
            self._open[request] = time.monotonic()
        ThreadingMixIn.process_request(self, request, client_address)

    def shutdown_request(self, request):
        with self._lock:
            self._open.pop(request, None)
        HTTPServer.shutdown_request(self, request)

    def reap(self):
        """Close connections older than the deadline (their handler thread then ends)."""
        now = time.monotonic()
        with self._lock:
            for sock, since in list(self._open.items()):
                if now - since > self.deadline_s:
                    self._close(sock)

    def _close(self, sock):
        self._open.pop(sock, None)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def handle_error(self, request, client_address):
        log.debug("http: connection from %s ended with an error", client_address[0])


class HealthServer:
    def __init__(self, host, port, health_fn, registry, routes=None):
        """`routes`: extra GET paths, each fn(query dict) -> (status code, content type, body bytes)."""
        self.health_fn = health_fn
        self.registry = registry
        self.routes = dict(routes or {})
        handler = self._handler()
        try:
            self.server = _Server((host, port), handler)
        except OSError as exc:
            raise OSError(exc.errno, "health.port: cannot listen on %s:%d: %s" % (host, port, exc.strerror))
        self.port = self.server.server_address[1]
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)
        self.reaper = threading.Thread(target=self._reap, name="http-reaper", daemon=True)

    def _reap(self):
        while not self._stop.wait(0.5):
            self.server.reap()

    def _handler(self):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_DEADLINE_S  # per read; the reaper bounds the whole connection

            def do_GET(self):
                path, _, query = self.path.partition("?")
                if path in outer.routes:
                    self._send(*outer.routes[path](dict(parse_qsl(query))))
                elif path == "/healthz":
                    body = outer.health_fn()
                    data = json.dumps(body, sort_keys=True).encode("utf-8")
                    self._send(503 if body["status"] == FAILED else 200, "application/json", data)
                elif path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(outer.registry))
                else:
                    self._send(404, "text/plain", ("not found: try /healthz, /metrics, %s\n" % ", ".join(
                        sorted(outer.routes))).encode("utf-8"))

            def _send(self, code, ctype, data):
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client left; nothing to tell it
                    log.debug("http: client %s hung up before the answer was sent", self.client_address[0])

            def log_message(self, fmt, *args):  # one line per request is noise for a daemon
                log.debug("http: " + fmt, *args)

        return Handler

    def start(self):
        self.thread.start()
        self.reaper.start()

    def stop(self):
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
