"""Cost of DreamO routing at the attention level: time and peak extra memory over the same attention without it.

One attention call (24 heads × 128, Flux's shape) on the sequence [512 text | image | 2 references], through
`RoutedAttention` (the override the pack installs) with plain SDPA as the backend `func`, in four settings:
hard, soft, hard + isolate, hard + routing-map capture. Baseline: the same SDPA call alone. Printed as ratios
from one run (variants interleaved, median of `--repeats`). Targets: time ≤ 1.25× on CPU at L = 6,656
(≤ 1.10× on GPU in bf16) and memory growth linear in L. Run by hand (no ComfyUI needed):

    python bench/bench_routing.py [--device cpu|cuda] [--dtype float32|bfloat16] [--repeats 3] [--sizes small,large]

Peak memory on CPU: the highest resident set size sampled (every 0.5 ms) during one call of a variant, minus the
resident size just before it, each variant in a fresh subprocess with glibc's mmap threshold fixed at 64 KiB (so
freed tensors go back to the system and RSS follows what is live); on CUDA it is torch's peak allocated memory
over the inputs.
"""
from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import os
import resource
import statistics
import sys
import threading
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

SIZES = {  # name: (text, image rows, image cols, reference rows/cols each)
    "small": (512, 32, 32, 16),   # L = 512 + 1,024 + 2×256 = 2,048
    "large": (512, 64, 64, 32),   # L = 512 + 4,096 + 2×1,024 = 6,656
}
VARIANTS = ("plain", "hard", "soft", "hard+isolate", "hard+capture")
HEADS, DIM = 24, 128


def load_routing():
    """dreamo_ops as a package without importing the pack's ComfyUI entry point."""
    name = "dreamo_ops"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, name, "__init__.py"),
                                                      submodule_search_locations=[os.path.join(REPO, name)])
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    import dreamo_ops.areas as areas
    import dreamo_ops.routing as routing
    import dreamo_ops.token_layout as token_layout
    return routing, token_layout, areas


def backend(q, k, v, heads, mask=None, skip_reshape=True, **kwargs):
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(q.shape[0], -1, heads * q.shape[-1])


def setup(size, device, dtype):
    routing, token_layout, areas = load_routing()
    txt, rows, cols, ref = SIZES[size]
    layout = token_layout.reference_layout((rows * 2, cols * 2), [(ref * 2, ref * 2)] * 2, (1, 2))
    length = txt + layout.total_count
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, HEADS, length, DIM, generator=g).to(device, dtype) for _ in range(3))
    left = torch.zeros(64, 64)
    left[:, :32] = 1
    regions = {1: left, 2: 1 - left}
    coverage = {s: areas.region_to_tokens(m, (rows * 2, cols * 2)) for s, m in regions.items()}
    return routing, layout, regions, coverage, (q, k, v)


def make_call(variant, routing, layout, regions, coverage, latent_hw):
    if variant == "plain":
        return lambda q, k, v: backend(q, k, v, HEADS)
    from dreamo_ops.routing_map import RoutingCapture  # the package load_routing() loaded

    spec = routing.RoutingSpec(regions=regions, mode="soft" if variant == "soft" else "hard", strength=4.0,
                               isolate=variant == "hard+isolate",
                               capture=RoutingCapture() if variant == "hard+capture" else None)

    def call(q, k, v):
        ov = routing.RoutedAttention(spec, layout, coverage, n_double=1, latent_hw=latent_hw)
        return ov(backend, q, k, v, HEADS, mask=None, skip_reshape=True, transformer_options={},
                  _inside_attn_wrapper=True)
    return call


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_variants(size, device, dtype, repeats):
    routing, layout, regions, coverage, qkv = setup(size, device, dtype)
    hw = (layout.image_rows * 2, layout.image_cols * 2)
    calls = {v: make_call(v, routing, layout, regions, coverage, hw) for v in VARIANTS}
    times = {v: [] for v in VARIANTS}
    with torch.inference_mode():
        for v in VARIANTS:  # warm-up
            calls[v](*qkv)
        for _ in range(repeats):
            for v in VARIANTS:
                sync(device)
                start = time.perf_counter()
                calls[v](*qkv)
                sync(device)
                times[v].append(time.perf_counter() - start)
    return {v: statistics.median(t) for v, t in times.items()}, qkv[0].shape[2]


def _peak_worker(size, device, dtype_name, variant, queue):
    torch.set_num_threads(torch.get_num_threads())
    dtype = getattr(torch, dtype_name)
    routing, layout, regions, coverage, qkv = setup(size, device, dtype)
    call = make_call(variant, routing, layout, regions, coverage, (layout.image_rows * 2, layout.image_cols * 2))
    with torch.inference_mode():
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            call(*qkv)
            torch.cuda.synchronize()
            queue.put((torch.cuda.max_memory_allocated() - base) / 2**20)
        else:
            base = rss()
            peak, done = [base], threading.Event()

            def sample():
                while not done.is_set():
                    peak[0] = max(peak[0], rss())
                    time.sleep(0.0005)
            t = threading.Thread(target=sample)
            t.start()
            call(*qkv)
            done.set()
            t.join()
            queue.put((max(peak[0], rss()) - base) / 2**20)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_memory(size, device, dtype_name, variant):
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"  # read by glibc when the child starts
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_worker, args=(size, device, dtype_name, variant, queue))
    proc.start()
    value = queue.get()
    proc.join()
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="small,large")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-variant memory subprocesses")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    print(f"device {args.device}, {args.dtype}, {HEADS} heads × {DIM}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'L':>6} {'variant':<13} {'time s':>8} {'× plain':>8} {'peak MiB':>9} {'× plain':>8}")
    for size in args.sizes.split(","):
        times, length = time_variants(size, args.device, dtype, args.repeats)
        mem = {} if args.no_memory else {v: peak_memory(size, args.device, args.dtype, v) for v in VARIANTS}
        for v in VARIANTS:
            m = mem.get(v)
            mtxt = f"{m:9.0f} {m / mem['plain']:8.2f}" if m is not None and mem["plain"] > 0 else f"{'-':>9} {'-':>8}"
            print(f"{length:>6} {v:<13} {times[v]:8.3f} {times[v] / times['plain']:8.2f} {mtxt}")


if __name__ == "__main__":
    main()
