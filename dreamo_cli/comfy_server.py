"""Talk to one running ComfyUI server: upload images, queue a prompt, follow it on the websocket, fetch outputs.

HTTP through `requests`, the event stream through `websocket-client`. Errors come in two kinds: the server's
own verdict on the prompt (`PromptRejected`: validation; `NodeFailed`: a node raised while running), which
another try would repeat, and `ServerUnavailable`: the server cannot be reached or went away, worth retrying
elsewhere.
"""
from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
import websocket

UPLOAD_SUBFOLDER = "dreamo_client"


class ClientError(RuntimeError):
    """Something the user must see; `transient` errors are worth trying again on another server."""
    transient = False


class ServerUnavailable(ClientError):
    transient = True


class PromptRejected(ClientError):
    """ComfyUI refused the prompt (HTTP 400, or some outputs failed validation)."""

    def __init__(self, message: str, error: dict | None = None, node_errors: dict | None = None):
        super().__init__(message)
        self.error = error or {}
        self.node_errors = node_errors or {}


class NodeFailed(ClientError):
    """A node raised while the prompt ran: `data` is ComfyUI's execution_error message."""

    def __init__(self, message: str, data: dict):
        super().__init__(message)
        self.data = data


def base_url(address: str) -> str:
    """`127.0.0.1:8188`, `http://host:8188/` or `https://host` -> scheme://host[:port] (no trailing slash)."""
    address = address.strip().rstrip("/")
    if "://" not in address:
        address = "http://" + address
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not a server address: {address!r} (expected HOST:PORT or http://HOST:PORT)")
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


@dataclass
class Run:
    """What one queued prompt gave: output images (server refs) and what happened on the way."""
    prompt_id: str
    images: list[dict]
    events: dict[str, int] = field(default_factory=dict)  # websocket message type -> count
    timings: dict[str, float] = field(default_factory=dict)  # seconds


def describe_node_errors(node_errors: dict, workflow: dict) -> list[str]:
    from .api_workflow import node_label

    lines = []
    for node_id, entry in sorted(node_errors.items(), key=lambda kv: str(kv[0])):
        for err in entry.get("errors", []):
            name = (err.get("extra_info") or {}).get("input_name")
            where = node_label(workflow, node_id) + (f" input '{name}'" if name else "")
            detail = err.get("details") or ""
            lines.append(f"{where}: {err.get('message', '')}" + (f": {detail}" if detail else ""))
    return lines


class ComfyServer:
    def __init__(self, address: str = "127.0.0.1:8188", connect_timeout: float = 3.0, read_timeout: float = 60.0):
        self.url = base_url(address)
        self.ws_url = ("wss" if self.url.startswith("https") else "ws") + self.url[self.url.index("://"):] + "/ws"
        self.timeout = (connect_timeout, read_timeout)
        self.connect_timeout = connect_timeout
        self.session = requests.Session()
        self._uploaded: dict[str, str] = {}  # content digest -> LoadImage value

    def __repr__(self):
        return f"ComfyServer({self.url})"

    # -- HTTP ------------------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        try:
            return self.session.request(method, self.url + path, timeout=kwargs.pop("timeout", self.timeout),
                                        **kwargs)
        except requests.RequestException as e:
            raise ServerUnavailable(f"no ComfyUI server answers at {self.url} ({_reason(e)}). Start ComfyUI "
                                    f"there or pass --server HOST:PORT.") from e

    def _ok(self, response: requests.Response, what: str) -> requests.Response:
        if response.status_code >= 500:
            raise ServerUnavailable(f"{self.url} answered {what} with HTTP {response.status_code}: "
                                    f"{response.text[:300]}")
        if not response.ok:
            raise ClientError(f"{self.url} refused {what} (HTTP {response.status_code}): {response.text[:500]}")
        return response

    def check(self) -> dict:
        """The server's /system_stats; ServerUnavailable within about connect_timeout when nothing answers."""
        r = self._request("GET", "/system_stats", timeout=self.connect_timeout)
        self._ok(r, "/system_stats")
        try:
            return r.json()
        except ValueError:
            raise ServerUnavailable(f"{self.url} answers, but not as ComfyUI does (/system_stats is not JSON)")

    def alive(self) -> bool:
        try:
            self.check()
            return True
        except ClientError:
            return False

    def upload(self, path: str) -> str:
        """Upload a local image to the server's input folder; returns the value for LoadImage's `image`.
        Names come from the content, so one picture is sent once per server and never clobbers another."""
        with open(path, "rb") as f:
            data = f.read()
        digest = hashlib.sha256(data).hexdigest()
        if digest in self._uploaded:
            return self._uploaded[digest]
        ext = os.path.splitext(path)[1].lower() or ".png"
        name = f"{digest[:16]}{ext}"
        mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
        r = self._ok(self._request("POST", "/upload/image", files={"image": (name, data, mime)},
                                   data={"type": "input", "subfolder": UPLOAD_SUBFOLDER, "overwrite": "true"}),
                     f"the upload of {path}")
        body = r.json()
        value = f"{body['subfolder']}/{body['name']}" if body.get("subfolder") else body["name"]
        self._uploaded[digest] = value
        return value

    def submit(self, workflow: dict, client_id: str) -> str:
        r = self._request("POST", "/prompt", json={"prompt": workflow, "client_id": client_id,
                                                   "extra_data": {"preview_method": "none"}})
        if r.status_code == 400:
            try:
                body = r.json()
            except ValueError:
                body = {"error": {"message": r.text[:500]}}
            raise self._rejected(body.get("error") or {}, body.get("node_errors") or {}, workflow)
        body = self._ok(r, "the prompt").json()
        if body.get("node_errors"):
            # ComfyUI queues the outputs that validated and drops the others: not what was asked for.
            self.cancel(body["prompt_id"])
            raise self._rejected({"message": "some outputs failed validation"}, body["node_errors"], workflow)
        return body["prompt_id"]

    def _rejected(self, error: dict, node_errors: dict, workflow: dict) -> PromptRejected:
        error = error if isinstance(error, dict) else {"message": str(error)}
        lines = describe_node_errors(node_errors, workflow)
        head = error.get("message", "prompt rejected")
        if error.get("details") and not lines:
            head += f": {error['details']}"
        text = f"{self.url} rejected the prompt: {head}" + "".join(f"\n  {line}" for line in lines)
        return PromptRejected(text, error, node_errors)

    def history(self, prompt_id: str) -> dict | None:
        r = self._ok(self._request("GET", f"/history/{prompt_id}"), "/history")
        return r.json().get(prompt_id)

    def download(self, image: dict) -> bytes:
        params = {"filename": image["filename"], "subfolder": image.get("subfolder", ""),
                  "type": image.get("type", "output")}
        return self._ok(self._request("GET", "/view", params=params), f"/view of {image['filename']}").content

    def cancel(self, prompt_id: str) -> None:
        """Best effort: take the prompt off the queue, or stop it if it runs (so a retry elsewhere is the only
        run)."""
        try:
            quick = self.connect_timeout
            self.session.post(self.url + "/queue", json={"delete": [prompt_id]}, timeout=quick)
            self.session.post(self.url + "/interrupt", json={"prompt_id": prompt_id}, timeout=quick)
        except requests.RequestException:
            pass

    # -- one prompt, start to end ----------------------------------------------------------------------------
    def run(self, workflow: dict, on_event=None, timeout: float = 3600.0, poll: float = 5.0) -> Run:
        """Queue `workflow` and wait for it. `on_event(type, data)` sees every websocket message of this prompt
        (executing: the node being run; progress: step value of max). Raises PromptRejected, NodeFailed or
        ServerUnavailable."""
        client_id = uuid.uuid4().hex
        t0 = time.perf_counter()
        try:
            ws = websocket.create_connection(f"{self.ws_url}?clientId={client_id}", timeout=self.connect_timeout)
        except (OSError, websocket.WebSocketException) as e:
            raise ServerUnavailable(f"no ComfyUI websocket at {self.ws_url} ({_reason(e)}). Start ComfyUI there "
                                    f"or pass --server HOST:PORT.") from e
        events: dict[str, int] = {}
        timings: dict[str, float] = {}
        prompt_id = None
        try:
            ws.settimeout(poll)
            prompt_id = self.submit(workflow, client_id)
            timings["queue"] = time.perf_counter() - t0
            self._follow(ws, prompt_id, workflow, events, timings, on_event, t0, timeout)
        except ServerUnavailable:
            if prompt_id is not None:
                self.cancel(prompt_id)
            raise
        finally:
            ws.close()
        t1 = time.perf_counter()
        entry = self.history(prompt_id) or {}
        timings["history"] = time.perf_counter() - t1
        images = [img for _, out in sorted(entry.get("outputs", {}).items(), key=lambda kv: _node_order(kv[0]))
                  for img in out.get("images", []) if img.get("type") == "output"]
        timings["done"] = time.perf_counter() - t0
        return Run(prompt_id, images, events, timings)

    def _follow(self, ws, prompt_id, workflow, events, timings, on_event, t0, timeout):
        deadline = time.monotonic() + timeout
        server_start = None
        while time.monotonic() < deadline:
            try:
                raw = ws.recv()
            except websocket.WebSocketTimeoutException:
                # Quiet for a while: a long node, or a lost message. Ask the server directly.
                entry = self.history(prompt_id)
                if entry and entry.get("status", {}).get("completed") is not None:
                    status = entry["status"]
                    if status.get("status_str") == "error":
                        data = next((m[1] for m in status.get("messages", []) if m[0] == "execution_error"), {})
                        raise NodeFailed(self._failure_text(data, workflow), data)
                    return
                continue
            except (OSError, websocket.WebSocketException) as e:
                raise ServerUnavailable(f"lost {self.url} while it ran the prompt ({_reason(e)})") from e
            if not isinstance(raw, str):
                continue  # binary preview frames (previews are asked off, older servers may still send)
            msg = json.loads(raw)
            kind, data = msg.get("type"), msg.get("data") or {}
            if data.get("prompt_id") != prompt_id:
                continue
            events[kind] = events.get(kind, 0) + 1
            if on_event is not None:
                on_event(kind, data)
            if kind == "execution_start":
                timings["wait"] = time.perf_counter() - t0 - timings.get("queue", 0.0)
                server_start = data.get("timestamp")
                timings["_start"] = time.perf_counter()
            elif kind == "execution_error":
                raise NodeFailed(self._failure_text(data, workflow), data)
            elif kind == "execution_interrupted":
                raise ServerUnavailable(f"{self.url} interrupted the prompt (someone pressed Cancel, or the server "
                                        f"is stopping)")
            elif kind == "execution_success":  # sent before the server files the outputs in /history
                timings["_success"] = time.perf_counter()
                start = timings.pop("_start", None)
                if server_start is not None and data.get("timestamp") is not None:
                    timings["execute"] = (data["timestamp"] - server_start) / 1000.0
                elif start is not None:
                    timings["execute"] = time.perf_counter() - start
            elif kind == "executing" and data.get("node") is None:  # outputs are in /history now
                if "_success" in timings:  # the server's own bookkeeping after the last node
                    timings["finish"] = time.perf_counter() - timings.pop("_success")
                start = timings.pop("_start", None)
                if "execute" not in timings and start is not None:
                    timings["execute"] = time.perf_counter() - start
                return
        raise ServerUnavailable(f"{self.url} did not finish the prompt within {timeout:.0f} s")

    def _failure_text(self, data: dict, workflow: dict) -> str:
        from .api_workflow import node_label

        node_id = data.get("node_id", "?")
        label = (node_label(workflow, node_id) if str(node_id) in workflow
                 else f"node {node_id} ({data.get('node_type')})")
        kind = str(data.get("exception_type") or "error").rsplit(".", 1)[-1]
        return f"{label} failed on {self.url}: {kind}: {data.get('exception_message', '').strip()}"


def _node_order(node_id: str):
    return (0, int(node_id)) if str(node_id).isdigit() else (1, str(node_id))


def _reason(e: Exception) -> str:
    text = str(e)
    for known in ("Connection refused", "timed out", "Name or service not known", "Connection reset",
                  "Remote end closed", "Connection aborted"):
        if known.lower() in text.lower():
            return known.lower()
    return type(e).__name__ + (f": {text[:200]}" if text else "")
