"""dreamo-client against a broken or hostile server (dreamo_testkit/fake_comfy.py on loopback): trickled answers end at
the job's --timeout, downloads are streamed to disk under a size cap, the saved extension comes from the
content, job names never collide, garbage and closed websockets are survived or retried elsewhere, malformed
answers name the server, and escape sequences never reach the terminal. Every run is bounded in wall time."""
import asyncio
import io
import json
import os
import subprocess
import sys
import threading

import pytest
from PIL import Image

pytest.importorskip("aiohttp", reason="the fake server needs aiohttp (a ComfyUI requirement)")

from dreamo_testkit import fake_comfy  # noqa: E402  tests/
from dreamo_testkit.fake_comfy import (PNG, FakeComfy, answer, history_entry, huge_body, trickle_body,
                                       trickle_headers)  # noqa: E402

from comfyui_dreamo.dreamo_cli.api_workflow import Job  # noqa: E402
from comfyui_dreamo.dreamo_cli.batch import run_jobs  # noqa: E402

from dreamo_testkit import REPO, kit_workflow

TINY = kit_workflow("dreamo_client_tiny_api.json")
BOUND = 60  # seconds: a client that hangs fails its test here instead of hanging the suite


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "ref.png"
    path.write_bytes(fake_comfy.png_bytes((16, 16), (10, 200, 10)))
    return str(path)


def client(server, out, *extra, ref=None, python_prefix=None):
    """`dreamo-client` for one job named j on `server`, in a subprocess bounded by BOUND seconds."""
    args = ["--server", server.url, "--workflow", TINY, "--name", "j", "--quiet", "--retries", "0",
            "--out", str(out), *extra] + (["--ref", f"1={ref}"] if ref else [])
    code = python_prefix or "import sys; from dreamo_cli.client import main; sys.exit(main(sys.argv[1:]))"
    try:
        return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, timeout=BOUND)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the client was still running after {BOUND} s")


def text(r) -> str:
    return r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")


def no_crash(r):
    shown = text(r)
    for bad in ("Traceback", "AttributeError", "KeyError", "TypeError", "JSONDecodeError", "RecursionError"):
        assert bad not in shown, shown


def bounded(fn, seconds=BOUND):
    """fn() in a thread; fails the test if it has not returned within `seconds`."""
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", fn()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    return result["value"]


# -- time ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("route, handler, what", [
    ("history", trickle_body(), "/history"),
    ("history", trickle_headers(), "/history"),
    ("view", trickle_body(PNG[:8], content_type="image/png"), "/view"),
    ("upload", trickle_body(), "the upload"),
    ("prompt", trickle_headers(), "the prompt"),
])
def test_a_trickling_answer_ends_at_the_jobs_timeout(tmp_path, picture, route, handler, what):
    """One byte every second never ends a read timeout; the job's --timeout ends the call."""
    with FakeComfy(overrides={route: handler}) as server:
        r = client(server, tmp_path / "out", "--timeout", "3", ref=picture)
    assert r.returncode == 1, text(r)
    assert f"{server.url} did not answer {what}" in text(r) and "--timeout" in text(r), text(r)
    no_crash(r)
    assert not os.path.exists(tmp_path / "out" / "j.json")


def test_a_trickled_websocket_frame_ends_at_the_jobs_timeout(tmp_path):
    async def script(fake, ws, request, prompt_id):
        request.transport.write(b"\x81\x7e")  # a text frame of 2-byte length: the length never comes in full
        while True:
            await asyncio.sleep(1.0)
            request.transport.write(b"\x00")
            await asyncio.sleep(1.0)
    with FakeComfy(ws_script=script) as server:
        r = client(server, tmp_path / "out", "--timeout", "3")
    assert r.returncode == 1, text(r)
    assert f"{server.url} did not finish the prompt within the job's --timeout" in text(r), text(r)
    no_crash(r)


# -- size ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("announce", [False, True], ids=["streamed", "announced"])
def test_a_huge_download_stops_at_the_cap_and_leaves_nothing(tmp_path, announce):
    with FakeComfy(overrides={"view": huge_body(5 << 30 if announce else 64 << 20, announce=announce)}) as server:
        r = client(server, tmp_path / "out", "--max-download", "1")
    assert r.returncode == 1, text(r)
    assert f"{server.url} sent /view of out_00001_.png: larger than the 1 MB this client saves" in text(r)
    no_crash(r)
    assert os.listdir(tmp_path / "out") == []  # no output, no manifest, no temporary file


def test_a_download_is_streamed_to_disk_not_held_in_memory(tmp_path):
    """A 192 MB output reaches the disk whole while the client's peak memory stays far below its size."""
    if not os.path.exists("/proc/self/status"):
        pytest.skip("reads the client's peak memory (VmHWM) from /proc, which this system lacks")
    size = 192 << 20
    # VmHWM: the process's own peak (ru_maxrss would also count the test process it was forked from)
    peak = ("import sys; from dreamo_cli.client import main; rc = main(sys.argv[1:]); "
            "print('MAXRSS_KB', [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]); "
            "sys.exit(rc)")
    with FakeComfy(overrides={"view": huge_body(size)}) as server:
        r = client(server, tmp_path / "out", "--max-download", "256", python_prefix=peak)
    assert r.returncode == 0, text(r)
    assert os.path.getsize(tmp_path / "out" / "j_01.png") == size
    rss_mb = int(r.stdout.decode().split("MAXRSS_KB")[1].split()[0]) / 1024
    assert rss_mb < 120, f"the client peaked at {rss_mb:.0f} MB for a {size >> 20} MB download"


def test_a_huge_websocket_message_is_refused(tmp_path):
    async def script(fake, ws, request, prompt_id):
        await ws.send_bytes(bytes(40 << 20))
        await FakeComfy.normal_run(fake, ws, request, prompt_id)
    with FakeComfy(ws_script=script) as server:
        r = client(server, tmp_path / "out")
    assert r.returncode == 1 and f"{server.url} sent a websocket message larger than 32 MB" in text(r), text(r)
    no_crash(r)


# -- names --------------------------------------------------------------------------------------------------
JPEG = io.BytesIO()
Image.new("RGB", (4, 4)).save(JPEG, "JPEG")
WEBP = io.BytesIO()
Image.new("RGB", (4, 4)).save(WEBP, "WEBP")


@pytest.mark.parametrize("filename, body, saved", [
    ("dreamo_client/x_00001_.sh", PNG, "j_01.png"),
    ("dreamo_client/x_00001_.json", WEBP.getvalue(), "j_01.webp"),
    ("x", JPEG.getvalue(), "j_01.jpg"),
], ids=["png-named-sh", "webp-named-json", "jpeg-unnamed"])
def test_the_saved_extension_comes_from_the_content(tmp_path, filename, body, saved):
    with FakeComfy(filename=filename, view_body=body) as server:
        r = client(server, tmp_path / "out")
    assert r.returncode == 0, text(r)
    assert sorted(os.listdir(tmp_path / "out")) == sorted(["j.json", saved])
    assert (tmp_path / "out" / saved).read_bytes() == body


def test_a_file_that_is_no_picture_or_video_is_refused(tmp_path):
    with FakeComfy(filename="dreamo_client/run_00001_.sh", view_body=b"#!/bin/sh\necho owned\n") as server:
        r = client(server, tmp_path / "out")
    assert r.returncode == 1, text(r)
    assert f"{server.url}'s output run_00001_.sh is not a picture or video this client saves" in text(r)
    assert os.listdir(tmp_path / "out") == []
    no_crash(r)


def test_job_a_and_job_a_01_never_share_a_file(tmp_path):
    """The server names its outputs `.json`: job a's picture and job a_01's manifest must still be two files,
    and a re-run finds both jobs done."""
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"id": "a", "seed": 1}\n{"id": "a_01", "seed": 2}\n')
    out = tmp_path / "out"
    with FakeComfy(filename="dreamo_client/x_00001_.json") as server:
        args = ["--jobs", str(jobs), "--server", server.url, "--workflow", TINY, "--quiet", "--out", str(out)]
        run = lambda: subprocess.run([sys.executable, "-m", "dreamo_cli.client", *args], cwd=REPO,  # noqa: E731
                                     capture_output=True, timeout=BOUND)
        first, again = run(), run()
        queued = len(server.prompts)
    assert first.returncode == 0 and again.returncode == 0, text(first) + text(again)
    assert sorted(os.listdir(out)) == ["a.json", "a_01.json", "a_01.png", "a_01_01.png"]
    for job in ("a", "a_01"):
        manifest = json.loads((out / f"{job}.json").read_text())
        assert manifest["job"] == job
        for name in manifest["files"]:
            assert (out / name).read_bytes() == PNG
    assert "0 done, 2 already there" in again.stdout.decode() and queued == 2


def test_a_manifest_the_client_did_not_write_is_not_trusted(tmp_path):
    """A JSON file in the job's manifest place, naming a file that exists and with the job's own fingerprint,
    but not written by the client: the job runs."""
    out = tmp_path / "out"
    out.mkdir()
    job = Job(name="j", workflow=TINY)  # as the command line makes it: the workflow file's path
    (out / "j_01.png").write_bytes(b"not made by this job")
    (out / "j.json").write_text(json.dumps({"job": "j", "fingerprint": job.fingerprint(), "files": ["j_01.png"]}))
    with FakeComfy() as server:
        r = client(server, out)
        queued = len(server.prompts)
    assert r.returncode == 0 and queued == 1, text(r)
    assert (out / "j_01.png").read_bytes() == PNG


# -- the websocket ------------------------------------------------------------------------------------------
def garbage(prompt_id):
    return ["not json", "[1, 2]", "42", '{"type": 5}', '{"type": "executing", "data": [1]}', "[" * 100_000, "",
            json.dumps({"type": "progress", "data": {"prompt_id": prompt_id, "value": "x", "max": None}}),
            json.dumps({"type": "executing", "data": {"prompt_id": prompt_id, "node": ["a", 1]}}),
            b"\x00\x01binary"]


def test_garbage_websocket_frames_are_skipped(tmp_path):
    async def script(fake, ws, request, prompt_id):
        for frame in garbage(prompt_id):
            await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
        await FakeComfy.normal_run(fake, ws, request, prompt_id)
    with FakeComfy(ws_script=script) as server:
        r = client(server, tmp_path / "out")
        r_bars = subprocess.run([sys.executable, "-m", "dreamo_cli.client", "--server", server.url, "--workflow",
                                 TINY, "--name", "k", "--out", str(tmp_path / "out")], cwd=REPO,
                                capture_output=True, timeout=BOUND)  # progress bars on: they see the bad values
    assert r.returncode == 0 and r_bars.returncode == 0, text(r) + text(r_bars)
    assert sorted(os.listdir(tmp_path / "out")) == ["j.json", "j_01.png", "k.json", "k_01.png"]


def test_a_flood_of_garbage_frames_is_a_broken_server(tmp_path):
    async def script(fake, ws, request, prompt_id):
        for i in range(200):
            await ws.send_str(f"garbage {i}")
    with FakeComfy(ws_script=script) as server:
        r = client(server, tmp_path / "out")
        deleted = list(server.deleted)
    assert r.returncode == 1, text(r)
    assert f"{server.url} sent 51 websocket messages that are not ComfyUI's" in text(r)
    assert len(deleted) == 1  # the prompt was taken off that server's queue
    no_crash(r)


def test_a_closed_websocket_moves_the_job_to_another_server(tmp_path):
    async def close(fake, ws, request, prompt_id):
        await ws.close()

    async def slowly(fake, ws, request, prompt_id):  # each job holds the good server a second: the other gets some
        await asyncio.sleep(1.0)
        await FakeComfy.normal_run(fake, ws, request, prompt_id)
    jobs = [Job(name=f"c{i}", workflow=TINY, seed=i) for i in range(3)]
    with FakeComfy(ws_script=close) as closing, FakeComfy(ws_script=slowly) as good:
        outcomes = bounded(lambda: run_jobs(jobs, [closing.url, good.url], str(tmp_path / "out"), per_server=1,
                                            progress=False, log=lambda m: None))
        closed, deleted = list(closing.prompts), list(closing.deleted)
    assert all(o.status == "done" and o.server == good.url for o in outcomes), [(o.status, o.reason) for o in outcomes]
    moved = [o for o in outcomes if o.tried]
    assert closed and len(moved) == len(closed) and sorted(deleted) == sorted(closed)
    for o in moved:
        assert o.tried[0] == f"{closing.url} {closing.url} closed the websocket while it ran the prompt"


def test_a_closed_websocket_on_the_only_server_is_reported_as_such(tmp_path):
    async def close(fake, ws, request, prompt_id):
        await ws.close()
    with FakeComfy(ws_script=close) as server:
        r = client(server, tmp_path / "out")
    assert r.returncode == 1 and f"{server.url} closed the websocket while it ran the prompt" in text(r), text(r)
    no_crash(r)


# -- malformed answers --------------------------------------------------------------------------------------
@pytest.mark.parametrize("route, handler, message", [
    ("prompt", answer([1, 2]), "answered /prompt with a JSON list, not ComfyUI's dict"),
    ("prompt", answer({"number": 1}), "answered /prompt without a prompt id"),
    ("prompt", answer(b"<html>gateway</html>", raw=True), "answered /prompt with something that is not JSON"),
    ("prompt", answer(b"[" * 100_000, raw=True), "answered /prompt with something that is not JSON"),
    ("prompt", answer({"error": "bad", "node_errors": [1]}, status=400), "rejected the prompt: bad"),
    ("prompt", answer({"error": {"message": "bad"}, "node_errors": {"5": {"errors": ["x", 3]}}}, status=400),
     "rejected the prompt: bad\n  node 5 (DreamORefEncode 'ref 1 encode'): x"),
    ("history", answer([]), "answered /history with a JSON list"),
    ("history", history_entry("done"), "answered /history with an entry that is not an object"),
    ("history", history_entry({"outputs": []}), "answered /history with 'outputs' that is not an object"),
    ("history", history_entry({"outputs": {"12": {"images": "a.png"}}}),
     "answered /history with outputs of node 12 that are not a list of images"),
    ("history", history_entry({"outputs": {"12": {"images": [{"filename": 7, "type": "output"}]}}}),
     "answered /history with an output image without a usable name"),
    ("upload", answer({}), "answered /upload/image without the saved file's name"),
])
def test_a_malformed_answer_names_the_server_and_what_was_wrong(tmp_path, picture, route, handler, message):
    with FakeComfy(overrides={route: handler}) as server:
        r = client(server, tmp_path / "out", ref=picture)
    assert r.returncode == 1, text(r)
    assert f"{server.url} {message}" in text(r), text(r)
    no_crash(r)


# -- the terminal -------------------------------------------------------------------------------------------
EVIL = "\x1b]0;owned\x07\x1b[2J\r\u202e"


def test_escape_sequences_from_a_failing_node_never_reach_the_terminal(tmp_path):
    async def script(fake, ws, request, prompt_id):
        for kind, data in [("execution_start", {"prompt_id": prompt_id}),
                           ("executing", {"prompt_id": prompt_id, "node": EVIL}),
                           ("progress", {"prompt_id": prompt_id, "node": EVIL, "value": 1, "max": 2}),
                           ("execution_error", {"prompt_id": prompt_id, "node_id": EVIL, "node_type": EVIL,
                                                "exception_type": "x." + EVIL,
                                                "exception_message": f"boom {EVIL}\nsecond line"})]:
            await ws.send_str(json.dumps({"type": kind, "data": data}))
    with FakeComfy(ws_script=script) as server:
        r = subprocess.run([sys.executable, "-m", "dreamo_cli.client", "--server", server.url, "--workflow", TINY,
                            "--name", "j", "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True,
                           timeout=BOUND)  # progress bars on: the node id reaches them too
    shown = text(r)
    assert r.returncode == 1, shown
    assert "\x1b" not in shown and "\u202e" not in shown and "\x07" not in shown, repr(shown)
    assert "boom \\x1b]0;owned\\x07\\x1b[2J\\x0d\\u202e\nsecond line" in shown
    no_crash(r)


def test_escape_sequences_in_a_rejection_never_reach_the_terminal(tmp_path):
    body = {"error": {"message": EVIL, "details": EVIL},
            "node_errors": {EVIL: {"errors": [{"message": EVIL, "details": EVIL, "extra_info": {"input_name": EVIL}}]}}}
    with FakeComfy(overrides={"prompt": answer(body, status=400)}) as server:
        r = client(server, tmp_path / "out")
    shown = text(r)
    assert r.returncode == 1 and "rejected the prompt" in shown, shown
    assert "\x1b" not in shown and "\u202e" not in shown and "\r" not in shown, repr(shown)


# -- the documented bounds ----------------------------------------------------------------------------------
def test_the_bounds_the_readme_states_are_the_clients():
    from comfyui_dreamo.dreamo_cli import comfy_run, comfy_server
    from comfyui_dreamo.dreamo_cli.client import build_parser

    server = comfy_server.ComfyServer("127.0.0.1:1")
    assert (server.connect_timeout, server.read_timeout, server.answer_timeout) == (3.0, 60.0, 120.0)
    assert comfy_server.MAX_ANSWER == comfy_run.MAX_MESSAGE == 32 << 20 and comfy_run.MAX_GARBAGE == 50
    args = build_parser().parse_args([])
    assert (args.timeout, args.max_download) == (3600.0, 2048.0)
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    section = readme.split("### Security (client)", 1)[1].split("\n## ", 1)[0]
    for stated in ("within 3 s", "each read within 60 s", "default 3600 s", "within 120 s", "(default\n  2048)",
                   "at most 32 MB", "up to 50"):
        assert stated in section, stated


def test_a_silent_answer_ends_at_the_read_timeout(tmp_path):
    """Headers, then nothing: the read timeout ends the call long before the job's --timeout."""
    from comfyui_dreamo.dreamo_cli.comfy_errors import ServerUnavailable
    from comfyui_dreamo.dreamo_cli.comfy_server import ComfyServer

    with FakeComfy(overrides={"history": trickle_body(b"{", interval=3600)}) as fake:
        server = ComfyServer(fake.url, read_timeout=1.0)
        error = bounded(lambda: pytest.raises(ServerUnavailable, server.history, "p1").value, 30)
    assert f"lost {fake.url} during /history (timed out)" in str(error)


def test_an_answer_that_never_ends_stops_at_the_answer_limit(tmp_path):
    """A trickle with no job deadline at all (a lone call): the per-call limit ends it."""
    from comfyui_dreamo.dreamo_cli.comfy_errors import TimedOut
    from comfyui_dreamo.dreamo_cli.comfy_server import ComfyServer

    with FakeComfy(overrides={"history": trickle_body(interval=0.5)}) as fake:
        server = ComfyServer(fake.url, answer_timeout=2.0)
        error = bounded(lambda: pytest.raises(TimedOut, server.history, "p1").value, 30)
    assert f"{fake.url} did not answer /history within 2 s" in str(error)


def test_a_huge_json_answer_is_refused(tmp_path):
    with FakeComfy(overrides={"history": huge_body(40 << 20, head=b'{"p": "')}) as server:
        r = client(server, tmp_path / "out")
    assert r.returncode == 1 and f"{server.url} answered /history with too much data" in text(r), text(r)
    no_crash(r)


def test_proxy_variables_are_not_used(tmp_path):
    """The client talks to the server itself: a proxy named in the environment (here one that is not there)
    changes nothing."""
    env = dict(os.environ, **{k: "http://127.0.0.1:9" for k in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY",
                                                                  "https_proxy", "ALL_PROXY", "all_proxy")})
    env.pop("NO_PROXY", None), env.pop("no_proxy", None)
    with FakeComfy() as server:
        r = subprocess.run([sys.executable, "-m", "dreamo_cli.client", "--server", server.url, "--workflow", TINY,
                            "--name", "j", "--quiet", "--out", str(tmp_path / "out")], cwd=REPO, env=env,
                           capture_output=True, timeout=BOUND)
    assert r.returncode == 0, text(r)
