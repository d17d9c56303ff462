"""Which models DreamO runs on: FLUX.1 (dev, its fp8/GGUF variants), nothing else of the Flux family.

ComfyUI's `model_base.Flux` has subclasses (Chroma; on newer releases Flux 2 and LongCat-Image) and its Flux
module also builds other models of the family (Ovis, LongCat) from config flags. DreamO's LoRAs and embeddings
are trained on FLUX.1's exact architecture, so the check is exact: the model-base class, the diffusion module's
class, and the config flags that set other family members apart.
"""
from __future__ import annotations

import comfy.ldm.flux.model
import comfy.model_base

from ..dreamo_ops.errors import DreamOError

FIX = "load FLUX.1-dev (flux1-dev.safetensors, or its fp8/GGUF variant) with UNETLoader and connect it here."
FAMILY_NAMES = {"Flux2": "FLUX.2", "LongCatImage": "LongCat-Image", "Chroma": "Chroma",
                "ChromaRadiance": "Chroma Radiance"}


def _a(name: str) -> str:
    """The article for a model name: "an SDXL", "an SD3", "a Chroma", "a FLUX.2"."""
    return "an" if name.startswith("SD") or name[:1].upper() in "AEIOU" else "a"


def _not_flux1(base, dm) -> str | None:
    """Why `base` is not a FLUX.1 model, or None when it is one."""
    if base is None:
        return "this is not a diffusion model"
    kind = type(base).__name__
    if type(base) is not comfy.model_base.Flux:
        if isinstance(base, comfy.model_base.Flux):
            name = FAMILY_NAMES.get(kind, kind)
            return f"this is {_a(name)} {name} model (Flux family, but not FLUX.1)"
        return f"this is {_a(kind)} {kind} model"
    if type(dm) is not comfy.ldm.flux.model.Flux:
        return f"this is {_a(type(dm).__name__)} {type(dm).__name__} model built on ComfyUI's Flux base, not FLUX.1"
    p = dm.params
    if list(getattr(p, "txt_ids_dims", None) or []):
        return "this is a LongCat-Image/Ovis-style model (text position ids), not FLUX.1"
    if getattr(p, "global_modulation", False) or getattr(p, "yak_mlp", False) or getattr(p, "txt_norm", False):
        return "this Flux-family model has layers FLUX.1 does not have (FLUX.2, Ovis), it is not FLUX.1"
    if p.patch_size != 2 or p.in_channels != 16 or p.out_channels != 16:
        return (f"this Flux model has {p.in_channels} input channels and patch size {p.patch_size} (FLUX.1-dev has 16 "
                "and 2; Fill/inpainting variants are not supported)")
    return None


def check_flux1(node: str, model, input_name: str = "model"):
    """The FLUX.1 diffusion module inside a MODEL, or a DreamOError naming the node, the input and the fix."""
    base = getattr(model, "model", None)
    dm = getattr(base, "diffusion_model", None)
    problem = _not_flux1(base, dm)
    if problem:
        raise DreamOError(node, input_name, f"DreamO works on FLUX.1 models only; {problem}.", FIX)
    return dm
