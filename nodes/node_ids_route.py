"""GET /dreamo/node_ids: the node ids the frontend (web/) refers to, by role, from the node classes' NODE_ID.

web/node_ids.js reads it once, before the pack's extensions register, so no JavaScript file names a node: a
renamed node (or one added for a role) changes here only. The answer is a constant built at start-up: the
handler does no work.
"""
from __future__ import annotations

import json
import sys

ROUTE = "/dreamo/node_ids"


def register_node_ids_route(roles: dict) -> bool:
    """Serve {role: node id} of `roles` ({role: node class}); False (and nothing done) when no server is running."""
    server = getattr(getattr(sys.modules.get("server"), "PromptServer", None), "instance", None)
    if server is None:
        return False
    body = json.dumps({role: cls.NODE_ID for role, cls in roles.items()})

    async def handle(request):
        from aiohttp import web

        return web.Response(text=body, content_type="application/json", headers={"Cache-Control": "no-store"})

    server.routes.get(ROUTE)(handle)
    return True
