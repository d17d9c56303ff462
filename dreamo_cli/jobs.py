"""Jobs from the command line and from job files (JSONL or CSV rows): one module, used by the light client
(client.py) and the Ray backend (ray_plan.py, which also reads Parquet and URIs through job_table.py)."""
from __future__ import annotations

import csv
import io
import json
import os

from .api_workflow import SLOTS, Job

ROW_KEYS = {"id", "workflow", "prompt", "seed", "steps", "width", "height", "size", "batch_size", "refs", "tasks",
            "resolutions"} | {f"{p}_{k}" for p in ("ref", "task", "resolution") for k in SLOTS}


class UsageError(ValueError):
    pass


def _slot_pairs(values, option: str, convert=str) -> dict[int, object]:
    out = {}
    for item in values or []:
        slot, sep, value = str(item).partition("=")
        if not sep or not slot.strip().isdigit() or int(slot) not in SLOTS or not value:
            raise UsageError(f"{option} {item!r}: expected SLOT=VALUE with SLOT 1..9, e.g. {option} 1="
                             + ("face.png" if option == "--ref" else "id" if option == "--task" else "512"))
        try:
            out[int(slot)] = convert(value.strip())
        except ValueError:
            raise UsageError(f"{option} {item!r}: {value!r} is not a valid value") from None
    return out


def _size(text: str) -> tuple[int, int]:
    w, sep, h = str(text).lower().partition("x")
    if not sep or not w.strip().isdigit() or not h.strip().isdigit():
        raise UsageError(f"size {text!r}: expected WIDTHxHEIGHT, e.g. 768x1024")
    return int(w), int(h)


def _int(value, what: str):
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UsageError(f"{what}: {value!r} is not a whole number") from None


def job_from_args(args) -> Job:
    width, height = _size(args.size) if args.size else (None, None)
    return Job(name="", workflow=args.workflow,
               refs={k: os.path.abspath(os.path.expanduser(v)) for k, v in _slot_pairs(args.ref, "--ref").items()},
               tasks=_slot_pairs(args.task, "--task"), resolutions=_slot_pairs(args.resolution, "--resolution", int),
               prompt=args.prompt, seed=args.seed, steps=args.steps, width=width, height=height,
               batch_size=args.batch_size)


def read_jobs(path: str, defaults: Job, text: str | None = None, place=None) -> list[Job]:
    """Rows of a .jsonl or .csv file -> jobs; values missing from a row come from the command line. `text`: the
    file's content, read elsewhere (the Ray backend reads URIs and Parquet); `place(value)`: where a reference
    lives (default: a path relative to the file's folder)."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, encoding="utf-8", newline="") if text is None else io.StringIO(text, newline="") as f:
            if path.lower().endswith(".csv"):
                rows = [(i + 2, {k.strip(): v for k, v in r.items() if k and v not in (None, "")})
                        for i, r in enumerate(csv.DictReader(f))]
            else:
                rows = []
                for i, line in enumerate(f, start=1):
                    if line.strip() and not line.lstrip().startswith("#"):
                        try:
                            rows.append((i, json.loads(line)))
                        except json.JSONDecodeError as e:
                            raise UsageError(f"{path} line {i}: not JSON ({e})") from None
                        except RecursionError:
                            raise UsageError(f"{path} line {i}: nested too deeply to be a job (a row is one "
                                             f"object of settings)") from None
    except OSError as e:
        raise UsageError(f"cannot read the jobs file: {e}") from None
    jobs = []
    for line, row in rows:
        where = f"{path} line {line}"
        if not isinstance(row, dict):
            raise UsageError(f"{where}: a row must be an object of settings")
        unknown = sorted(set(row) - ROW_KEYS)
        if unknown:
            raise UsageError(f"{where}: unknown column(s) {', '.join(unknown)}; known: id, workflow, prompt, seed, "
                             f"steps, size (WxH) or width/height, batch_size, ref_K, task_K, resolution_K (K=1..9)")
        for key, value in row.items():
            nested = key in ("refs", "tasks", "resolutions")
            values = value.values() if nested and isinstance(value, dict) else [] if nested else [value]
            if not all(v is None or isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values):
                raise UsageError(f"{where}: '{key}' must be " + ("an object of slot numbers to texts or numbers"
                                                                 if nested else "a text or a number"))
        refs = dict(defaults.refs)
        tasks, resolutions = dict(defaults.tasks), dict(defaults.resolutions)
        for key, target, conv in (("ref", refs, str), ("task", tasks, str), ("resolution", resolutions, int)):
            nested = row.get(key + "s") or {}
            if not isinstance(nested, dict):
                raise UsageError(f"{where}: '{key}s' must map slot numbers to values")
            items = {**{str(k): v for k, v in nested.items()},
                     **{str(k): row[f"{key}_{k}"] for k in SLOTS if f"{key}_{k}" in row}}
            for k, v in items.items():
                target.update(_slot_pairs([f"{k}={v}"], f"{where}: {key}", conv))
        refs = {k: place(v) if place else os.path.normpath(os.path.join(folder, os.path.expanduser(v)))
                for k, v in refs.items()}
        width, height = (_size(row["size"]) if "size" in row else (defaults.width, defaults.height))
        workflow = row.get("workflow") or defaults.workflow
        if row.get("workflow") and os.path.isfile(os.path.join(folder, row["workflow"])):
            workflow = os.path.join(folder, row["workflow"])
        job = Job(name=str(row.get("id", "")).strip(), workflow=workflow, refs=refs, tasks=tasks,
                  resolutions=resolutions, prompt=row.get("prompt", defaults.prompt),
                  seed=_int(row.get("seed", defaults.seed), f"{where}: seed"),
                  steps=_int(row.get("steps", defaults.steps), f"{where}: steps"),
                  width=_int(row.get("width", width), f"{where}: width"),
                  height=_int(row.get("height", height), f"{where}: height"),
                  batch_size=_int(row.get("batch_size", defaults.batch_size), f"{where}: batch_size"))
        if job.name and not _safe_name(job.name):
            raise UsageError(f"{where}: id {job.name!r} must be letters, digits, '-', '_' or '.' (it names files)")
        if not job.name:
            job.name = f"job{line:03d}-{job.fingerprint()[:8]}"
        jobs.append(job)
    if not jobs:
        raise UsageError(f"{path} holds no jobs")
    return jobs


def _safe_name(name: str) -> bool:
    return all(c.isalnum() or c in "-_." for c in name) and not name.startswith(".")
