"""dreamo-client without a ComfyUI server: the title mapping, jobs files, resume bookkeeping, the summary, and a
missing server reported quickly. The real-server tests are in tests/test_client_server.py."""
import json
import os
import socket
import subprocess
import sys
import time
import tomllib

import pytest

from dreamo_testkit import REPO, kit_workflow

# conftest registers the repo as the package comfyui_dreamo
from comfyui_dreamo.dreamo_cli import api_workflow
from comfyui_dreamo.dreamo_cli.api_workflow import Job, WorkflowError, fill, find_workflow, load_workflow
from comfyui_dreamo.dreamo_cli.batch import Outcome, OutputStore, summary
from comfyui_dreamo.dreamo_cli.client import main
from comfyui_dreamo.dreamo_cli.jobs import UsageError, read_jobs

TINY = kit_workflow("dreamo_client_tiny_api.json")


def tiny():
    return load_workflow(TINY)


def test_fill_sets_exactly_the_declared_inputs():
    wf = tiny()
    job = Job(refs={1: "a.png", 2: "b.png"}, tasks={2: "ip"}, resolutions={1: 96}, prompt="a [ref#1]", seed=7,
              steps=3, width=80, height=64, batch_size=2)
    out = fill(wf, job, {1: "dreamo_client/a.png", 2: "dreamo_client/b.png"}, TINY, filename_prefix="x/job")
    assert out["4"]["inputs"]["image"] == "dreamo_client/a.png"
    assert out["24"]["inputs"]["image"] == "dreamo_client/b.png"
    assert out["25"]["inputs"]["task"] == "ip" and out["5"]["inputs"]["resolution"] == 96
    assert out["6"]["inputs"]["text"] == "a [ref#1]"
    assert (out["10"]["inputs"]["seed"], out["10"]["inputs"]["steps"]) == (7, 3)
    assert [out["9"]["inputs"][k] for k in ("width", "height", "batch_size")] == [80, 64, 2]
    assert (out["26"]["inputs"]["width"], out["26"]["inputs"]["height"]) == (80, 64)  # the shift follows the size
    assert out["12"]["inputs"]["filename_prefix"] == "x/job"
    changed = {(k, i) for k in wf for i in wf[k]["inputs"] if wf[k]["inputs"][i] != out[k]["inputs"][i]}
    assert changed == {("4", "image"), ("24", "image"), ("25", "task"), ("5", "resolution"), ("6", "text"),
                       ("10", "seed"), ("10", "steps"), ("9", "width"), ("9", "height"), ("9", "batch_size"),
                       ("26", "width"), ("26", "height"), ("12", "filename_prefix")}
    assert wf == tiny()  # the loaded workflow itself is untouched


def test_nothing_set_changes_nothing_but_the_prefix():
    wf = tiny()
    out = fill(wf, Job(), {}, TINY)
    assert out == wf


def test_a_sampler_with_noise_seed_gets_the_seed_there():
    wf = tiny()
    wf["10"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 1}, "_meta": {"title": "Sampler"}}
    assert fill(wf, Job(seed=9), {}, TINY)["10"]["inputs"]["noise_seed"] == 9


@pytest.mark.parametrize("job, title", [
    (Job(refs={3: "c.png"}), "ref 3 image"),
    (Job(tasks={4: "id"}), "ref 4 encode"),
])
def test_a_setting_the_workflow_does_not_declare_is_an_error_naming_the_title(job, title):
    with pytest.raises(WorkflowError, match=f"declares no node titled '{title}'"):
        fill(tiny(), job, {k: "x.png" for k in job.refs}, TINY)


def test_missing_sampler_title_and_connected_inputs_and_duplicates_are_errors():
    wf = tiny()
    wf["10"]["_meta"]["title"] = "KSampler"
    with pytest.raises(WorkflowError, match="'sampler'"):
        fill(wf, Job(seed=1), {}, TINY)
    wf = tiny()
    wf["6"]["inputs"]["text"] = ["99", 0]
    with pytest.raises(WorkflowError, match="connected to another node"):
        fill(wf, Job(prompt="x"), {}, TINY)
    wf = tiny()
    wf["7"]["_meta"]["title"] = "Prompt"
    with pytest.raises(WorkflowError, match="two nodes titled 'prompt'"):
        fill(wf, Job(prompt="x"), {}, TINY)


def test_size_without_a_shift_node_is_fine_but_without_a_size_node_is_not():
    wf = tiny()
    del wf["26"]["_meta"]
    assert fill(wf, Job(width=96, height=96), {}, TINY)["26"]["inputs"]["width"] == 64
    del wf["9"]["_meta"]
    with pytest.raises(WorkflowError, match="--size"):
        fill(wf, Job(width=96, height=96), {}, TINY)


def test_workflows_by_name_in_either_layout_and_ui_files_refused(tmp_path, monkeypatch):
    assert find_workflow("id_tryon").endswith("dreamo_id_tryon_api.json")  # in workflows/ or workflows/api/
    assert find_workflow(TINY) == TINY
    api = tmp_path / "workflows" / "api"
    api.mkdir(parents=True)
    (api / "dreamo_id_api.json").write_text(json.dumps(tiny()))
    (tmp_path / "workflows" / "dreamo_style_api.json").write_text(json.dumps(tiny()))
    monkeypatch.setattr(api_workflow, "WORKFLOW_DIRS", (str(api), str(tmp_path / "workflows")))
    assert find_workflow("id") == str(api / "dreamo_id_api.json")
    assert find_workflow("style") == str(tmp_path / "workflows" / "dreamo_style_api.json")
    assert api_workflow.available_workflows() == ["id", "style"]
    with pytest.raises(WorkflowError, match="no workflow 'nope'.*id, style"):
        find_workflow("nope")
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))
    with pytest.raises(WorkflowError, match="UI-format"):
        load_workflow(str(ui))


API_DIR = os.path.join(REPO, "workflows", "api")
CLIENT_READY = sorted(f for f in os.listdir(API_DIR) if f.endswith("_api.json")) if os.path.isdir(API_DIR) else []


@pytest.mark.parametrize("name", CLIENT_READY)
def test_the_packs_api_workflows_take_every_client_setting(name):
    """workflows/api/ files are the client's: each declares a prompt, sampler, size, shift and output, and a
    `ref K image` + `ref K encode` pair for each of its LoadImage nodes."""
    path = os.path.join(API_DIR, name)
    wf = load_workflow(path)
    declared = api_workflow.titles(wf)
    slots = [k for k in range(1, 10) if f"ref {k} image" in declared]
    loads = [n for n in wf.values() if n["class_type"] == "LoadImage"]
    assert slots == list(range(1, len(loads) + 1)), (name, sorted(declared))
    job = Job(refs={k: "x.png" for k in slots}, tasks={k: "ip" for k in slots}, resolutions={k: 512 for k in slots},
              prompt="a [ref#1]", seed=3, steps=4, width=640, height=768, batch_size=2)
    out = fill(wf, job, {k: f"dreamo_client/{k}.png" for k in slots}, path, filename_prefix="dreamo_client/j")
    shift = out[declared["shift"]]["inputs"]
    assert (shift["width"], shift["height"]) == (640, 768)
    assert out[declared["output"]]["inputs"]["filename_prefix"] == "dreamo_client/j"


def test_jobs_files_jsonl_and_csv_with_command_line_defaults(tmp_path):
    (tmp_path / "refs").mkdir()
    jsonl = tmp_path / "jobs.jsonl"
    jsonl.write_text("\n".join([
        json.dumps({"id": "a", "ref_1": "refs/face.png", "prompt": "p1", "seed": 1}),
        "# a comment",
        json.dumps({"refs": {"1": "refs/x.png", "2": "/abs/y.png"}, "tasks": {"2": "style"}, "size": "96x64"}),
    ]))
    defaults = Job(workflow="ip", steps=4, tasks={1: "id"}, prompt="default")
    a, b = read_jobs(str(jsonl), defaults)
    assert a.name == "a" and a.refs == {1: str(tmp_path / "refs" / "face.png")} and a.seed == 1
    assert a.prompt == "p1" and a.steps == 4 and a.tasks == {1: "id"} and a.workflow == "ip"
    assert b.refs == {1: str(tmp_path / "refs" / "x.png"), 2: "/abs/y.png"} and b.tasks == {1: "id", 2: "style"}
    assert (b.width, b.height, b.prompt) == (96, 64, "default")
    assert b.name.startswith("job003-")  # no id: line number + a hash of the settings
    csv_file = tmp_path / "jobs.csv"
    csv_file.write_text("id,ref_1,task_1,seed,steps,prompt\nc,refs/a.jpg,ip,5,,a cat [ref#1]\n")
    (c,) = read_jobs(str(csv_file), Job(steps=2))
    assert (c.name, c.refs[1], c.tasks, c.seed, c.steps, c.prompt) == (
        "c", str(tmp_path / "refs" / "a.jpg"), {1: "ip"}, 5, 2, "a cat [ref#1]")


@pytest.mark.parametrize("row, message", [
    ({"id": "a", "colour": "red"}, "unknown column"),
    ({"id": "a b"}, "must be letters"),
    ({"seed": "x"}, "not a whole number"),
    ({"ref_1": "a.png", "refs": {"12": "b.png"}}, "SLOT 1..9"),
])
def test_bad_jobs_rows_name_the_line(tmp_path, row, message):
    f = tmp_path / "jobs.jsonl"
    f.write_text(json.dumps(row) + "\n")
    with pytest.raises(UsageError, match=message) as e:
        read_jobs(str(f), Job())
    assert "line 1" in str(e.value) or "SLOT" in str(e.value)


PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 24  # what the store looks at: a PNG's first bytes


def test_output_store_resume_and_changed_settings(tmp_path):
    img = tmp_path / "ref.png"
    img.write_bytes(b"one")
    job = Job(name="j1", refs={1: str(img)}, seed=1)
    store = OutputStore(str(tmp_path / "out"))
    assert store.finished(job) is None
    names = store.save(job, "http://s", "pid", [({"filename": "x_00001_.png"}, PNG)], {"progress": 2}, {"total": 1})
    assert names == ["j1_01.png"] and (tmp_path / "out" / "j1_01.png").read_bytes() == PNG
    assert store.finished(job)["files"] == ["j1_01.png"]
    assert not [n for n in os.listdir(tmp_path / "out") if n.endswith(".part")]
    os.remove(tmp_path / "out" / "j1_01.png")  # an output lost: the job runs again
    assert store.finished(job) is None
    store.save(job, "http://s", "pid", [({"filename": "x.png"}, PNG)], {}, {})
    img.write_bytes(b"another picture")  # same id, other input: refuse rather than mix
    from comfyui_dreamo.dreamo_cli.comfy_errors import ClientError
    with pytest.raises(ClientError, match="other settings"):
        store.finished(job)


def test_summary_table_lists_jobs_and_servers():
    ok = Outcome(Job(name="a"), status="done", server="http://h1:1", attempts=2, seconds=3.0, files=["a_01.png"],
                 tried=["http://h2:2 lost"])
    bad = Outcome(Job(name="b"), status="failed", server="http://h1:1", attempts=1, seconds=1.0,
                  reason="rejected\n  node 5 ...")
    old = Outcome(Job(name="c"), status="skipped", server="http://h2:2", files=["c_01.png"])
    text = summary([ok, bad, old])
    lines = text.splitlines()
    assert lines[0].split() == ["job", "status", "server", "tries", "seconds", "outputs", "/", "reason"]
    assert "retried after: http://h2:2" in text and "rejected (…)" in text
    h1 = next(l for l in lines if l.startswith("h1:1"))
    h2 = next(l for l in lines if l.startswith("h2:2"))
    assert h1.split()[:4] == ["h1:1", "1", "1", "0"] and h2.split()[:4] == ["h2:2", "0", "0", "1"]
    assert text.endswith("1 done, 1 already there, 1 failed")


def _silent_listener():
    """A port that accepts connections and never answers (a hung host), and one that refuses them."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_no_server_is_a_clear_error_within_five_seconds(tmp_path, kind, capsys):
    listener = _silent_listener()
    port = listener.getsockname()[1]
    if kind == "refused":
        listener.close()
    try:
        t0 = time.monotonic()
        rc = main(["--server", f"127.0.0.1:{port}", "--workflow", TINY, "--quiet", "--out", str(tmp_path / "o")])
        took = time.monotonic() - t0
    finally:
        listener.close()
    err = capsys.readouterr().err
    assert rc == 3 and took < 5.0
    assert f"no ComfyUI server answers at http://127.0.0.1:{port}" in err and "--server" in err
    assert ("connection refused" if kind == "refused" else "timed out") in err
    assert not (tmp_path / "o").exists()  # nothing written


def test_console_script_is_declared_and_runs_as_a_module():
    data = tomllib.load(open(os.path.join(REPO, "pyproject.toml"), "rb"))
    assert data["project"]["scripts"]["dreamo-client"] == "dreamo_cli.client:main"
    extra = data["project"]["optional-dependencies"]["client"]
    assert {"requests", "websocket-client", "tqdm"} <= set(extra)
    r = subprocess.run([sys.executable, "-m", "dreamo_cli.client", "--list-workflows"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "id_tryon" in r.stdout.split()


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("row, message", [
    ('{"id": "a", "prompt": ' + DEEP + "}", "line 1: nested too deeply to be a job"),
    ('{"id": "a", "prompt": [["a cat"]]}', "line 1: 'prompt' must be a text or a number"),
    ('{"id": "a", "refs": {"1": ["x.png"]}}', "line 1: 'refs' must be an object of slot numbers"),
], ids=["deep", "list-prompt", "list-ref"])
def test_a_nested_jobs_row_is_a_usage_error_not_a_traceback(tmp_path, capsys, row, message):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(row + "\n")
    rc = main(["--jobs", str(jobs), "--workflow", TINY, "--quiet", "--server", "127.0.0.1:9",
               "--out", str(tmp_path / "o")])
    assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_deeply_nested_workflow_file_is_a_usage_error(tmp_path, capsys):
    deep = tmp_path / "deep_api.json"
    deep.write_text('{"1": ' + DEEP + "}")
    rc = main(["--workflow", str(deep), "--quiet", "--server", "127.0.0.1:9", "--out", str(tmp_path / "o")])
    assert rc == 2 and "nested too deeply to be an API-format workflow" in capsys.readouterr().err


def test_list_workflows_with_none_found_is_an_error_naming_the_folders(monkeypatch, tmp_path, capsys):
    """A package installed without its workflows must not list nothing and exit 0."""
    from dreamo_cli import api_workflow, client

    monkeypatch.setattr(api_workflow, "WORKFLOW_DIRS", (str(tmp_path / "none"),))
    assert client.main(["--list-workflows"]) == 1
    err = capsys.readouterr().err
    assert "no workflows found" in err and str(tmp_path / "none") in err and "--workflow PATH" in err
