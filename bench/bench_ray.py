"""The same batch through the light multi-server client and through Ray (dreamo-client --ray) on this machine:
jobs per minute, the client's own cost per job, and Ray's own overhead per job.

Two ComfyUI servers on loopback (the pack + the tiny test models; COMFYUI_PATH, default ~/comfyui) serve both:
the light client is given them with --server, the Ray workers attach to them (--attach), so both paths drive the
same servers and only the dispatching differs. Every job is a 64x48, 2-step tiny-model job (the server's work is
small, so the dispatching shows); all jobs share two reference pictures, as a try-on batch shares garments.
A local Ray (num_cpus=2, no GPU) is started once, outside the timings. Run by hand:

    python bench/bench_ray.py [--jobs 24]

Ray's overhead per job = the round trip the driver sees (hand-out to result) less the worker's own time for the
job, averaged over the jobs after each worker's first.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.append(REPO)  # the test kit, dreamo_testkit (appended: a ComfyUI checkout put first keeps its nodes.py)
from dreamo_testkit import comfy_host  # noqa: E402

comfy_host.setup()  # registers the package comfyui_dreamo
from dreamo_testkit import ray_fixtures, tiny_server  # noqa: E402
from bench_client import table  # noqa: E402  (bench/: the same table layout)

ray_fixtures.import_cli()
from dreamo_cli.api_workflow import Job  # noqa: E402
from dreamo_cli.batch import run_jobs  # noqa: E402
from dreamo_cli.ray_batch import RayOptions, run_ray_batch  # noqa: E402
from dreamo_cli.ray_worker import WorkerConfig  # noqa: E402


def make_jobs(prefix: str, n: int, pics: list[str]) -> list[Job]:
    return [Job(name=f"{prefix}{i:03d}", workflow=ray_fixtures.TINY, refs={1: pics[0], 2: pics[1]}, seed=1000 + i,
                steps=2, width=64, height=48, prompt="the thing [ref#1] in the style of [ref#2]") for i in range(n)]


def mean_ms(values) -> str:
    values = list(values)
    return f"{statistics.mean(values) * 1000:.0f}" if values else "-"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=24, help="jobs per batch (default 24)")
    args = ap.parse_args()
    import ray

    work = tempfile.mkdtemp(prefix="bench_ray_")
    servers = []
    try:
        pics = ray_fixtures.pictures(work)
        servers = [tiny_server.start(os.path.join(work, f"comfy{i}")) for i in range(2)]
        urls = [s.url for s in servers]
        # warm both servers up (models loaded, the two references encoded) so neither path pays for it
        run_jobs(make_jobs("warm", 4, pics), urls, os.path.join(work, "warm"), per_server=2, progress=False,
                 log=lambda m: None)
        t0 = time.perf_counter()
        ray_fixtures.start_ray(num_cpus=2)
        ray_start = time.perf_counter() - t0
        rows = [("path", "in flight / server", "jobs", "wall s", "jobs / min", "execute ms/job",
                 "client ms/job", "Ray ms/job", "workers ready s")]
        for per_server in (1, 2):
            jobs = make_jobs(f"light{per_server}_", args.jobs, pics)
            t0 = time.perf_counter()
            outcomes = run_jobs(jobs, urls, os.path.join(work, f"light{per_server}"), per_server=per_server,
                                progress=False, log=lambda m: None)
            wall = time.perf_counter() - t0
            assert all(o.status == "done" for o in outcomes), [o.reason for o in outcomes if o.status != "done"]
            rows.append(("light client", per_server, len(jobs), f"{wall:.1f}", f"{len(jobs) / wall * 60:.0f}",
                         mean_ms(o.timings.get("execute", 0) for o in outcomes),
                         mean_ms(o.timings["overhead"] for o in outcomes), "-", "-"))

            jobs = make_jobs(f"ray{per_server}_", args.jobs, pics)
            ready, first = [], {}

            def on_progress(kind, data, t_start=time.perf_counter()):
                if kind == "worker":
                    ready.append(time.perf_counter() - t_start)

            config = WorkerConfig(attach=tuple(urls))
            options = RayOptions(per_worker=per_server, attach_nodes=("", ""), progress=False)
            t0 = time.perf_counter()
            outcomes = run_ray_batch(jobs, os.path.join(work, f"ray{per_server}"), config, options,
                                     on_progress=on_progress, log=lambda m: None)
            wall = time.perf_counter() - t0
            assert all(o.status == "done" for o in outcomes), [o.reason for o in outcomes if o.status != "done"]
            steady = []
            for o in outcomes:  # each worker's first `per_server` jobs also waited for the worker to start
                seen = first.setdefault(o.server, [])
                (steady if len(seen) >= per_server else seen).append(o)
            after_start = wall - max(ready)
            rows.append(("Ray (attached)", per_server, len(jobs), f"{wall:.1f} ({after_start:.1f})",
                         f"{len(jobs) / wall * 60:.0f} ({len(jobs) / after_start * 60:.0f})",
                         mean_ms(o.timings.get("execute", 0) for o in outcomes),
                         mean_ms(o.timings["overhead"] for o in outcomes),
                         mean_ms(o.timings["ray"] for o in steady), f"{max(ready):.1f}"))
        print(f"\nThe same {args.jobs}-job batch (64x48, 2 steps, tiny models) over the same two ComfyUI servers "
              f"on this machine; load before: {os.getloadavg()[0]:.1f}")
        print(f"Ray started in {ray_start:.1f} s (once, not in the timings). Ray rows: in brackets, counted from "
              f"the moment both workers were ready.")
        print("client ms/job = the client's own share of a job: upload, queue (websocket + POST /prompt), history, "
              "download;\nRay ms/job = the driver's round trip less the worker's own time (jobs after each "
              "worker's first).\n")
        print(table(rows))
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
