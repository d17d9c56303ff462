"""A batch on Ray while it runs, on the driver: `Dispatch` hands the jobs to the workers through Ray's ActorPool
and reads their replies as they arrive (a worker that started, restarted or failed to; a job's result), hands a
lost job out again or fails it, has Ray restart a worker whose ComfyUI died, writes each finished job's files and
manifest row, and stops the workers at the end. ray_batch.py sets it up; Ray is imported only inside.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict

from .api_workflow import Job


class Dispatch:
    """The driver's state of one batch on Ray: the jobs in flight, the workers as they last said, the outcomes."""

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
