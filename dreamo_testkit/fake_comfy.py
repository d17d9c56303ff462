"""A fake ComfyUI on loopback for the client's hostile-server tests (tests/test_client_hostile.py).

It answers the few routes dreamo-client uses (/system_stats, /upload/image, /prompt, /ws, /history, /view,
/queue, /interrupt) like ComfyUI does, and can be told to misbehave in one place at a time: trickle bytes,
send a huge body, name a file `.sh`, send garbage websocket frames or close the websocket, answer malformed
JSON, put escape sequences in its messages. It is not a ComfyUI (that is dreamo_testkit/tiny_server.py): it is the
server a client must survive. aiohttp (a ComfyUI requirement) runs it in a thread of the test process.
"""
from __future__ import annotations

import asyncio
import io
import json
import threading
import uuid

from aiohttp import web
from PIL import Image


def png_bytes(size=(8, 6), colour=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


PNG = png_bytes()


class FakeComfy:
    """`overrides` maps a route name (system_stats, upload, prompt, history, view) to `async handler(request,
    fake)`; `ws_script(fake, ws, request, prompt_id)` replaces what the websocket sends once a prompt is queued
    (default: `normal_run`). `filename` is the output name /history lists, `view_body` what /view sends."""

    def __init__(self, overrides=None, ws_script=None, filename="dreamo_client/out_00001_.png", view_body=PNG):
        self.overrides = overrides or {}
        self.ws_script = ws_script
        self.filename, self.view_body = filename, view_body
        self.calls: list[tuple[str, str]] = []
        self.deleted: list[str] = []
        self.interrupted: list[str] = []
        self.prompts: dict[str, str] = {}  # prompt id -> client id
        self._sockets: dict[str, tuple] = {}  # client id -> (ws, request)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.port = None

    # -- lifecycle ----------------------------------------------------------------------------------------
    def __enter__(self) -> "FakeComfy":
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("the fake ComfyUI did not start")
        return self

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(20)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _shutdown(self):
        await self._runner.cleanup()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self):
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=64 << 20)
        app.router.add_get("/system_stats", self._route("system_stats", self.system_stats))
        app.router.add_post("/upload/image", self._route("upload", self.upload))
        app.router.add_post("/prompt", self._route("prompt", self.prompt))
        app.router.add_get("/ws", self.websocket)
        app.router.add_get("/history/{prompt_id}", self._route("history", self.history))
        app.router.add_get("/view", self._route("view", self.view))
        app.router.add_post("/queue", self.queue)
        app.router.add_post("/interrupt", self.interrupt)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def _route(self, name, default):
        async def handler(request):
            self.calls.append((request.method, request.path))
            return await self.overrides.get(name, lambda r, f: default(r))(request, self)
        return handler

    # -- ComfyUI's answers --------------------------------------------------------------------------------
    async def system_stats(self, request):
        return web.json_response({"system": {"comfyui_version": "fake"}, "devices": []})

    async def upload(self, request):
        post = await request.post()
        image = post["image"]
        return web.json_response({"name": image.filename, "subfolder": post.get("subfolder", ""), "type": "input"})

    async def prompt(self, request):
        body = await request.json()
        prompt_id = uuid.uuid4().hex
        self.prompts[prompt_id] = body["client_id"]
        asyncio.get_running_loop().create_task(self._run(prompt_id, body["client_id"]))
        return web.json_response({"prompt_id": prompt_id, "number": len(self.prompts), "node_errors": {}})

    async def history(self, request):
        prompt_id = request.match_info["prompt_id"]
        return web.json_response({prompt_id: self.history_entry(prompt_id)})

    def history_entry(self, prompt_id):
        sub, _, name = self.filename.rpartition("/")
        return {"prompt": [0, prompt_id, {}, {}, ["12"]],
                "outputs": {"12": {"images": [{"filename": name, "subfolder": sub, "type": "output"}]}},
                "status": {"status_str": "success", "completed": True, "messages": []}}

    async def view(self, request):
        return web.Response(body=self.view_body, content_type="image/png")

    async def queue(self, request):
        self.deleted.extend((await request.json()).get("delete", []))
        return web.Response()

    async def interrupt(self, request):
        self.interrupted.append((await request.json()).get("prompt_id"))
        return web.Response()

    # -- the websocket ------------------------------------------------------------------------------------
    async def websocket(self, request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets[request.query.get("clientId", "")] = (ws, request)
        async for _ in ws:
            pass
        return ws

    async def _run(self, prompt_id, client_id):
        await asyncio.sleep(0.05)  # after /prompt's answer, as a server's queue would
        ws, request = self._sockets[client_id]
        script = self.ws_script or FakeComfy.normal_run
        await script(self, ws, request, prompt_id)

    async def normal_run(self, ws, request, prompt_id):
        for kind, data in self.messages(prompt_id):
            await ws.send_str(json.dumps({"type": kind, "data": data}))

    @staticmethod
    def messages(prompt_id):
        return [("execution_start", {"prompt_id": prompt_id, "timestamp": 1000}),
                ("executing", {"node": "12", "prompt_id": prompt_id}),
                ("progress", {"value": 1, "max": 2, "prompt_id": prompt_id, "node": "12"}),
                ("execution_success", {"prompt_id": prompt_id, "timestamp": 1500}),
                ("executing", {"node": None, "prompt_id": prompt_id})]


# -- misbehaviours ----------------------------------------------------------------------------------------
def trickle_body(first: bytes = b"{", interval: float = 1.0, content_type="application/json"):
    """A route that sends its headers, then one byte every `interval` seconds, forever."""
    async def handler(request, fake):
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        await response.write(first)
        while True:
            await asyncio.sleep(interval)
            await response.write(b" ")
    return handler


def trickle_headers(interval: float = 1.0):
    """A route that sends its status line and then one header byte every `interval` seconds, forever."""
    async def handler(request, fake):
        request.transport.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        while request.transport is not None and not request.transport.is_closing():
            await asyncio.sleep(interval)
            if request.transport is not None:
                request.transport.write(b"a")
        raise asyncio.CancelledError  # the client went away: nothing to answer
    return handler


def huge_body(total: int, head: bytes = PNG[:16], announce: bool = False):
    """A route that streams `head` then zeros up to `total` bytes (announced in Content-Length or not)."""
    block = bytes(1 << 16)

    async def handler(request, fake):
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        if announce:
            response.content_length = total
        await response.prepare(request)
        await response.write(head)
        sent = len(head)
        while sent < total:
            piece = block[:min(len(block), total - sent)]
            await response.write(piece)
            sent += len(piece)
        await response.write_eof()
        return response
    return handler


def answer(body, status: int = 200, raw: bool = False):
    """A route that answers `body` (JSON-encoded unless raw bytes)."""
    async def handler(request, fake):
        if request.method == "POST" and request.path == "/prompt":  # still queue it, so the run goes on
            return await _queue_then(request, fake, body, status, raw)
        data = body if raw else json.dumps(body).encode()
        return web.Response(body=data, status=status, content_type="application/json")
    return handler


async def _queue_then(request, fake, body, status, raw):
    await fake.prompt(request)
    data = body if raw else json.dumps(body).encode()
    return web.Response(body=data, status=status, content_type="application/json")


def history_entry(entry):
    """A /history route whose entry for the prompt is `entry` (any JSON value)."""
    async def handler(request, fake):
        return web.json_response({request.match_info["prompt_id"]: entry})
    return handler
