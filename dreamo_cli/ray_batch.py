"""dreamo-client --ray: a batch on a Ray cluster (or a local Ray on this machine), one ComfyUI per GPU.

    dreamo-client --jobs jobs.parquet --workflow tryon --ray auto --out s3://bucket/tryons/
    ray job submit --address http://HEAD:8265 -- dreamo-client --jobs s3://bucket/jobs.parquet --ray auto ...

The job table is the light client's (JSONL or CSV, same columns) or a Parquet file with those columns, from a
local path or any URI pyarrow's filesystems read. Ray places one worker (an actor asking for one GPU, or one CPU
with --cpu-workers) per GPU; each starts a ComfyUI from the ComfyUI folder on its node (or attaches to one
already running there, --attach) and runs jobs through the light client's per-job code (ray_worker.py). Ray's
`ActorPool` hands the jobs out: a worker gets the next job when it is free (--per-server calls at a time), the
others wait on the driver (back-pressure). A worker whose server died hands its job back and the driver has Ray
restart it (a fresh server, at most --restarts times); the job goes back into the pool and runs on whichever
worker is free first, at most --retries more times. A call whose worker process or node died is run again by Ray
on the restarted worker (also at most --retries times), or goes back into the pool when the worker is gone. A prompt the server rejects, or a node that fails, is reported and not retried.

Outputs go to a local folder or a URI, named as the light client names them (`<job>_01.png`, `<job>.json`), and
`manifest.parquet` there lists every job (job, status, server, node, worker, attempts, seconds, files, error,
fingerprint, finished); it is rewritten as jobs finish. A re-run skips the jobs the manifest lists as done whose
files are all there (resume); when nothing is left, Ray is not even started. Exit status as the light client.

Ray and pyarrow come with the extra `pip install "comfyui-dreamo[ray]"` and are imported only with --ray.

Here: joining the cluster, placing the workers, skipping what is done, and the manifest's last word. The command
line is ray_cli.py, the checks before Ray starts ray_plan.py, handing the jobs out and reading the replies
ray_dispatch.py, the worker ray_worker.py.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time

from .api_workflow import Job, WorkflowError
from .batch import Outcome
from .jobs import UsageError
from .ray_dispatch import Dispatch
from .ray_plan import check, fingerprint
from .ray_worker import WorkerConfig


class NoWorkers(RuntimeError):
    """No worker could start (exit 3): the message names each node and the fix."""


@dataclasses.dataclass
class RayOptions:
    address: str = "auto"
    workers: int | None = None
    cpu: bool = False
    per_worker: int = 2
    retries: int = 2
    restarts: int = 2
    attach_nodes: tuple = ()  # per --attach: the node it names, or ""
    manifest: str | None = None
    progress: bool = True


def connect(address: str) -> tuple[bool, str]:
    """Join the Ray cluster at `address` ('auto' falls back to a new local Ray). Returns (we joined, how)."""
    import logging

    import ray

    if ray.is_initialized():
        return False, "the Ray this process already joined"
    quiet = {"logging_level": logging.WARNING, "runtime_env": runtime_env()}
    if address == "local":
        ray.init(address="local", include_dashboard=False, **quiet)
        return True, "a new local Ray on this machine"
    if address == "auto":
        try:
            ray.init(address="auto", **quiet)
            return True, "the running Ray cluster"
        except ConnectionError:
            ray.init(address="local", include_dashboard=False, **quiet)
            return True, "a new local Ray on this machine (no running cluster was found)"
    ray.init(address=address, **quiet)
    return True, f"the Ray cluster at {address}"


def _worker_options(options: RayOptions, config: WorkerConfig, index: int) -> dict:
    # Ray restarts a worker at most --restarts times, and runs a call again (at most --retries times) when the
    # worker died under it or restarts: such a job waits for the worker to come back
    opts = {"max_restarts": options.restarts, "max_task_retries": options.retries,
            "max_concurrency": options.per_worker}
    if config.attach:
        opts.update(num_cpus=0, num_gpus=0)
        node = options.attach_nodes[index] if index < len(options.attach_nodes) else ""
        if node:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=node, soft=False)
    elif options.cpu:
        opts.update(num_cpus=1, num_gpus=0)
    else:
        opts.update(num_cpus=1, num_gpus=1)
    return opts


def runtime_env() -> dict:
    """Ship this package to the workers (they run the driver's version of it; nodes need only its dependencies).
    Ray takes local folders only when a driver joins, so a program that calls ray.init itself passes this."""
    if not __name__.startswith("dreamo_cli."):  # imported under another name: the workers must have it installed
        return {}
    return {"py_modules": [os.path.dirname(os.path.abspath(__file__))]}


def _node_ids(names: list[str]) -> list[str]:
    """--attach NODE= names (IP, host name or Ray node id) -> Ray node ids."""
    import ray


    nodes = [n for n in ray.nodes() if n.get("Alive")]
    ids = []
    for name in names:
        if not name:
            ids.append("")
            continue
        match = [n["NodeID"] for n in nodes if name in (n.get("NodeManagerAddress"), n.get("NodeManagerHostname"),
                                                          n.get("NodeID"))]
        if not match:
            known = ", ".join(f"{n.get('NodeManagerHostname')} ({n.get('NodeManagerAddress')})" for n in nodes)
            raise UsageError(f"--attach {name}=...: no live Ray node is called {name}; the nodes: {known}")
        ids.append(match[0])
    return ids


def run_ray_batch(jobs: list[Job], out: str, config: WorkerConfig, options: RayOptions,
                  default_workflow: str | None = None, on_progress=None, log=None) -> list[Outcome]:
    """Run `jobs` on Ray (see the module docstring). `on_progress(kind, data)` sees workers start ("worker",
    their info: node, url, pid), restart and fail, and each job finish ("job"). Raises UsageError / WorkflowError /
    ValueError for what can be fixed before Ray starts, NoWorkers when no worker could start."""
    from .job_table import MANIFEST_NAME, Manifest, ManifestRow, Outputs

    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    names = [j.name for j in jobs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise WorkflowError(f"job ids must be unique; repeated: {', '.join(dupes)}")
    texts, classes, uris = check(jobs, default_workflow)
    outputs = Outputs(out)
    manifest = Manifest(options.manifest or outputs.uri(MANIFEST_NAME)).load()
    present = outputs.names()
    outcomes = {j.name: Outcome(j) for j in jobs}
    fingerprints = {j.name: fingerprint(j, uris) for j in jobs}
    pending = []
    for job in jobs:
        o = outcomes[job.name]
        try:
            row = manifest.done(job.name, fingerprints[job.name], present)
        except ValueError as e:
            o.status, o.reason = "failed", str(e)
            continue
        if row is None:
            pending.append(job)
        else:
            o.status, o.server, o.files, o.reason = "skipped", row.server, list(row.files), "outputs already there"
    if not pending:
        return list(outcomes.values())

    import ray

    config = dataclasses.replace(config, node_classes=tuple(sorted(classes)),
                                 out_uri=None if outputs.local else outputs.location)
    joined, how = connect(options.address)
    batch = Dispatch(pending, outcomes, fingerprints, texts, outputs, manifest, config, options, on_progress, log)
    try:
        if config.attach:
            options = dataclasses.replace(options, attach_nodes=tuple(_node_ids(list(options.attach_nodes))))
            count = len(config.attach)
        elif options.cpu:
            count = options.workers or 1
        else:
            gpus = int(ray.cluster_resources().get("GPU", 0))
            count = options.workers or gpus
            if not count:
                raise NoWorkers(f"the Ray cluster ({how}) has no GPU: {ray.cluster_resources()}. Run on a cluster "
                                f"with GPU nodes, pass --workers N to wait for an autoscaler to add them, or add "
                                f"--cpu-workers to run ComfyUI on CPUs (slow; for trying it out).")
        if options.progress:
            log(f"dreamo-client: {len(pending)} job(s) on {how}: {count} worker(s), {options.per_worker} job(s) "
                f"in flight each" + (f"; {len(jobs) - len(pending)} already done" if len(pending) < len(jobs) else ""))
        from .ray_worker import DreamOWorker

        Remote = ray.remote(DreamOWorker)
        actors = [Remote.options(**_worker_options(options, config, i)).remote(i, config) for i in range(count)]
        batch.run(actors, options.per_worker, config.start_timeout)
    finally:
        batch.stop_workers()
        manifest.flush()
        if joined:
            ray.shutdown()
    if len(batch.setup_failed) == len(getattr(batch, "actors", [])) and not any(
            o.status == "done" for o in outcomes.values()):
        raise NoWorkers("no worker could start its ComfyUI:\n" + "\n".join(
            f"  worker {i}: {text}" for i, text in sorted(batch.setup_failed.items())))
    for name in batch.unresolved:  # every worker is gone
        o = outcomes[name]
        o.status = "failed"
        o.reason = "no worker left to run it" + (": " + "; ".join(o.tried[-2:]) if o.tried else "")
        manifest.record(ManifestRow(
            job=name, status="failed", attempts=o.attempts, error=o.reason, fingerprint=fingerprints[name],
            finished=time.time()))
    manifest.flush()
    return list(outcomes.values())

