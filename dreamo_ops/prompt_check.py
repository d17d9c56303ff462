"""The editor's prompt check as a request → answer function, and the small process that runs it for the route.

`answer_bytes(raw, node)` turns a POST /dreamo/check_prompt body, as received, into (HTTP status, JSON text):
the node's own verdict and marks (`placeholders.check_prompt`), or 400 with the reason for a body that is not a
JSON object of the right shape (nested too deep included).

The route (nodes/prompt_check_route.py) runs it in a worker process started from this file
(`python prompt_check.py NODE_ID`), not in the server: pure-Python work in a server thread would take Python's
interpreter lock from the event loop and stall every other request on a busy machine. The worker imports only
`placeholders` and `errors` (no torch: about 15 MB), reads length-prefixed bodies on stdin, writes
length-prefixed answers on stdout, caps its own memory, and ends when the server closes its stdin.

Nothing here imports ComfyUI.
"""
from __future__ import annotations

import json
import logging
import struct
import sys

MAX_BODY = 2 * 1024 * 1024
"""Bytes of a request body: room for the longest prompt checked even written with JSON's \\u escapes."""
WORKER_MEMORY = 1 << 30
"""Address space a worker may use (bytes), where the system lets a process cap its own."""
_REQUEST = struct.Struct(">I")  # body length
_ANSWER = struct.Struct(">HI")  # HTTP status, answer length

if __package__:
    from .placeholders import MAX_SLOTS, check_prompt


class BadRequest(ValueError):
    pass


def answer(body, node: str | None) -> dict:
    """The check for one request body (already decoded JSON), in the words of node `node`."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    text = body.get("text", "")
    if not isinstance(text, str):
        raise BadRequest("'text' must be a string")
    raw = body.get("references") or {}
    if not isinstance(raw, dict):
        raise BadRequest("'references' must map slot numbers to tasks")
    if len(raw) > MAX_SLOTS:
        raise BadRequest(f"'references' names {len(raw)} slots; there are {MAX_SLOTS}")
    references = {}
    for slot, task in raw.items():
        try:
            k = int(slot)
        except (TypeError, ValueError):
            raise BadRequest(f"'{slot[:20]}' is not a slot number") from None
        if not 1 <= k <= MAX_SLOTS:
            raise BadRequest(f"slot {slot[:20]} is not between 1 and {MAX_SLOTS}")
        if not isinstance(task, str):
            raise BadRequest(f"the task of slot {k} must be a string")
        references[k] = task[:20]
    add_style = body.get("add_style_instruction", True)
    return check_prompt(text, references or None, bool(add_style), node=node)


def answer_bytes(raw: bytes, node: str | None) -> tuple[int, str]:
    """(HTTP status, JSON text) for a request body as received."""
    try:
        try:
            body = json.loads(raw)
        except RecursionError:
            raise BadRequest("the body is nested too deeply to be a prompt check") from None
        except ValueError:
            raise BadRequest("the body is not JSON (UTF-8)") from None
        return 200, json.dumps(answer(body, node))
    except BadRequest as e:
        return 400, json.dumps({"error": str(e)})
    except Exception:  # the editor's check must never take the server down
        logging.exception("DreamO: prompt check failed")
        return 500, json.dumps({"error": "the prompt check failed; see the server log"})


def encode_request(raw: bytes) -> bytes:
    return _REQUEST.pack(len(raw)) + raw


def decode_answer_head(head: bytes) -> tuple[int, int]:
    """(status, length of the JSON text that follows) from the first ANSWER_HEAD bytes of an answer."""
    return _ANSWER.unpack(head)


ANSWER_HEAD = _ANSWER.size


def serve(inp, out, node: str | None) -> None:
    """The worker's loop: one answer per request until the input ends (the server closed it, or went away)."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))
    except (ImportError, ValueError, OSError):  # not on this system: the check's own bounds still hold
        pass
    while True:
        head = inp.read(_REQUEST.size)
        if len(head) < _REQUEST.size:
            return
        (size,) = _REQUEST.unpack(head)
        if size > MAX_BODY:
            return
        raw = inp.read(size)
        if len(raw) < size:
            return
        status, text = answer_bytes(raw, node)
        data = text.encode()
        out.write(_ANSWER.pack(status, len(data)) + data)
        out.flush()


def _main() -> None:
    """`python prompt_check.py NODE_ID`: load this folder as a package of its own (nothing else of the pack, no
    torch) and serve."""
    import importlib
    import importlib.util
    import os

    folder = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or ".") == folder:
        sys.path.pop(0)  # the folder's modules are not top-level modules
    name = "dreamo_prompt_check_ops"
    spec = importlib.util.spec_from_file_location(name, os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    module = importlib.import_module(f"{name}.prompt_check")
    module.serve(sys.stdin.buffer, sys.stdout.buffer, sys.argv[1] if len(sys.argv) > 1 else None)


if __name__ == "__main__":
    _main()
