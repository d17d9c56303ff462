"""Worst cases of the prompt check (`dreamo_ops.placeholders.check_prompt`, what POST /dreamo/check_prompt and
DreamO Text Encode run): time per text and the length of the error it gives, for the current code and, with
`--before REV`, for the code at git revision REV (its `dreamo_ops/` is exported to a temporary folder).

Each case runs in its own subprocess, cut off after `--limit` seconds (a cut-off case is printed as "> limit").
No ComfyUI needed. Run by hand:

    python bench/bench_prompt_check.py [--before 324238e] [--limit 60] [--repeats 3]
"""
from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

CASES = {  # name: the text, about 100,000 characters each (the largest prompt the check reads)
    "'[ref' ×25,000": lambda: "[ref" * 25_000,
    "'ref#1 ' ×16,666": lambda: "ref#1 " * 16_666,
    "'[res](x)' ×12,500": lambda: "[res](x)" * 12_500,
    "'[REF#1] ' ×12,500": lambda: "[REF#1] " * 12_500,
    "50k nested '('…')'": lambda: "(" * 50_000 + ")" * 50_000,
    "'a red dress [ref#1] ' ×5,000": lambda: "a red dress [ref#1] " * 5_000,
}


def load_ops(root: str):
    """`dreamo_ops` from `root` as a package of its own (no ComfyUI, no pack entry point)."""
    name = "dreamo_ops"
    spec = importlib.util.spec_from_file_location(name, os.path.join(root, name, "__init__.py"),
                                                  submodule_search_locations=[os.path.join(root, name)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    import dreamo_ops.placeholders as placeholders
    return placeholders


def _worker(root, case, repeats, queue):
    sys.setrecursionlimit(1000)  # ComfyUI's (Python's default)
    placeholders = load_ops(root)
    text = CASES[case]()
    best, error = None, None
    for _ in range(repeats):
        start = time.perf_counter()
        try:
            answer = placeholders.check_prompt(text, {1: "ip"})
            error = answer["error"] or ""
        except Exception as e:  # noqa: BLE001 - reported in the table
            queue.put((None, type(e).__name__))
            return
        took = time.perf_counter() - start
        best = took if best is None else min(best, took)
    queue.put((best, len(error)))


def run_case(root, case, repeats, limit):
    """(seconds or None, error length or exception name, or None when cut off)."""
    queue = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=_worker, args=(root, case, repeats, queue))
    proc.start()
    proc.join(limit)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return None, None
    return queue.get() if not queue.empty() else (None, f"exit {proc.exitcode}")


def export(rev: str) -> str:
    folder = tempfile.mkdtemp(prefix="dreamo_bench_")
    archive = subprocess.run(["git", "-C", REPO, "archive", rev, "dreamo_ops"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
    return folder


def fmt_time(t, limit):
    return f"> {limit:.0f} s" if t is None else (f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.1f} s")


def fmt_err(e):
    return "—" if e is None else (f"{e:,} chars" if isinstance(e, int) else e)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", help="git revision to compare with (e.g. the commit before the fix)")
    ap.add_argument("--limit", type=float, default=60.0, help="seconds before a case is cut off")
    ap.add_argument("--repeats", type=int, default=3, help="runs per case (the best is shown)")
    args = ap.parse_args()
    try:
        load = os.getloadavg()
        print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    except OSError:
        pass
    before = export(args.before) if args.before else None
    columns = ["case", "after", "error after"] + (["before", "error before", "before / after"] if before else [])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    try:
        for case in CASES:
            t_after, e_after = run_case(REPO, case, args.repeats, args.limit)
            row = [case, fmt_time(t_after, args.limit), fmt_err(e_after)]
            if before:
                t_before, e_before = run_case(before, case, 1, args.limit)
                if t_before is None and e_before is None:  # cut off
                    ratio = f"> {args.limit / t_after:,.0f}×" if t_after else "—"
                else:
                    ratio = f"{t_before / t_after:,.0f}×" if t_before and t_after else "—"
                row += [fmt_time(t_before, args.limit) if t_before or e_before is None else "failed",
                        fmt_err(e_before), ratio]
            print("| " + " | ".join(row) + " |", flush=True)
    finally:
        if before:
            shutil.rmtree(before, ignore_errors=True)


if __name__ == "__main__":
    main()
