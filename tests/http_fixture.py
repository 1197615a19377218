"""A real HTTP server on 127.0.0.1 (port 0) for the download tests: no internet, real sockets.

Per path it can honour or ignore Range, drop the connection after N body bytes, flip a byte of the body,
answer a queue of error statuses first (404/500/503...), and delay the body (to observe parallel jobs).
Every request is logged as (path, Range header, status). Import the fixture into a test module with
``from http_fixture import http_server  # noqa: F401``.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlsplit

import pytest


@dataclass
class Behaviour:
    drop_after: Optional[int] = None  # body bytes sent before the connection is dropped...
    drops: int = 0  # ...in this many responses
    ignore_range: bool = False  # answer 200 with the whole file to a Range request
    corrupt: int = 0  # flip one byte in this many responses
    statuses: List[int] = field(default_factory=list)  # answered (in order) before the file is served
    delay: float = 0.0  # seconds before the body is sent


class _QuietServer(ThreadingHTTPServer):
    """Clients that give up mid-response (as the retry tests make them do) reset the connection; the
    stock server prints a traceback to stderr for that, which lands in the CLI's captured stderr."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        pass


class FileServer:
    def __init__(self):
        self.files: Dict[str, bytes] = {}
        self.behaviour: Dict[str, Behaviour] = {}
        self.log: List[Tuple[str, Optional[str], int]] = []
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.httpd = _QuietServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)

    def add(self, path: str, data: bytes, **behaviour) -> str:
        self.files[path] = data
        self.behaviour[path] = Behaviour(**behaviour)
        return self.url(path)

    def url(self, path: str) -> str:
        return self.base + path

    def requests_for(self, path: str) -> List[Tuple[str, Optional[str], int]]:
        return [entry for entry in self.log if entry[0] == path]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _reply(self, srv: FileServer, path: str, rng: Optional[str], code: int, body: bytes = b"",
               headers: Optional[dict] = None) -> None:
        with srv.lock:
            srv.log.append((path, rng, code))
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - http.server naming
        srv: FileServer = self.server.owner
        path, rng = urlsplit(self.path).path, self.headers.get("Range")
        with srv.lock:
            b = srv.behaviour.get(path)
            status = b.statuses.pop(0) if b and b.statuses else None
        if b is None or path not in srv.files:
            return self._reply(srv, path, rng, 404, b"not found")
        if status is not None:
            return self._reply(srv, path, rng, status, b"error")
        data = srv.files[path]
        start, code, headers = 0, 200, {}
        match = re.match(r"bytes=(\d+)-$", rng or "")
        if match and not b.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                return self._reply(srv, path, rng, 416, b"", {"Content-Range": f"bytes */{len(data)}"})
            code, headers = 206, {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        body = bytearray(data[start:])
        with srv.lock:
            srv.log.append((path, rng, code))
            srv.active += 1
            srv.max_active = max(srv.max_active, srv.active)
            corrupt, b.corrupt = b.corrupt > 0, max(0, b.corrupt - 1)
            drop, b.drops = (b.drops > 0 and b.drop_after is not None), max(0, b.drops - 1)
        try:
            if corrupt and body:
                body[len(body) // 2] ^= 0xFF
            self.send_response(code)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            time.sleep(b.delay)
            if drop:
                self.wfile.write(bytes(body[: b.drop_after]))
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(bytes(body))
        finally:
            with srv.lock:
                srv.active -= 1


@pytest.fixture
def http_server():
    """A started :class:`FileServer`; add files with ``http_server.add(path, bytes, **behaviour)``."""
    srv = FileServer()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()
