"""Test-only ComfyUI nodes that build tiny random models, for the install check and server tests.

Loaded by ComfyUI as its own custom-node folder (dreamo_testkit/comfyui_runner.py links it in), a top-level
module there: the kit it belongs to is imported by file as the package `dreamo_testkit` (nothing is put on
sys.path, where the clone's `nodes` package would shadow ComfyUI's). Nothing here is part of the pack users install.
"""
import importlib.util
import os
import sys


def _kit():
    if "dreamo_testkit" not in sys.modules:
        kit = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
        spec = importlib.util.spec_from_file_location("dreamo_testkit", os.path.join(kit, "__init__.py"),
                                                      submodule_search_locations=[kit])
        module = importlib.util.module_from_spec(spec)
        sys.modules["dreamo_testkit"] = module
        spec.loader.exec_module(module)
    return sys.modules["dreamo_testkit"]


_kit()
from dreamo_testkit import tiny_models, tiny_text_encoders  # noqa: E402


class DreamOTestTinyFlux:
    CATEGORY = "DreamO/testing"
    FUNCTION = "build"
    RETURN_TYPES = ("MODEL",)
    DESCRIPTION = "A tiny random Flux (hidden size 48), for install checks only."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1})}}

    def build(self, seed):
        return (tiny_models.flux_patcher(seed=seed),)


class DreamOTestTinySDXL:
    CATEGORY = "DreamO/testing"
    FUNCTION = "build"
    RETURN_TYPES = ("MODEL",)
    DESCRIPTION = "A tiny random SDXL (ComfyUI's SDXL class), for error tests only."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1})}}

    def build(self, seed):
        return (tiny_models.sdxl_patcher(seed=seed),)


class DreamOTestTinyVAE:
    CATEGORY = "DreamO/testing"
    FUNCTION = "build"
    RETURN_TYPES = ("VAE",)
    DESCRIPTION = "A tiny random 16-channel VAE, for install checks only."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1})}}

    def build(self, seed):
        return (tiny_models.vae(seed=seed),)


class DreamOTestTinySDXLVAE(DreamOTestTinyVAE):
    DESCRIPTION = "A tiny random 4-channel (SD1.x/SDXL-style) VAE, for error tests only."

    def build(self, seed):
        return (tiny_models.vae(seed=seed, latent_channels=4),)


class DreamOTestPicture:
    CATEGORY = "DreamO/testing"
    FUNCTION = "build"
    RETURN_TYPES = ("IMAGE",)
    DESCRIPTION = ("IMAGE batches no core node makes, for bad-input tests only: empty (0x0), NaN, infinite, or an "
                   "8K (7680x4320) random picture.")
    KINDS = ("empty", "nan", "inf", "8k")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"kind": (list(cls.KINDS),)}}

    def build(self, kind):
        import torch

        if kind == "empty":
            return (torch.zeros(1, 0, 0, 3),)
        if kind == "8k":
            return (torch.rand(1, 4320, 7680, 3, generator=torch.Generator().manual_seed(0)),)
        return (torch.full((1, 64, 64, 3), float(kind)),)


class DreamOTestConditioning:
    CATEGORY = "DreamO/testing"
    FUNCTION = "build"
    RETURN_TYPES = ("CONDITIONING",)
    DESCRIPTION = "Random conditioning shaped for the tiny Flux, for install checks only."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1}),
                             "tokens": ("INT", {"default": 8, "min": 1, "max": 512}),
                             "flux_sized": ("BOOLEAN", {"default": False})}}

    def build(self, seed, tokens, flux_sized=False):
        if flux_sized:
            return (tiny_models.flux_sized_conditioning(seed=seed, tokens=tokens),)
        return (tiny_models.conditioning(seed=seed, tokens=tokens),)


class DreamOTestTinyFluxCLIP:
    CATEGORY = "DreamO/testing"
    FUNCTION = "build"
    RETURN_TYPES = ("CLIP",)
    DESCRIPTION = "Tiny random Flux text encoders (CLIP-L + T5) with ComfyUI's real tokenizers, for tests only."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1})}}

    def build(self, seed):
        return (tiny_text_encoders.flux_clip(seed=seed),)


ROUTING_KEY = "dreamo_routing"  # dreamo_ops.flux_wrapper.ROUTING_KEY (tests/test_drawn_regions.py checks it)


def describe_regions(model) -> dict:
    """The region masks DreamORouting put on `model`, slot by slot: where each came from, its size, the box
    around its non-zero pixels [x0, y0, x1, y1) and its sums (a filled 0/1 rectangle has ones == box area)."""
    spec = model.model_options.get("transformer_options", {}).get(ROUTING_KEY)
    out = {}
    for slot, mask in sorted((spec.regions if spec else {}).items()):
        if hasattr(mask, "box"):  # a drawn rectangle (dreamo_ops.areas.Rectangle): its geometry, no pixels
            x0, y0, x1, y1 = mask.box
            ones = (x1 - x0) * (y1 - y0)
            out[str(slot)] = {"source": spec.sources.get(slot, f"region_{slot}"), "shape": list(mask.shape),
                              "box": [x0, y0, x1, y1], "ones": ones, "zeros": mask.width * mask.height - ones,
                              "kind": "rectangle"}
            continue
        if not hasattr(mask, "nonzero"):  # a bounding box (ComfyUI 0.33's BOUNDING_BOX), not a mask
            out[str(slot)] = {"source": spec.sources.get(slot), **describe_area(mask)}
            continue
        nz = mask.nonzero()
        box = ([int(nz[:, 1].min()), int(nz[:, 0].min()), int(nz[:, 1].max()) + 1, int(nz[:, 0].max()) + 1]
               if len(nz) else None)
        out[str(slot)] = {"source": spec.sources.get(slot, f"region_{slot}"), "shape": list(mask.shape),
                          "box": box, "ones": int((mask == 1).sum()), "zeros": int((mask == 0).sum())}
    return out


class DreamOTestRoutingRegions:
    CATEGORY = "DreamO/testing"
    FUNCTION = "describe"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    DESCRIPTION = "Shows the region masks DreamO Routing put on a model (JSON), for tests only."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    def describe(self, model):
        import json

        text = json.dumps(describe_regions(model))
        return {"ui": {"dreamo_regions": [text]}, "result": (text,)}


REGIONS_KWARG = "dreamo_regions"  # dreamo_ops.regional.REGIONS_KWARG


def describe_area(area) -> dict:
    """A region prompt's area: a mask's size and the box around its non-zero pixels, or a box as given."""
    if hasattr(area, "nonzero"):
        nz = area.nonzero()
        box = ([int(nz[:, 1].min()), int(nz[:, 0].min()), int(nz[:, 1].max()) + 1, int(nz[:, 0].max()) + 1]
               if len(nz) else None)
        return {"shape": list(area.shape), "box": box, "ones": int((area == 1).sum())}
    if hasattr(area, "box"):  # a drawn rectangle (dreamo_ops.areas.Rectangle): its geometry
        x0, y0, x1, y1 = area.box
        return {"shape": list(area.shape), "box": [x0, y0, x1, y1], "ones": (x1 - x0) * (y1 - y0)}
    return {"frame": list(area.frame) if area.frame else None, "box": [area.x0, area.y0, area.x1, area.y1]}


class DreamOTestRegionPrompts:
    CATEGORY = "DreamO/testing"
    FUNCTION = "describe"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    DESCRIPTION = ("Shows the region prompts a conditioning carries and, after sampling (connect the sampler's "
                   "LATENT), the region words the routing captured maps for (JSON), for tests only.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"positive": ("CONDITIONING",)}, "optional": {"model": ("MODEL",), "latent": ("LATENT",)}}

    def describe(self, positive, model=None, latent=None):
        import json

        out = {"entries": []}
        for context, entry in positive:
            c = entry.get("model_conds", {}).get(REGIONS_KWARG)
            regions = getattr(c, "cond", None)
            item = {"tokens": int(context.shape[1]), "regions": None}
            if regions is not None:
                item["regions"] = {
                    "base_length": regions.base_length, "follow": regions.follow,
                    "placeholders": [list(p) for p in regions.placeholders],
                    "prompts": [{"index": p.index, "start": p.start, "length": p.length, "text": p.text,
                                 "source": p.source, "area": describe_area(p.area)} for p in regions.prompts]}
            out["entries"].append(item)
        if model is not None:
            spec = model.model_options.get("transformer_options", {}).get(ROUTING_KEY)
            capture = getattr(spec, "capture", None)
            out["routing"] = describe_regions(model)
            out["captured"] = ([k if isinstance(k, int) else f"{k[0]} {k[1]}" for k in capture.maps()]
                               if capture is not None else None)
            out["labels"] = {f"{k[0]} {k[1]}": v for k, v in capture.labels.items()} if capture is not None else None
        text = json.dumps(out)
        return {"ui": {"dreamo_region_prompts": [text]}, "result": (text,)}


class AnyType(str):
    """The "any type" many custom node packs give an output: a type no input refuses (ComfyUI compares types with
    `!=`). ComfyUI checks a linked value's type only, never a dropdown's choices."""

    def __ne__(self, other):
        return False

    __hash__ = str.__hash__


class DreamOTestAnyValue:
    CATEGORY = "DreamO/testing"
    FUNCTION = "give"
    RETURN_TYPES = (AnyType("*"),)
    DESCRIPTION = "Gives its text on an any-type output, as switch and primitive nodes of custom packs do; tests only."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("STRING", {"default": ""})}}

    def give(self, value):
        return (value,)


NODE_CLASS_MAPPINGS = {c.__name__: c for c in (DreamOTestTinyFlux, DreamOTestTinySDXL, DreamOTestTinyVAE,
                                               DreamOTestTinySDXLVAE, DreamOTestPicture, DreamOTestConditioning,
                                               DreamOTestTinyFluxCLIP, DreamOTestRoutingRegions,
                                               DreamOTestRegionPrompts, DreamOTestAnyValue)}
