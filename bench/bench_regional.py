"""Regional prompts with references: core's masked-conditioning path vs DreamO's routed one, per sampling step.

The same 3-region layout (region 1: left half with reference 1, region 2: right half with reference 2, region 3: a
top band, words only) and a base prompt for the whole picture, sampled one step through ComfyUI's sampler on a
Flux of FLUX.1's real width (hidden 3072, 24 heads × 128, T5 width 4096, CLIP width 768, FLUX.1's MLP) but only a
few blocks (`--double`, `--single`; random weights, float32, CPU), at 1024² (4,096 image tokens) with two 512²
references (1,024 tokens each):

  core    a base entry (512 T5 tokens) + three ConditioningSetMask entries (CLIPTextEncode's 256 tokens each),
          ConditioningCombine'd, DreamO Apply on the result: ComfyUI evaluates the model once per entry (batched
          when memory allows) and blends the outputs by mask;
  ours    DreamO Regional Conditioning's conditioning: the base prompt with the three regions' words appended
          (their own tokens only, `--words`), routed to their regions with DreamO Routing (hard): one evaluation.

Measured per variant, each in a fresh subprocess: the wall-clock time of the sampling step's model calls (one
step; `--repeats` more after a first, warm-up step) and the peak resident memory above the resident size just
before sampling (RSS sampled every 2 ms, glibc's mmap threshold at 64 KiB so freed tensors go back to the system).
Target (issue 20): ours ≤ 0.5× core's time at 3 regions on CPU, memory ≤ core's. Printed as a table from one run;
say the machine's load (uptime) with it. Needs ComfyUI (COMFYUI_PATH):

    COMFYUI_PATH=~/comfyui python bench/bench_regional.py [--double 1] [--single 1] [--repeats 0] [--tiny]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.append(REPO)  # the test kit, dreamo_testkit (appended: a ComfyUI checkout put first keeps its nodes.py)

FULL = dict(hidden=3072, heads=24, context=4096, vec=768, axes=[16, 56, 56], image=1024, ref=512, base=512,
            core_region=256)
TINY = dict(hidden=96, heads=2, context=32, vec=24, axes=[8, 20, 20], image=256, ref=128, base=64, core_region=32)
WORDS = (16, 14, 8)  # tokens of the three regions' words (+ </s>), e.g. "a man [ref#1] in a grey wool coat"


def boxes(side):
    """Region masks on the image's latent grid: left half, right half, top band."""
    import torch

    n = side // 8
    masks = [torch.zeros(n, n) for _ in range(3)]
    masks[0][:, : n // 2] = 1
    masks[1][:, n // 2:] = 1
    masks[2][: n // 4, :] = 1
    return masks


def build(cfg, double, single):
    import torch

    from dreamo_testkit import tiny_models
    from comfyui_dreamo.dreamo_ops.condition_embedding import DreamOEmbeddings
    from comfyui_dreamo.dreamo_ops.reference import DreamOReference

    model = tiny_models.flux_patcher(seed=0, scale=0.02, hidden_size=cfg["hidden"], num_heads=cfg["heads"],
                                     context_in_dim=cfg["context"], vec_in_dim=cfg["vec"], axes_dim=cfg["axes"],
                                     depth=double, depth_single_blocks=single)
    g = torch.Generator().manual_seed(1)
    dreamo = DreamOEmbeddings(task=torch.randn(2, cfg["hidden"], generator=g) * 0.02,
                              index=torch.randn(10, cfg["hidden"], generator=g) * 0.02, placeholders=None)
    side = cfg["ref"] // 8
    refs = {f"ref_{k}": DreamOReference(latent=torch.randn(1, 16, side, side, generator=g), task="ip",
                                        pixels=torch.zeros(1, cfg["ref"], cfg["ref"], 3)) for k in (1, 2)}
    return model, dreamo, refs


def context(cfg, tokens, seed):
    import torch

    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, cfg["context"], generator=g) * 0.1,
             {"pooled_output": torch.randn(1, cfg["vec"], generator=g) * 0.1, "guidance": 4.5}]]


def conditionings(variant, cfg, model, dreamo, refs):
    """(model, positive) of a variant, built with the nodes a user would use."""
    import comfy.conds

    from comfyui_dreamo.dreamo_ops.regional import Segment, with_region_prompts
    from comfyui_dreamo.nodes.apply import DreamOApply
    from comfyui_dreamo.nodes.routing import DreamORouting
    from dreamo_testkit.host_sampling import core_nodes

    masks = boxes(cfg["image"])
    base = context(cfg, cfg["base"], 0)
    if variant == "core":
        nodes = core_nodes()
        combined = base
        for k, mask in enumerate(masks, start=1):
            (masked,) = nodes.ConditioningSetMask().append(context(cfg, cfg["core_region"], k), mask[None],
                                                           "default", 1.0)
            (combined,) = nodes.ConditioningCombine().combine(combined, masked)
        return DreamOApply().apply(model, combined, dreamo, **refs)["result"]
    segments = [Segment(k, context(cfg, n, 10 + k)[0][0], mask, f"region {k}")
                for k, (n, mask) in enumerate(zip(WORDS, masks), start=1)]
    positive = with_region_prompts(base, segments, True, "bench", "conditioning", comfy.conds.CONDConstant)
    routed, _ = DreamORouting().route(model, "hard", 4.0, True, 0.0, 1.0, "all", False,
                                      region_1=masks[0], region_2=masks[1])
    return DreamOApply().apply(routed, positive, dreamo, **refs)["result"]


class Calls:
    """Outermost DIFFUSION_MODEL wrapper: the model calls of a step, their batch and text length, their time."""

    def __init__(self):
        self.calls = []

    def __call__(self, executor, x, timestep, context, *args, **kwargs):
        start = time.perf_counter()
        out = executor(x, timestep, context, *args, **kwargs)
        self.calls.append((time.perf_counter() - start, x.shape[0], context.shape[1]))
        return out


def worker(variant, tiny, double, single, repeats, queue, heads=None, comfy_attention="pytorch"):
    if heads:
        FULL.update(hidden=128 * heads, heads=heads)
    try:
        sys.path.insert(0, os.environ.get("COMFYUI_PATH", ""))
        import comfy.cli_args

        # ComfyUI's attention on CPU is sub-quadratic by default; routed blocks call SDPA themselves. "pytorch"
        # makes core's path use SDPA too, so the comparison is of the work, not of two attention kernels. Set
        # before anything imports comfy.model_management.
        comfy.cli_args.args.use_pytorch_cross_attention = comfy_attention == "pytorch"
        from dreamo_testkit import comfy_host

        comfy_host.setup()  # ComfyUI on the path in CPU mode, the package registered
        queue.put(measure(variant, tiny, double, single, repeats))
    except BaseException as e:  # noqa: BLE001 - reported by the parent, which would otherwise wait forever
        import traceback

        queue.put({"error": f"{variant}: {e!r}\n{traceback.format_exc()}"})


def measure(variant, tiny, double, single, repeats):
    import comfy.ldm.modules.attention
    import comfy.patcher_extension
    import comfy.samplers
    import torch

    from bench_routing import rss
    from dreamo_testkit.host_sampling import one_evaluation

    cfg = TINY if tiny else FULL
    model, dreamo, refs = build(cfg, double, single)
    model, positive = conditionings(variant, cfg, model, dreamo, refs)
    calls = Calls()
    kind = comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL
    model.wrappers[kind] = {"bench_calls": [calls], **model.wrappers.get(kind, {})}  # first = outermost
    negative = context(cfg, cfg["base"], 99)
    latent = torch.zeros(1, 16, cfg["image"] // 8, cfg["image"] // 8)
    sampler = comfy.samplers.KSAMPLER(one_evaluation)

    def step():
        calls.calls.clear()
        noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
        comfy.samplers.sample(model, noise, positive, negative, 1.0, torch.device("cpu"), sampler,
                              torch.tensor([0.8, 0.0]), latent_image=latent, seed=0)
        return list(calls.calls)

    with torch.inference_mode():
        base = rss()
        peak, done = [base], threading.Event()

        def sample_rss():
            while not done.is_set():
                peak[0] = max(peak[0], rss())
                time.sleep(0.002)
        t = threading.Thread(target=sample_rss)
        t.start()
        first = step()
        done.set()
        t.join()
        times = [sum(c[0] for c in first)]
        for _ in range(repeats):
            times.append(sum(c[0] for c in step()))
    return {"time": min(times[1:]) if repeats else times[0], "peak_mib": (peak[0] - base) / 2**20,
            "calls": [(b, n) for _, b, n in first],
            "attention": comfy.ldm.modules.attention.optimized_attention.__name__}


def run(variant, args):
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"  # read by glibc when the child starts
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=worker, args=(variant, args.tiny, args.double, args.single, args.repeats, queue,
                                            args.heads, args.comfy_attention))
    proc.start()
    out = queue.get()
    proc.join()
    if "error" in out:
        raise SystemExit(out["error"])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--double", type=int, default=1, help="double blocks (FLUX.1 has 19)")
    parser.add_argument("--single", type=int, default=1, help="single blocks (FLUX.1 has 38)")
    parser.add_argument("--repeats", type=int, default=0, help="timed steps after the first (0: time the first)")
    parser.add_argument("--tiny", action="store_true", help="a tiny width, to check the script in seconds")
    parser.add_argument("--heads", type=int, default=None, help="fewer 128-wide heads than FLUX.1's 24 (cheaper)")
    parser.add_argument("--comfy-attention", choices=["pytorch", "default"], default="pytorch",
                        help="ComfyUI's attention for unrouted calls: pytorch SDPA (as routed blocks use; default) "
                             "or ComfyUI's own CPU choice (sub-quadratic)")
    args = parser.parse_args()
    if args.heads:
        FULL.update(hidden=128 * args.heads, heads=args.heads)
    import torch

    cfg = TINY if args.tiny else FULL
    tokens = (cfg["image"] // 16) ** 2
    refs = 2 * (cfg["ref"] // 16) ** 2
    print(f"Flux width {cfg['hidden']} ({cfg['heads']} heads × {cfg['hidden'] // cfg['heads']}), "
          f"{args.double} double + {args.single} single blocks, float32, CPU, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {cfg['image']}² image = {tokens} tokens, 2 references = {refs} "
          f"tokens, 3 regions; core: base {cfg['base']} + 3 × {cfg['core_region']} T5 tokens; ours: base "
          f"{cfg['base']} + words {' + '.join(map(str, WORDS))}")
    results = {v: run(v, args) for v in ("core", "ours")}
    print(f"ComfyUI attention for unrouted calls: {results['core']['attention']}; routed blocks: SDPA with folded "
          "channels")
    print(f"{'path':<6} {'model calls (batch × text tokens)':<34} {'s / step':>9} {'× core':>7} {'peak MiB':>9} "
          f"{'× core':>7}")
    for v, r in results.items():
        calls = ", ".join(f"{b} × {n}" for b, n in r["calls"])
        print(f"{v:<6} {calls:<34} {r['time']:9.2f} {r['time'] / results['core']['time']:7.2f} "
              f"{r['peak_mib']:9.0f} {r['peak_mib'] / max(results['core']['peak_mib'], 1e-9):7.2f}")


if __name__ == "__main__":
    main()
