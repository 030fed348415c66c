"""Download a package over HTTP(S) into the state directory: a size cap, a timeout on every read (a server
that stalls is given up), resume with Range + If-Range (the ETag or Last-Modified of the first answer, so a
file changed on the server is sent whole rather than spliced), bounded retries, disk space checked first,
size and sha256 verified at the end. Stdlib urllib, so the Nano needs no requests/urllib3 chain.

The partial file (<downloads>/<key>.part) and its validator (<key>.part.json) stay after a failure, so the
next try (or the next start) continues where this one stopped; a file that fails its sha256 is deleted."""
import http.client
import json
import logging
import os
import shutil
import socket
import time

from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from edge.ota import OtaError
from edge.recognize.model import sha256_file

log = logging.getLogger("edge.ota")

CHUNK = 64 * 1024
SPACE_MARGIN = 16 << 20  # what is kept free besides the package and its unpacked copy


def check_space(folder, needed):
    free = shutil.disk_usage(folder).free
    if free < needed + SPACE_MARGIN:
        raise OtaError("no_space", "%s has %d MB free; the update needs %d MB (package, unpacked copy and a %d MB "
                                   "margin)" % (folder, free >> 20, (needed + SPACE_MARGIN) >> 20, SPACE_MARGIN >> 20))


def _load_meta(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (IOError, OSError, ValueError):
        return {}


def _save_meta(path, meta):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(meta, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Download:
    def __init__(self, url, dest, size=None, sha256=None, max_bytes=None, timeout_s=30.0, retries=3,
                 progress=None, should_stop=None, retry_delay_s=1.0):
        self.url = url
        self.dest = dest  # the finished file; the partial one is dest + ".part"
        self.part = dest + ".part"
        self.meta_path = self.part + ".json"
        self.size = size
        self.sha256 = sha256.lower() if sha256 else None
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.retries = retries
        self.progress = progress  # callable(done_bytes, total_bytes or None)
        self.should_stop = should_stop or (lambda: False)
        self.retry_delay_s = retry_delay_s
        self.resumed_from = []  # offsets a request resumed from (tests and logs)

    def run(self):
        if not self.url.lower().startswith(("http://", "https://")):
            raise OtaError("bad_url", "%r is not an http(s) URL" % self.url)
        if self.size is not None and self.max_bytes is not None and self.size > self.max_bytes:
            raise OtaError("too_large", "the package is %d bytes, more than the %d allowed (ota.max_package_mb)"
                           % (self.size, self.max_bytes))
        folder = os.path.dirname(os.path.abspath(self.dest))
        have = os.path.getsize(self.part) if os.path.exists(self.part) else 0
        if self.size is not None:
            check_space(folder, 2 * max(0, self.size - have) + self.size)
        meta = _load_meta(self.meta_path)
        if meta.get("url") != self.url:
            self._restart()
            meta = {"url": self.url}
        error = None
        for attempt in range(self.retries + 1):
            if self.should_stop():
                raise OtaError("cancelled", "download stopped")
            try:
                if self._fetch(meta):
                    return self._finish()
            except OtaError as exc:
                if exc.code in ("too_large", "no_space", "http_error", "bad_url", "cancelled", "size_mismatch",
                                "sha256_mismatch"):  # fetching it again cannot help
                    raise
                error = exc
            log.warning("download %s: %s; retrying (%d of %d)", self.url, error, attempt + 1, self.retries)
            time.sleep(self.retry_delay_s * (attempt + 1))
        raise error or OtaError("download_failed", "download of %s failed" % self.url)

    def _restart(self):
        for path in (self.part, self.meta_path):
            if os.path.exists(path):
                os.unlink(path)

    def _fetch(self, meta):
        """One request. True when the file is complete; OtaError for a failure worth retrying."""
        have = os.path.getsize(self.part) if os.path.exists(self.part) else 0
        if self.size is not None and have == self.size:
            return True
        headers = {"Accept-Encoding": "identity", "User-Agent": "lpr-edge-ota"}
        if have:
            headers["Range"] = "bytes=%d-" % have
            validator = meta.get("etag") or meta.get("last_modified")
            if validator:
                headers["If-Range"] = validator
        try:
            response = urlopen(Request(self.url, headers=headers), timeout=self.timeout_s)
        except HTTPError as exc:
            if exc.code == 416 and have:
                # our part is not a prefix of what the server has: start over
                self._restart()
                raise OtaError("range_refused", "the server refused the range from byte %d; starting over" % have)
            raise OtaError("http_error", "%s: HTTP %d %s" % (self.url, exc.code, exc.reason))
        except (URLError, socket.timeout, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, socket.timeout):
                raise OtaError("stalled", "%s: no answer for %g s" % (self.url, self.timeout_s))
            raise OtaError("unreachable", "%s: %s" % (self.url, reason))
        with response:
            return self._receive(response, meta, have)

    def _receive(self, response, meta, have):
        status = response.getcode()
        total = None
        if status == 206 and have:
            content_range = response.headers.get("Content-Range", "")
            try:
                start = int(content_range.split()[1].split("-")[0])
                total = int(content_range.split("/")[1])
            except (IndexError, ValueError):
                raise OtaError("bad_response", "206 with an unreadable Content-Range %r" % content_range)
            if start != have:
                self._restart()
                raise OtaError("bad_response", "asked for bytes from %d, got them from %d; starting over"
                               % (have, start))
            self.resumed_from.append(have)
            mode = "ab"
        else:  # 200: the whole file (the server ignored the range, or the file changed): from the start
            have = 0
            mode = "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            meta.update(etag=response.headers.get("ETag"), last_modified=response.headers.get("Last-Modified"))
            _save_meta(self.meta_path, meta)
        if total is not None and self.size is not None and total != self.size:
            self._restart()
            raise OtaError("size_mismatch", "the server has %d bytes; the command said %d" % (total, self.size))
        cap = self.size or total or self.max_bytes
        if total is not None and self.max_bytes is not None and total > self.max_bytes:
            raise OtaError("too_large", "the package is %d bytes, more than the %d allowed (ota.max_package_mb)"
                           % (total, self.max_bytes))
        if total is not None and self.size is None:
            check_space(os.path.dirname(os.path.abspath(self.dest)), 2 * total)
        done = have
        last_report = 0.0
        with open(self.part, mode) as out:
            try:
                while True:
                    if self.should_stop():
                        raise OtaError("cancelled", "download stopped")
                    chunk = response.read(CHUNK)
                    if not chunk:
                        break
                    done += len(chunk)
                    limit = self.size or total or self.max_bytes
                    if limit is not None and done > limit:
                        out.truncate(0)
                        self._restart()
                        raise OtaError("too_large", "the server sent more than %d bytes" % limit)
                    out.write(chunk)
                    now = time.monotonic()
                    if self.progress is not None and now - last_report >= 0.5:
                        last_report = now
                        self.progress(done, cap)
            except socket.timeout:
                raise OtaError("stalled", "%s: no data for %g s (got %d bytes); will resume"
                               % (self.url, self.timeout_s, done))
            except (OSError, ValueError, http.client.HTTPException) as exc:
                raise OtaError("interrupted", "%s: connection broke after %d bytes (%s); will resume"
                               % (self.url, done, exc))
            finally:
                out.flush()
                os.fsync(out.fileno())
        expected = self.size or total
        if expected is not None and done < expected:
            raise OtaError("truncated", "%s: got %d of %d bytes; will resume" % (self.url, done, expected))
        if self.progress is not None:
            self.progress(done, expected)
        return True

    def _finish(self):
        size = os.path.getsize(self.part)
        if self.size is not None and size != self.size:
            self._restart()
            raise OtaError("size_mismatch", "downloaded %d bytes; the command said %d" % (size, self.size))
        digest = sha256_file(self.part)
        if self.sha256 is not None and digest != self.sha256:
            self._restart()
            raise OtaError("sha256_mismatch", "the download has sha256 %s; the command said %s" % (digest, self.sha256))
        os.replace(self.part, self.dest)
        if os.path.exists(self.meta_path):
            os.unlink(self.meta_path)
        return self.dest
