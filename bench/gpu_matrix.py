"""What DreamO's references cost on a GPU: FLUX.1-dev at full size, per sampling step, one command, no download.

Builds FLUX.1-dev's real architecture (19 double + 38 single blocks, hidden 3072, 24 heads of 128) with random
weights in bf16 through ComfyUI's own model classes (its model detection, as a real file is loaded), on the GPU, and
samples through ComfyUI's sampler (cfg 1, as DreamO with its cfg-distill LoRA) with the pack's own nodes:

    plain FLUX.1 | DreamO with 0, 1, 2, 4, 9 references (512²) | DreamO + routing (hard, soft, capture on; 2 refs)
    | regional prompts (a marked hook: not in this build)

at 1024² (then 768², 1536²), then fp8 weights and fp8 matmuls where the GPU has them, then each other attention
backend ComfyUI has registered (sage, flash, xformers where installed). Per row: seconds per step (median of
--steps after --warmup), peak GPU memory (and the part above the weights), each as a ratio to plain FLUX.1 at the
same size and weight type. Also prints the GPU, torch, ComfyUI, the attention backends found and the ones the
routed blocks used (DreamO's dispatch verdicts).

    python bench/gpu_matrix.py                        # on a GPU: the whole matrix in one run (about 4-6 min on an H200)
    python bench/gpu_matrix.py --budget 540 --json-out gpu_matrix.json
    python bench/gpu_matrix.py --tiny                 # the same code on a tiny Flux on the CPU, in seconds

ComfyUI: --comfyui PATH, else $COMFYUI_PATH, else the ComfyUI this pack is installed in (custom_nodes/<pack>).
Rows are printed (and the JSON file rewritten) as each finishes; a row that would not fit the --budget (seconds,
whole run) is skipped and listed; an out-of-memory or failing row is recorded and the run goes on.

Exit codes: 0 measured (rows skipped for the budget are listed, not an error); 2 bad arguments; 3 no GPU (CUDA) and
no --tiny: nothing measured; 4 no ComfyUI found or it does not import; 5 no row could be measured.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import sys
import time
import traceback
from dataclasses import dataclass

import torch

import flux_build
import host
from matrix_check import CallCheck
from matrix_env import environment, fp8_capable, other_backends
from matrix_report import HEADER, Report, Row

EXIT_NO_GPU, EXIT_NO_COMFYUI, EXIT_NOTHING = 3, 4, 5
REF_COUNTS = (0, 1, 2, 4, 9)
PLAIN = "plain FLUX.1"
ROUTE_REFS = 2
REGIONAL_ROWS = None
"""HOOK for regional prompts: a function (bench, size, ref_px) -> list of Row to add after the routing rows at each
size, each with its own `prepare`. Not wired yet (regional prompts are in the pack; bench/bench_regional.py times
them against core's masked conditioning): the matrix lists one "regional prompts" row as not available here."""


@dataclass
class Profile:
    """What is measured: FLUX.1-dev on a GPU, or a tiny Flux on the CPU (--tiny) running the same code."""
    name: str
    base_weights: str
    sizes: dict
    image_px: tuple
    ref_px: int
    text_tokens: int
    dtype: torch.dtype
    device: str
    steps: int
    warmup: int


GPU = Profile("FLUX.1-dev", "bf16", flux_build.FLUX1_DEV, (1024, 768, 1536), 512, 512, torch.bfloat16, "cuda", 6, 2)
TINY = Profile("tiny Flux (CPU check of the script)", "fp32",
               dict(vec_in_dim=24, context_in_dim=32, hidden_size=48, num_heads=2, depth=2, depth_single_blocks=2,
                    axes_dim=[4, 10, 10]), (64, 32, 96), 32, 16, torch.float32, "cpu", 2, 1)


# ------------------------------------------------------------------------------------------------ the bench

class Bench:
    def __init__(self, profile: Profile, args):
        self.p = profile
        self.args = args
        self.device = torch.device(profile.device)
        self.deadline = time.monotonic() + args.budget
        self.rows: list[Row] = []
        self.skipped: list[str] = []
        self.model = None
        self.weights_bytes = 0
        import comfyui_dreamo.dreamo_ops.condition_embedding as ce

        g = torch.Generator().manual_seed(0)
        hidden = profile.sizes["hidden_size"]
        self.embeddings = ce.DreamOEmbeddings(task=torch.randn(2, hidden, generator=g) * 0.02,
                                              index=torch.randn(10, hidden, generator=g) * 0.02, placeholders=None)

    # -- model
    def build(self, weights: str):
        self.free()
        dtype, cast, fast = {self.p.base_weights: (self.p.dtype, None, False),
                             "fp8_e4m3fn": (torch.float8_e4m3fn, self.p.dtype, False),
                             "fp8_e4m3fn_fast": (torch.float8_e4m3fn, self.p.dtype, True)}[weights]
        t0 = time.monotonic()
        self.model = flux_build.random_flux_patcher(self.device, dtype, cast, fast, **self.p.sizes)
        self.weights = weights
        self.weights_bytes = sum(t.numel() * t.element_size() for t in self.model.model.diffusion_model.state_dict()
                                 .values())
        self.sync()
        return time.monotonic() - t0

    def free(self):
        if self.model is not None:
            import comfy.model_management

            comfy.model_management.unload_all_models()
            self.model = None
            gc.collect()
            comfy.model_management.soft_empty_cache()

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # -- inputs
    def conditioning(self, seed: int):
        g = torch.Generator().manual_seed(seed)
        s = self.p.sizes
        context = torch.randn(1, self.p.text_tokens, s["context_in_dim"], generator=g)
        return [[context, {"pooled_output": torch.randn(1, s["vec_in_dim"], generator=g), "guidance": 3.5}]]

    def references(self, n: int) -> dict:
        from comfyui_dreamo.dreamo_ops.reference import DreamOReference

        side = self.p.ref_px // 8
        g = torch.Generator().manual_seed(100 + n)
        return {f"ref_{k}": DreamOReference(latent=torch.randn(1, 16, side, side, generator=g), task="ip",
                                            pixels=torch.zeros(1, 8, 8, 3)) for k in range(1, n + 1)}

    def tokens(self, size: int, refs: int) -> int:
        return self.p.text_tokens + (size // 16) ** 2 + refs * (self.p.ref_px // 16) ** 2

    def prepare(self, row: Row):
        """(model, positive) for a row, through the pack's own nodes."""
        from comfyui_dreamo.nodes.apply import DreamOApply, patch_model
        from comfyui_dreamo.nodes.routing import DreamORouting

        positive = self.conditioning(1)
        model = self.model
        if row.dreamo and row.refs == 0:
            model = patch_model(model, self.embeddings)  # DreamO's wrapper, no reference: its overhead alone
        elif row.dreamo:
            applied = DreamOApply().apply(model, positive, self.embeddings, **self.references(row.refs))
            model, positive = applied["result"]
        if row.routing is not None:
            regions = stripes(row.refs, self.device)
            model = DreamORouting().route(model, mode=row.routing["mode"], strength=row.routing.get("strength", 4.0),
                                          isolate_references=False, start_percent=0.0, end_percent=1.0, blocks="all",
                                          capture_maps=row.routing.get("capture", False),
                                          **{f"region_{k}": m for k, m in regions.items()})[0]
        return model, positive

    # -- one row
    def estimate(self, row: Row) -> float | None:
        """Seconds the row would take, from the rows measured so far (tokens^1.5), or None if nothing to go by."""
        known = [r for r in self.rows if r.sec_per_step and r.weights == row.weights and r.backend is None]
        known = known or [r for r in self.rows if r.sec_per_step]
        if not known:
            return None
        ref = min(known, key=lambda r: abs(math.log(r.tokens / max(1, self.tokens(row.size, row.refs)))))
        step = ref.sec_per_step * (self.tokens(row.size, row.refs) / ref.tokens) ** 1.5
        if row.routing and row.routing.get("capture"):
            step *= 1.6
        return (self.p.warmup + self.p.steps) * step * 1.3 + 3.0

    def run_row(self, row: Row, emit):
        row.tokens = self.tokens(row.size, row.refs)
        est = self.estimate(row)
        left = self.deadline - time.monotonic()
        if est is not None and est > left:
            row.status = f"skipped: needs ~{est:.0f} s, {max(0, left):.0f} s of the budget left"
            self.skipped.append(f"{row.size}² {row.name} ({row.weights})")
            return emit(row)
        try:
            self.measure(row)
        except torch.OutOfMemoryError if hasattr(torch, "OutOfMemoryError") else MemoryError:
            row.status = "out of memory"
            self.recover()
        except Exception as e:  # one row must not end the run
            row.status = f"error: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
            traceback.print_exc(file=sys.stderr)
            self.recover()
        emit(row)

    def recover(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def measure(self, row: Row):
        import comfy.patcher_extension
        import comfy.samplers

        model, positive = self.prepare(row)
        model = model.clone()
        check = CallCheck()
        model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "gpu_matrix_check", check)
        negative = self.conditioning(2)
        side = row.size // 8
        latent = torch.zeros(1, 16, side, side)
        times: list[float] = []
        deadline, bench = self.deadline, self

        def timed_steps(m, x, sigmas, extra_args=None, callback=None, disable=None):
            for i in range(len(sigmas) - 1):
                bench.sync()
                t0 = time.perf_counter()
                den = m(x, sigmas[i] * x.new_ones((x.shape[0],)), **(extra_args or {}))
                bench.sync()
                times.append(time.perf_counter() - t0)
                x = den + (x - den) * (sigmas[i + 1] / sigmas[i])
                if time.monotonic() > deadline and len(times) >= bench.p.warmup + 2:
                    break
            return x

        n = self.p.warmup + self.p.steps
        sigmas = torch.linspace(1.0, 0.0, n + 1)
        noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        with self.backend(row.backend):
            comfy.samplers.sample(model, noise, positive, negative, 1.0, self.device,
                                  comfy.samplers.KSAMPLER(timed_steps), sigmas, latent_image=latent, seed=0)
        timed = times[self.p.warmup:]
        if not timed:
            raise RuntimeError("no timed step")
        row.step_times = [round(t, 5) for t in times]
        row.sec_per_step = statistics.median(timed)
        row.checks = check.summary()
        problem = check.problem(row, self.p.sizes["depth"] + self.p.sizes["depth_single_blocks"])
        row.status = ("ok" if len(timed) == self.p.steps else f"partial: {len(timed)} timed steps (budget)")
        if problem:
            row.status = f"check failed: {problem}"
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
            row.peak_gib = peak / 2**30
            row.above_weights_gib = max(0, peak - self.weights_bytes) / 2**30
        base = row if row.name == PLAIN else next(
            (r for r in self.rows if r.size == row.size and r.weights == row.weights and r.name == PLAIN
             and r.backend == row.backend and r.sec_per_step), None)
        if base is not None and base is not row:
            row.time_ratio = row.sec_per_step / base.sec_per_step
            if row.above_weights_gib is not None and base.above_weights_gib:
                row.memory_ratio = row.above_weights_gib / base.above_weights_gib
        elif base is row:
            row.time_ratio, row.memory_ratio = 1.0, (1.0 if row.above_weights_gib else None)

    def backend(self, name):
        import contextlib

        if name is None:
            return contextlib.nullcontext()
        import comfy.ldm.flux.math as flux_math
        from comfy.ldm.modules.attention import get_attention_function

        fn = get_attention_function(name)

        @contextlib.contextmanager
        def swapped():
            saved = flux_math.optimized_attention
            flux_math.optimized_attention = fn
            try:
                yield
            finally:
                flux_math.optimized_attention = saved
        return swapped()


def stripes(n: int, device) -> dict:
    """n vertical stripes over the picture, one region per reference."""
    out = {}
    for k in range(1, n + 1):
        m = torch.zeros(1, 64, 64)
        m[:, :, (k - 1) * 64 // n:k * 64 // n] = 1
        out[k] = m
    return out


def size_rows(size: int, weights: str, backend: str | None = None, full: bool = True) -> list[Row]:
    rows = [Row(size, PLAIN, weights=weights, backend=backend)]
    counts = REF_COUNTS if full else (ROUTE_REFS,)
    rows += [Row(size, f"DreamO, {n} ref{'s' if n != 1 else ''}", refs=n, dreamo=True, weights=weights,
                 backend=backend) for n in counts]
    routes = ((("hard", False), ("soft", False), ("hard", True)) if full else (("hard", False),))
    rows += [Row(size, f"DreamO + routing {mode}{' + maps' if capture else ''}, {ROUTE_REFS} refs", refs=ROUTE_REFS,
                 dreamo=True, routing={"mode": mode, "capture": capture}, weights=weights, backend=backend)
             for mode, capture in routes]
    return rows


# ------------------------------------------------------------------------------------------------ main

def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="Exit codes: 0 measured, 2 bad arguments, 3 no GPU and no --tiny, 4 no "
                                        "ComfyUI, 5 nothing measured.")
    ap.add_argument("--tiny", action="store_true", help="a tiny Flux on the CPU: checks the script in seconds")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    ap.add_argument("--json-out", help="write the JSON here too, rewritten after every row")
    ap.add_argument("--budget", type=float, default=540.0, help="seconds for the whole run (default 540)")
    ap.add_argument("--sizes", help="image sizes in pixels, comma-separated (default 1024,768,1536; tiny 64,32,96)")
    ap.add_argument("--steps", type=int, help="timed steps per row (default 6; tiny 2)")
    ap.add_argument("--warmup", type=int, help="untimed steps first (default 2; tiny 1)")
    ap.add_argument("--no-fp8", action="store_true", help="skip the fp8 rows")
    ap.add_argument("--no-backends", action="store_true", help="skip the rows with other attention backends")
    ap.add_argument("--comfyui", help="ComfyUI checkout (default $COMFYUI_PATH, else the one this pack sits in)")
    args = ap.parse_args(argv)
    if args.budget <= 0 or (args.steps is not None and args.steps < 1) or (args.warmup is not None and args.warmup < 0):
        ap.error("--budget and --steps must be positive, --warmup not negative")
    if args.sizes:
        try:
            sizes = tuple(int(s) for s in args.sizes.split(","))
        except ValueError:
            ap.error(f"--sizes: '{args.sizes}' is not a list of integers")
        if any(s < 16 or s % 16 for s in sizes):
            ap.error("--sizes: each size must be a positive multiple of 16")
        args.sizes = sizes
    return args


def say(args, line: str):
    print(json.dumps({"status": "error", "message": line}) if args.json else line, flush=True)


def main(argv=None) -> int:
    args = parse(argv if argv is not None else sys.argv[1:])
    profile = TINY if args.tiny else GPU
    if not args.tiny and not torch.cuda.is_available():
        say(args, "gpu_matrix: no GPU (CUDA) is present, nothing was measured; run it on a machine with an NVIDIA "
                  "GPU, or with --tiny to check the script on the CPU (exit 3).")
        return EXIT_NO_GPU
    path = host.find_comfyui(args.comfyui)
    if path is None:
        say(args, "gpu_matrix: no ComfyUI found: pass --comfyui PATH or set COMFYUI_PATH (exit 4).")
        return EXIT_NO_COMFYUI
    try:
        version = host.start_comfyui(path, cpu=args.tiny)
        host.import_pack()
    except Exception as e:
        say(args, f"gpu_matrix: ComfyUI at {path} does not import: {type(e).__name__}: {e} (exit 4).")
        return EXIT_NO_COMFYUI
    from dataclasses import replace

    profile = replace(profile, image_px=args.sizes or profile.image_px, steps=args.steps or profile.steps,
                      warmup=profile.warmup if args.warmup is None else args.warmup)
    env = environment(profile, version)
    report = Report(args, env)
    if not args.json:
        print(f"# DreamO cost matrix: {profile.name}, {env.get('gpu') or env.get('cpu')}, torch {env['torch']}"
              f" (CUDA {env['cuda']}), ComfyUI {env['comfyui']}, pack {env['pack_commit']}, {env['date']}")
        print(f"# attention: ComfyUI chose {env['attention']['comfyui_choice']}; registered "
              f"{', '.join(env['attention']['registered']) or '(none)'}; packages "
              f"{env['attention']['packages'] or 'none of sageattention/flash_attn/xformers'}"
              + (f"; SDPA kernels {env['sdpa']}" if "sdpa" in env else "")
              + (f"; comfy-kitchen backends {env['comfy_kitchen']}" if env.get("comfy_kitchen") else ""))
        print(f"# {profile.steps} timed steps after {profile.warmup} warm-up, median; cfg 1; text "
              f"{profile.text_tokens} tokens; references {profile.ref_px}²; budget {args.budget:.0f} s; "
              f"load average {env['load_average']}")
        print(HEADER, flush=True)
    bench = Bench(profile, args)
    bench.rows = report.rows
    report.extra["build_seconds"] = {profile.base_weights: round(bench.build(profile.base_weights), 1)}
    for size in profile.image_px:
        for row in size_rows(size, profile.base_weights):
            bench.run_row(row, report.emit)
        hook = REGIONAL_ROWS(bench, size, profile.ref_px) if REGIONAL_ROWS else None
        if hook:
            for row in hook:
                bench.run_row(row, report.emit)
        else:
            report.emit(Row(size, "DreamO + regional prompts", weights=profile.base_weights,
                            tokens=bench.tokens(size, ROUTE_REFS), status="not available in this matrix: "
                            "bench/bench_regional.py times regional prompts (hook: REGIONAL_ROWS)"))
    main_size = profile.image_px[0]
    backends = [] if args.no_backends else other_backends(env)
    fp8 = [] if (args.no_fp8 or args.tiny or not fp8_capable()) else ["fp8_e4m3fn", "fp8_e4m3fn_fast"]
    for weights in fp8:
        est = bench.estimate(Row(main_size, "", weights=profile.base_weights))
        if est is not None and time.monotonic() + 60 + 3 * est > bench.deadline:
            bench.skipped.append(f"{weights} rows (budget)")
            continue
        bench.free()
        report.extra["build_seconds"][weights] = round(bench.build(weights), 1)
        for row in size_rows(main_size, weights=weights, full=False):
            bench.run_row(row, report.emit)
    if backends:
        if bench.weights != profile.base_weights:
            report.extra["build_seconds"][profile.base_weights + " again"] = round(bench.build(profile.base_weights), 1)
        for name in backends:
            for row in size_rows(main_size, profile.base_weights, backend=name, full=False):
                bench.run_row(row, report.emit)
    if not args.tiny and not fp8 and not args.no_fp8:
        report.extra["fp8"] = "not measured: this GPU has no fp8 matmuls (compute capability below 8.9)"
    report.extra["skipped_for_budget"] = bench.skipped
    report.extra["wall_seconds"] = round(args.budget - (bench.deadline - time.monotonic()), 1)
    report.save()
    bench.free()
    measured = [r for r in report.rows if r.sec_per_step]
    if args.json:
        print(json.dumps(report.data(), default=str))
    else:
        used = {(v["backend"], v["width"], v["dtype"]): v for v in report.data()["routed_blocks_backends"]}
        for (name, width, dtype), v in sorted(used.items(), key=str):
            print(f"# routed blocks: {name} at {width}-wide heads ({dtype}): "
                  f"{'used' if v['usable'] else 'refused, SDPA used instead: ' + v['reason']}")
        if bench.skipped:
            print(f"# skipped for the time budget: {'; '.join(bench.skipped)}")
        print(f"# {len(measured)} rows measured in {report.extra['wall_seconds']:.0f} s")
    return 0 if measured else EXIT_NOTHING


if __name__ == "__main__":
    sys.exit(main())
