"""DreamO's stage files on the tiny Flux through DreamO Stage Loader in a real ComfyUI, and the weights they must
give (worked out from dreamo_testkit/lora_fixtures.py's own description of each file, not the pack's mapping)."""
from __future__ import annotations

import torch

# The official pipeline's strength per stage (dpo 1.25, the quality pair +0.15 / -0.8).
TOL = 1e-6  # float32 rounding of W + s * scale * (up @ down)
PREFIX = "diffusion_model."
OFFICIAL = {"main": 1.0, "cfg_distill": 1.0, "turbo": 1.0, "sft": 1.0, "dpo": 1.25, "quality_pos": 0.15,
            "quality_neg": -0.8}


def defaults():
    """The node's inputs as a fresh node in the UI has them (first combo entry, declared defaults)."""
    from comfyui_dreamo.nodes.stage_loader import DreamOStageLoader

    out = {}
    for name, (kind, opts) in DreamOStageLoader.INPUT_TYPES()["required"].items():
        if name == "model":
            continue
        out[name] = opts.get("default", kind[0] if isinstance(kind, list) else None)
    return out


def run(model, **overrides):
    """DreamO Stage Loader on `model`, as a fresh node with these inputs changed, inside inference mode."""
    from comfyui_dreamo.nodes.stage_loader import DreamOStageLoader

    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        return DreamOStageLoader().load(model, **{**defaults(), **overrides})


def base_weights(patcher):
    """The Flux weights of the patcher's model as they are (float32 copies, BFL names)."""
    return {k[len(PREFIX):]: v.detach().float().clone() for k, v in patcher.model.state_dict().items()
            if k.startswith(PREFIX)}


def patched_weights(patcher):
    """Weights as ComfyUI computes them when loading the patched model; the model is unpatched afterwards."""
    cpu = torch.device("cpu")
    with torch.inference_mode():  # as during sampling
        patcher.patch_model(device_to=cpu)
        try:
            sd = {k[len(PREFIX):]: v.detach().clone() for k, v in patcher.model.state_dict().items()
                  if k.startswith(PREFIX)}
        finally:
            patcher.unpatch_model(device_to=cpu)
    return sd


def expected(base, changes, strengths):
    """The weights the stages' own descriptions give: W + s * scale * (up @ down), stage by stage."""
    from . import lora_fixtures as lf

    out = base
    for stage, s in strengths.items():
        out = lf.apply_changes(out, changes[stage], s)
    return out


def assert_weights(got, want, base, changes, stages):
    """Every weight a stage targets is as expected (and changed); every other weight is untouched."""
    touched = {c.weight for st in stages for c in changes[st]}
    assert touched, "nothing to check"
    for k in base:
        if k in touched:
            err = (got[k].float() - want[k]).abs().max().item()
            assert err < TOL, f"{k}: {err}"
            assert not torch.equal(got[k].float(), base[k]), k
        else:
            assert torch.equal(got[k].float(), base[k]), f"{k} changed but no stage targets it"

