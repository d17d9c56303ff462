"""dreamo-client on a real ComfyUI server (the pack + tiny models): many jobs and clients sharing one picture
never rewrite its upload; Ctrl-C and SIGTERM take this client's prompts back off the server (its queued ones
deleted, its running one interrupted, another client's left alone), print one line and exit 130 / 143; a batch
with a missing picture reports that job and runs the others."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
import requests
import websocket
from PIL import Image

from dreamo_testkit import tiny_server  # a sandboxed server with the pack and tiny models
from comfyui_dreamo.dreamo_cli.api_workflow import Job, fill, load_workflow
from comfyui_dreamo.dreamo_cli.batch import run_jobs
from comfyui_dreamo.dreamo_cli.comfy_server import ComfyServer

from dreamo_testkit import REPO, kit_workflow

pytestmark = [pytest.mark.host, pytest.mark.server]

TINY = kit_workflow("dreamo_client_tiny_api.json")
LONG = 200  # sampling steps of a prompt that must still be running when the test acts (it is interrupted)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = tiny_server.start(str(tmp_path_factory.mktemp("comfy_lifecycle")))
    try:
        yield srv
    finally:
        srv.stop()


def drawn(folder, name, colour):
    """A drawn picture: the tiny models never look at what a reference shows."""
    path = os.path.join(folder, name)
    Image.new("RGB", (120, 96), colour).save(path)
    return path


def queue_state(url):
    """(running, pending) of the server's queue as {prompt id: filename prefix of its SaveImage}."""
    body = requests.get(url + "/queue", timeout=10).json()

    def prefixes(items):
        return {item[1]: next((n["inputs"].get("filename_prefix") for n in item[2].values()
                               if n["class_type"] == "SaveImage"), None) for item in items}
    return prefixes(body["queue_running"]), prefixes(body["queue_pending"])


def wait_for(condition, what, seconds=120):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def idle(url):
    wait_for(lambda: queue_state(url) == ({}, {}), "an empty queue")


def clear(url):
    """After a test, whatever happened: nothing of it left queued or running on the shared server."""
    requests.post(url + "/queue", json={"clear": True}, timeout=10)
    requests.post(url + "/interrupt", json={}, timeout=10)
    idle(url)


class Foreign:
    """Another client's prompt, queued straight through the API, with its progress followed on its own
    websocket."""

    def __init__(self, url, picture, steps, prefix):
        self.client_id = uuid.uuid4().hex
        self.ws = websocket.create_connection(url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}",
                                              timeout=5)
        image = ComfyServer(url).upload(picture)
        prompt = fill(load_workflow(TINY), Job(seed=7, steps=steps), {1: image, 2: image}, TINY,
                      filename_prefix=prefix)
        r = requests.post(url + "/prompt", json={"prompt": prompt, "client_id": self.client_id}, timeout=10)
        self.prompt_id = r.json()["prompt_id"]
        self.steps: list[int] = []
        threading.Thread(target=self._listen, daemon=True).start()

    def _listen(self):
        try:
            while True:
                msg = self.ws.recv()
                if isinstance(msg, str) and msg:  # "" is the close frame
                    data = json.loads(msg)
                    if data["type"] == "progress" and data["data"].get("prompt_id") == self.prompt_id:
                        self.steps.append(data["data"]["value"])
        except (OSError, websocket.WebSocketException):
            pass

    def close(self):
        self.ws.close()


def test_many_jobs_and_clients_sharing_one_picture_never_rewrite_its_upload(server, tmp_path):
    """Three clients at once, nine jobs, one picture in both slots: the server's copy is written once and never
    rewritten (a prompt may be reading it), and every job reads it whole."""
    picture = drawn(str(tmp_path), "shared.png", (30, 160, 90))
    first = ComfyServer(server.url).upload(picture)
    stored = os.path.join(server.sandbox.input_dir, *first.split("/"))
    before = os.stat(stored)
    content = open(stored, "rb").read()
    results, threads = {}, []
    for k in range(3):
        jobs = [Job(name=f"share{k}{i}", workflow=TINY, refs={1: picture, 2: picture}, seed=10 * k + i, steps=1)
                for i in range(3)]
        threads.append(threading.Thread(target=lambda k=k, jobs=jobs: results.setdefault(k, run_jobs(
            jobs, [server.url], str(tmp_path / f"out{k}"), per_server=3, progress=False, log=lambda m: None))))
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    outcomes = [o for k in range(3) for o in results[k]]
    assert [o.status for o in outcomes] == ["done"] * 9, [o.reason for o in outcomes]
    after = os.stat(stored)
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    assert open(stored, "rb").read() == content
    stem = os.path.splitext(os.path.basename(stored))[0]
    assert [n for n in os.listdir(os.path.dirname(stored)) if n.startswith(stem)] == [os.path.basename(stored)]
    for o in outcomes:  # every prompt asked for that one file
        manifest = json.loads((tmp_path / f"out{o.job.name[5]}" / f"{o.job.name}.json").read_text())
        entry = requests.get(f"{server.url}/history/{manifest['prompt_id']}", timeout=10).json()
        assert entry[manifest["prompt_id"]]["prompt"][2]["4"]["inputs"]["image"] == first


def start_client(tmp_path, url, names, steps):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(json.dumps({"id": n, "seed": i, "steps": steps}) + "\n" for i, n in enumerate(names)))
    picture = drawn(str(tmp_path), "ref.png", (200, 90, 40))
    return subprocess.Popen([sys.executable, "-m", "dreamo_cli.client", "--jobs", str(jobs), "--workflow", TINY,
                             "--ref", f"1={picture}", "--ref", f"2={picture}", "--server", url, "--per-server", "2",
                             "--quiet", "--out", str(tmp_path / "out")], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def ours(prefixes: dict, names) -> set:
    return {pid for pid, prefix in prefixes.items() if prefix in {f"dreamo_client/{n}" for n in names}}


def test_ctrl_c_interrupts_this_clients_running_prompt_and_deletes_its_queued_one(server, tmp_path):
    idle(server.url)
    names = ["int0", "int1", "int2"]
    proc = start_client(tmp_path, server.url, names, LONG)
    foreign = None
    try:
        running, pending = wait_for(lambda: (lambda r, p: (r, p) if ours(r, names) and ours(p, names) else None)(
            *queue_state(server.url)), "one of the client's prompts running and one queued")
        mine = ours(running, names) | ours(pending, names)
        foreign = Foreign(server.url, drawn(str(tmp_path), "f.png", (1, 2, 3)), 1, "someone_else/f")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert out == "" and len(err.strip().splitlines()) == 1, err
        assert err.startswith("dreamo-client: stopped by Ctrl-C: 1 queued prompt(s) of this client taken off the "
                              "server queues, 1 running interrupted; 0 of 3 job(s) done"), err
        # the other client's prompt runs to its end; ours are gone and the interrupted one saved nothing
        wait_for(lambda: requests.get(f"{server.url}/history/{foreign.prompt_id}", timeout=10).json(), "the "
                 "other client's prompt to finish")
        entry = requests.get(f"{server.url}/history/{foreign.prompt_id}", timeout=10).json()[foreign.prompt_id]
        assert entry["status"]["status_str"] == "success"
        idle(server.url)
        history = requests.get(f"{server.url}/history", timeout=10).json()
        ran = [pid for pid in mine if pid in history]
        assert len(ran) == 1 and "execution_interrupted" in json.dumps(history[ran[0]]["status"])
        assert not os.path.exists(tmp_path / "out") or not [n for n in os.listdir(tmp_path / "out")
                                                            if not n.startswith(".")]
    finally:
        if proc.poll() is None:
            proc.kill()
        if foreign is not None:
            foreign.close()
        clear(server.url)


def test_sigterm_deletes_this_clients_queued_prompts_and_leaves_another_clients_running_one(server, tmp_path):
    idle(server.url)
    foreign = Foreign(server.url, drawn(str(tmp_path), "f.png", (3, 2, 1)), LONG, "someone_else/long")
    proc = None
    try:
        wait_for(lambda: foreign.prompt_id in queue_state(server.url)[0], "the other client's prompt to run")
        names = ["term0", "term1"]
        proc = start_client(tmp_path, server.url, names, 1)
        wait_for(lambda: len(ours(queue_state(server.url)[1], names)) == 2, "the client's two prompts queued")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 143, err
        assert out == "" and len(err.strip().splitlines()) == 1, err
        assert err.startswith("dreamo-client: stopped by SIGTERM: 2 queued prompt(s) of this client taken off the "
                              "server queues, 0 running interrupted; 0 of 2 job(s) done"), err
        running, pending = queue_state(server.url)
        assert not ours(pending, names) and list(running) == [foreign.prompt_id]
        seen = len(foreign.steps)  # the other client's prompt goes on sampling: nobody interrupted it
        wait_for(lambda: len(foreign.steps) >= seen + 2, "two more steps of the other client's prompt")
        assert foreign.prompt_id in queue_state(server.url)[0]
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        foreign.close()
        clear(server.url)


def test_a_missing_picture_fails_its_job_and_the_batch_goes_on(server, tmp_path):
    picture = drawn(str(tmp_path), "ok.png", (90, 90, 200))
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(json.dumps(row) for row in [
        {"id": "miss0", "ref_1": picture, "ref_2": picture, "seed": 1},
        {"id": "miss1", "ref_1": "not_there.png", "ref_2": picture, "seed": 2},
        {"id": "miss2", "ref_1": picture, "ref_2": picture, "seed": 3}]) + "\n")
    r = subprocess.run([sys.executable, "-m", "dreamo_cli.client", "--jobs", str(jobs), "--workflow", TINY,
                        "--steps", "1", "--server", server.url, "--quiet", "--out", str(tmp_path / "out")], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stderr
    missing = os.path.join(str(tmp_path), "not_there.png")
    assert f"dreamo-client: job miss1 not run: reference 1 is not a file: {missing}" in r.stderr
    assert "2 done, 0 already there, 1 failed" in r.stdout
    row = next(line for line in r.stdout.splitlines() if line.startswith("miss1 "))
    assert row.split()[1] == "failed" and "not run: reference 1 is not a file" in row
    assert sorted(os.listdir(tmp_path / "out")) == ["miss0.json", "miss0_01.png", "miss2.json", "miss2_01.png"]
