"""Memory cost of DreamOStageLoader: peak RSS of loading a Flux model with all DreamO stages vs the model alone.

Writes a synthetic mid-size FLUX-shaped model (bf16) and release-like stage files (XLabs main/cfg/quality with a
full-size 32110x4096 T5 embedding table in the main file, diffusers SFT/DPO and a full turbo LoRA), then, each
in a fresh process:
  model      load the model (ComfyUI's Flux class, weights from safetensors) -> peak RSS
  stages     the same, then DreamOStageLoader with every stage on -> peak RSS
and, in one process, RSS step by step (peak reset between steps with /proc/self/clear_refs):
  after DreamOStageLoader; after reading every LoRA page (what ComfyUI reads when it patches);
  after ComfyUI's patch_model (its own weight backups, the same for any LoRA in ComfyUI).
Target: the stages add no more than the LoRA tensors themselves.

Usage: COMFYUI_PATH=~/comfyui python bench/bench_stage_memory.py [--hidden 768] [--rank 32]
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MB = 2 ** 20


def setup_host(comfyui: str):
    sys.path.insert(0, comfyui)
    sys.path.append(REPO)  # the test kit, dreamo_testkit (appended: a ComfyUI checkout put first keeps its nodes.py)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    spec = importlib.util.spec_from_file_location("comfyui_dreamo", os.path.join(REPO, "__init__.py"),
                                                  submodule_search_locations=[REPO])
    module = importlib.util.module_from_spec(spec)
    sys.modules["comfyui_dreamo"] = module
    spec.loader.exec_module(module)


def flux_config(hidden: int, depth: int, single: int) -> dict:
    heads = hidden // 128
    return dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096,
                hidden_size=hidden, mlp_ratio=4.0, num_heads=heads, depth=depth, depth_single_blocks=single,
                axes_dim=[16, 56, 56], theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True)


def status() -> dict:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(line.split()[1]) * 1024
    return out


def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def write_files(work: str, args) -> dict:
    import torch
    from safetensors.torch import save_file

    from dreamo_testkit import lora_fixtures as lf

    cfg = flux_config(args.hidden, args.depth, args.single)
    torch.manual_seed(0)
    import comfy.supported_models

    config = comfy.supported_models.Flux(dict(cfg))
    config.set_inference_dtype(torch.bfloat16, None)
    model = config.get_model({})
    sd = {k: (torch.randn(v.shape) * 0.02).to(torch.bfloat16) for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(work, "flux.safetensors"))
    del model, sd
    dims = lf.Dims.of(cfg)
    dreamo = os.path.join(work, "dreamo")
    os.makedirs(os.path.join(dreamo, "v1.1"))
    os.makedirs(os.path.join(dreamo, "FLUX.1-Turbo-Alpha"))
    bf16 = torch.bfloat16
    files = {"dreamo.safetensors": lf.xlabs(seed=1, rank=args.rank, d=dims, sep="_", dtype=bf16)[0],
             "dreamo_cfg_distill.safetensors": lf.xlabs(seed=2, rank=args.rank, d=dims, dtype=bf16)[0],
             "dreamo_quality_lora_pos.safetensors": lf.xlabs(seed=3, rank=args.rank, d=dims, dtype=bf16)[0],
             "dreamo_quality_lora_neg.safetensors": lf.xlabs(seed=4, rank=args.rank, d=dims, dtype=bf16)[0],
             "v1.1/dreamo_sft_lora.safetensors": lf.diffusers(seed=5, rank=args.rank, d=dims, full=False,
                                                              dtype=bf16)[0],
             "v1.1/dreamo_dpo_lora.safetensors": lf.diffusers(seed=6, rank=args.rank, d=dims, full=False,
                                                              dtype=bf16)[0],
             "FLUX.1-Turbo-Alpha/diffusion_pytorch_model.safetensors": lf.diffusers(seed=7, rank=args.rank, d=dims,
                                                                                    full=True, dtype=bf16)[0]}
    t5 = torch.zeros(32110, 4096, dtype=bf16)  # full-size table, as in the release
    files["dreamo.safetensors"].update({
        "dreamo_task_embedding.weight": torch.randn(2, args.hidden).to(bf16),
        "dreamo_idx_embedding.weight": torch.randn(10, args.hidden).to(bf16),
        "dreamo_t5_embedding.weight": t5})
    lora_bytes = 0
    for name, tensors in files.items():
        save_file(tensors, os.path.join(dreamo, name))
        lora_bytes += sum(t.numel() * t.element_size() for k, t in tensors.items() if "embedding" not in k)
    return {"config": cfg, "lora_file_bytes": lora_bytes, "t5_table_bytes": t5.numel() * t5.element_size()}


def load_model(work: str, cfg: dict):
    import torch
    from safetensors.torch import load_file
    import comfy.model_patcher
    import comfy.supported_models

    config = comfy.supported_models.Flux(dict(cfg))
    config.set_inference_dtype(torch.bfloat16, None)
    model = config.get_model({})
    sd = load_file(os.path.join(work, "flux.safetensors"))
    model.load_model_weights(sd, "diffusion_model.")
    del sd
    gc.collect()
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def run_stages(model, work: str):
    import torch
    import folder_paths
    from comfyui_dreamo.nodes.stage_loader import DreamOStageLoader

    folder_paths.folder_names_and_paths["dreamo"] = ([os.path.join(work, "dreamo")], {".safetensors"})
    folder_paths.folder_names_and_paths["loras"] = ([], {".safetensors"})
    folder_paths.filename_list_cache.clear()
    inputs = {k: opts.get("default", kind[0] if isinstance(kind, list) else None)
              for k, (kind, opts) in DreamOStageLoader.INPUT_TYPES()["required"].items() if k != "model"}
    inputs["quality_pos_file"] = "dreamo_quality_lora_pos.safetensors"  # every stage on: v1.1 + v1 pair + turbo
    inputs["quality_neg_file"] = "dreamo_quality_lora_neg.safetensors"
    with torch.inference_mode():
        return DreamOStageLoader().load(model, **inputs)


def lora_tensors(patched):
    seen = {}
    for patches in patched.patches.values():
        for p in patches:
            for t in p[1].weights[:2]:
                seen[id(t)] = t
    return list(seen.values())


def child(mode: str, work: str, cfg: dict) -> dict:
    import torch

    base = status()
    model = load_model(work, cfg)
    out = {"imports_rss": base["VmRSS"], "model_rss": status()["VmRSS"]}
    if mode == "stages":
        patched, _ = run_stages(model, work)
        out["stages_rss"] = status()["VmRSS"]
        out["lora_tensor_bytes"] = sum(t.numel() * t.element_size() for t in lora_tensors(patched))
    if mode == "steps":
        reset_peak()
        before = status()
        patched, _ = run_stages(model, work)
        after = status()
        out["steps"] = {"before": before, "stages": after}
        tensors = lora_tensors(patched)
        out["lora_tensor_bytes"] = sum(t.numel() * t.element_size() for t in tensors)
        reset_peak()
        checksum = sum(float(t.float().sum()) for t in tensors)  # read every LoRA page
        out["steps"]["touched"] = status()
        out["checksum"] = checksum
        reset_peak()
        with torch.inference_mode():
            patched.patch_model(device_to=torch.device("cpu"))
        out["steps"]["patched"] = status()
    out["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--single", type=int, default=8)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH", ""))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.comfyui:
        sys.exit("set COMFYUI_PATH (or --comfyui) to a ComfyUI checkout")
    setup_host(args.comfyui)
    if args.child:
        with open(os.path.join(args.work, "meta.json")) as f:
            cfg = json.load(f)["config"]
        print(json.dumps(child(args.child, args.work, cfg)))
        return
    with tempfile.TemporaryDirectory() as work:
        meta = write_files(work, args)
        with open(os.path.join(work, "meta.json"), "w") as f:
            json.dump(meta, f)
        runs = {}
        for mode in ("model", "stages", "steps"):
            cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, "--work", work,
                   "--comfyui", args.comfyui]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[mode] = json.loads(res.stdout.strip().splitlines()[-1])
    report(meta, runs, args)


def report(meta, runs, args):
    lora = runs["stages"]["lora_tensor_bytes"]
    model_bytes = runs["model"]["model_rss"] - runs["model"]["imports_rss"]
    print(f"Synthetic Flux: hidden {args.hidden}, {args.depth} double + {args.single} single blocks, bf16; "
          f"LoRA rank {args.rank}; 7 stages (main, cfg_distill, turbo, quality_pos, quality_neg, sft, dpo).")
    print(f"LoRA tensors kept by the patches: {lora / MB:.1f} MB (stage files' LoRA tensors: "
          f"{meta['lora_file_bytes'] / MB:.1f} MB; T5 embedding table in dreamo.safetensors, never read: "
          f"{meta['t5_table_bytes'] / MB:.1f} MB)\n")
    print("| process | peak RSS (MB) | RSS after (MB) |")
    print("|---|---:|---:|")
    print(f"| model alone | {runs['model']['peak_rss'] / MB:.1f} | {runs['model']['model_rss'] / MB:.1f} |")
    print(f"| model + all stages (DreamOStageLoader) | {runs['stages']['peak_rss'] / MB:.1f} | "
          f"{runs['stages']['stages_rss'] / MB:.1f} |")
    extra_peak = runs["stages"]["peak_rss"] - runs["model"]["peak_rss"]
    extra_after = runs["stages"]["stages_rss"] - runs["model"]["model_rss"]
    print(f"| difference (stages) | {extra_peak / MB:+.1f} | {extra_after / MB:+.1f} |")
    print(f"\n(model weights alone: ~{model_bytes / MB:.1f} MB of RSS above the imports)\n")
    s = runs["steps"]["steps"]
    b = s["before"]["VmRSS"]
    print("| step (same process, peak reset before each) | RSS (MB) | added vs model loaded (MB) | peak in step (MB) |")
    print("|---|---:|---:|---:|")
    print(f"| model loaded | {b / MB:.1f} | 0.0 | - |")
    for label, key in (("DreamOStageLoader done (LoRA pages still lazily mapped)", "stages"),
                       ("every LoRA page read (as ComfyUI does when patching)", "touched"),
                       ("ComfyUI patch_model (its backups of patched weights)", "patched")):
        print(f"| {label} | {s[key]['VmRSS'] / MB:.1f} | {(s[key]['VmRSS'] - b) / MB:+.1f} | "
              f"{s[key]['VmHWM'] / MB:.1f} |")
    touched_extra = s["touched"]["VmRSS"] - b
    ok = max(extra_after, touched_extra, s["stages"]["VmHWM"] - b) <= lora * 1.05 + 8 * MB
    print(f"\nTarget (stages add no more than their LoRA tensors, {lora / MB:.1f} MB; allowance 5% + 8 MB for "
          "interpreter/allocator overhead): "
          f"{'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
