"""Per-step time of a DreamO-patched Flux vs the same Flux running the same token count without DreamO.

Both runs sample the same latent with the same reference latents in the conditioning ("uxo" positions), so
the token count is identical; the only difference is DreamO's wrapper + post_input embedding patch.
Target: ratio <= 1.02. Run by hand (needs COMFYUI_PATH):

    COMFYUI_PATH=~/comfyui python bench/bench_dreamo_overhead.py [--hidden 256] [--steps 6] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.append(REPO)  # the test kit, dreamo_testkit (appended: a ComfyUI checkout put first keeps its nodes.py)
from dreamo_testkit import comfy_host  # noqa: E402

comfy_host.setup()  # puts ComfyUI on the path in CPU mode and registers the package

import torch  # noqa: E402


class StepTimer:
    """Outermost DIFFUSION_MODEL wrapper timing each model call (one per step at cfg 1)."""

    def __init__(self):
        self.times = []

    def __call__(self, executor, *args, **kwargs):
        start = time.perf_counter()
        out = executor(*args, **kwargs)
        self.times.append(time.perf_counter() - start)
        return out


def with_timer(model):
    import comfy.patcher_extension

    timed = model.clone()
    timer = StepTimer()
    kind = comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL
    wrappers = timed.wrappers.setdefault(kind, {})
    timed.wrappers[kind] = {"bench_timer": [timer], **wrappers}  # first = outermost
    return timed, timer


def time_sampling(model, timer, positive, negative, latent, steps):
    import comfy.sample

    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
    timer.times.clear()
    comfy.sample.sample(model, noise, steps, 1.0, "euler", "simple", positive, negative, latent, seed=0,
                        disable_pbar=True)
    return statistics.median(timer.times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--single", type=int, default=4)
    parser.add_argument("--latent", type=int, default=32, help="latent side (image tokens = (side/2)^2)")
    parser.add_argument("--refs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not comfy_host.READY:
        sys.exit(comfy_host.SKIP_REASON)

    import node_helpers
    from dreamo_testkit import tiny_models
    from comfyui_dreamo.dreamo_ops.condition_embedding import DreamOEmbeddings
    from comfyui_dreamo.dreamo_ops.reference import DreamOReference
    from comfyui_dreamo.nodes.apply import DreamOApply

    torch.set_num_threads(os.cpu_count() or 1)
    head = args.hidden // args.heads
    axes = [head - 2 * (head * 7 // 16), head * 7 // 16, head * 7 // 16]
    model = tiny_models.flux_patcher(seed=0, hidden_size=args.hidden, num_heads=args.heads, depth=args.depth,
                                     depth_single_blocks=args.single, axes_dim=axes)
    emb = DreamOEmbeddings(torch.randn(2, args.hidden), torch.randn(10, args.hidden), None)
    side = args.latent
    refs = {f"ref_{i}": DreamOReference(torch.randn(1, 16, side, side), "ip", torch.zeros(1, 8, 8, 3))
            for i in range(1, args.refs + 1)}
    positive, negative = tiny_models.conditioning(seed=1, tokens=64), tiny_models.conditioning(seed=2, tokens=64)
    dreamo_model, dreamo_positive = DreamOApply().apply(model, positive, emb, **refs)["result"]
    plain_positive = node_helpers.conditioning_set_values(
        positive, {"reference_latents": [r.latent for r in refs.values()], "reference_latents_method": "uxo"})
    latent = torch.zeros(1, 16, side, side)
    tokens = (side // 2) ** 2 * (1 + args.refs)

    runs = {  # name -> (model, timer, positive); "plain (again)" measures the noise floor
        "plain": (*with_timer(model), plain_positive),
        "plain (again)": (*with_timer(model), plain_positive),
        "dreamo": (*with_timer(dreamo_model), dreamo_positive),
    }
    times = {name: [] for name in runs}
    for m, timer, pos in runs.values():  # warm-up
        time_sampling(m, timer, pos, negative, latent, 1)
    order = list(runs)
    for r in range(args.repeats):  # interleaved, order rotated, so drift and switching hit all alike
        for name in order[r % 3:] + order[:r % 3]:
            m, timer, pos = runs[name]
            times[name].append(time_sampling(m, timer, pos, negative, latent, args.steps))
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"Flux hidden {args.hidden}, {args.depth}+{args.single} blocks, {tokens} image-stream tokens "
          f"({args.refs} refs), {torch.get_num_threads()} CPU threads, median model-call time over "
          f"{args.repeats} runs of {args.steps} steps")
    print("| run | ms/step |")
    print("|---|---|")
    print(f"| Flux + the same reference tokens, no DreamO | {med['plain'] * 1000:.2f} |")
    print(f"| the same again (noise floor) | {med['plain (again)'] * 1000:.2f} |")
    print(f"| DreamO (wrapper + embeddings) | {med['dreamo'] * 1000:.2f} |")
    print(f"| ratio plain again / plain (noise) | {med['plain (again)'] / med['plain']:.3f} |")
    print(f"| ratio DreamO / plain (target <= 1.02) | {med['dreamo'] / med['plain']:.3f} |")
    own = dreamo_own_work(emb, latent, [r.latent for r in refs.values()], args.hidden)
    print(f"| DreamO's own work per call, timed alone (wrapper, layout, position check, embedding add) | "
          f"{own * 1000:.3f} ({own / med['plain'] * 100:.2f}% of a step) |")


def dreamo_own_work(emb, latent, ref_latents, hidden, calls=200):
    """Time the wrapper + post_input patch on tensors of the real shapes, with the Flux blocks left out."""
    from comfyui_dreamo.dreamo_ops.flux_wrapper import DreamOFluxWrapper
    from comfyui_dreamo.dreamo_ops.token_layout import position_ids, reference_layout

    layout = reference_layout(latent.shape[-2:], [r.shape[-2:] for r in ref_latents], range(1, len(ref_latents) + 1))
    img = torch.randn(latent.shape[0], layout.total_count, hidden)
    ids = position_ids(layout).unsqueeze(0)

    class Executor:
        class_obj = type("FluxLike", (), {"patch_size": 2})()

        def __call__(self, x, t, ctx, y, g, refs, control, options, **kwargs):
            for patch in options["patches"]["post_input"]:
                patch({"img": img, "txt": None, "img_ids": ids, "txt_ids": None})

    wrapper, executor = DreamOFluxWrapper(emb), Executor()
    slots = tuple(range(1, len(ref_latents) + 1))
    start = time.perf_counter()
    for _ in range(calls):
        wrapper(executor, latent, None, None, None, None, ref_latents, None, {}, dreamo_ref_slots=slots,
                ref_latents_method="uxo")
    return (time.perf_counter() - start) / calls


if __name__ == "__main__":
    main()
