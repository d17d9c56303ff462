"""dreamo-client --ray on the command line: its options, the configuration they make, and the exit status.

The batch itself is ray_batch.py; this part is imported by the light client, and imports neither Ray nor pyarrow
(main_ray checks that both are installed before anything else).
"""
from __future__ import annotations

import argparse
import sys

from .api_workflow import WorkflowError
from .batch import summary
from .jobs import UsageError, job_from_args
from .ray_batch import NoWorkers, RayOptions, run_ray_batch
from .ray_plan import read_table
from .ray_worker import WorkerConfig

EXTRA_HINT = ("pip install \"comfyui-dreamo[ray]\" (in the pack's folder: pip install -e \".[ray]\"), or pip install "
              "ray pyarrow, into the Python that runs dreamo-client")
_RAY_ONLY = {"workers": None, "cpu_workers": False, "comfyui": None, "comfy_python": None, "comfy_arg": None,
             "comfy_env": None, "attach": None, "manifest": None, "restarts": None, "start_timeout": None}


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


def config_from_args(args) -> tuple[WorkerConfig, RayOptions]:

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
