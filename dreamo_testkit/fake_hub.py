"""A loopback HTTP server that serves files the way the Hugging Face Hub's /resolve/ URLs do (HEAD metadata with
X-Repo-Commit, the LFS sha256 as ETag and the size; GET with byte ranges; 401 + X-Error-Code: GatedRepo for a
gated repo without access), plus plain files (facexlib's release URLs). Tests point HF_ENDPOINT at it.

It can also misbehave the way a broken or hostile server does: answer HEAD with an error (no size), send a body
without Content-Length and longer than the file, or trickle the body a few bytes at a time."""
from __future__ import annotations

import hashlib
import threading
import time
from typing import Optional
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Served:
    body: bytes
    sha256: str = ""  # announced in the ETag (the real content's hash unless a test lies)
    gated: bool = False
    drop_after: int = 0  # a GET closes the connection after this many bytes (an interrupted download) ...
    drop_count: int = 1  # ... for this many GETs
    hub: bool = True  # Hub metadata headers (False: a plain file server, like GitHub's release assets)
    requests: list = field(default_factory=list)  # (method, Range header) seen
    head_status: int = 0  # HEAD answers this error status instead (no size announced)
    get_length: bool = True  # False: GET sends no Content-Length (the body ends when the connection closes)
    extra: int = 0  # GET sends this many zero bytes after the body (a server sending more than it announced)
    trickle: Optional[tuple[int, float]] = None  # GET sends (bytes, every seconds) instead of all at once
    sent: int = 0  # body bytes written by GETs (extra included)


class FakeHub:
    def __init__(self):
        self.files: dict[str, Served] = {}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _file(self):
                path = self.path.split("?", 1)[0]
                return hub.files.get(path)

            def _headers(self, f: Served, status: int, length: int, extra=None):
                self.send_response(status)
                if f.hub:
                    self.send_header("X-Repo-Commit", COMMIT)
                    self.send_header("ETag", f'"{f.sha256}"')
                self.send_header("Content-Length", str(length))
                self.send_header("Accept-Ranges", "bytes")
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()

            def _gated(self):
                body = b'{"error": "Access to model is restricted. You must have access to it and be authenticated."}'
                self.send_response(401)
                self.send_header("X-Error-Code", "GatedRepo")
                self.send_header("X-Error-Message", "Access to model is restricted and you are not in the authorized "
                                                    "list.")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                return body

            def do_HEAD(self):
                f = self._file()
                if f is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                f.requests.append(("HEAD", self.headers.get("Range")))
                if f.gated:
                    self._gated()
                    return
                if f.head_status:
                    self.send_response(f.head_status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._headers(f, 200, len(f.body))

            def do_GET(self):
                f = self._file()
                if f is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                rng = self.headers.get("Range")
                f.requests.append(("GET", rng))
                if f.gated:
                    self.wfile.write(self._gated())
                    return
                start = 0
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-", 1)[0])
                if start >= len(f.body) > 0:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(f.body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = f.body[start:]
                extra = {"Content-Range": f"bytes {start}-{len(f.body) - 1}/{len(f.body)}"} if start else None
                if not f.get_length or f.extra or f.trickle:
                    self._misbehave(f, data, 206 if start else 200, extra)
                    return
                self._headers(f, 206 if start else 200, len(data), extra)
                gets = sum(1 for m, _ in f.requests if m == "GET")
                if f.drop_after and gets <= f.drop_count:
                    self.wfile.write(data[:f.drop_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data)

            def _misbehave(self, f: Served, data: bytes, status: int, extra):
                self.send_response(status)
                if f.get_length:
                    self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.close_connection = True
                step, pause = f.trickle or (1 << 16, 0.0)

                def pieces():
                    for i in range(0, len(data), step):
                        yield data[i:i + step]
                    for i in range(0, f.extra, step):
                        yield b"\0" * min(step, f.extra - i)
                try:
                    for piece in pieces():
                        self.wfile.write(piece)
                        self.wfile.flush()
                        f.sent += len(piece)
                        if pause:
                            time.sleep(pause)
                except OSError:  # the client hung up: what a bounded download does
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add_hub_file(self, repo: str, filename: str, body: bytes, **kw) -> Served:
        kw.setdefault("sha256", hashlib.sha256(body).hexdigest())
        served = Served(body, **kw)
        self.files[f"/{repo}/resolve/main/{filename}"] = served
        return served

    def add_plain_file(self, path: str, body: bytes, **kw) -> Served:
        served = Served(body, hub=False, **kw)
        self.files[path] = served
        return served

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
