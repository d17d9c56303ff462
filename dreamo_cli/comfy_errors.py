"""What goes wrong when this client talks to a ComfyUI server: the exceptions, and the text a user reads.

Errors come in two kinds: the server's own verdict on the prompt (`PromptRejected`: validation; `NodeFailed`: a
node raised while running), which another try would repeat, and `ServerUnavailable`: the server cannot be
reached, went away, timed out or answered something that is not ComfyUI's answer, worth retrying elsewhere.
Every text a server sends passes `wire.printable` before it reaches a message.
"""
from __future__ import annotations

from . import wire
from .wire import printable


class ClientError(RuntimeError):
    """Something the user must see; `transient` errors are worth trying again on another server."""
    transient = False


class ServerUnavailable(ClientError):
    transient = True


class BadAnswer(ServerUnavailable):
    """The server answered, but not as ComfyUI does (not JSON, the wrong shape, a garbled websocket)."""


class TimedOut(ServerUnavailable):
    """A call (or the job) ran past its time."""


class Stopped(ClientError):
    """This client is stopping (Ctrl-C / SIGTERM): nothing new is queued and calls in flight are aborted."""


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


def describe_node_errors(node_errors, workflow: dict) -> list[str]:
    """ComfyUI's node_errors as lines `node 5 (DreamORefEncode 'ref 1 encode') input 'x': message: details`;
    whatever shape the server sent, as printable text."""
    from .api_workflow import node_label

    lines = []
    if not isinstance(node_errors, dict):
        return [f"node errors in an unknown form: {printable(node_errors)}"]
    for node_id, entry in sorted(node_errors.items(), key=lambda kv: str(kv[0])):
        errors = entry.get("errors") if isinstance(entry, dict) else None
        for err in errors if isinstance(errors, list) else [{"message": "failed validation"}]:
            err = err if isinstance(err, dict) else {"message": err}
            extra = err.get("extra_info") if isinstance(err.get("extra_info"), dict) else {}
            name = extra.get("input_name")
            label = node_label(workflow, node_id) if node_id in workflow else f"node {printable(node_id, 40)}"
            where = label + (f" input '{printable(name, 80)}'" if name else "")
            detail = printable(err.get("details") or "", 300)
            lines.append(f"{where}: {printable(err.get('message', ''), 300)}" + (f": {detail}" if detail else ""))
    return lines


def short_reason(e: BaseException, watch: wire.Deadline | None = None) -> str:
    """Why a connection failed, in a few words for a message (`timed out` once `watch` expired)."""
    if watch is not None and watch.expired:
        return "timed out"
    text = str(e)
    for known in ("Connection refused", "timed out", "Name or service not known", "Connection reset",
                  "Remote end closed", "Connection aborted"):
        if known.lower() in text.lower():
            return known.lower()
    return type(e).__name__ + (f": {printable(text, 200)}" if text else "")
