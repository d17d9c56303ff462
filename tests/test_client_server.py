"""dreamo-client against real ComfyUI servers on loopback (the pack + tiny generated models): one job through
the console entry point, the server's own errors, uploads, and a 12-job batch over two servers, one of them
killed mid-batch, then resumed."""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import requests
from PIL import Image

from dreamo_testkit import tiny_server  # a sandboxed server with the pack and tiny models
from comfyui_dreamo.dreamo_cli.api_workflow import Job  # conftest registers the repo as comfyui_dreamo
from comfyui_dreamo.dreamo_cli.batch import run_jobs
from comfyui_dreamo.dreamo_cli.client import main
from comfyui_dreamo.dreamo_cli.jobs import read_jobs

from dreamo_testkit import REPO, kit_workflow

pytestmark = [pytest.mark.host, pytest.mark.server]

TINY = kit_workflow("dreamo_client_tiny_api.json")


@pytest.fixture(scope="module")
def servers(session_server, tmp_path_factory):
    """Two servers: the session's shared one (conftest.py) and one of this module's own."""
    own = tiny_server.start(str(tmp_path_factory.mktemp("comfy_b")))
    try:
        yield [session_server, own]
    finally:
        own.stop()


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """Four drawn reference pictures (the tiny models never look at what they show)."""
    folder = tmp_path_factory.mktemp("pictures")
    paths = []
    for i in range(4):
        img = Image.new("RGB", (200, 160), (40 * i, 200, 255 - 40 * i))
        paths.append(str(folder / f"drawn{i}.png"))
        img.save(paths[-1])
    return paths


def server_files(server, job_name):
    """Images the server itself saved for a job (the client asks for prefix dreamo_client/<job>)."""
    return glob.glob(os.path.join(server.sandbox.output_dir, "dreamo_client", f"{job_name}_0*.png"))


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "dreamo_cli.client", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_one_job_writes_its_outputs_and_shows_progress(servers, pictures, tmp_path):
    a = servers[0]
    out = tmp_path / "out"
    r = cli("--server", a.url, "--workflow", TINY, "--ref", f"1={pictures[0]}", "--ref", f"2={pictures[3]}",
            "--prompt", "the bottle [ref#1] in the style of [ref#2]", "--seed", "11", "--steps", "3",
            "--size", "80x64", "--batch-size", "2", "--name", "single", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == ["single.json", "single_01.png", "single_02.png"]
    for name in ("single_01.png", "single_02.png"):
        img = Image.open(out / name)
        assert img.size == (80, 64)  # --size reached the latent
        assert len(np.unique(np.asarray(img.convert("L")))) > 10
    manifest = json.loads((out / "single.json").read_text())
    # ComfyUI 0.33 may merge progress messages of quick steps: at least one arrives, and the bar reaches 3/3
    assert manifest["server"] == a.url and 1 <= manifest["events"]["progress"] <= 3
    # nodes run: at least the sampler, the decode and the save (the loaders may be cached from an earlier prompt on
    # this server, so the count depends on what ran before; the seed and size here are this test's own)
    assert manifest["events"]["executing"] >= 3
    assert "sampler: 3/3" in r.stderr  # the progress bar names the node being run and the step
    assert "single: 2 image(s)" in r.stdout
    history = requests.get(f"{a.url}/history/{manifest['prompt_id']}", timeout=10).json()[manifest["prompt_id"]]
    prompt = history["prompt"][2]
    assert prompt["10"]["inputs"]["seed"] == 11 and prompt["10"]["inputs"]["steps"] == 3
    assert (prompt["26"]["inputs"]["width"], prompt["26"]["inputs"]["height"]) == (80, 64)
    assert prompt["4"]["inputs"]["image"].startswith("dreamo_client/")
    assert len(server_files(a, "single")) == 2
    again = cli("--server", a.url, "--workflow", TINY, "--ref", f"1={pictures[0]}", "--ref", f"2={pictures[3]}",
                "--prompt", "the bottle [ref#1] in the style of [ref#2]", "--seed", "11", "--steps", "3",
                "--size", "80x64", "--batch-size", "2", "--name", "single", "--out", str(out))
    assert again.returncode == 0 and "already done, nothing queued" in again.stdout
    assert len(server_files(a, "single")) == 2


def test_a_rejected_prompt_exits_non_zero_with_the_servers_message(servers, pictures, tmp_path):
    r = cli("--server", servers[0].url, "--workflow", TINY, "--ref", f"1={pictures[0]}", "--ref",
            f"2={pictures[1]}", "--resolution", "1=48", "--quiet", "--out", str(tmp_path))
    assert r.returncode == 1
    assert "rejected the prompt" in r.stderr
    assert "node 5 (DreamORefEncode 'ref 1 encode') input 'resolution': Value 48 smaller than min of 64" in r.stderr
    assert os.listdir(tmp_path) == []


def test_a_node_failing_at_run_time_exits_non_zero_with_its_message(servers, pictures, tmp_path):
    r = cli("--server", servers[0].url, "--workflow", TINY, "--ref", f"1={pictures[0]}", "--ref",
            f"2={pictures[1]}", "--prompt", "the bottle [ref#1] next to [ref#3]", "--quiet", "--out", str(tmp_path))
    assert r.returncode == 1
    assert "node 6 (DreamOTextEncode 'prompt') failed on" in r.stderr
    assert "DreamOError: DreamOTextEncode (input 'text'): the prompt names [ref#3]" in r.stderr
    assert os.listdir(tmp_path) == []
    assert requests.get(servers[0].url + "/system_stats", timeout=10).ok


def test_png_jpeg_and_webp_with_alpha_are_uploaded_as_they_are(servers, tmp_path):
    """Each file reaches the server byte for byte, and the WebP's alpha reaches DreamO: its transparent
    green background is painted white, while the JPEG (no alpha) keeps its green."""
    a = servers[0]
    rgba = np.zeros((96, 96, 4), np.uint8)
    rgba[..., 1] = 255  # green everywhere ...
    yy, xx = np.mgrid[:96, :96]
    disc = (yy - 48) ** 2 + (xx - 48) ** 2 < 30 ** 2
    rgba[disc] = (200, 30, 30, 255)  # ... a red disc, the only opaque part
    files = {}
    for ext, img in (("png", Image.fromarray(rgba, "RGBA")), ("webp", Image.fromarray(rgba, "RGBA")),
                     ("jpg", Image.fromarray(rgba[..., :3], "RGB"))):
        files[ext] = str(tmp_path / f"ref.{ext}")
        img.save(files[ext], **({"lossless": True} if ext == "webp" else {}))
    corners = {}
    for ext, path in files.items():
        out = tmp_path / f"out_{ext}"
        rc = main(["--server", a.url, "--workflow", TINY, "--ref", f"1={path}", "--ref", f"2={files['png']}",
                   "--name", f"up_{ext}", "--quiet", "--out", str(out)])
        assert rc == 0
        manifest = json.loads((out / f"up_{ext}.json").read_text())
        prompt_id = manifest["prompt_id"]
        entry = requests.get(f"{a.url}/history/{prompt_id}", timeout=10).json()[prompt_id]
        uploaded = entry["prompt"][2]["4"]["inputs"]["image"]
        sub, name = uploaded.split("/")
        served = requests.get(f"{a.url}/view", params={"filename": name, "subfolder": sub, "type": "input"},
                              timeout=10)
        assert served.content == open(path, "rb").read()
        preview = entry["outputs"]["5"]["dreamo_previews"][0]  # what DreamO encoded, as the node shows it
        shown = requests.get(f"{a.url}/view", params=preview, timeout=10).content
        seen = np.asarray(Image.open(__import__("io").BytesIO(shown)).convert("RGB")).astype(int)
        corners[ext] = seen[:4, :4].reshape(-1, 3).mean(0)
    for ext in ("png", "webp"):
        assert np.all(corners[ext] > 240), (ext, corners[ext])  # transparent -> white
    assert corners["jpg"][1] > 200 and corners["jpg"][0] < 60  # no alpha: the green stays


def write_jobs(path, pictures, prefix, n=12):
    """Jobs that differ by seed only: each server encodes the references once and samples per job (fast)."""
    rows = [{"id": f"{prefix}{i:02d}", "ref_1": pictures[0], "ref_2": pictures[3], "seed": 100 + i,
             "prompt": "the thing [ref#1] in the style of [ref#2]"} for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return [r["id"] for r in rows]


def test_a_batch_over_two_servers_then_resumed(servers, pictures, tmp_path, capsys):
    jobs = write_jobs(tmp_path / "jobs.jsonl", pictures, "b")
    out = tmp_path / "out"
    args = ["--jobs", str(tmp_path / "jobs.jsonl"), "--workflow", TINY, "--steps", "2", "--server", servers[0].url,
            "--server", servers[1].url, "--per-server", "2", "--quiet", "--out", str(out)]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert sorted(os.listdir(out)) == sorted([f"{j}_01.png" for j in jobs] + [f"{j}.json" for j in jobs])
    used = {json.loads((out / f"{j}.json").read_text())["server"] for j in jobs}
    assert used == {servers[0].url, servers[1].url}
    for j in jobs:  # produced exactly once, on one server
        assert len(server_files(servers[0], j)) + len(server_files(servers[1], j)) == 1, j
    assert "12 done, 0 already there, 0 failed" in table
    for s in servers:
        assert s.url.split("://")[1] in table
    before = [len(requests.get(s.url + "/history", timeout=10).json()) for s in servers]
    assert main(args) == 0  # resume: everything is there, nothing is queued
    assert "0 done, 12 already there, 0 failed" in capsys.readouterr().out
    assert [len(requests.get(s.url + "/history", timeout=10).json()) for s in servers] == before


def test_an_interrupted_job_is_queued_again_and_saved_once(servers, pictures, tmp_path):
    """Someone presses Cancel on the server while our job samples: the job is queued again (the only server
    here) and finishes; the server saved its image once."""
    a = servers[0]
    interrupted = []

    def on_event(job, url, kind, data):
        if kind == "progress" and not interrupted:
            interrupted.append(job.name)
            requests.post(a.url + "/interrupt", json={}, timeout=10)

    job = Job(name="cancelled", workflow=TINY, refs={1: pictures[0], 2: pictures[3]}, seed=555, steps=6)
    (o,) = run_jobs([job], [a.url], str(tmp_path / "out"), per_server=1, progress=False, on_event=on_event,
                    log=lambda m: None)
    assert interrupted and o.status == "done" and o.attempts == 2, o.reason
    assert "interrupted" in o.tried[0]
    assert sorted(os.listdir(tmp_path / "out")) == ["cancelled.json", "cancelled_01.png"]
    assert len(server_files(a, "cancelled")) == 1


@pytest.fixture
def doomed(tmp_path_factory):
    """A server of this test's own, to be killed (the module's two stay up for the other tests, in any order)."""
    srv = tiny_server.start(str(tmp_path_factory.mktemp("comfy_doomed")))
    try:
        yield srv
    finally:
        srv.stop()


def test_a_server_killed_mid_batch_loses_nothing(servers, doomed, pictures, tmp_path):
    """Kill the second server while it samples one of our jobs: its unfinished jobs are retried on the first,
    every job ends with exactly one output, and a second run queues nothing."""
    a, b = servers[0], doomed
    names = write_jobs(tmp_path / "jobs.jsonl", pictures, "k")
    jobs = read_jobs(str(tmp_path / "jobs.jsonl"), Job(workflow=TINY, steps=3))
    done_events, killed = [], []

    def on_event(job, url, kind, data):
        if kind == "executing" and data.get("node") is None:
            done_events.append(url)
        if kind == "progress" and url == b.url and not killed and b.url in done_events:  # b has finished one
            killed.append(job.name)
            b.process.kill()
            b.process.wait()

    outcomes = run_jobs(jobs, [a.url, b.url], str(tmp_path / "out"), per_server=2, retries=2, progress=False,
                        on_event=on_event, log=lambda m: None)
    assert killed, "the second server was never caught sampling"
    by_name = {o.job.name: o for o in outcomes}
    assert all(o.status == "done" for o in outcomes), [(o.job.name, o.reason) for o in outcomes]
    retried = [o for o in outcomes if o.tried]
    assert killed[0] in {o.job.name for o in retried}
    for o in retried:  # the killed server's unfinished jobs went to the survivor
        assert o.tried[0].startswith(b.url) and o.server == a.url and o.attempts == 2
    assert 1 <= len(retried) <= 2  # at most --per-server jobs were in flight there
    assert {o.server for o in outcomes} == {a.url, b.url}  # b finished some before it died
    out = tmp_path / "out"
    assert sorted(os.listdir(out)) == sorted([f"{n}_01.png" for n in names] + [f"{n}.json" for n in names])
    for n in names:
        assert len(server_files(a, n)) + len(server_files(b, n)) == 1, (n, by_name[n].server)
    before = len(requests.get(a.url + "/history", timeout=10).json())
    again = run_jobs(jobs, [a.url, b.url], str(out), progress=False, log=lambda m: None)
    assert [o.status for o in again] == ["skipped"] * 12
    assert len(requests.get(a.url + "/history", timeout=10).json()) == before
