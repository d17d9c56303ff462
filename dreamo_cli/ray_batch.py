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
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from dataclasses import asdict

from .api_workflow import Job, WorkflowError, fill, find_workflow, load_workflow
from .batch import Outcome, summary
from .ray_worker import WorkerConfig

EXTRA_HINT = ("pip install \"comfyui-dreamo[ray]\" (in the pack's folder: pip install -e \".[ray]\"), or pip install "
              "ray pyarrow, into the Python that runs dreamo-client")
_RAY_ONLY = {"workers": None, "cpu_workers": False, "comfyui": None, "comfy_python": None, "comfy_arg": None,
             "comfy_env": None, "attach": None, "manifest": None, "restarts": None, "start_timeout": None}


class NoWorkers(RuntimeError):
    """No worker could start (exit 3): the message names each node and the fix."""


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("a batch on Ray (needs pip install \"comfyui-dreamo[ray]\"; README, 'Batches on "
                                  "a Ray cluster')")
    g.add_argument("--ray", metavar="ADDRESS", help="run --jobs on Ray: 'auto' (the running cluster: RAY_ADDRESS, "
                   "`ray start` here or the Ray job's own; else a local Ray on this machine), 'local', or a "
                   "cluster address (HOST:6379, ray://HOST:10001)")
    g.add_argument("--workers", type=int, help="workers, one ComfyUI each (default: one per GPU of the cluster; "
                                               "1 with --cpu-workers)")
    g.add_argument("--cpu-workers", action="store_true",
                   help="workers without a GPU: ComfyUI runs with --cpu (slow; for trying it out)")
    g.add_argument("--comfyui", metavar="DIR", help="the ComfyUI folder on every node (default: $COMFYUI_PATH on "
                                                    "the node, else the ComfyUI this pack sits in there)")
    g.add_argument("--comfy-python", metavar="PYTHON", help="the Python that runs ComfyUI on the nodes (default: "
                                                             "DIR/.venv or DIR/venv when there, else Ray's)")
    g.add_argument("--comfy-arg", action="append", metavar="ARG",
                   help="an argument for every ComfyUI a worker starts, e.g. --comfy-arg=--highvram ({worker} "
                        "becomes the worker's number; repeatable)")
    g.add_argument("--comfy-env", action="append", metavar="KEY=VALUE",
                   help="an environment variable for every ComfyUI a worker starts (repeatable)")
    g.add_argument("--attach", action="append", metavar="[NODE=]HOST:PORT",
                   help="use a ComfyUI already running instead of starting one: one worker per --attach, placed on "
                        "NODE (its IP or host name) when given")
    g.add_argument("--manifest", metavar="PATH_OR_URI", help="the Parquet manifest (default OUT/manifest.parquet)")
    g.add_argument("--restarts", type=int, help="times Ray restarts a worker whose ComfyUI died (default 2)")
    g.add_argument("--start-timeout", type=float, help="seconds a worker's ComfyUI may take to start (default 600)")


def ray_options_given(args) -> bool:
    return any(getattr(args, k, None) not in (None, False) for k in _RAY_ONLY)


# -- planning: read, check, skip what is done ----------------------------------------------------------------
def read_table(source: str, defaults: Job) -> list[Job]:
    """The job table at a path or URI (JSONL, CSV or Parquet) -> jobs, through the light client's own reader."""
    from .client import read_jobs
    from .job_table import parent, place_reference, table_text

    text, _ = table_text(source)  # read_jobs reads a name ending in .csv as CSV, any other (Parquet too) as JSONL
    folder = parent(source)
    return read_jobs(source, defaults, text=text, place=lambda value: place_reference(folder, value))


def check(jobs: list[Job], default_workflow: str | None) -> tuple[dict[str, str], set[str], dict[str, str]]:
    """Everything that can be checked before Ray starts: each job's workflow and titles, and that each reference
    exists (a local file, or a URI one listing shows). Returns (workflow path -> text, node classes used,
    reference URI -> size:mtime for the fingerprints)."""
    from .client import UsageError
    from .job_table import filesystem, is_uri

    texts, classes, uris = {}, set(), {}
    for job in jobs:
        job.workflow = find_workflow(job.workflow or default_workflow or "ip")
        if job.workflow not in texts:
            workflow = load_workflow(job.workflow)
            with open(job.workflow, encoding="utf-8") as f:
                texts[job.workflow] = f.read()
            classes |= {str(node["class_type"]) for node in workflow.values()}
        for slot, ref in job.refs.items():
            if is_uri(ref):
                uris[ref] = ""
            elif not os.path.isfile(ref):
                raise UsageError(f"job '{job.name}': reference {slot} is not a file: {ref}")
        fill(load_workflow(job.workflow), job, {k: "check.png" for k in job.refs}, job.workflow)
    if uris:
        import pyarrow.fs as pafs

        for uri in uris:
            fs, path = filesystem(uri)
            info = fs.get_file_info(path)
            if info.type != pafs.FileType.File:
                user = next(j for j in jobs if uri in j.refs.values())
                raise UsageError(f"job '{user.name}': reference {uri} is not a file there")
            uris[uri] = f"{info.size}:{info.mtime_ns}"
    return texts, classes, uris


def fingerprint(job: Job, uris: dict[str, str]) -> str:
    """The light client's fingerprint; a reference read from a URI counts by its URI, size and time."""
    stand_ins = {k: f"{v}#{uris[v]}" for k, v in job.refs.items() if v in uris}
    return dataclasses.replace(job, refs={**job.refs, **stand_ins}).fingerprint() if stand_ins else job.fingerprint()


# -- running -----------------------------------------------------------------------------------------------
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


class _Batch:
    def __init__(self, jobs, outcomes, fingerprints, texts, outputs, manifest, config, options, on_progress, log):
        self.jobs, self.outcomes, self.fingerprints, self.texts = jobs, outcomes, fingerprints, texts
        self.outputs, self.manifest, self.config, self.options = outputs, manifest, config, options
        self.on_progress, self.log = on_progress or (lambda kind, data: None), log
        self.inflight: dict = {}  # ObjectRef -> (job, worker index, submitted at)
        self.info_refs: dict = {}  # ObjectRef of info() -> worker index (start, and after each restart)
        self.workers: dict[int, dict] = {}  # index -> latest info
        self.setup_failed: dict[int, str] = {}
        self.restarting: dict[int, int] = {}  # worker index -> the process id it had before Ray restarts it
        self.unresolved = {j.name for j in jobs}
        self.total = len(jobs)
        self.finished = 0

    def label(self, index: int, reply: dict | None = None) -> str:
        """`w1@host:port`: the worker and its server now (from its reply, else from what it last said); no spaces,
        the summary splits on them."""
        info = reply or self.workers.get(index)
        if not info:
            return f"w{index}"
        return f"w{index}@{info['node'].split(' ', 1)[0]}:{info['server' if reply else 'url'].rsplit(':', 1)[-1]}"

    def task(self, job: Job) -> dict:
        """What a worker needs: the job, its workflow's text, and each reference (bytes of a local file, read
        now, while the job is handed out; or the URI the worker reads itself)."""
        from .job_table import is_uri

        refs = {}
        for slot, ref in job.refs.items():
            if is_uri(ref):
                refs[slot] = {"uri": ref}
            else:
                try:
                    with open(ref, "rb") as f:
                        refs[slot] = {"data": f.read(), "ext": os.path.splitext(ref)[1].lower() or ".png"}
                except OSError as e:
                    refs[slot] = {"error": f"reference {slot} cannot be read on the driver: {e}"}
        spec = {k: v for k, v in asdict(job).items() if k not in ("refs", "workflow")}
        spec["refs"] = refs
        settings = {k: v for k, v in asdict(job).items() if v not in (None, {}, "")}
        return {"job": spec, "workflow": {"name": os.path.basename(job.workflow), "text": self.texts[job.workflow]},
                "fingerprint": self.fingerprints[job.name], "settings": settings}

    def submit(self, actor, job: Job):
        ref = actor.run.remote(self.task(job))
        self.inflight[ref] = (job, self.actor_index[id(actor)], time.monotonic())
        return ref

    def run(self, actors: list, per_worker: int, start_timeout: float) -> None:
        import ray
        from ray.util import ActorPool

        self.actors = actors
        self.actor_index = {id(a): i for i, a in enumerate(actors)}  # the pool hands back these handles
        for i, actor in enumerate(actors):
            self.info_refs[actor.info.remote()] = i
        pool = ActorPool([a for a in actors for _ in range(per_worker)])
        for job in self.jobs:
            pool.submit(self.submit, job)
        deadline = time.monotonic() + start_timeout + 120  # placement (an autoscaler may add a node) and start
        while self.unresolved and pool.has_next():
            try:
                pool.get_next_unordered(timeout=1.0)
            except TimeoutError:
                pass
            except Exception:  # noqa: BLE001 - a worker's death or error: the sweep below reads it from its ref
                pass
            self.sweep(pool)
            if time.monotonic() > deadline:
                for ref, i in list(self.info_refs.items()):
                    if i not in self.workers and i not in self.setup_failed:
                        self.setup_failed[i] = (f"worker {i} did not start within --start-timeout "
                                                f"{start_timeout:.0f} s (+120 s to be placed): the cluster may lack "
                                                f"a free {'CPU' if self.options.cpu else 'GPU'} for it")
                        self.log(f"dreamo-client: {self.setup_failed[i]}; its jobs go to the other workers")
                        del self.info_refs[ref]
                        ray.kill(actors[i], no_restart=True)
        self.sweep(pool)

    def sweep(self, pool) -> None:
        """Read every reply that has arrived: workers that started (or failed to), then jobs."""
        import ray

        refs = list(self.info_refs)
        if refs:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in ready:
                self.worker_started(self.info_refs.pop(ref), ref)
        refs = list(self.inflight)
        if refs:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in ready:
                job, index, t0 = self.inflight.pop(ref)
                self.job_returned(pool, job, index, ref, time.monotonic() - t0)

    def worker_started(self, index: int, ref) -> None:
        import ray

        restarted = index in self.workers
        try:
            info = ray.get(ref)
        except ray.exceptions.RayError as e:
            self.setup_failed[index] = setup_error(e)
            self.log(f"dreamo-client: worker {index} " + ("could not restart" if restarted else "could not start")
                     + f": {self.setup_failed[index]}")
            self.on_progress("worker_failed", {"worker": index, "error": self.setup_failed[index]})
            return
        if not self.note_worker(index, info):  # the old process answered before Ray's kill landed: ask again
            self.info_refs[self.actors[index].info.remote()] = index

    def note_worker(self, index: int, info: dict) -> bool:
        """What a worker says about itself (its start, and each reply): log a start or a restart once. False when
        it is the process Ray is about to replace."""
        known = self.workers.get(index)
        if known and known["worker_pid"] == info["worker_pid"]:
            return True
        if self.restarting.get(index) == info["worker_pid"]:
            return False
        self.workers[index] = info
        self.restarting.pop(index, None)
        gpu = f"GPU {','.join(info['gpus'])}" if info["gpus"] else "no GPU"
        if self.options.progress:
            self.log(f"worker {index} {'restarted' if known else 'ready'} on {info['node']}: ComfyUI at "
                     f"{info['url']} ({gpu})")
        self.on_progress("worker_restarted" if known else "worker", info)
        return True

    def job_returned(self, pool, job: Job, index: int, ref, seconds: float) -> None:
        import ray

        o = self.outcomes[job.name]
        o.attempts += 1
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as e:
            # the worker's process died and Ray could not run the call again there (restarts or retries used up,
            # or the worker never started): the job goes back into the pool, to any worker
            never_started = "creation task" in str(e) and index not in self.workers
            if never_started:
                o.attempts -= 1  # the job never reached a server
            else:
                o.tried.append(f"{self.label(index)} worker died ({type(e).__name__})")
            self.retry_or_fail(pool, job, f"worker {self.label(index)} died while running it")
            return
        except ray.exceptions.RayError as e:  # a bug in the worker: the job fails, the batch goes on
            self.resolve(job, "failed", self.label(index), index, seconds, reason=f"worker error: {e}")
            return
        self.note_worker(index, result["info"])
        label = self.label(index, result)
        o.timings = dict(result.get("timings") or {})
        # the round trip less the worker's own time: Ray's share (plus, for a worker's first job, its start-up)
        o.timings["ray"] = max(seconds - result.get("seconds", 0.0), 0.0)
        seconds = result.get("seconds", seconds)
        if result["status"] == "done":
            try:
                for name, data in result.get("payload", []):  # images first, the job's JSON last
                    self.outputs.write(name, data)
            except OSError as e:
                self.resolve(job, "failed", label, index, seconds, reason=f"cannot write the outputs: {e}")
                return
            self.resolve(job, "done", label, index, seconds, files=result["files"], node=result["node"],
                         server=result["server"])
        elif result["status"] == "lost":
            if result.get("server_died"):
                self.restart(index)
            if result.get("untried"):
                o.attempts -= 1
            else:
                o.tried.append(f"{label} {result['error']}")
            self.retry_or_fail(pool, job, result["error"])
        else:
            self.resolve(job, "failed", label, index, seconds, reason=result["error"], node=result["node"],
                         server=result["server"])

    def restart(self, index: int) -> None:
        """Have Ray restart a worker whose server died (once per death): Ray kills the actor and makes it anew,
        which starts a fresh server; the jobs the pool hands it meanwhile wait for it (the actor's task retries)."""
        import ray

        if index in self.restarting:
            return
        self.restarting[index] = self.workers[index]["worker_pid"] if index in self.workers else -1
        if self.options.progress:
            self.log(f"dreamo-client: worker {self.label(index)} lost its ComfyUI; Ray restarts it")
        ray.kill(self.actors[index], no_restart=False)
        self.info_refs[self.actors[index].info.remote()] = index  # answers once it is back

    def retry_or_fail(self, pool, job: Job, reason: str) -> None:
        o = self.outcomes[job.name]
        if o.attempts <= self.options.retries:
            if self.options.progress:
                self.log(f"{job.name}: {reason.splitlines()[0]}; handed out again (try {o.attempts + 1} of "
                         f"{self.options.retries + 1})")
            pool.submit(self.submit, job)
        else:
            self.resolve(job, "failed", o.server, -1, o.seconds, reason=f"{reason} (tried {o.attempts} times)")

    def resolve(self, job: Job, status: str, label: str, index: int, seconds: float, reason: str = "",
                files=(), node: str = "", server: str = "") -> None:
        from .job_table import ManifestRow

        o = self.outcomes[job.name]
        o.status, o.server, o.seconds, o.reason, o.files = status, label, seconds, reason, list(files)
        self.unresolved.discard(job.name)
        self.finished += 1
        self.manifest.record(ManifestRow(job=job.name, status=status, server=server, node=node, worker=index,
                                         attempts=o.attempts, seconds=seconds, files=tuple(files), error=reason,
                                         fingerprint=self.fingerprints[job.name], finished=time.time()))
        if self.options.progress:
            what = (f"done on {label} in {seconds:.1f} s: {', '.join(files)}" if status == "done"
                    else f"FAILED: {reason.splitlines()[0] if reason else ''}")
            self.log(f"[{self.finished:>{len(str(self.total))}}/{self.total}] {job.name} {what}")
        inflight: dict[int, list[str]] = {}
        for other, i, _ in self.inflight.values():
            inflight.setdefault(i, []).append(other.name)
        self.on_progress("job", {"job": job.name, "status": status, "worker": index, "server": server,
                                 "finished": self.finished, "inflight": inflight})

    def stop_workers(self) -> None:
        import ray

        stops = []
        for actor in getattr(self, "actors", []):
            try:
                stops.append(actor.stop.remote())
            except Exception:  # noqa: BLE001 - already gone
                pass
        if stops:
            ray.wait(stops, num_returns=len(stops), timeout=30)
        for actor in getattr(self, "actors", []):
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001
                pass


def setup_error(e: Exception) -> str:
    """The WorkerSetupError text inside Ray's wrapper (node, reason, fix), else Ray's own first lines."""
    text = str(e)
    marker = "WorkerSetupError: "
    if marker in text:
        return text.split(marker, 1)[1].strip()
    return "\n".join(line for line in text.splitlines()[:6] if line.strip())


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

    from .client import UsageError

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
    batch = _Batch(pending, outcomes, fingerprints, texts, outputs, manifest, config, options, on_progress, log)
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


# -- the command line --------------------------------------------------------------------------------------
def config_from_args(args) -> tuple[WorkerConfig, RayOptions]:
    from .client import UsageError

    if not args.jobs:
        raise UsageError("--ray runs a batch: give it --jobs FILE_OR_URI (.jsonl, .csv or .parquet)")
    if args.server:
        raise UsageError("--server is for the light client's own servers; with --ray, workers start a ComfyUI "
                         "on their nodes, or use running ones given with --attach [NODE=]HOST:PORT")
    if args.per_server < 1 or args.retries < 0 or (args.restarts or 0) < 0 or (args.workers is not None
                                                                                 and args.workers < 1):
        raise UsageError("--per-server and --workers must be at least 1, --retries and --restarts at least 0")
    env = {}
    for item in args.comfy_env or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--comfy-env {item!r}: expected KEY=VALUE")
        env[key] = value
    from .comfy_server import base_url

    attach, nodes = [], []
    for item in args.attach or []:
        node, sep, address = item.rpartition("=")
        try:
            attach.append(base_url(address))
        except ValueError as e:
            raise UsageError(f"--attach {item!r}: {e}") from None
        nodes.append(node if sep else "")
    if attach and (args.workers or args.cpu_workers or args.comfyui or args.comfy_arg):
        raise UsageError("--attach uses running servers: leave out --workers, --cpu-workers, --comfyui and "
                         "--comfy-arg (they are for servers the workers start)")
    workflow = args.workflow if args.workflow != "ip" else ""
    config = WorkerConfig(comfyui=args.comfyui, python=args.comfy_python, comfy_args=tuple(args.comfy_arg or ()),
                          env=env, cpu=args.cpu_workers, attach=tuple(attach),
                          start_timeout=args.start_timeout or 600.0, job_timeout=args.timeout,
                          doctor_args=f"--workflow {workflow}" if workflow else "")
    options = RayOptions(address=args.ray, workers=args.workers, cpu=args.cpu_workers, per_worker=args.per_server,
                         retries=args.retries, restarts=2 if args.restarts is None else args.restarts,
                         attach_nodes=tuple(nodes), manifest=args.manifest, progress=not args.quiet)
    return config, options


def main_ray(args) -> int:
    """`dreamo-client ... --ray ADDRESS`: the exit status, as the light client's."""
    from .client import UsageError, job_from_args

    err = sys.stderr
    if not args.ray:
        given = ", ".join("--" + k.replace("_", "-") for k in _RAY_ONLY if getattr(args, k, None) not in (None, False))
        print(f"dreamo-client: {given} belong(s) to a batch on Ray: add --ray auto (or leave them out)", file=err)
        return 2
    try:
        import pyarrow  # noqa: F401
        import ray  # noqa: F401
    except ImportError as e:
        print(f"dreamo-client: --ray needs Ray and pyarrow, and {e.name or 'one of them'} is not installed: "
              f"{EXTRA_HINT}.", file=err)
        return 2
    try:
        config, options = config_from_args(args)
        jobs = read_table(args.jobs, job_from_args(args))
        outcomes = run_ray_batch(jobs, args.out, config, options, default_workflow=args.workflow,
                                 log=lambda m: print(m, file=err, flush=True))
    except (UsageError, WorkflowError, ValueError) as e:
        print(f"dreamo-client: {e}", file=err)
        return 2
    except NoWorkers as e:
        print(f"dreamo-client: {e}", file=err)
        return 3
    except KeyboardInterrupt:  # the workers and their servers are stopped, the manifest is written
        print("dreamo-client: stopped; the jobs that finished are in the manifest, and the same command resumes",
              file=err)
        return 130
    print(summary(outcomes))
    failed = [o for o in outcomes if o.status == "failed"]
    for o in failed:
        print(f"dreamo-client: job {o.job.name} failed: {o.reason}", file=err)
    if failed and all(o.reason.startswith("no worker left") for o in failed) and not any(
            o.status == "done" for o in outcomes):
        return 3
    return 1 if failed else 0
