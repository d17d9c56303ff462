"""POST /dreamo/check_prompt: the prompt check DreamOTextEncode runs, asked by the editor while the user types.

The frontend highlights placeholders and marks problems before the prompt is queued; the words come from
here, so the editor and the node's error say the same thing (`dreamo_ops.placeholders.check_prompt`).
Body: {"text": str, "references": {"<slot>": "<task>", ...}, "add_style_instruction": bool}.

The route never holds up the server:
  * the body is read with a cap (`prompt_check.MAX_BODY` bytes, else 413, before anything is decoded) and a
    deadline (`READ_TIMEOUT`, else 408);
  * decoding and checking run in up to `MAX_RUNNING` small worker processes (`dreamo_ops/prompt_check.py`, no
    torch), each given `CHECK_TIMEOUT` seconds before it is replaced; with `MAX_WAITING` more requests reading
    or queued, others get 503. Not threads: pure-Python work in a server thread takes Python's interpreter lock
    from the event loop, and on a busy machine that stalled /system_stats for seconds. Where a process cannot be
    started, one thread does the work instead (logged once).
A body that is not a JSON object of the right shape (nested too deep included) is answered 400 with the reason;
a prompt longer than `placeholders.MAX_PROMPT_CHARS` gets the node's own error, unread.
"""
from __future__ import annotations

import asyncio
import json
import logging
import sys
from concurrent.futures import ThreadPoolExecutor

from ..dreamo_ops import prompt_check
from ..dreamo_ops.placeholders import MAX_PROMPT_CHARS
from .text_encode import NODE_ID

ROUTE = "/dreamo/check_prompt"
MAX_RUNNING = 2
"""Checks running at once (worker processes)."""
MAX_WAITING = 16
"""Requests reading their body or waiting for a worker; more are answered 503 (try again)."""
READ_TIMEOUT = 30.0
"""Seconds to receive the body."""
CHECK_TIMEOUT = 20.0
"""Seconds a worker has for one check (the worst case takes about 0.2 s) before it is stopped and replaced."""
WORKER = prompt_check.__file__
TOO_LARGE = (f"the request body is over {prompt_check.MAX_BODY:,} bytes; the prompt check reads prompts of at most "
             f"{MAX_PROMPT_CHARS:,} characters")


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


class _Worker:
    """One worker process: a request in, an answer out, one at a time."""

    def __init__(self, process):
        self.process = process

    @classmethod
    async def start(cls) -> "_Worker":
        process = await asyncio.create_subprocess_exec(sys.executable, WORKER, NODE_ID, stdin=asyncio.subprocess.PIPE,
                                                       stdout=asyncio.subprocess.PIPE)
        return cls(process)

    async def ask(self, raw: bytes) -> tuple[int, str]:
        self.process.stdin.write(prompt_check.encode_request(raw))
        await self.process.stdin.drain()
        status, size = prompt_check.decode_answer_head(
            await self.process.stdout.readexactly(prompt_check.ANSWER_HEAD))
        return status, (await self.process.stdout.readexactly(size)).decode()

    def stop(self) -> None:
        if self.process.returncode is None:
            try:
                self.process.kill()
            except ProcessLookupError:
                pass


class _Checker:
    """The workers (started on first use), how many requests are admitted, and the thread used instead where
    processes cannot be started."""

    def __init__(self):
        self.admitted = 0
        self.idle: list[_Worker] = []
        self.started = 0
        self.freed: asyncio.Condition | None = None
        self.thread: ThreadPoolExecutor | None = None

    async def _take(self) -> _Worker | None:
        if self.freed is None:
            self.freed = asyncio.Condition()
        async with self.freed:
            while not self.idle and self.started >= MAX_RUNNING:
                await self.freed.wait()
            if self.idle:
                return self.idle.pop()
            self.started += 1
        try:
            return await _Worker.start()
        except (OSError, NotImplementedError) as e:
            await self._release(None)
            if self.thread is None:
                logging.warning("DreamO: the prompt check cannot start a worker process (%s); it runs in a thread",
                                e)
            return None

    async def _release(self, worker: _Worker | None) -> None:
        async with self.freed:
            if worker is None:
                self.started -= 1
            else:
                self.idle.append(worker)
            self.freed.notify()

    async def check(self, raw: bytes) -> tuple[int, str]:
        worker = await self._take()
        if worker is None:
            if self.thread is None:
                self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dreamo_prompt_check")
            return await asyncio.get_running_loop().run_in_executor(self.thread, prompt_check.answer_bytes, raw,
                                                                    NODE_ID)
        try:
            answer = await asyncio.wait_for(worker.ask(raw), CHECK_TIMEOUT)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, OSError, ValueError) as e:
            worker.stop()
            await self._release(None)
            logging.warning("DreamO: a prompt-check worker failed (%s); a new one will start", type(e).__name__)
            return 503, json.dumps({"error": "the prompt check did not finish; try again"})
        await self._release(worker)
        return answer


_CHECKER = _Checker()


async def handle(request):
    """The route's handler (aiohttp)."""
    from aiohttp import web

    def reply(status: int, text: str, **headers):
        return web.Response(text=text, status=status, content_type="application/json", headers=headers or None)

    if request.content_length is not None and request.content_length > prompt_check.MAX_BODY:
        return reply(413, json.dumps({"error": TOO_LARGE}))
    if _CHECKER.admitted >= MAX_RUNNING + MAX_WAITING:  # counted from the first byte read: memory stays bounded
        return reply(503, json.dumps({"error": "too many prompt checks at once; try again"}), **{"Retry-After": "1"})
    _CHECKER.admitted += 1
    try:
        try:
            raw = await asyncio.wait_for(_read_capped(request.content, prompt_check.MAX_BODY), READ_TIMEOUT)
        except _BodyTooLarge:
            return reply(413, json.dumps({"error": TOO_LARGE}))
        except asyncio.TimeoutError:
            return reply(408, json.dumps({"error": f"the body did not arrive within {READ_TIMEOUT:g} s"}))
        status, text = await _CHECKER.check(raw)
    finally:
        _CHECKER.admitted -= 1
    return reply(status, text)


def register_routes() -> bool:
    """Add the route to ComfyUI's server; False (and nothing done) when no server is running (tests, scripts)."""
    # Only a running ComfyUI has imported its `server` module; importing it here would start building one.
    server = getattr(getattr(sys.modules.get("server"), "PromptServer", None), "instance", None)
    if server is None:
        return False
    server.routes.post(ROUTE)(handle)
    return True

