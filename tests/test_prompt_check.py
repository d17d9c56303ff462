"""The prompt check the editor asks for (dreamo_ops.placeholders.check_prompt and POST /dreamo/check_prompt):
the same verdict and words as DreamOTextEncode's own check, with the spans to mark."""
import pytest

from comfyui_dreamo.dreamo_ops.errors import DreamOError
from comfyui_dreamo.dreamo_ops.placeholders import build_prompt, check_prompt


def node_error(text, references=None, add_style=True):
    try:
        build_prompt(text, references, add_style)
    except DreamOError as e:
        return str(e)
    return None


@pytest.mark.parametrize("text, references", [
    ("a bottle [ref#1] on a table", {1: "ip"}),
    ("a bottle [ref#1] next to [ref#3]", {1: "ip"}),
    ("a bottle [ref#1] next to [ref#3] and [ref#2]", {1: "ip", 4: "ip"}),
    ("a [REF#1] and [ref 2] and [ref#10]", {1: "ip", 2: "ip"}),
    ("a [REF#1] and [ref#3]", {1: "ip"}),  # two kinds of problem: one message names both
    ("[ref#2] without references is not checked", None),
    ("a [ref#1]", {}),
    ("", {1: "style"}),
])
def test_error_is_the_nodes_own_message(text, references):
    assert check_prompt(text, references)["error"] == node_error(text, references or None)


def test_marks_are_spans_of_the_prompt_as_written():
    text = "a [REF#1], [ref#1] with [ref#2] in ［ref#3］ [res]"
    answer = check_prompt(text, {1: "ip"})
    got = [(m["kind"], text[m["start"]:m["end"]]) for m in answer["marks"]]
    assert got == [("near_miss", "[REF#1]"), ("placeholder", "[ref#1]"), ("empty_slot", "[ref#2]"),
                   ("near_miss", "［ref#3］"), ("placeholder", "[res]")]
    near = answer["marks"][0]
    assert "'[REF#1]' at character 3 (did you mean [ref#1]?)" in near["message"]
    assert "'[REF#1]' at character 3 (did you mean [ref#1]?)" in answer["error"]  # the same words
    empty = answer["marks"][2]
    assert empty["slot"] == 2 and "there is no reference in ref_2" in empty["message"]


def test_empty_slots_are_only_marked_when_a_reference_is_connected():
    assert [m["kind"] for m in check_prompt("[ref#2] [res]", None)["marks"]] == ["placeholder", "placeholder"]
    marks = check_prompt("[ref#2] [res]", {1: "ip"})["marks"]
    assert [m["kind"] for m in marks] == ["empty_slot", "placeholder"]
    assert check_prompt("[ref#2]", {1: "ip"})["error"] == node_error("[ref#2]", {1: "ip"})


def test_positions_count_characters_as_python_does():
    text = "emoji \U0001F600 then [REF#1]"
    (mark,) = check_prompt(text, None)["marks"]
    assert text[mark["start"]:mark["end"]] == "[REF#1]"


def test_notes_of_an_accepted_prompt_are_returned():
    answer = check_prompt("a vase [ref#1]", {1: "ip", 2: "style"})
    assert answer["error"] is None
    assert any("generate a same style image." in n for n in answer["notes"])
    assert any("ref_2 is connected but not named" in n for n in answer["notes"])
    assert check_prompt("a vase [ref#1]", {1: "ip", 2: "style"}, add_style_instruction=False)["notes"] != \
        answer["notes"]


@pytest.mark.parametrize("body, problem", [
    ([1, 2], "JSON object"),
    ({"text": 3}, "'text' must be a string"),
    ({"text": "a", "references": [1]}, "'references' must map"),
    ({"text": "a", "references": {"x": "ip"}}, "'x' is not a slot number"),
    ({"text": "a", "references": {"10": "ip"}}, "slot 10 is not between 1 and 9"),
])
def test_route_refuses_bad_bodies_with_the_reason(body, problem):
    from comfyui_dreamo.dreamo_ops.prompt_check import BadRequest, answer

    with pytest.raises(BadRequest, match=problem):
        answer(body, "DreamOTextEncode")


@pytest.mark.host
def test_route_answers_as_the_node_checks():
    from comfyui_dreamo.dreamo_ops.prompt_check import answer
    from comfyui_dreamo.nodes.prompt_check_route import register_routes
    from comfyui_dreamo.nodes.text_encode import NODE_ID

    got = answer({"text": "a [ref#1] and [ref#3]", "references": {"1": "ip"}, "add_style_instruction": True},
                 NODE_ID)
    assert got == check_prompt("a [ref#1] and [ref#3]", {1: "ip"}, node=NODE_ID)
    assert got["error"].startswith("DreamOTextEncode (input 'text'): the prompt names [ref#3]")
    assert register_routes() is False  # no ComfyUI server in this process: nothing is registered


@pytest.mark.parametrize("raw, status, words", [
    (b"[" * 100_000 + b"]" * 100_000, 400, "the body is nested too deeply"),  # was HTTP 500 (RecursionError)
    (b'{"text": "\xff"}', 400, "not JSON (UTF-8)"),
    (b"{oops", 400, "not JSON"),
    (b'{"text": "a", "references": {"1": {"x": 1}}}', 400, "the task of slot 1 must be a string"),
    (b'{"text": "a", "references": {"' + b"1" * 10_000 + b'": "ip"}}', 400, "'11111111111111111111' is not a slot"),
    (b'{"text": "a", "references": {"' + b"1" * 4_000 + b'": "ip"}}', 400, "slot 11111111111111111111 is not between"),
    (b'{"text": "a [REF#1]"}', 200, "did you mean [ref#1]?"),
], ids=["nested", "utf8", "not-json", "task", "long-slot", "large-slot", "ok"])
def test_route_answers_raw_bodies_with_a_status_and_the_reason(raw, status, words):
    import json

    from comfyui_dreamo.dreamo_ops.prompt_check import answer_bytes

    got_status, text = answer_bytes(raw, "DreamOTextEncode")
    assert got_status == status and words in text
    assert len(text) < 1_000 and isinstance(json.loads(text), dict)


def test_the_worker_process_answers_as_the_function_without_torch():
    """The route's worker: `python dreamo_ops/prompt_check.py NODE` answers length-prefixed bodies on its pipes
    exactly as answer_bytes does, imports no torch, and ends when its input is closed."""
    import subprocess
    import sys

    from comfyui_dreamo.dreamo_ops import prompt_check

    bodies = [b'{"text": "a [REF#1] and [ref#2]", "references": {"1": "ip"}}', b"[" * 100_000,
              ("ref#1 " * 16_666).join([b'{"text": "'.decode(), b'"}'.decode()]).encode()]
    code = ("import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__'); "
            "assert 'torch' not in sys.modules, 'the worker imported torch'")
    worker = subprocess.run([sys.executable, "-c", code, prompt_check.__file__, "DreamOTextEncode"],
                            input=b"".join(prompt_check.encode_request(b) for b in bodies), capture_output=True,
                            timeout=120)
    assert worker.returncode == 0, worker.stderr.decode()[-2000:]
    out = worker.stdout
    for body in bodies:
        status, size = prompt_check.decode_answer_head(out[:prompt_check.ANSWER_HEAD])
        text = out[prompt_check.ANSWER_HEAD:prompt_check.ANSWER_HEAD + size].decode()
        out = out[prompt_check.ANSWER_HEAD + size:]
        assert (status, text) == prompt_check.answer_bytes(body, "DreamOTextEncode")
    assert out == b""


def test_placeholders_agree_with_the_token_layout():
    from comfyui_dreamo.dreamo_ops import condition_embedding, placeholders, token_layout

    assert placeholders.MAX_SLOTS == token_layout.MAX_SLOTS == 9
    assert condition_embedding.PLACEHOLDERS is placeholders.PLACEHOLDERS


@pytest.mark.host
def test_route_limits_in_process(monkeypatch):
    """The route's own limits on an aiohttp server in this process: a body that does not arrive in time (408), more
    requests than admitted (503), a worker that does not answer in time is replaced (503, then answers again)."""
    import asyncio
    import socket

    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from comfyui_dreamo.nodes import prompt_check_route as route

    monkeypatch.setattr(route, "READ_TIMEOUT", 1.0)
    monkeypatch.setattr(route, "MAX_RUNNING", 1)
    monkeypatch.setattr(route, "MAX_WAITING", 0)
    monkeypatch.setattr(route, "_CHECKER", route._Checker())

    async def scenario():
        app = web.Application()
        app.router.add_post(route.ROUTE, route.handle)
        server = TestServer(app)
        await server.start_server()
        loop = asyncio.get_running_loop()

        def post(body: bytes, declared: int | None = None) -> tuple[int, bytes]:
            with socket.create_connection((server.host, server.port), timeout=30) as s:
                s.sendall(f"POST {route.ROUTE} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {declared or len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
                data = b""
                while chunk := s.recv(65536):  # until the whole answer is in (the server may linger)
                    data += chunk
                    head, _, payload = data.partition(b"\r\n\r\n")
                    length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")]
                    if length and len(payload) >= length[0]:
                        break
            head, _, payload = data.partition(b"\r\n\r\n")
            return int(head.split()[1]), payload

        try:
            slow = loop.run_in_executor(None, post, b'{"text": "a', 100)  # never sends the rest
            await asyncio.sleep(0.3)
            busy = await loop.run_in_executor(None, post, b'{"text": "a"}')
            assert busy[0] == 503 and b"too many prompt checks at once" in busy[1]
            status, payload = await slow
            assert status == 408 and b"did not arrive within 1 s" in payload
            monkeypatch.setattr(route, "CHECK_TIMEOUT", 1e-4)
            status, payload = await loop.run_in_executor(None, post, b'{"text": "a [REF#1]"}')
            assert status == 503 and b"did not finish" in payload
            monkeypatch.setattr(route, "CHECK_TIMEOUT", 60.0)
            status, payload = await loop.run_in_executor(None, post, b'{"text": "a [REF#1]"}')
            assert status == 200 and b"did you mean [ref#1]?" in payload
        finally:
            for worker in route._CHECKER.idle:
                worker.stop()
                await worker.process.wait()
            await server.close()

    asyncio.run(scenario())
