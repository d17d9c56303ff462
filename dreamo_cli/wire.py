"""Bounded HTTP and websocket I/O for talking to servers that may be slow, broken or hostile.

Every call has a connect timeout, a read timeout (per socket read) and an overall deadline: a watchdog
(`Deadline`) shuts the call's socket down when the deadline passes, so a server that trickles one byte every
few seconds cannot hold a call past it. Bodies are read in pieces up to a size cap (answers into memory,
downloads to a file), and one websocket message may not exceed a byte budget.

HTTP goes through the standard library's `http.client`, which bounds the status line, the headers and each
chunk-size line; `requests`/urllib3 have no overall deadline and read a chunk-size line without a bound. The
websocket protocol is `websocket-client`'s, on a socket opened here so the deadline and the budget cover its
handshake too. Connections go straight to the server (proxy variables are not used).
"""
from __future__ import annotations

import base64
import http.client
import socket
import ssl
import threading
import time
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import websocket

CHUNK = 1 << 16


class TooLarge(Exception):
    """A body or websocket message went past its size cap."""


class Unreachable(OSError):
    """The TCP (or TLS) connection itself could not be made."""


class Deadline:
    """A point in time (time.monotonic()) after which the sockets it watches are shut down: a read or write
    blocked on them fails at once. `expire()` does the same now (a stopping client aborts its calls)."""

    def __init__(self, at: float):
        self.at = at
        self.expired = False
        self._lock = threading.Lock()
        self._watched: list = []
        self._timer = threading.Timer(max(0.0, at - time.monotonic()), self.expire)
        self._timer.daemon = True

    def __enter__(self) -> "Deadline":
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()

    def left(self) -> float:
        return self.at - time.monotonic()

    def watch(self, sock) -> None:
        """Shut `sock` down when the deadline passes (at once when it has)."""
        with self._lock:
            self._watched.append(sock)
            expired = self.expired
        if expired:
            _shutdown(sock)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            watched = list(self._watched)
        for sock in watched:
            _shutdown(sock)


def _shutdown(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Metered:
    """A socket that counts what it receives; past `budget` bytes (None: no cap) it raises TooLarge."""

    budget: int | None = None
    received = 0

    def recv(self, *args, **kwargs):
        data = super().recv(*args, **kwargs)
        self.received += len(data)
        if self.budget is not None and self.received > self.budget:
            raise TooLarge(f"more than {self.budget} bytes")
        return data


class _MeteredSocket(_Metered, socket.socket):
    pass


class _MeteredSSLSocket(_Metered, ssl.SSLSocket):
    pass


@dataclass(frozen=True)
class Endpoint:
    """scheme://host:port/prefix of one server, and the Basic credentials its address carried, if any."""
    scheme: str
    host: str
    port: int
    prefix: str
    authorization: str | None = None

    @classmethod
    def parse(cls, address: str) -> "Endpoint":
        address = address.strip().rstrip("/")
        if "://" not in address:
            address = "http://" + address
        parts = urlsplit(address)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not a server address: {address!r} (expected HOST:PORT or http://HOST:PORT)")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ValueError(f"not a server address: {address!r} (the port is not a number)") from None
        auth = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            auth = "Basic " + base64.b64encode(pair).decode()
        return cls(parts.scheme, parts.hostname, port, parts.path, auth)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return f"{self.scheme}://{host}" + (f":{self.port}" if self.port != default else "") + self.prefix

    @property
    def ws_url(self) -> str:
        return ("wss" if self.scheme == "https" else "ws") + self.url[len(self.scheme):]


def open_socket(endpoint: Endpoint, connect_timeout: float, read_timeout: float, deadline: Deadline,
                metered: bool = False) -> socket.socket:
    """A connected (and for https, TLS-wrapped) socket, watched by `deadline` from the first packet on."""
    last: OSError | None = None
    try:
        addresses = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise Unreachable(str(e)) from e
    for family, kind, proto, _, addr in addresses:
        sock = (_MeteredSocket if metered else socket.socket)(family, kind, proto)
        deadline.watch(sock)
        try:
            sock.settimeout(max(0.01, min(connect_timeout, deadline.left())))
            sock.connect(addr)
            break
        except OSError as e:
            sock.close()
            last = e
    else:
        raise Unreachable(str(last or "no address")) from last
    if endpoint.scheme == "https":
        context = ssl.create_default_context()
        if metered:
            context.sslsocket_class = _MeteredSSLSocket
        try:
            sock = context.wrap_socket(sock, server_hostname=endpoint.host, do_handshake_on_connect=False)
            deadline.watch(sock)
            sock.do_handshake()
        except OSError as e:
            sock.close()
            raise Unreachable(str(e)) from e
    sock.settimeout(read_timeout)
    return sock


class _Connection(http.client.HTTPConnection):
    """http.client's connection on a socket from open_socket (so the deadline watches it)."""

    def __init__(self, endpoint: Endpoint, connect_timeout: float, read_timeout: float, deadline: Deadline):
        super().__init__(endpoint.host, endpoint.port, timeout=read_timeout)
        self._endpoint, self._connect_timeout, self._deadline = endpoint, connect_timeout, deadline

    def connect(self):
        self.sock = open_socket(self._endpoint, self._connect_timeout, self.timeout, self._deadline)


def http_call(endpoint: Endpoint, method: str, path: str, consume, *, body: bytes | None = None,
              headers: dict | None = None, connect_timeout: float, read_timeout: float, deadline: Deadline):
    """One request; `consume(response)` reads the answer (within the deadline) and its result is returned.
    Raises Unreachable when no connection could be made, OSError / http.client.HTTPException when the
    server broke off or the deadline passed (then `deadline.expired` is true)."""
    conn = _Connection(endpoint, connect_timeout, read_timeout, deadline)
    sent = {"Connection": "close", "Accept-Encoding": "identity", "User-Agent": "dreamo-client"}
    if endpoint.authorization:
        sent["Authorization"] = endpoint.authorization
    sent.update(headers or {})
    try:
        conn.request(method, endpoint.prefix + path, body=body, headers=sent)
        return consume(conn.getresponse())
    finally:
        conn.close()


def read_capped(response: http.client.HTTPResponse, cap: int) -> bytes:
    """The whole body, or TooLarge when it is (or says it is) longer than `cap` bytes."""
    declared = response.getheader("Content-Length", "")
    if declared.strip().isdigit() and int(declared) > cap:
        raise TooLarge(f"{int(declared)} bytes announced")
    parts, total = [], 0
    while chunk := response.read(CHUNK):
        total += len(chunk)
        if total > cap:
            raise TooLarge(f"more than {cap} bytes")
        parts.append(chunk)
    return b"".join(parts)


def copy_capped(response: http.client.HTTPResponse, out, cap: int, on_chunk=None) -> int:
    """Stream the body into the file `out` (never all of it in memory); TooLarge past `cap` bytes."""
    declared = response.getheader("Content-Length", "")
    if declared.strip().isdigit() and int(declared) > cap:
        raise TooLarge(f"{int(declared)} bytes announced")
    total = 0
    while chunk := response.read(CHUNK):
        total += len(chunk)
        if total > cap:
            raise TooLarge(f"more than {cap} bytes")
        if on_chunk is not None:
            on_chunk(chunk)
        out.write(chunk)
    return total


def open_websocket(endpoint: Endpoint, resource: str, connect_timeout: float, read_timeout: float,
                   deadline: Deadline, budget: int) -> websocket.WebSocket:
    """A websocket to `endpoint` + resource, on a socket the deadline watches. Each message (and the handshake)
    may take at most `budget` bytes: call `start_message(ws)` before each recv()."""
    sock = open_socket(endpoint, connect_timeout, read_timeout, deadline, metered=True)
    sock.budget = budget
    ws = websocket.WebSocket()
    headers = [f"Authorization: {endpoint.authorization}"] if endpoint.authorization else []
    try:
        ws.connect(endpoint.ws_url + resource, socket=sock, timeout=read_timeout, header=headers)
    except BaseException:
        sock.close()
        raise
    return ws


def start_message(ws: websocket.WebSocket) -> None:
    """Reset the byte budget of the next message."""
    if ws.sock is not None:
        ws.sock.received = 0


_BIDI = {0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}


def printable(value, limit: int = 500, lines: bool = False) -> str:
    """Text a server sent, safe for a terminal: control characters (escape sequences, carriage returns, bidi
    overrides) are shown as \\xNN / \\uNNNN, and the text is cut at `limit` characters. `lines=True` keeps line
    breaks (a node's multi-line message)."""
    if isinstance(value, str):
        text = value
    elif value is None or isinstance(value, (bool, int, float)):
        text = repr(value)
    else:  # never walk a server's nested value (repr of a deep list recurses)
        text = f"<a {type(value).__name__}>"
    cut = len(text) > limit
    out = []
    for ch in text[:limit]:
        code = ord(ch)
        if lines and ch == "\n":
            out.append(ch)
        elif unicodedata.category(ch) == "Cc" or code in _BIDI:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out) + ("…" if cut else "")
