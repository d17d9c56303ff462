"""The API client's own cost per job (upload + queue + download, and following the websocket) against the
server's execution time, and batch throughput with 1 vs 2 jobs in flight per server.

Starts a ComfyUI server on loopback with the pack and the tiny test models (COMFYUI_PATH, default ~/comfyui),
unless --server points at a running one that has the test-only nodes. Every job uploads two pictures it has
not sent before (the shared photos with one pixel changed: the client sends a picture once per server) and
downloads its saved PNGs. Run by hand:

    python bench/bench_client.py [--jobs 3] [--server HOST:PORT]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.append(REPO)  # the test kit, dreamo_testkit (appended: a ComfyUI checkout put first keeps its nodes.py)
from dreamo_testkit import comfy_host  # noqa: E402

comfy_host.setup()  # registers the package `comfyui_dreamo`
from dreamo_testkit import kit_workflow, photos, tiny_server  # noqa: E402

from comfyui_dreamo.dreamo_cli.api_workflow import Job  # noqa: E402
from comfyui_dreamo.dreamo_cli.batch import OutputStore, execute, run_jobs  # noqa: E402
from comfyui_dreamo.dreamo_cli.comfy_server import ComfyServer  # noqa: E402

TINY = kit_workflow("dreamo_client_tiny_api.json")
SCENARIOS = [  # (label, width, height, batch, steps)
    ("64x48, 1 image, 2 steps", 64, 48, 1, 2),
    ("512x512, 1 image, 4 steps", 512, 512, 1, 4),
]


def fresh_pictures(folder: str, n: int) -> list[tuple[str, str]]:
    """n pairs of pictures never uploaded before: two sample photos, one pixel changed each (uploads cost what a
    photo costs: a flat stand-in would compress to nothing, so without the photos the bench stops)."""
    names = ("woman1.png", "mountain.png")
    missing = photos.missing_reason(names)
    if missing:
        sys.exit(f"bench_client: {missing}")
    bases = [np.asarray(Image.open(os.path.join(photos.refs_dir(), name)).convert("RGB")) for name in names]
    pairs = []
    for i in range(n):
        pair = []
        for k, base in enumerate(bases):
            img = base.copy()
            img[0, 0] = (i % 256, i // 256, 7 * k)
            pair.append(os.path.join(folder, f"ref{k}_{i}.png"))
            Image.fromarray(img).save(pair[-1])
        pairs.append(tuple(pair))
    return pairs


def table(rows) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    out = ["  ".join(str(c).rjust(w) if j else str(c).ljust(w) for j, (c, w) in enumerate(zip(r, widths)))
           for r in rows]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=3, help="timed jobs per scenario (after one warm-up job)")
    ap.add_argument("--server", help="a running ComfyUI with this pack and dreamo_testkit/helper_nodes loaded")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench_client_")
    server = None if args.server else tiny_server.start(os.path.join(work, "comfy"))
    url = args.server or server.url
    try:
        pictures = iter(fresh_pictures(work, (args.jobs + 1) * len(SCENARIOS) + 2 * 2 * args.jobs))
        store = OutputStore(os.path.join(work, "out"))
        rows = [("scenario", "upload ms", "queue ms", "history ms", "download ms", "client ms", "server exec s",
                 "server finish ms", "client / exec")]
        seed = 0
        for label, w, h, batch, steps in SCENARIOS:
            client = ComfyServer(url)
            samples = []
            for i in range(args.jobs + 1):
                a, b = next(pictures)
                seed += 1
                job = Job(name=f"bench{seed:03d}", refs={1: a, 2: b}, seed=seed, steps=steps, width=w, height=h,
                          batch_size=batch)
                _, t = execute(client, job, TINY, store)
                if i:  # the first job of a scenario warms caches and models up
                    samples.append(t)
            med = {k: statistics.median(s.get(k, 0.0) for s in samples) for k in samples[0]}
            rows.append((label, *(f"{med[k] * 1000:.1f}" for k in ("upload", "queue", "history", "download",
                                                                      "overhead")),
                         f"{med['execute']:.2f}", f"{med.get('finish', 0) * 1000:.1f}",
                         f"{med['overhead'] / med['execute']:.1%}"))
        print(f"\nPer job, medians of {args.jobs} jobs (two fresh reference uploads each); server: {url}")
        print("client ms = upload + queue (websocket connect + POST /prompt) + history (GET /history) + download;")
        print("server finish = from the server's execution_success to its 'executing: None' (its own bookkeeping)\n")
        print(table(rows))

        trows = [("jobs in flight per server", "jobs", "wall s", "jobs / s")]
        for per_server in (1, 2):
            jobs = []
            for i in range(2 * args.jobs):
                a, b = next(pictures)
                seed += 1
                jobs.append(Job(name=f"tput{per_server}_{i:02d}", workflow=TINY, refs={1: a, 2: b}, seed=seed,
                                steps=2, width=64, height=48))
            t0 = time.perf_counter()
            outcomes = run_jobs(jobs, [url], os.path.join(work, f"tput{per_server}"), per_server=per_server,
                                progress=False, log=lambda m: None)
            wall = time.perf_counter() - t0
            assert all(o.status == "done" for o in outcomes), [o.reason for o in outcomes if o.status != "done"]
            trows.append((str(per_server), str(len(jobs)), f"{wall:.1f}", f"{len(jobs) / wall:.2f}"))
        print("\nBatch throughput on one server, 64x48 2-step jobs with fresh uploads\n")
        print(table(trows))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
