"""Run a real ComfyUI sampling pass with one model evaluation and record what the diffusion model saw."""
from __future__ import annotations

import torch

RECORDER_KEY = "test_other_pack"


class Recorder:
    """A DIFFUSION_MODEL wrapper standing in for another pack's: records inputs and outputs of every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, executor, x, timestep, context, y=None, guidance=None, ref_latents=None, control=None,
                 transformer_options={}, **kwargs):
        out = executor(x, timestep, context, y, guidance, ref_latents, control, transformer_options, **kwargs)
        self.calls.append({"x": x.clone(), "t": timestep.clone(), "out": out.clone(),
                           "cond_or_uncond": list(transformer_options.get("cond_or_uncond", [])),
                           "n_refs": len(ref_latents or [])})
        return out


def add_recorder(patcher) -> Recorder:
    import comfy.patcher_extension

    rec = Recorder()
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, RECORDER_KEY, rec)
    return rec


def one_evaluation(model, x, sigmas, extra_args=None, callback=None, disable=None):
    s = sigmas[0] * x.new_ones((x.shape[0],))
    return model(x, s, **(extra_args or {}))


def sample_once(patcher, latent: torch.Tensor, positive, negative, cfg: float = 1.0, sigma: float = 0.7, seed=0):
    """One denoiser evaluation at `sigma` through comfy.samplers.sample (conds, cfg, wrappers, patches)."""
    import comfy.samplers

    sampler = comfy.samplers.KSAMPLER(one_evaluation)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    sigmas = torch.tensor([sigma, 0.0])
    return comfy.samplers.sample(patcher, noise, positive, negative, cfg, torch.device("cpu"), sampler, sigmas,
                                 latent_image=latent, seed=seed)


def core_nodes():
    """ComfyUI's own `nodes` module (stock nodes), whatever else a test run put on sys.path under that name (the
    repo's `nodes/` package shadows it when pytest runs from the repo folder with `python -m pytest`)."""
    import importlib.util
    import os
    import sys

    mod = sys.modules.get("nodes")
    if mod is not None and hasattr(mod, "ConditioningSetMask"):
        return mod
    import folder_paths  # the checkout's own, as ComfyUI's nodes.py needs

    path = os.path.join(os.path.dirname(os.path.abspath(folder_paths.__file__)), "nodes.py")
    spec = importlib.util.spec_from_file_location("nodes", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["nodes"] = mod
    spec.loader.exec_module(mod)
    return mod
