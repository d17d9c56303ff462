"""dreamo-client --ray on a local Ray (ray.init(num_cpus=2), no GPU): CPU workers each start a real ComfyUI (the
pack + tiny generated models) in their own sandbox and run jobs through the light client's per-job code.

12 jobs over two workers, one worker's server killed mid-batch: every job ends with exactly one output, written
once and listed in the Parquet manifest, the killed server's job finishes elsewhere; a re-run queues nothing. A job
the server rejects is reported with the server's message and exit status 1, not retried. A node without ComfyUI
gives its name and the doctor command (exit 3)."""
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from dreamo_testkit import ray_fixtures  # the Ray setup shared with bench/bench_ray.py

ray_fixtures.require_ray()
ray_fixtures.import_cli()

import pyarrow.parquet as pq  # noqa: E402
import ray  # noqa: E402

from dreamo_cli.api_workflow import Job  # noqa: E402  (the top-level name Ray ships to the workers)
from dreamo_cli.client import main  # noqa: E402
from dreamo_cli.ray_batch import RayOptions, run_ray_batch  # noqa: E402
from dreamo_cli.ray_plan import read_table  # noqa: E402

pytestmark = [pytest.mark.host, pytest.mark.server]
TINY = ray_fixtures.TINY


@pytest.fixture(scope="module")
def local_ray():
    ray_fixtures.start_ray(num_cpus=2)
    try:
        yield
    finally:
        ray.shutdown()


def ray_args(config, out, jobs, *extra):
    """The command line that runs `jobs` on the Ray this test joined, with the test's sandboxes."""
    args = ["--jobs", str(jobs), "--workflow", TINY, "--steps", "2", "--ray", "local", "--cpu-workers",
            "--comfyui", config.comfyui, "--comfy-python", config.python, "--out", str(out), "--per-server", "1",
            "--start-timeout", "300", *extra]
    args += [f"--comfy-arg={a}" for a in config.comfy_args] + [f"--comfy-env={k}={v}" for k, v in config.env.items()]
    return args


def test_twelve_jobs_on_two_workers_one_server_killed_then_resumed(local_ray, tmp_path, capsys):
    config, boxes = ray_fixtures.worker_config(str(tmp_path / "sandboxes"), 2)
    pics = ray_fixtures.pictures(str(tmp_path))
    # 8 steps: the first server busy long enough for the second to finish a job and hold the next
    names = ray_fixtures.write_jobs(str(tmp_path / "jobs.jsonl"), pics, "k", steps=8)
    jobs = read_table(str(tmp_path / "jobs.jsonl"), Job(workflow=TINY))
    out = tmp_path / "out"
    workers, killed, restarted, done_by = {}, [], [], {0: 0, 1: 0}

    def on_progress(kind, data):
        if kind == "worker":
            workers[data["worker"]] = data
        elif kind == "worker_restarted":
            restarted.append(data)
        elif kind == "job":
            done_by[data["worker"]] += 1
            # once worker 1 has done a job and 3 are done, kill its server while it holds the next one
            if not killed and done_by[1] and data["finished"] >= 3 and data["inflight"].get(1):
                killed.append((workers[1], list(data["inflight"][1])))
                os.kill(workers[1]["pid"], signal.SIGKILL)

    options = RayOptions(cpu=True, workers=2, per_worker=1, retries=2, restarts=1)
    outcomes = run_ray_batch(jobs, str(out), config, options, on_progress=on_progress)
    assert killed, "worker 1 never had a job in flight after 3 jobs were done"
    by_name = {o.job.name: o for o in outcomes}
    assert all(o.status == "done" for o in outcomes), [(o.job.name, o.reason) for o in outcomes]
    dead, lost = killed[0]
    dead_label = f"w1@{socket.gethostname()}:{dead['url'].rsplit(':', 1)[1]}"
    for name in lost:  # the killed server's job was handed out again and finished on another server
        o = by_name[name]
        assert o.tried and o.tried[0].startswith(f"{dead_label} its ComfyUI at {dead['url']} went away"), o.tried
        assert o.server != dead_label and o.attempts == 2
    assert {o.server.split("@")[0] for o in outcomes} == {"w0", "w1"}  # both workers did jobs
    # every output written once in the output folder and listed in the manifest
    expected = sorted([f"{n}_01.png" for n in names] + [f"{n}.json" for n in names] + ["manifest.parquet"])
    assert sorted(os.listdir(out)) == expected
    # A lost job ran again; the killed server may have saved it before it died (under load the kill can land
    # while the client fetches the picture), so it is on the servers once or twice, and in `out` once.
    saved = {n: len(ray_fixtures.saved_on_servers(boxes, n)) for n in names}
    assert all(saved[n] in ((1, 2) if n in lost else (1,)) for n in names), saved
    manifest = {r["job"]: r for r in pq.read_table(str(out / "manifest.parquet")).to_pylist()}
    assert sorted(manifest) == sorted(names)
    for n, row in manifest.items():
        assert row["status"] == "done" and row["files"] == [f"{n}_01.png"] and row["error"] == ""
        assert row["node"].startswith(socket.gethostname()) and row["server"].startswith("http://127.0.0.1:")
        assert row["worker"] in (0, 1) and row["seconds"] > 0
        assert row["fingerprint"] == by_name[n].job.fingerprint()
    # Ray restarted worker 1 (a fresh server), and the job handed to it meanwhile waited for it and ran there
    assert restarted and restarted[0]["worker"] == 1 and restarted[0]["url"] != dead["url"]
    fresh = f"w1@{socket.gethostname()}:{restarted[0]['url'].rsplit(':', 1)[1]}"
    assert any(o.server == fresh for o in outcomes)

    # a re-run queues nothing: every job is in the manifest with its file, so no worker (and no server) starts
    capsys.readouterr()
    started_before = len(workers)
    assert main(ray_args(config, out, tmp_path / "jobs.jsonl", "--workers", "2")) == 0
    table = capsys.readouterr().out
    assert "0 done, 12 already there, 0 failed" in table
    assert len(workers) == started_before
    assert sorted(os.listdir(out)) == expected
    assert {n: len(ray_fixtures.saved_on_servers(boxes, n)) for n in names} == saved


def test_a_rejected_job_is_reported_with_the_servers_message_and_not_retried(local_ray, tmp_path, capsys):
    config, boxes = ray_fixtures.worker_config(str(tmp_path / "sandboxes"), 1)
    pics = ray_fixtures.pictures(str(tmp_path))
    ray_fixtures.write_jobs(str(tmp_path / "jobs.jsonl"), pics, "r", n=2)
    with open(tmp_path / "jobs.jsonl", "a") as f:  # reference 1 encoded at 48 px: below the node's minimum of 64
        f.write('{"id": "too_small", "ref_1": "ref0.png", "ref_2": "ref1.png", "resolution_1": 48}\n')
        # and one job whose pictures the worker reads itself, from URIs
        f.write(json.dumps({"id": "by_uri", "ref_1": f"file://{pics[0]}", "ref_2": f"file://{pics[1]}"}) + "\n")
    out = tmp_path / "out"  # given as a URI: the worker writes the outputs itself
    rc = main(ray_args(config, f"file://{out}", tmp_path / "jobs.jsonl", "--workers", "1", "--quiet"))
    captured = capsys.readouterr()
    assert rc == 1, captured.err
    message = "node 5 (DreamORefEncode 'ref 1 encode') input 'resolution': Value 48 smaller than min of 64"
    assert "job too_small failed:" in captured.err and "rejected the prompt" in captured.err
    assert message in captured.err
    assert "3 done, 0 already there, 1 failed" in captured.out
    rows = {r["job"]: r for r in pq.read_table(str(out / "manifest.parquet")).to_pylist()}
    assert rows["too_small"]["status"] == "failed" and rows["too_small"]["attempts"] == 1  # not retried
    assert message in rows["too_small"]["error"]
    assert [rows[n]["status"] for n in ("r00", "r01", "by_uri")] == ["done", "done", "done"]
    assert not ray_fixtures.saved_on_servers(boxes, "too_small")
    assert sorted(os.listdir(out)) == ["by_uri.json", "by_uri_01.png", "manifest.parquet", "r00.json", "r00_01.png",
                                       "r01.json", "r01_01.png"]
    assert json.load(open(out / "by_uri.json"))["settings"]["refs"] == {"1": f"file://{pics[0]}",
                                                                        "2": f"file://{pics[1]}"}


def test_a_node_without_comfyui_is_named_with_the_doctor_command(tmp_path):
    """The console command as a user types it (`--ray auto`: the running Ray, else a new local one)."""
    config, _ = ray_fixtures.worker_config(str(tmp_path / "sandboxes"), 1)
    pics = ray_fixtures.pictures(str(tmp_path))
    ray_fixtures.write_jobs(str(tmp_path / "jobs.jsonl"), pics, "n", n=2)
    missing = str(tmp_path / "no_comfyui_here")
    args = ray_args(config, tmp_path / "out", tmp_path / "jobs.jsonl", "--workers", "1", "--quiet")
    args[args.index("--comfyui") + 1] = missing
    args[args.index("--ray") + 1] = "auto"
    r = subprocess.run([sys.executable, "-m", "dreamo_cli.client", *args], cwd=ray_fixtures.REPO,
                       capture_output=True, text=True, timeout=400)
    assert r.returncode == 3, r.stderr[-3000:]
    assert f"node {socket.gethostname()}" in r.stderr and f"no ComfyUI at {missing}" in r.stderr
    assert f"dreamo-doctor --comfyui {missing} --workflow {TINY}" in r.stderr
    assert "Traceback" not in r.stderr


def test_attach_mistakes_name_the_server_or_the_nodes(local_ray, tmp_path, capsys):
    pics = ray_fixtures.pictures(str(tmp_path))
    ray_fixtures.write_jobs(str(tmp_path / "jobs.jsonl"), pics, "a", n=1)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = ["--jobs", str(tmp_path / "jobs.jsonl"), "--workflow", TINY, "--ray", "local", "--quiet",
            "--out", str(tmp_path / "out")]
    node = ray.util.get_node_ip_address()
    assert main([*base, "--attach", f"{node}=127.0.0.1:{port}"]) == 3
    err = capsys.readouterr().err
    assert f"no ComfyUI answers at http://127.0.0.1:{port} (--attach)" in err and socket.gethostname() in err
    assert main([*base, "--attach", "no-such-node=127.0.0.1:8188"]) == 2
    assert f"no live Ray node is called no-such-node; the nodes: {socket.gethostname()} ({node})" in \
        capsys.readouterr().err
