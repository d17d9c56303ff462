"""A batch on Ray before Ray starts: read the job table, check every job, fingerprint it (ray_batch.py)."""
from __future__ import annotations

import dataclasses
import os

from .api_workflow import Job, fill, find_workflow, load_workflow
from .jobs import UsageError, read_jobs


def read_table(source: str, defaults: Job) -> list[Job]:
    """The job table at a path or URI (JSONL, CSV or Parquet) -> jobs, through the light client's own reader."""
    from .job_table import parent, place_reference, table_text

    text, _ = table_text(source)  # read_jobs reads a name ending in .csv as CSV, any other (Parquet too) as JSONL
    folder = parent(source)
    return read_jobs(source, defaults, text=text, place=lambda value: place_reference(folder, value))


def check(jobs: list[Job], default_workflow: str | None) -> tuple[dict[str, str], set[str], dict[str, str]]:
    """Everything that can be checked before Ray starts: each job's workflow and titles, and that each reference
    exists (a local file, or a URI one listing shows). Returns (workflow path -> text, node classes used,
    reference URI -> size:mtime for the fingerprints)."""
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

