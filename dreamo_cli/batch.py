"""Hand jobs out to one or more ComfyUI servers and bring the results back.

Each server's own queue runs the prompts; the client keeps at most `per_server` of its jobs in flight on each
server (upload, queue, follow, download), so a server always has the next prompt waiting without the client
hoarding work a faster server could take. A job whose server goes away (or answers 5xx or garbage, or
interrupts it) is tried again on another server, at most `retries` more times; a prompt the server rejects or
a node that fails is reported as it is (trying again would repeat it), and so is a job that cannot run at all
(a reference picture missing): the other jobs go on. Outputs are written under temporary names and renamed,
then a manifest `<job>.json` last (see outputs.py): a job counts as done only when its manifest and every
file it lists exist, so a re-run skips finished jobs and redoes the others (resume), and no job's outputs are
written twice. A `StopRequest` (Ctrl-C, SIGTERM) takes this client's prompts back off the servers.
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from tqdm import tqdm

from .api_workflow import Job, WorkflowError, fill, find_workflow, load_workflow
from .comfy_errors import ClientError, NodeFailed, PromptRejected, ServerUnavailable, Stopped
from .comfy_server import DEFAULT_MAX_DOWNLOAD, ComfyServer
from .outputs import OutputStore
from .wire import printable

__all__ = ["Outcome", "OutputStore", "StopRequest", "check_job", "execute", "run_jobs", "summary"]


@dataclass
class Outcome:
    job: Job
    status: str = "pending"  # done | skipped | failed | stopped
    server: str = ""
    attempts: int = 0
    seconds: float = 0.0
    reason: str = ""
    files: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    tried: list[str] = field(default_factory=list)  # servers it failed on, with the reason


class StopRequest:
    """Ask a running `run_jobs` to stop. `request()` only stores two fields, so a signal handler may call it.
    run_jobs then queues nothing more, deletes this client's queued prompts from the servers' queues,
    interrupts its running ones (never another client's) and returns; `cancelled` and `interrupted` count them."""

    def __init__(self):
        self.requested = False
        self.reason = ""
        self.cancelled = 0
        self.interrupted = 0

    def request(self, reason: str = "stop") -> None:
        if not self.requested:
            self.reason = reason
            self.requested = True


def check_job(job: Job, default_workflow: str | None) -> str | None:
    """Why the job cannot run, found before any server is asked (its workflow, its titles, a reference picture
    that is not there), or None. Resolves `job.workflow` to the file's path."""
    try:
        path = find_workflow(job.workflow or default_workflow or "ip")
        job.workflow = path
        for slot, local in sorted(job.refs.items()):
            if not os.path.isfile(local):
                return f"reference {slot} is not a file: {local}"
        fill(load_workflow(path), job, {k: "check.png" for k in job.refs}, path)
    except WorkflowError as e:
        return str(e)
    return None


def execute(server: ComfyServer, job: Job, default_workflow: str | None, store: OutputStore, on_event=None,
            timeout: float = 3600.0) -> tuple[list[str], dict]:
    """Upload, fill, queue, follow and download one job on one server, all within `timeout` seconds.
    Returns (files, timings)."""
    deadline = time.monotonic() + timeout
    path = find_workflow(job.workflow or default_workflow or "ip")
    workflow = load_workflow(path)
    t0 = time.perf_counter()
    images = {}
    for slot, local in sorted(job.refs.items()):
        if not os.path.isfile(local):
            raise WorkflowError(f"job '{job.name}': reference {slot} is not a file: {local}")
        images[slot] = server.upload(local, deadline)
    upload = time.perf_counter() - t0
    prompt = fill(workflow, job, images, path, filename_prefix=f"dreamo_client/{job.name}")
    run = server.run(prompt, on_event=on_event, deadline=deadline)
    t1 = time.perf_counter()
    if not run.images:
        raise PromptRejected(f"{server.url} ran job '{job.name}' but it saved no image (does the workflow have a "
                             f"SaveImage node?)")
    outputs = [store.receive(job, i, lambda f, ref=ref: server.download(ref, f, deadline),
                             f"{server.url}'s output {printable(ref['filename'], 120)}")
               for i, ref in enumerate(run.images, start=1)]
    download = time.perf_counter() - t1
    timings = {"upload": upload, **{k: v for k, v in run.timings.items()
                                    if k in ("queue", "wait", "execute", "finish", "history")}, "download": download}
    timings["total"] = time.perf_counter() - t0
    # the client's own share: everything but waiting for the server's queue and execution
    timings["overhead"] = upload + timings.get("queue", 0.0) + timings.get("history", 0.0) + download
    files = store.commit(job, server.url, run.prompt_id, outputs, [r["filename"] for r in run.images], run.events,
                         timings)
    return files, timings


class ProgressBar:
    """One tqdm bar per job in flight: the node being run and step k of n."""

    def __init__(self, job: Job, server: ComfyServer, workflow_titles: dict, position: int, enabled: bool):
        self.titles = workflow_titles
        self.label = f"{job.name} @ {server.url.split('://', 1)[1]}"
        self.bar = tqdm(total=1, desc=self.label, position=position, leave=False, disable=not enabled,
                        bar_format="{desc}: {n_fmt}/{total_fmt} {bar} {elapsed}", dynamic_ncols=True)

    def __call__(self, kind: str, data: dict):
        if kind == "executing" and data.get("node") is not None:
            node = data["node"]
            title = self.titles.get(node) if isinstance(node, str) else None
            self.bar.set_description_str(f"{self.label} {title or printable(node, 40)}", refresh=False)
            self.bar.reset(total=1)
        elif kind == "progress":
            value, top = data.get("value", 0), data.get("max", 1)
            if all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 31 for v in (value, top)):
                self.bar.total = max(top, 1)
                self.bar.n = min(value, self.bar.total)
                self.bar.refresh()

    def close(self):
        self.bar.close()


def _titles(job: Job, default_workflow: str | None) -> dict:
    try:
        wf = load_workflow(find_workflow(job.workflow or default_workflow or "ip"))
    except WorkflowError:
        return {}
    return {k: f"{v.get('_meta', {}).get('title', v['class_type'])}" for k, v in wf.items()}


class _Batch:
    """The jobs of one run_jobs call, handed to worker threads (`per_server` per server). A job whose server
    went away goes back to the front of the queue for a server it has not failed on."""

    def __init__(self, jobs: list[Job], outcomes: dict[str, Outcome], servers: list[ComfyServer],
                 store: OutputStore, default_workflow, per_server, retries, timeout, progress, on_event, stop, log):
        self.pending = deque(jobs)
        self.unfinished = len(jobs)
        self.outcomes, self.servers, self.store = outcomes, servers, store
        self.default_workflow, self.per_server = default_workflow, per_server
        self.retries, self.timeout = retries, timeout
        self.progress, self.on_event, self.stop, self.log = progress, on_event, stop, log
        self.lock = threading.Condition()
        self.dead: set[str] = set()
        self.total = tqdm(total=len(jobs), desc="jobs", position=0, dynamic_ncols=True,
                          disable=not progress or len(outcomes) == 1)

    # -- handing out --------------------------------------------------------------------------------------
    def _failed_on(self, job: Job, url: str) -> bool:
        return any(t.startswith(url + " ") for t in self.outcomes[job.name].tried)

    def _usable_elsewhere(self, job: Job, here: ComfyServer) -> bool:
        return any(s.url not in self.dead and s.url != here.url and not self._failed_on(job, s.url)
                   for s in self.servers)

    def take(self, server: ComfyServer) -> Job | None:
        """The next job for this server, waiting while the only ones left would rather go elsewhere; None when
        the batch is over (or stopping, or the server is dead)."""
        with self.lock:
            while not (self.stop.requested or server.url in self.dead or self.unfinished == 0):
                for job in self.pending:
                    if not self._failed_on(job, server.url) or not self._usable_elsewhere(job, server):
                        self.pending.remove(job)
                        return job
                self.lock.wait(0.2)
            return None

    def finish(self, job: Job, **fields) -> None:
        with self.lock:
            o = self.outcomes[job.name]
            for k, v in fields.items():
                setattr(o, k, v)
            self.unfinished -= 1
            self.total.update(1)
            self.lock.notify_all()

    def give_back(self, job: Job, server: ComfyServer, error: ClientError) -> bool:
        """After a transient error: mark the server dead if it is, and queue the job again while it has tries
        left. Returns whether it was queued again."""
        gone = not server.alive()
        with self.lock:
            o = self.outcomes[job.name]
            o.tried.append(f"{server.url} {error}")
            if gone and server.url not in self.dead:
                self.dead.add(server.url)
                self.log(f"dreamo-client: {server.url} went away; its jobs go to the other servers")
            if o.attempts > self.retries:
                return False
            self.pending.appendleft(job)
            self.lock.notify_all()
            return True

    # -- one worker ---------------------------------------------------------------------------------------
    def work(self, server: ComfyServer, position: int) -> None:
        while (job := self.take(server)) is not None:
            self.attempt(server, job, position)

    def attempt(self, server: ComfyServer, job: Job, position: int) -> None:
        o = self.outcomes[job.name]
        o.attempts += 1
        bar = ProgressBar(job, server, _titles(job, self.default_workflow), position, self.progress)

        def hook(kind, data):
            bar(kind, data)
            if self.on_event is not None:
                self.on_event(job, server.url, kind, data)
        t0 = time.perf_counter()
        try:
            files, timings = execute(server, job, self.default_workflow, self.store, hook, self.timeout)
        except Exception as e:  # noqa: BLE001 - every failure is the job's outcome, never a hung batch
            self.failed(job, server, e, time.perf_counter() - t0)
        else:
            self.finish(job, status="done", server=server.url, files=files, timings=timings,
                        seconds=time.perf_counter() - t0)
        finally:
            bar.close()

    def failed(self, job: Job, server: ComfyServer, error: Exception, seconds: float) -> None:
        done = dict(server=server.url, seconds=seconds)
        if self.stop.requested or isinstance(error, Stopped):
            self.finish(job, status="stopped", reason="stopped before it finished", **done)
        elif isinstance(error, (PromptRejected, NodeFailed, WorkflowError)):
            self.finish(job, status="failed", reason=str(error), **done)
        elif isinstance(error, ClientError):
            if not (error.transient and self.give_back(job, server, error)):
                self.finish(job, status="failed", reason=str(error), **done)
        elif isinstance(error, OSError):  # the output folder
            self.finish(job, status="failed", reason=f"cannot write outputs: {error}", **done)
        else:  # a bug must fail its job, not hang the batch
            self.finish(job, status="failed", reason=f"client error: {type(error).__name__}: {error}", **done)

    # -- the whole batch ----------------------------------------------------------------------------------
    def run(self) -> None:
        first = 0 if len(self.outcomes) == 1 else 1  # bar 0 counts the jobs of a batch
        threads = [threading.Thread(target=self.work, args=(s, first + i * self.per_server + k), daemon=True)
                   for i, s in enumerate(self.servers) for k in range(self.per_server)]
        for t in threads:
            t.start()
        try:
            while not self.stop.requested and (alive := [t for t in threads if t.is_alive()]):
                alive[0].join(0.2)
        except KeyboardInterrupt:  # a library caller's Ctrl-C: take the prompts back, then let it through
            self.stop.request("KeyboardInterrupt")
            self.halt(threads)
            raise
        if self.stop.requested:
            self.halt(threads)
        self.total.close()

    def halt(self, threads, wait: float = 15.0) -> None:
        """Stop every server at once (each takes back this client's prompts), then give the workers a moment
        to record their jobs as stopped."""
        with self.lock:
            self.lock.notify_all()
        counts = []

        def stop(server):
            try:
                counts.append(server.stop())
            except Exception:  # noqa: BLE001 - best effort: a broken server must not keep the others' prompts
                pass
        stoppers = [threading.Thread(target=stop, args=(s,), daemon=True) for s in self.servers]
        for t in stoppers:
            t.start()
        end = time.monotonic() + wait
        for t in stoppers + threads:
            t.join(max(0.0, end - time.monotonic()))
        self.stop.cancelled += sum(c for c, _ in counts)
        self.stop.interrupted += sum(i for _, i in counts)


def run_jobs(jobs: list[Job], servers: list[str], out_dir: str, default_workflow: str | None = None,
             per_server: int = 2, retries: int = 2, progress: bool = True, on_event=None,
             timeout: float = 3600.0, log=print, stop: StopRequest | None = None,
             max_download: int = DEFAULT_MAX_DOWNLOAD) -> list[Outcome]:
    """Run every job once over `servers`. `on_event(job, server_url, type, data)` sees every websocket event;
    `timeout` bounds each try of a job (upload to last download); `stop` stops the batch from outside."""
    names = [j.name for j in jobs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise WorkflowError(f"job ids must be unique; repeated: {', '.join(dupes)}")
    stop = stop or StopRequest()
    store = OutputStore(out_dir)
    outcomes = {j.name: Outcome(j) for j in jobs}
    pending = [job for job in jobs if _ready(job, outcomes[job.name], store, default_workflow, log)]
    if not pending or stop.requested:
        return _finish(outcomes, stop)

    alive, unreachable = [], []
    for address in servers:
        server = ComfyServer(address, max_download=max_download)
        try:
            server.check()
            alive.append(server)
        except ClientError as e:
            unreachable.append(str(e))
    if not alive:
        raise ServerUnavailable("\n".join(unreachable))
    for text in unreachable:
        log(f"dreamo-client: skipped: {text}")
    _Batch(pending, outcomes, alive, store, default_workflow, per_server, retries, timeout, progress, on_event,
           stop, log).run()
    return _finish(outcomes, stop)


def _ready(job: Job, outcome: Outcome, store: OutputStore, default_workflow, log) -> bool:
    """Whether the job must run; otherwise its outcome says why not (done before, or cannot run)."""
    problem = check_job(job, default_workflow)
    if problem:
        outcome.status, outcome.reason = "failed", f"not run: {problem}"
        log(f"dreamo-client: job {job.name} not run: {problem}")
        return False
    try:
        manifest = store.finished(job)
    except ClientError as e:
        outcome.status, outcome.reason = "failed", str(e)
        return False
    if manifest is None:
        return True
    outcome.status, outcome.server, outcome.files = "skipped", str(manifest.get("server", "")), manifest["files"]
    outcome.reason = "outputs already there"
    return False


def _finish(outcomes: dict[str, Outcome], stop: StopRequest) -> list[Outcome]:
    for o in outcomes.values():
        if o.status != "pending":
            continue
        if stop.requested:
            o.status, o.reason = "stopped", "stopped before it ran"
        else:  # every server went away
            o.status = "failed"
            o.reason = "no server left to run it" + (": " + "; ".join(o.tried[-2:]) if o.tried else "")
    return list(outcomes.values())


def summary(outcomes: list[Outcome]) -> str:
    """The end-of-batch table: one row per job, then one per server."""
    rows = [("job", "status", "server", "tries", "seconds", "outputs / reason")]
    for o in outcomes:
        note = ", ".join(o.files) if o.status in ("done", "skipped") else o.reason.splitlines()[0] if o.reason else ""
        if o.status == "failed" and o.reason.count("\n"):
            note += " (…)"
        if o.tried and o.status == "done":
            note += f"  [retried after: {', '.join(t.split(' ', 1)[0] for t in o.tried)}]"
        rows.append((o.job.name, o.status, _short(o.server), str(o.attempts),
                     f"{o.seconds:.1f}" if o.status != "skipped" else "-", note))
    text = _table(rows)
    servers = sorted({o.server for o in outcomes if o.server} | {t.split(" ", 1)[0] for o in outcomes for t in o.tried})
    if servers:
        srows = [("server", "done", "failed", "lost (retried elsewhere)", "s/job", "busy s")]
        for s in servers:
            done = [o for o in outcomes if o.server == s and o.status == "done"]
            failed = [o for o in outcomes if o.server == s and o.status == "failed"]
            lost = sum(1 for o in outcomes for t in o.tried if t.split(" ", 1)[0] == s)
            busy = sum(o.seconds for o in done)
            srows.append((_short(s), str(len(done)), str(len(failed)), str(lost),
                          f"{busy / len(done):.1f}" if done else "-", f"{busy:.1f}"))
        text += "\n\n" + _table(srows)
    counts = {k: sum(1 for o in outcomes if o.status == k) for k in ("done", "skipped", "failed", "stopped")}
    text += f"\n\n{counts['done']} done, {counts['skipped']} already there, {counts['failed']} failed"
    return text + (f", {counts['stopped']} stopped" if counts["stopped"] else "")


def _short(url: str) -> str:
    return url.split("://", 1)[-1]


def _table(rows) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
