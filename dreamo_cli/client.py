"""dreamo-client: queue DreamO jobs on running ComfyUI servers through their HTTP API.

One job:
    dreamo-client --workflow id_tryon --ref 1=face.png --ref 2=dress.png \\
        --prompt "a woman [ref#1] wearing the dress [ref#2] on a beach" --seed 7 --out results/
A batch (JSONL or CSV, one row per job) spread over several servers:
    dreamo-client --jobs jobs.jsonl --server 10.0.0.5:8188 --server 10.0.0.6:8188 --out results/

Reference images are uploaded (/upload/image), the API-format workflow is filled through the node titles it
declares (see dreamo_cli/api_workflow.py and the README, "Queue jobs through the API"), queued with a
client_id, followed on the websocket (a progress bar per job: node being run, step k of n) and its saved
images downloaded (/view) as <out>/<job>_01.png ... with a <job>.json manifest. Finished jobs are skipped
when the same command runs again.

Exit status: 0 every job done (or already there); 1 a job failed (the server's own message is printed:
node, input, error; in a batch the other jobs still run, also when one job's picture is missing); 2 bad
arguments, workflow or jobs file; 3 no server could be reached; 130 / 143 stopped by Ctrl-C / SIGTERM (this
client's queued prompts are taken off the servers' queues and its running one is interrupted).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from .api_workflow import WorkflowError
from .batch import StopRequest, check_job, run_jobs, summary
from .comfy_errors import ClientError, ServerUnavailable
from .comfy_server import DEFAULT_MAX_DOWNLOAD, base_url
from .jobs import UsageError, _safe_name, job_from_args, read_jobs
from .ray_cli import add_ray_arguments, ray_options_given

DEFAULT_SERVER = "127.0.0.1:8188"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dreamo-client", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", action="append", metavar="HOST:PORT",
                   help=f"a running ComfyUI (repeat for several; default {DEFAULT_SERVER})")
    p.add_argument("--workflow", default="ip",
                   help="API-format workflow: a pack workflow by name (ip, id_tryon, ...) or a file (default ip)")
    p.add_argument("--ref", action="append", metavar="K=IMAGE", help="reference image for slot K (repeatable)")
    p.add_argument("--task", action="append", metavar="K=TASK", help="task of reference K: ip, id or style")
    p.add_argument("--resolution", action="append", metavar="K=PIXELS", help="encode resolution of reference K")
    p.add_argument("--prompt", help="the prompt; [ref#K] names reference K")
    p.add_argument("--seed", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--size", metavar="WxH", help="output size, e.g. 768x1024 (also sets the Flux shift's size)")
    p.add_argument("--batch-size", type=int, help="images per job")
    p.add_argument("--out", default="dreamo_outputs", help="output folder (default ./dreamo_outputs)")
    p.add_argument("--name", help="one job: the name its outputs carry (default: workflow + a hash of the settings)")
    p.add_argument("--jobs", metavar="FILE", help="batch: a .jsonl or .csv file, one job per row "
                                                   "(command-line settings are the rows' defaults)")
    p.add_argument("--per-server", type=int, default=2, help="jobs in flight per server (default 2)")
    p.add_argument("--retries", type=int, default=2,
                   help="times a job is tried again after its server went away (default 2)")
    p.add_argument("--timeout", type=float, default=3600.0,
                   help="seconds one try of a job may take, from its upload to its last download (default 3600)")
    p.add_argument("--max-download", type=float, default=DEFAULT_MAX_DOWNLOAD / 2**20, metavar="MB",
                   help=f"largest output file saved, in MB (default {DEFAULT_MAX_DOWNLOAD >> 20})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--list-workflows", action="store_true", help="print the pack's workflow names and exit")
    add_ray_arguments(p)  # --ray and its options (dreamo_cli/ray_cli.py; Ray itself is imported only with --ray)
    return p


STOP_STATUS = {"SIGINT": 130, "SIGTERM": 143, "KeyboardInterrupt": 130}


def _catch_stop_signals(stop: StopRequest):
    """Ctrl-C and SIGTERM ask `stop` to stop the batch (no traceback); returns the function that puts the
    previous handlers back. Only the main thread can set handlers: elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        stop.request(signal.Signals(signum).name)
    for s in previous:
        signal.signal(s, handler)

    def restore():
        for s, h in previous.items():
            signal.signal(s, h)
    return restore


def main(argv=None, on_event=None) -> int:
    """Console entry point; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    if args.list_workflows:
        from .api_workflow import available_workflows

        from .api_workflow import WORKFLOW_DIRS

        names = available_workflows()
        if not names:
            return _fail(UsageError("no workflows found: the pack's `*_api.json` files are looked for in "
                                    + ", ".join(WORKFLOW_DIRS) + ". Fix: reinstall the package (`pip install .` "
                                    "ships them) or pass a workflow file with --workflow PATH."), 1)
        print("\n".join(names))
        return 0
    if args.ray or ray_options_given(args):  # a batch on Ray (dreamo_cli/ray_batch.py)
        from .ray_cli import main_ray

        return main_ray(args)
    stop = StopRequest()
    restore = _catch_stop_signals(stop)
    try:
        outcomes = _run(args, on_event, stop)
    except (UsageError, WorkflowError) as e:
        return _fail(e, 2)
    except ServerUnavailable as e:
        return _fail(e, 3)
    except ClientError as e:
        return _fail(e, 1)
    finally:
        restore()
    if stop.requested:
        return _stopped(outcomes, stop)
    return _report(args, outcomes)


def _fail(error: Exception, status: int) -> int:
    print(f"dreamo-client: {error}", file=sys.stderr)
    return status


def _run(args, on_event, stop: StopRequest):
    if args.per_server < 1 or args.retries < 0:
        raise UsageError("--per-server must be at least 1 and --retries at least 0")
    if not args.max_download > 0 or not args.timeout > 0:
        raise UsageError("--max-download and --timeout must be positive numbers")
    for address in args.server or []:
        try:
            base_url(address)
        except ValueError as e:
            raise UsageError(f"--server: {e}") from None
    defaults = job_from_args(args)
    if args.jobs:
        jobs = read_jobs(args.jobs, defaults)
    else:  # one job: what stops it is a bad argument
        if args.name and not _safe_name(args.name):
            raise UsageError(f"--name {args.name!r}: use letters, digits, '-', '_' or '.'")
        problem = check_job(defaults, args.workflow)
        if problem:
            raise UsageError(problem)
        stem = os.path.basename(defaults.workflow).removesuffix(".json").removesuffix("_api")
        defaults.name = args.name or f"{stem.removeprefix('dreamo_')}-{defaults.fingerprint()[:8]}"
        jobs = [defaults]
    return run_jobs(jobs, args.server or [DEFAULT_SERVER], args.out, default_workflow=args.workflow,
                    per_server=args.per_server, retries=args.retries, progress=not args.quiet, on_event=on_event,
                    timeout=args.timeout, log=lambda m: print(m, file=sys.stderr), stop=stop,
                    max_download=int(args.max_download * 2**20))


def _stopped(outcomes, stop: StopRequest) -> int:
    """The one line a stopped client prints."""
    done = sum(o.status in ("done", "skipped") for o in outcomes)
    left = len(outcomes) - done
    how = "Ctrl-C" if stop.reason in ("SIGINT", "KeyboardInterrupt") else stop.reason
    print(f"dreamo-client: stopped by {how}: {stop.cancelled} queued prompt(s) of this client taken off the "
          f"server queues, {stop.interrupted} running interrupted; {done} of {len(outcomes)} job(s) done"
          + (f", run the same command again for the other {left}" if left else ""), file=sys.stderr, flush=True)
    return STOP_STATUS.get(stop.reason, 130)


def _report(args, outcomes) -> int:
    failed = [o for o in outcomes if o.status == "failed"]
    if args.jobs or len(outcomes) > 1:
        print(summary(outcomes))
    else:
        o = outcomes[0]
        if o.status == "done":
            t = o.timings
            print(f"{o.job.name}: {len(o.files)} image(s) in {os.path.abspath(args.out)}: {', '.join(o.files)} "
                  f"({o.seconds:.1f} s on {o.server}; execution {t.get('execute', 0):.1f} s, client "
                  f"{t.get('overhead', 0):.2f} s)")
        elif o.status == "skipped":
            print(f"{o.job.name}: already done, nothing queued ({', '.join(o.files)} in {os.path.abspath(args.out)};"
                  f" delete {o.job.name}.json there to make it again)")
    for o in failed:
        print(f"dreamo-client: job {o.job.name} failed: {o.reason}", file=sys.stderr)
    if failed and all("no server left" in o.reason for o in failed) and not any(o.status == "done" for o in outcomes):
        return 3
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
