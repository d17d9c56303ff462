"""POST /dreamo/check_prompt: the prompt check DreamOTextEncode runs, asked by the editor while the user types.

The frontend highlights placeholders and marks problems before the prompt is queued; the words come from
here, so the editor and the node's error say the same thing (`dreamo_ops.placeholders.check_prompt`).
Body: {"text": str, "references": {"<slot>": "<task>", ...}, "add_style_instruction": bool}.

The route never holds up the server: the body is read with a cap (`MAX_BODY` bytes, else 413, before anything
is decoded; `READ_TIMEOUT` seconds, else 408), and decoding and checking run on a small thread pool
(`MAX_RUNNING` checks at once; with `MAX_WAITING` more reading or queued, others get 503), never in the
event loop. A body that is not a JSON object of the right shape (nested too deep included) is answered 400
with the reason; a prompt longer than `placeholders.MAX_PROMPT_CHARS` gets the node's own error, unread.
"""
from __future__ import annotations

import asyncio
import json
import logging
import sys
from concurrent.futures import ThreadPoolExecutor

from ..dreamo_ops.placeholders import MAX_PROMPT_CHARS, check_prompt
from ..dreamo_ops.token_layout import MAX_SLOTS
from .text_encode import NODE_ID

ROUTE = "/dreamo/check_prompt"
MAX_BODY = 2 * 1024 * 1024
"""Bytes of a request body: room for a MAX_PROMPT_CHARS prompt even written with JSON's \\u escapes."""
MAX_RUNNING = 2
"""Checks running at once (threads), so parallel requests cannot take every core from the server."""
MAX_WAITING = 16
"""Requests waiting for a thread; more are answered 503 (try again)."""
READ_TIMEOUT = 30.0
"""Seconds to receive the body."""


class BadRequest(ValueError):
    pass


def answer(body) -> dict:
    """The check for one request body (already decoded JSON)."""
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
    return check_prompt(text, references or None, bool(add_style), node=NODE_ID)


def answer_bytes(raw: bytes) -> tuple[int, str]:
    """(HTTP status, JSON text) for a request body as received: what the route runs on its thread."""
    try:
        try:
            body = json.loads(raw)
        except RecursionError:
            raise BadRequest("the body is nested too deeply to be a prompt check") from None
        except ValueError:
            raise BadRequest("the body is not JSON (UTF-8)") from None
        return 200, json.dumps(answer(body))
    except BadRequest as e:
        return 400, json.dumps({"error": str(e)})
    except Exception:  # the editor's check must never take the server down
        logging.exception("DreamO: prompt check failed")
        return 500, json.dumps({"error": "the prompt check failed; see the server log"})


class _BodyTooLarge(Exception):
    pass


async def _read_capped(content, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class _Pool:
    """The checks' threads (made on first use) and how many requests hold or wait for one."""

    def __init__(self):
        self.executor = None
        self.admitted = 0

    def get(self) -> ThreadPoolExecutor:
        if self.executor is None:
            self.executor = ThreadPoolExecutor(max_workers=MAX_RUNNING, thread_name_prefix="dreamo_prompt_check")
        return self.executor


_POOL = _Pool()
_TOO_LARGE = (f"the request body is over {MAX_BODY:,} bytes; the prompt check reads prompts of at most "
              f"{MAX_PROMPT_CHARS:,} characters")


async def handle(request):
    """The route's handler (aiohttp)."""
    from aiohttp import web

    def reply(status: int, text: str, **headers):
        return web.Response(text=text, status=status, content_type="application/json", headers=headers or None)

    if request.content_length is not None and request.content_length > MAX_BODY:
        return reply(413, json.dumps({"error": _TOO_LARGE}))
    if _POOL.admitted >= MAX_RUNNING + MAX_WAITING:  # counted from the first byte read: memory stays bounded
        return reply(503, json.dumps({"error": "too many prompt checks at once; try again"}), **{"Retry-After": "1"})
    _POOL.admitted += 1
    try:
        try:
            raw = await asyncio.wait_for(_read_capped(request.content, MAX_BODY), READ_TIMEOUT)
        except _BodyTooLarge:
            return reply(413, json.dumps({"error": _TOO_LARGE}))
        except asyncio.TimeoutError:
            return reply(408, json.dumps({"error": f"the body did not arrive within {READ_TIMEOUT:g} s"}))
        status, text = await asyncio.get_running_loop().run_in_executor(_POOL.get(), answer_bytes, raw)
    finally:
        _POOL.admitted -= 1
    return reply(status, text)


def register_routes() -> bool:
    """Add the route to ComfyUI's server; False (and nothing done) when no server is running (tests, scripts)."""
    # Only a running ComfyUI has imported its `server` module; importing it here would start building one.
    server = getattr(getattr(sys.modules.get("server"), "PromptServer", None), "instance", None)
    if server is None:
        return False
    server.routes.post(ROUTE)(handle)
    return True
