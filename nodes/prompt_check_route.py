"""POST /dreamo/check_prompt: the prompt check DreamOTextEncode runs, asked by the editor while the user types.

The frontend highlights placeholders and marks problems before the prompt is queued; the words come from
here, so the editor and the node's error say the same thing (`dreamo_ops.placeholders.check_prompt`).
Body: {"text": str, "references": {"<slot>": "<task>", ...}, "add_style_instruction": bool}; a bad body is
answered 400 with the reason, never an exception in the server.
"""
from __future__ import annotations

import logging
import sys

from ..dreamo_ops.placeholders import check_prompt
from ..dreamo_ops.token_layout import MAX_SLOTS
from .text_encode import NODE_ID

ROUTE = "/dreamo/check_prompt"
MAX_TEXT = 100_000


class BadRequest(ValueError):
    pass


def answer(body) -> dict:
    """The check for one request body (already decoded JSON)."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    text = body.get("text", "")
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise BadRequest(f"'text' must be a string of at most {MAX_TEXT} characters")
    raw = body.get("references") or {}
    if not isinstance(raw, dict):
        raise BadRequest("'references' must map slot numbers to tasks")
    references = {}
    for slot, task in raw.items():
        try:
            k = int(slot)
        except (TypeError, ValueError):
            raise BadRequest(f"'{slot}' is not a slot number") from None
        if not 1 <= k <= MAX_SLOTS:
            raise BadRequest(f"slot {k} is not between 1 and {MAX_SLOTS}")
        references[k] = str(task)
    add_style = body.get("add_style_instruction", True)
    return check_prompt(text, references or None, bool(add_style), node=NODE_ID)


def register_routes() -> bool:
    """Add the route to ComfyUI's server; False (and nothing done) when no server is running (tests, scripts)."""
    # Only a running ComfyUI has imported its `server` module; importing it here would start building one.
    server = getattr(getattr(sys.modules.get("server"), "PromptServer", None), "instance", None)
    if server is None:
        return False
    from aiohttp import web

    @server.routes.post(ROUTE)
    async def dreamo_check_prompt(request):
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        try:
            return web.json_response(answer(body))
        except BadRequest as e:
            return web.json_response({"error": str(e)}, status=400)
        except Exception:  # the editor's check must never take the server down
            logging.exception("DreamO: prompt check failed")
            return web.json_response({"error": "the prompt check failed; see the server log"}, status=500)

    return True
