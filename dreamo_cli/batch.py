"""Hand jobs out to one or more ComfyUI servers and bring the results back.

Each server's own queue runs the prompts; the client keeps at most `per_server` of its jobs in flight on each
server (upload, queue, follow, download), so a server always has the next prompt waiting without the client
hoarding work a faster server could take. A job whose server goes away (or answers 5xx, or interrupts it) is
tried again on another server, at most `retries` more times; a prompt the server rejects or a node that fails
is reported as it is (trying again would repeat it). Outputs are written under temporary names and renamed,
then a manifest `<job>.json` last: a job counts as done only when its manifest and every file it lists exist,
so a re-run skips finished jobs and redoes the others (resume), and no job's outputs are written twice.
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field

from tqdm import tqdm

from .api_workflow import Job, WorkflowError, fill, find_workflow, load_workflow
from .comfy_server import ClientError, ComfyServer, NodeFailed, PromptRejected, ServerUnavailable


@dataclass
class Outcome:
    job: Job
    status: str = "pending"  # done | skipped | failed
    server: str = ""
    attempts: int = 0
    seconds: float = 0.0
    reason: str = ""
    files: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    tried: list[str] = field(default_factory=list)  # servers it failed on, with the reason


class OutputStore:
    """The output folder: `<job>_NN.<ext>` images and the `<job>.json` manifest that marks the job done."""

    def __init__(self, folder: str):
        self.folder = os.path.abspath(folder)

    def manifest_path(self, job: Job) -> str:
        return os.path.join(self.folder, f"{job.name}.json")

    def finished(self, job: Job) -> dict | None:
        """The manifest when the job is complete here with the same settings; None if it must run.
        Raises ClientError when the name was used by a job with other settings."""
        try:
            with open(self.manifest_path(job), encoding="utf-8") as f:
                manifest = json.load(f)
        except (OSError, json.JSONDecodeError):
            return None
        if not all(os.path.isfile(os.path.join(self.folder, name)) for name in manifest.get("files", [])):
            return None
        if manifest.get("fingerprint") != job.fingerprint():
            raise ClientError(f"{self.manifest_path(job)} holds job '{job.name}' made with other settings; give "
                              f"this job another id, or delete that job's files to make it again.")
        return manifest

    def save(self, job: Job, server: str, prompt_id: str, images: list[tuple[dict, bytes]], events: dict,
             timings: dict) -> list[str]:
        os.makedirs(self.folder, exist_ok=True)
        names = []
        for i, (ref, data) in enumerate(images, start=1):
            ext = os.path.splitext(ref["filename"])[1] or ".png"
            names.append(f"{job.name}_{i:02d}{ext}")
            tmp = os.path.join(self.folder, f".{names[-1]}.part")
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, os.path.join(self.folder, names[-1]))
        manifest = {"job": job.name, "fingerprint": job.fingerprint(), "files": names, "server": server,
                    "prompt_id": prompt_id, "server_files": [r["filename"] for r, _ in images],
                    "settings": {k: v for k, v in asdict(job).items() if v not in (None, {}, "")},
                    "events": events, "timings": {k: round(v, 4) for k, v in timings.items()}}
        tmp = self.manifest_path(job) + ".part"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
        os.replace(tmp, self.manifest_path(job))
        return names


def execute(server: ComfyServer, job: Job, default_workflow: str | None, store: OutputStore, on_event=None,
            timeout: float = 3600.0) -> tuple[list[str], dict]:
    """Upload, fill, queue, follow, download one job on one server. Returns (files, timings)."""
    path = find_workflow(job.workflow or default_workflow or "ip")
    workflow = load_workflow(path)
    t0 = time.perf_counter()
    images = {}
    for slot, local in sorted(job.refs.items()):
        if not os.path.isfile(local):
            raise WorkflowError(f"job '{job.name}': reference {slot} is not a file: {local}")
        images[slot] = server.upload(local)
    upload = time.perf_counter() - t0
    prompt = fill(workflow, job, images, path, filename_prefix=f"dreamo_client/{job.name}")
    run = server.run(prompt, on_event=on_event, timeout=timeout)
    t1 = time.perf_counter()
    if not run.images:
        raise PromptRejected(f"{server.url} ran job '{job.name}' but it saved no image (does the workflow have a "
                             f"SaveImage node?)")
    downloaded = [(ref, server.download(ref)) for ref in run.images]
    download = time.perf_counter() - t1
    timings = {"upload": upload, **{k: v for k, v in run.timings.items()
                                    if k in ("queue", "wait", "execute", "finish", "history")}, "download": download}
    timings["total"] = time.perf_counter() - t0
    # the client's own share: everything but waiting for the server's queue and execution
    timings["overhead"] = upload + timings.get("queue", 0.0) + timings.get("history", 0.0) + download
    files = store.save(job, server.url, run.prompt_id, downloaded, run.events, timings)
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
            node = str(data["node"])
            self.bar.set_description_str(f"{self.label} {self.titles.get(node, node)}", refresh=False)
            self.bar.reset(total=1)
        elif kind == "progress":
            self.bar.total = max(int(data.get("max", 1)), 1)
            self.bar.n = int(data.get("value", 0))
            self.bar.refresh()

    def close(self):
        self.bar.close()


def _titles(job: Job, default_workflow: str | None) -> dict:
    try:
        wf = load_workflow(find_workflow(job.workflow or default_workflow or "ip"))
    except WorkflowError:
        return {}
    return {k: f"{v.get('_meta', {}).get('title', v['class_type'])}" for k, v in wf.items()}


def run_jobs(jobs: list[Job], servers: list[str], out_dir: str, default_workflow: str | None = None,
             per_server: int = 2, retries: int = 2, progress: bool = True, on_event=None,
             timeout: float = 3600.0, log=print) -> list[Outcome]:
    """Run every job once over `servers`. `on_event(job, server_url, type, data)` sees every websocket event."""
    names = [j.name for j in jobs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise WorkflowError(f"job ids must be unique; repeated: {', '.join(dupes)}")
    store = OutputStore(out_dir)
    outcomes = {j.name: Outcome(j) for j in jobs}
    pending: deque[Job] = deque()
    for job in jobs:
        try:
            manifest = store.finished(job)
        except ClientError as e:
            outcomes[job.name].status, outcomes[job.name].reason = "failed", str(e)
            continue
        if manifest is not None:
            o = outcomes[job.name]
            o.status, o.server, o.files = "skipped", manifest.get("server", ""), manifest["files"]
            o.reason = "outputs already there"
        else:
            pending.append(job)
    if not pending:
        return list(outcomes.values())

    pool = [ComfyServer(s) for s in servers]
    alive, unreachable = [], []
    for server in pool:
        try:
            server.check()
            alive.append(server)
        except ClientError as e:
            unreachable.append(str(e))
    if not alive:
        raise ServerUnavailable("\n".join(unreachable))
    for text in unreachable:
        log(f"dreamo-client: skipped: {text}")

    lock = threading.Condition()
    dead: set[str] = set()
    open_jobs = [len(pending)]
    total = tqdm(total=len(pending), desc="jobs", position=0, disable=not progress or len(jobs) == 1,
                 dynamic_ncols=True)

    def usable_elsewhere(job: Job, here: ComfyServer) -> bool:
        tried = {t.split(" ", 1)[0] for t in outcomes[job.name].tried}
        return any(s.url not in dead and s.url != here.url and s.url not in tried for s in alive)

    def take(server: ComfyServer) -> Job | None:
        with lock:
            while True:
                if server.url in dead or open_jobs[0] == 0:
                    return None
                for job in list(pending):
                    tried_here = any(t.startswith(server.url + " ") for t in outcomes[job.name].tried)
                    if not tried_here or not usable_elsewhere(job, server):
                        pending.remove(job)
                        return job
                lock.wait(0.2)

    def finish(job: Job, **fields):
        with lock:
            o = outcomes[job.name]
            for k, v in fields.items():
                setattr(o, k, v)
            open_jobs[0] -= 1
            total.update(1)
            lock.notify_all()

    def worker(server: ComfyServer, position: int):
        while True:
            job = take(server)
            if job is None:
                return
            o = outcomes[job.name]
            o.attempts += 1
            bar = ProgressBar(job, server, _titles(job, default_workflow), position, progress)
            def hook(kind, data, _bar=bar, _job=job):
                _bar(kind, data)
                if on_event is not None:
                    on_event(_job, server.url, kind, data)
            t0 = time.perf_counter()
            try:
                files, timings = execute(server, job, default_workflow, store, hook, timeout)
            except (PromptRejected, NodeFailed, WorkflowError) as e:
                finish(job, status="failed", server=server.url, reason=str(e), seconds=time.perf_counter() - t0)
            except ClientError as e:
                gone = e.transient and not server.alive()
                with lock:
                    o.tried.append(f"{server.url} {e}")
                    if gone:
                        dead.add(server.url)
                        log(f"dreamo-client: {server.url} went away; its jobs go to the other servers")
                    retry = e.transient and o.attempts <= retries
                    if retry:
                        pending.appendleft(job)
                        lock.notify_all()
                if not retry:
                    finish(job, status="failed", server=server.url, reason=str(e), seconds=time.perf_counter() - t0)
            except OSError as e:  # the output folder
                finish(job, status="failed", server=server.url, reason=f"cannot write outputs: {e}")
            except Exception as e:  # noqa: BLE001 - a bug must fail its job, not hang the batch
                finish(job, status="failed", server=server.url, reason=f"client error: {type(e).__name__}: {e}")
            else:
                finish(job, status="done", server=server.url, files=files, timings=timings,
                       seconds=time.perf_counter() - t0)
            finally:
                bar.close()

    first = 0 if len(jobs) == 1 else 1  # bar 0 counts the jobs of a batch
    threads = [threading.Thread(target=worker, args=(s, first + i * per_server + k), daemon=True)
               for i, s in enumerate(alive) for k in range(per_server)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total.close()
    for job in pending:  # every server went away
        o = outcomes[job.name]
        o.status = "failed"
        o.reason = "no server left to run it: " + "; ".join(o.tried[-2:]) if o.tried else "no server left to run it"
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
    counts = {k: sum(1 for o in outcomes if o.status == k) for k in ("done", "skipped", "failed")}
    text += f"\n\n{counts['done']} done, {counts['skipped']} already there, {counts['failed']} failed"
    return text


def _short(url: str) -> str:
    return url.split("://", 1)[-1]


def _table(rows) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
