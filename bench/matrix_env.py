"""bench/gpu_matrix.py: what the machine it runs on has (GPU, torch, ComfyUI, attention backends), printed and
saved with every table."""
from __future__ import annotations

import os
import platform
import time

import torch

import host


def environment(profile, comfy_version: str) -> dict:
    """The machine and software a run measured, for gpu_matrix.Profile `profile`."""
    import comfy.ldm.modules.attention as attn

    env = {"profile": profile.name, "torch": torch.__version__, "cuda": torch.version.cuda, "comfyui": comfy_version,
           "pack_commit": host.pack_commit(), "python": platform.python_version(),
           "load_average": [round(x, 2) for x in os.getloadavg()], "cpu_threads": torch.get_num_threads(),
           "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    if profile.device == "cuda":
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
                   sdpa={"flash": torch.backends.cuda.flash_sdp_enabled(),
                         "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                         "cudnn": getattr(torch.backends.cuda, "cudnn_sdp_enabled", lambda: None)()})
    else:
        env.update(gpu=None, cpu=platform.processor() or platform.machine())
    found = {}
    for pkg in ("sageattention", "sageattn3", "flash_attn", "xformers"):
        try:
            import importlib.metadata as md
            import importlib.util

            if importlib.util.find_spec(pkg) is not None:
                try:
                    found[pkg] = md.version(pkg)
                except Exception:
                    found[pkg] = "installed"
        except Exception:
            pass
    try:  # ComfyUI 0.33's kernels (rope, fp8): which backends it has here
        import comfy_kitchen

        env["comfy_kitchen"] = sorted(k for k, v in comfy_kitchen.list_backends().items() if v.get("available"))
    except Exception:
        env["comfy_kitchen"] = None
    import comfy.ldm.flux.math as flux_math

    env["attention"] = {"comfyui_choice": getattr(flux_math.optimized_attention, "__name__", "?"),
                        "registered": sorted(getattr(attn, "REGISTERED_ATTENTION_FUNCTIONS", {}) or {}),
                        "packages": found}
    return env


def fp8_capable() -> bool:
    if not torch.cuda.is_available():
        return False
    major, minor = torch.cuda.get_device_capability(0)
    return (major, minor) >= (8, 9)


def other_backends(env) -> list[str]:
    """Registered ComfyUI attention functions other than its choice that run on a GPU (0.33+ has a registry)."""
    choice = env["attention"]["comfyui_choice"].replace("attention_", "")
    return [n for n in env["attention"]["registered"] if n not in ("sub_quad", "split", choice, "pytorch")
            and env.get("gpu")]
