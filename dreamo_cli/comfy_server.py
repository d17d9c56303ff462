"""Talk to one running ComfyUI server: upload images, queue a prompt, fetch outputs, take prompts back.

HTTP goes through `wire` (every call bounded in time and size; the server may be hostile). Following one prompt
on the websocket is comfy_run.py (`PromptRunner`, a base of `ComfyServer`); the errors are comfy_errors.py.
Every text a server sends passes `wire.printable` before it reaches a message.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import mimetypes
import os
import threading
import time
import uuid
from urllib.parse import quote, urlencode

from . import wire
from .comfy_errors import (BadAnswer, ClientError, PromptRejected, ServerUnavailable, Stopped, TimedOut,
                           describe_node_errors, short_reason)
from .comfy_run import PromptRunner
from .wire import printable

UPLOAD_SUBFOLDER = "dreamo_client"
MAX_ANSWER = 32 << 20  # bytes of one JSON answer (/history of one prompt is a few KB)
DEFAULT_MAX_DOWNLOAD = 2 << 30  # bytes of one output file


def base_url(address: str) -> str:
    """`127.0.0.1:8188`, `http://host:8188/` or `https://host` -> scheme://host[:port] (no trailing slash)."""
    return wire.Endpoint.parse(address).url


def _multipart(fields: dict[str, str], name: str, filename: str, data: bytes, mime: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                 f'Content-Type: {mime}\r\n\r\n'.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class ComfyServer(PromptRunner):
    """One ComfyUI server as this client sees it: the prompts it queued there (so a stop can take them back) and
    the uploads it made (one per picture)."""

    def __init__(self, address: str = "127.0.0.1:8188", connect_timeout: float = 3.0, read_timeout: float = 60.0,
                 answer_timeout: float = 120.0, max_download: int = DEFAULT_MAX_DOWNLOAD):
        self.endpoint = wire.Endpoint.parse(address)
        self.url = self.endpoint.url
        self.ws_url = self.endpoint.ws_url + "/ws"
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.answer_timeout = answer_timeout  # the longest any one HTTP call may take, start to end
        self.max_download = max_download
        self._uploaded: dict[str, str] = {}  # content digest -> LoadImage value
        self._lock = threading.Condition()
        self._mine: set[str] = set()  # prompt ids queued here by this client and not seen finished
        self._submitting = 0
        self._calls: set[wire.Deadline] = set()  # calls in flight, aborted by stop()
        self.stopping = False

    def __repr__(self):
        return f"ComfyServer({self.url})"

    # -- HTTP ------------------------------------------------------------------------------------------------
    def _call(self, method: str, path: str, what: str, consume, *, body: bytes | None = None,
              headers: dict | None = None, limit: float | None = None, deadline: float | None = None,
              stopping_ok: bool = False):
        """One bounded HTTP call: done within `limit` seconds (default answer_timeout) and by `deadline`
        (time.monotonic()), whatever the server does."""
        if self.stopping and not stopping_ok:
            raise Stopped(f"stopped before {what}")
        limit = self.answer_timeout if limit is None else limit
        start = time.monotonic()
        at = start + limit if deadline is None else min(start + limit, deadline)
        watch = wire.Deadline(at)
        with self._lock:
            self._calls.add(watch)
        try:
            with watch:
                result = wire.http_call(self.endpoint, method, path, consume, body=body, headers=headers,
                                        connect_timeout=self.connect_timeout, read_timeout=self.read_timeout,
                                        deadline=watch)
            if not watch.expired:
                return result
        except wire.TooLarge as e:
            raise BadAnswer(f"{self.url} answered {what} with too much data ({e})") from None
        except wire.Unreachable as e:
            if not watch.expired:
                raise ServerUnavailable(f"no ComfyUI server answers at {self.url} ({short_reason(e)}). Start ComfyUI "
                                        f"there or pass --server HOST:PORT.") from e
        except (OSError, http.client.HTTPException) as e:
            if not watch.expired:
                raise ServerUnavailable(f"lost {self.url} during {what} ({short_reason(e)})") from e
        except (ClientError, _Refused):  # the answer, judged by `consume`: cut short when the deadline passed
            if not watch.expired:
                raise
        finally:
            with self._lock:
                self._calls.discard(watch)
        # the deadline passed (or a stop aborted the call): whatever was read is not the whole answer
        if self.stopping and not stopping_ok:
            raise Stopped(f"stopped during {what}")
        raise TimedOut(f"{self.url} did not answer {what} within {max(at - start, 0):.0f} s"
                       + (" (the end of the job's --timeout)" if deadline is not None and deadline <= at else ""))

    def _answer(self, what: str, ok=(200,)):
        """A consume function: the JSON body of a 2xx answer; 5xx -> ServerUnavailable, other -> ClientError
        (with the server's text, printable)."""
        def consume(response):
            body = wire.read_capped(response, MAX_ANSWER)
            if response.status >= 500:
                raise ServerUnavailable(f"{self.url} answered {what} with HTTP {response.status}: "
                                        f"{printable(body[:300].decode('utf-8', 'replace'))}")
            if response.status not in ok:
                raise _Refused(response.status, body)
            return body
        return consume

    def _json(self, body: bytes, what: str, shape=dict):
        try:
            value = json.loads(body)
        except (ValueError, RecursionError):
            raise BadAnswer(f"{self.url} answered {what} with something that is not JSON: "
                            f"{printable(body[:120].decode('utf-8', 'replace'), 120)}") from None
        if not isinstance(value, shape):
            raise BadAnswer(f"{self.url} answered {what} with a JSON {type(value).__name__}, not ComfyUI's "
                            f"{shape.__name__}")
        return value

    def _get_json(self, path: str, what: str, limit: float | None = None, deadline: float | None = None,
                  stopping_ok: bool = False) -> dict:
        try:
            body = self._call("GET", path, what, self._answer(what), limit=limit, deadline=deadline,
                              stopping_ok=stopping_ok)
        except _Refused as e:
            raise ClientError(f"{self.url} refused {what} (HTTP {e.status}): {e.text(500)}") from None
        return self._json(body, what)

    def node_info(self, class_type: str) -> dict:
        """`/object_info/<class>`: the node's definition keyed by its name, or {} when the server has no such node."""
        return self._get_json(f"/object_info/{quote(class_type, safe='')}", f"the definition of node {class_type}")

    def check(self) -> dict:
        """The server's /system_stats; ServerUnavailable within about connect_timeout when nothing answers."""
        try:
            return self._get_json("/system_stats", "/system_stats", limit=self.connect_timeout)
        except TimedOut:
            raise ServerUnavailable(f"no ComfyUI server answers at {self.url} (timed out after "
                                    f"{self.connect_timeout:.0f} s). Start ComfyUI there or pass --server "
                                    f"HOST:PORT.") from None
        except BadAnswer:
            raise ServerUnavailable(f"{self.url} answers, but not as ComfyUI does (/system_stats is not JSON)")

    def alive(self) -> bool:
        try:
            self.check()
            return True
        except ClientError:
            return False

    def upload(self, path: str, deadline: float | None = None) -> str:
        """Upload a local image to the server's input folder; returns the value for LoadImage's `image`.
        Names come from the content, and the upload never overwrites: ComfyUI keeps an identical file as it is
        (so a prompt reading it is never disturbed) and puts a different one under a new name it answers."""
        with open(path, "rb") as f:
            data = f.read()
        digest = hashlib.sha256(data).hexdigest()
        if digest in self._uploaded:
            return self._uploaded[digest]
        ext = os.path.splitext(path)[1].lower() or ".png"
        name = f"{digest[:16]}{ext if ext.isascii() and ext[1:].isalnum() else '.png'}"
        mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
        body, kind = _multipart({"type": "input", "subfolder": UPLOAD_SUBFOLDER, "overwrite": "false"},
                                "image", name, data, mime)
        what = f"the upload of {os.path.basename(path)}"
        try:
            answer = self._call("POST", "/upload/image", what, self._answer(what), body=body,
                                headers={"Content-Type": kind}, deadline=deadline)
        except _Refused as e:
            raise ClientError(f"{self.url} refused {what} (HTTP {e.status}): {e.text(500)}") from None
        reply = self._json(answer, "/upload/image")
        saved, sub = reply.get("name"), reply.get("subfolder", "")
        if not isinstance(saved, str) or not saved or not isinstance(sub, str):
            raise BadAnswer(f"{self.url} answered /upload/image without the saved file's name and subfolder")
        value = f"{sub}/{saved}" if sub else saved
        self._uploaded[digest] = value
        return value

    def submit(self, workflow: dict, client_id: str, deadline: float | None = None) -> str:
        """Queue the prompt; its id is remembered as this client's until `forget` (a stop takes it back)."""
        with self._lock:
            if self.stopping:
                raise Stopped("stopped before the prompt was queued")
            self._submitting += 1
        prompt_id = None
        try:
            body = json.dumps({"prompt": workflow, "client_id": client_id,
                               "extra_data": {"preview_method": "none"}}).encode()
            try:
                answer = self._call("POST", "/prompt", "the prompt", self._answer("the prompt"), body=body,
                                    headers={"Content-Type": "application/json"}, deadline=deadline)
            except _Refused as e:
                if e.status != 400:
                    raise ClientError(f"{self.url} refused the prompt (HTTP {e.status}): {e.text(500)}") from None
                try:
                    reply = json.loads(e.body)
                except (ValueError, RecursionError):
                    reply = None
                if not isinstance(reply, dict):
                    reply = {"error": {"message": e.text(500)}}
                raise self._rejected(reply.get("error") or {}, reply.get("node_errors") or {}, workflow) from None
            reply = self._json(answer, "/prompt")
            prompt_id = reply.get("prompt_id")
            if not isinstance(prompt_id, str) or not 0 < len(prompt_id) <= 200 or printable(prompt_id) != prompt_id:
                raise BadAnswer(f"{self.url} answered /prompt without a prompt id")
        finally:
            with self._lock:
                self._submitting -= 1
                if prompt_id is not None:
                    self._mine.add(prompt_id)
                self._lock.notify_all()
        if reply.get("node_errors"):
            # ComfyUI queues the outputs that validated and drops the others: not what was asked for.
            self.cancel(prompt_id)
            self.forget(prompt_id)
            raise self._rejected({"message": "some outputs failed validation"}, reply["node_errors"], workflow)
        return prompt_id

    def forget(self, prompt_id: str | None) -> None:
        with self._lock:
            self._mine.discard(prompt_id)

    def _rejected(self, error, node_errors, workflow: dict) -> PromptRejected:
        error = error if isinstance(error, dict) else {"message": error}
        lines = describe_node_errors(node_errors, workflow)
        head = printable(error.get("message") or "prompt rejected", 300)
        if error.get("details") and not lines:
            head += f": {printable(error['details'], 300)}"
        text = f"{self.url} rejected the prompt: {head}" + "".join(f"\n  {line}" for line in lines)
        return PromptRejected(text, error, node_errors if isinstance(node_errors, dict) else {})

    def history(self, prompt_id: str, deadline: float | None = None) -> dict | None:
        """The /history entry of one prompt (None while it has none)."""
        reply = self._get_json(f"/history/{quote(prompt_id, safe='')}", "/history", deadline=deadline)
        entry = reply.get(prompt_id)
        if entry is not None and not isinstance(entry, dict):
            raise BadAnswer(f"{self.url} answered /history with an entry that is not an object")
        return entry

    def output_images(self, entry: dict) -> list[dict]:
        """The saved files ("type": "output") of a /history entry, in node order; BadAnswer for another shape."""
        outputs = entry.get("outputs", {})
        if not isinstance(outputs, dict):
            raise BadAnswer(f"{self.url} answered /history with 'outputs' that is not an object")
        images = []
        for node_id, out in sorted(outputs.items(), key=lambda kv: _node_order(kv[0])):
            listed = out.get("images", []) if isinstance(out, dict) else None
            if not isinstance(listed, list):
                raise BadAnswer(f"{self.url} answered /history with outputs of node {printable(node_id, 40)} "
                                f"that are not a list of images")
            for img in listed:
                if not isinstance(img, dict) or img.get("type") != "output":
                    continue
                if not all(isinstance(img.get(k, ""), str) for k in ("filename", "subfolder")) or not img.get(
                        "filename") or len(img["filename"]) + len(img.get("subfolder", "")) > 1000:
                    raise BadAnswer(f"{self.url} answered /history with an output image without a usable name")
                images.append({"filename": img["filename"], "subfolder": img.get("subfolder", ""),
                               "type": "output"})
        return images

    def download(self, image: dict, out, deadline: float | None = None, limit: float | None = None) -> dict:
        """Stream one output file (/view) into the open binary file `out`, at most max_download bytes, within
        `limit` seconds and by `deadline`. Returns its size, sha256 and first bytes."""
        what = f"/view of {printable(image['filename'], 120)}"
        params = urlencode({"filename": image["filename"], "subfolder": image.get("subfolder", ""),
                            "type": image.get("type", "output")})
        digest = hashlib.sha256()
        head = bytearray()

        def consume(response):
            if response.status != 200:
                text = wire.read_capped(response, 1 << 16)
                error = ServerUnavailable if response.status >= 500 else ClientError
                raise error(f"{self.url} answered {what} with HTTP {response.status}: "
                            f"{printable(text[:300].decode('utf-8', 'replace'))}")

            def seen(chunk):
                digest.update(chunk)
                if len(head) < 64:
                    head.extend(chunk[:64 - len(head)])
            try:
                return wire.copy_capped(response, out, self.max_download, seen)
            except wire.TooLarge:
                raise ClientError(f"{self.url} sent {what}: larger than the {self.max_download >> 20} MB this "
                                  f"client saves (--max-download)") from None
        size = self._call("GET", f"/view?{params}", what, consume,
                          limit=limit if limit is not None else 24 * 3600.0, deadline=deadline)
        return {"size": size, "sha256": digest.hexdigest(), "head": bytes(head)}

    def cancel(self, prompt_id: str, interrupt: bool = True) -> None:
        """Best effort: take the prompt off the queue and, when `interrupt`, stop it if it is the one running (a
        targeted interrupt: the server ignores it for another prompt)."""
        for path, body in (("/queue", {"delete": [prompt_id]}), ("/interrupt", {"prompt_id": prompt_id}))[
                :2 if interrupt else 1]:
            try:
                self._call("POST", path, path, lambda r: wire.read_capped(r, 1 << 16),
                           body=json.dumps(body).encode(), headers={"Content-Type": "application/json"},
                           limit=2 * self.connect_timeout, stopping_ok=True)
            except ClientError:
                pass

    def stop(self, wait: float = 5.0) -> tuple[int, int]:
        """Stop using this server: nothing new is queued, calls in flight are aborted, this client's queued
        prompts are deleted and its running one interrupted. Returns (prompts cancelled, prompts interrupted)."""
        with self._lock:
            self.stopping = True
            self._lock.wait_for(lambda: self._submitting == 0, timeout=wait)  # every id the server gave is known
            mine = set(self._mine)
            calls = list(self._calls)
        for call in calls:
            call.expire()
        if not mine:
            return 0, 0
        running = None
        try:
            queue = self._get_json("/queue", "/queue", limit=2 * self.connect_timeout, stopping_ok=True)
            listed = queue.get("queue_running")
            running = {item[1] for item in listed if isinstance(item, list) and len(item) > 1
                       and isinstance(item[1], str)} if isinstance(listed, list) else None
        except ClientError:
            pass  # unknown: a targeted interrupt is harmless for a prompt that is not running
        interrupted = 0
        # queued ones first: interrupting a running prompt starts the next queued one, which the delete then misses
        for prompt_id in sorted(mine, key=lambda p: (running is None or p in running, p)):
            run_now = running is None or prompt_id in running
            self.cancel(prompt_id, interrupt=run_now)
            interrupted += running is not None and prompt_id in running
        with self._lock:
            self._mine.clear()
        return len(mine) - interrupted, interrupted


class _Refused(Exception):
    """A 4xx answer, turned into the right ClientError by the caller."""

    def __init__(self, status: int, body: bytes):
        super().__init__(status)
        self.status, self.body = status, body

    def text(self, limit: int) -> str:
        return printable(self.body[:limit].decode("utf-8", "replace"), limit)


def _node_order(node_id: str):
    return (0, int(node_id)) if str(node_id).isdigit() else (1, str(node_id))

