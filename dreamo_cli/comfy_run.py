"""One prompt on a ComfyUI server, start to end: queue it, follow it on the websocket, read its outputs.

`PromptRunner` is the part of `ComfyServer` (comfy_server.py, which builds on it) that follows a prompt: it queues
through the server's HTTP calls (submit, history, cancel, forget, output_images) and reads ComfyUI's websocket
messages through `wire`, each bounded in size, within the job's time; the server may be hostile.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

import websocket

from . import wire
from .comfy_errors import BadAnswer, NodeFailed, ServerUnavailable, Stopped, TimedOut, short_reason
from .wire import printable

MAX_MESSAGE = 32 << 20  # bytes of one websocket message (previews are asked off)
MAX_GARBAGE = 50  # websocket messages that are not ComfyUI's, per prompt, before the server counts as broken


@dataclass
class Run:
    """What one queued prompt gave: output images (server refs) and what happened on the way."""
    prompt_id: str
    images: list[dict]
    events: dict[str, int] = field(default_factory=dict)  # websocket message type -> count
    timings: dict[str, float] = field(default_factory=dict)  # seconds


class PromptRunner:
    """How `ComfyServer` runs one prompt: `run` and the websocket it follows (a base of ComfyServer, which holds
    the state and the HTTP calls these methods use)."""

    def run(self, workflow: dict, on_event=None, timeout: float = 3600.0, poll: float = 5.0,
            deadline: float | None = None) -> Run:
        """Queue `workflow` and wait for it, within `timeout` seconds and by `deadline` (time.monotonic()).
        `on_event(type, data)` sees every websocket message of this prompt (executing: the node being run;
        progress: step value of max). Raises PromptRejected, NodeFailed, ServerUnavailable or Stopped."""
        at = time.monotonic() + timeout if deadline is None else min(deadline, time.monotonic() + timeout)
        client_id = uuid.uuid4().hex
        t0 = time.perf_counter()
        watch = wire.Deadline(at)
        events: dict[str, int] = {}
        timings: dict[str, float] = {}
        prompt_id = None
        with self._lock:
            self._calls.add(watch)
        try:
            with watch:
                ws = self._open_websocket(client_id, watch)
                try:
                    ws.settimeout(poll)
                    prompt_id = self.submit(workflow, client_id, at)
                    timings["queue"] = time.perf_counter() - t0
                    self._follow(ws, watch, prompt_id, workflow, events, timings, on_event, t0)
                except ServerUnavailable:
                    if prompt_id is not None and not self.stopping:
                        self.cancel(prompt_id)
                    raise
                finally:
                    try:
                        ws.close(timeout=0.5)
                    except (OSError, websocket.WebSocketException, wire.TooLarge):
                        pass
        finally:
            self.forget(prompt_id)
            with self._lock:
                self._calls.discard(watch)
        t1 = time.perf_counter()
        entry = self.history(prompt_id, at) or {}
        timings["history"] = time.perf_counter() - t1
        images = self.output_images(entry)
        timings["done"] = time.perf_counter() - t0
        return Run(prompt_id, images, events, timings)

    def _open_websocket(self, client_id: str, watch: wire.Deadline):
        if self.stopping:
            raise Stopped("stopped before the prompt was queued")
        connect_by = wire.Deadline(min(watch.at, time.monotonic() + self.answer_timeout))
        try:
            with connect_by:
                ws = wire.open_websocket(self.endpoint, f"/ws?clientId={client_id}", self.connect_timeout,
                                         self.read_timeout, connect_by, MAX_MESSAGE)
        except wire.Unreachable as e:
            raise ServerUnavailable(f"no ComfyUI server answers at {self.url} ({short_reason(e, connect_by)}). Start "
                                    f"ComfyUI there or pass --server HOST:PORT.") from e
        except (OSError, websocket.WebSocketException, wire.TooLarge) as e:
            raise ServerUnavailable(f"no ComfyUI websocket at {self.ws_url} ({short_reason(e, connect_by)})") from e
        watch.watch(ws.sock)
        return ws

    def _receive(self, ws, watch: wire.Deadline):
        """The next websocket message: str (text) or bytes, or None after `poll` seconds of quiet."""
        wire.start_message(ws)
        try:
            raw = ws.recv()
        except websocket.WebSocketTimeoutException:
            return None
        except wire.TooLarge:
            raise BadAnswer(f"{self.url} sent a websocket message larger than {MAX_MESSAGE >> 20} MB") from None
        except (OSError, websocket.WebSocketException) as e:
            if self.stopping:
                raise Stopped("stopped while the prompt ran") from None
            if watch.expired:
                raise TimedOut(f"{self.url} did not finish the prompt within the job's --timeout") from None
            raise ServerUnavailable(f"lost {self.url} while it ran the prompt ({short_reason(e, watch)})") from e
        if raw == "" and not ws.connected:  # a close frame: the server closed the websocket
            raise ServerUnavailable(f"{self.url} closed the websocket while it ran the prompt")
        return raw

    def _follow(self, ws, watch, prompt_id, workflow, events, timings, on_event, t0):
        server_start = None
        garbage = 0
        while True:
            raw = self._receive(ws, watch)
            if raw is None:  # quiet for a while: a long node, or a lost message. Ask the server directly.
                if self._finished_quietly(prompt_id, workflow, watch.at):
                    return
                continue
            if isinstance(raw, bytes):
                continue  # binary preview frames (previews are asked off, older servers may still send)
            message = _message(raw)
            if message is None:
                garbage += 1
                if garbage > MAX_GARBAGE:
                    raise BadAnswer(f"{self.url} sent {garbage} websocket messages that are not ComfyUI's "
                                    f"(e.g. {printable(raw, 80)})")
                continue
            kind, data = message
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
                if self.stopping:
                    raise Stopped("stopped while the prompt ran")
                raise ServerUnavailable(f"{self.url} interrupted the prompt (someone pressed Cancel, or the server "
                                        f"is stopping)")
            elif kind == "execution_success":  # sent before the server files the outputs in /history
                timings["_success"] = time.perf_counter()
                start = timings.pop("_start", None)
                stamp = data.get("timestamp")
                if _number(server_start) and _number(stamp):
                    timings["execute"] = (stamp - server_start) / 1000.0
                elif start is not None:
                    timings["execute"] = time.perf_counter() - start
            elif kind == "executing" and data.get("node") is None:  # outputs are in /history now
                if "_success" in timings:  # the server's own bookkeeping after the last node
                    timings["finish"] = time.perf_counter() - timings.pop("_success")
                start = timings.pop("_start", None)
                if "execute" not in timings and start is not None:
                    timings["execute"] = time.perf_counter() - start
                return

    def _finished_quietly(self, prompt_id: str, workflow: dict, deadline: float) -> bool:
        entry = self.history(prompt_id, deadline)
        status = entry.get("status") if entry else None
        if not isinstance(status, dict) or status.get("completed") is None:
            return False
        if status.get("status_str") == "error":
            messages = status.get("messages") if isinstance(status.get("messages"), list) else []
            data = next((m[1] for m in messages if isinstance(m, list) and len(m) > 1 and m[0] == "execution_error"
                         and isinstance(m[1], dict)), {})
            raise NodeFailed(self._failure_text(data, workflow), data)
        return True

    def _failure_text(self, data: dict, workflow: dict) -> str:
        from .api_workflow import node_label

        node_id = data.get("node_id", "?")
        label = (node_label(workflow, node_id) if isinstance(node_id, str) and node_id in workflow
                 else f"node {printable(node_id, 40)} ({printable(data.get('node_type'), 80)})")
        kind = printable(str(data.get("exception_type") or "error").rsplit(".", 1)[-1], 80)
        message = printable(str(data.get("exception_message") or "").strip(), 2000, lines=True)
        return f"{label} failed on {self.url}: {kind}: {message}"


def _message(raw: str):
    """(type, data) of a ComfyUI websocket message, or None when it is not one."""
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        return None
    data = msg.get("data")
    if data is None:
        data = {}
    return (msg["type"], data) if isinstance(data, dict) else None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)

