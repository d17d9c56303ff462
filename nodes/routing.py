"""DreamORouting (keep each reference on its region, and give each region its own words) and DreamORoutingMap
(show where each reference and each region's words went)."""
from __future__ import annotations

import comfy.conds
import comfy.patcher_extension

from ..dreamo_ops import drawn_regions as drawn
from ..dreamo_ops.errors import DreamOError, finite_numbers, in_node, refuse_unknown_inputs
from ..dreamo_ops.reference import to_uint8
from ..dreamo_ops.flux_wrapper import APPLY_SLOTS_KEY, ROUTING_KEY, WRAPPER_KEY
from ..dreamo_ops.regional import Segment, parse_bboxes, region_prompts_of, with_region_prompts
from ..dreamo_ops.routing import BLOCKS, MODES, RoutingSpec
from ..dreamo_ops.routing_map import SLOT_COLOURS, RoutingCapture, draw_maps
from ..dreamo_ops.token_layout import MAX_SLOTS
from .model_check import check_flux1
from .sockets import DREAMO_TYPE
from .widget_rules import shown_if
from .ref_encode import save_temp_images
from .text_encode import MINIMAL, encode_prompt

ROUTING_ID = "DreamORouting"
MAP_ID = "DreamORoutingMap"
REGIONAL_ID = "DreamORegionalConditioning"
REGION_INPUTS = tuple(f"region_{i}" for i in range(1, MAX_SLOTS + 1))
SLOT_COLOURS_HEX = {str(k): "#%02x%02x%02x" % rgb for k, rgb in SLOT_COLOURS.items()}
"""The routing map's slot colours as the region editor reads them (the drawn_regions input's options)."""
POSITIVE_OUTPUT = 1


def bounding_box_type() -> str | None:
    """Core's BOUNDING_BOX socket type where the running ComfyUI has it (0.33+), else None (0.3.64)."""
    try:
        from comfy_api.latest import io
    except Exception:  # noqa: BLE001 - any import problem means: no such type here
        return None
    return getattr(getattr(io, "BoundingBox", None), "io_type", None)


def output_linked(prompt, unique_id, index: int) -> bool:
    """Whether output `index` of node `unique_id` feeds another node in the queued prompt (the API dict)."""
    if not isinstance(prompt, dict) or unique_id is None:
        return False
    for node in prompt.values():
        for value in (node.get("inputs") or {}).values() if isinstance(node, dict) else ():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) == str(unique_id) and value[1] == index:
                return True
    return False


def routing_spec(model):
    return model.model_options.get("transformer_options", {}).get(ROUTING_KEY)


def on_pre_run(patcher):
    """When sampling starts: step range → sigmas with the model's final sampling settings; fresh capture; check
    that DreamOApply is on the model (routing acts only on DreamO's references)."""
    spec = routing_spec(patcher)
    if spec is None:
        return
    wrappers = patcher.get_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY)
    if not wrappers:
        raise DreamOError(ROUTING_ID, "model", "the sampled model has no DreamO references to route.",
                          "connect the model through DreamOApply (before or after DreamORouting).")
    sampling = patcher.get_model_object("model_sampling")
    spec.sigma_range = (float(sampling.percent_to_sigma(spec.start_percent)),
                        float(sampling.percent_to_sigma(spec.end_percent)))
    if spec.capture is not None:
        spec.capture.reset()


def regional_in_prompt(prompt) -> bool:
    """Whether the queued prompt has a DreamO Regional Conditioning (its region words may name any slot)."""
    return isinstance(prompt, dict) and any(isinstance(n, dict) and n.get("class_type") == REGIONAL_ID
                                            for n in prompt.values())


def check_region_slots(sources: dict, slots, worded=()) -> None:
    """With DreamO Apply before this node, a region for a slot it has no reference in (and no words for) is an
    error here, naming this node (with Apply after it, the sampling run reports it)."""
    if slots is None:
        return
    for slot in sorted(set(sources) - set(slots) - set(worded)):
        source = sources[slot]
        undo = (f"disconnect region_{slot}" if source == f"region_{slot}"
                else f"clear slot {slot}'s box in the region editor ({source})")
        have = f"references are in {', '.join(f'ref_{s}' for s in slots)}" if slots else "it has no reference"
        raise DreamOError(ROUTING_ID, source, f"slot {slot} has a region but DreamO Apply has no reference in "
                          f"ref_{slot} ({have}).", f"connect a reference to DreamO Apply's ref_{slot}, or {undo}.")


@finite_numbers
class DreamORouting:
    NODE_ID = ROUTING_ID
    DISPLAY_NAME = "DreamO Routing"
    CATEGORY = "DreamO"
    FUNCTION = "route"
    RETURN_TYPES = ("MODEL", "CONDITIONING")
    RETURN_NAMES = ("model", "positive")
    OUTPUT_TOOLTIPS = ("The model with routing (a patched clone); connect it to the sampler and to DreamO Routing Map.",
                       "The positive conditioning with each region's words appended (routed to its region); the "
                       "input unchanged when no box has words. Connect it on to DreamO Apply or the sampler.")
    DESCRIPTION = ("Puts each DreamO reference where you want it: region_k limits the attention between reference "
                   "k and the image to that region (both directions), as DreamO was trained to route. A slot "
                   "without a region is free. Rectangles drawn on the node (the region editor, stored in "
                   "drawn_regions) are the regions of slots whose region_k is not connected; a connected mask "
                   "wins. Each region can have its own words (typed under the editor, or 'texts' in drawn_regions): "
                   "they are encoded (clip, dreamo) and appended to the positive conditioning, and routed to the "
                   "region the same way, all in one model evaluation per step. Also captures routing maps (where "
                   "each reference and each region's words went) for DreamO Routing Map. Works with DreamOApply "
                   "before or after it.")

    @classmethod
    def INPUT_TYPES(cls):
        optional = {name: ("MASK", {"tooltip": f"Where reference {i} ([ref#{i}]) goes: 1 inside. Any size; it is "
                                               f"stretched over the image. Wins over a box drawn for slot {i}."})
                    for i, name in enumerate(REGION_INPUTS, start=1)}
        optional[drawn.INPUT] = ("STRING", {
            "default": "", "multiline": False,
            "tooltip": "Rectangles drawn on the node (region editor), one per slot, used for slots whose region_k is "
                       "not connected. Without the editor: JSON like {\"width\": 1024, \"height\": 1024, "
                       "\"boxes\": {\"1\": [x, y, w, h]}} in pixels of width × height (stretched over the "
                       "image); empty = none.",
            "dreamo_slot_colours": SLOT_COLOURS_HEX})
        optional["base_placeholders_follow"] = ("BOOLEAN", {
            "default": True, "tooltip": "With region words: the base prompt's [ref#k] tokens are routed with "
                                        "reference k's region too (the placeholder stays next to its subject)."})
        optional["positive"] = ("CONDITIONING", {"tooltip": "The positive conditioning (the base prompt for the "
                                                 "whole picture); needed when a region has words."})
        optional["clip"] = ("CLIP", {"tooltip": "FLUX.1's text encoders, to encode the regions' words."})
        optional["dreamo"] = (DREAMO_TYPE, {"tooltip": "DreamO's embeddings (dreamo.safetensors): [ref#k] in a "
                                            "region's words are read as DreamO's learned tokens."})
        box_type = bounding_box_type()
        if box_type:  # ComfyUI 0.33+: core's bounding boxes (Create Bounding Boxes, detectors) as regions
            optional["bboxes"] = (box_type, {"forceInput": True,  # a socket: the frontend's box widget is not ours
                                             "tooltip": "Boxes in pixels of the generated image: box k is region "
                                             "k (slot k). Wins over a box drawn for slot k; a connected region_k "
                                             "mask wins over both."})
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The DreamO model (before or after DreamOApply)."}),
                "mode": (list(MODES), {"default": "hard", "tooltip": "hard: no attention between reference k and "
                                       "image tokens outside region k. soft: that attention is reduced by "
                                       "`strength` (a bias on the logits, scaled by how far outside)."}),
                "strength": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 100.0, "step": 0.1,
                                       **shown_if(("mode", "in", ["soft"])),
                                       "tooltip": "soft mode only: the logit bias outside the region (attention "
                                                  "there is multiplied by about e^-strength)."}),
                "isolate_references": ("BOOLEAN", {"default": False, "tooltip": "References do not attend to "
                                                   "each other (keeps two subjects from blending)."}),
                "start_percent": ("FLOAT", {"default": 0.0, "advanced": True, "min": 0.0, "max": 1.0, "step": 0.01,
                                            "tooltip": "Routing starts at this point of sampling (0 = first step)."}),
                "end_percent": ("FLOAT", {"default": 1.0, "advanced": True, "min": 0.0, "max": 1.0, "step": 0.01,
                                          "tooltip": "Routing stops after this point of sampling (1 = last step)."}),
                "blocks": (list(BLOCKS), {"default": "all", "advanced": True, "tooltip": "Which Flux blocks are "
                                          "routed (and captured): all, the 19 double or the 38 single blocks."}),
                "capture_maps": ("BOOLEAN", {"default": True, "tooltip": "Record routing maps for DreamO Routing "
                                             "Map (costs about half an attention call per routed block)."}),
            },
            "optional": optional,
            "hidden": {"prompt": "PROMPT", "unique_id": "UNIQUE_ID"},
        }

    def route(self, model, mode, strength, isolate_references, start_percent, end_percent, blocks, capture_maps,
              drawn_regions="", base_placeholders_follow=True, positive=None, clip=None, dreamo=None, bboxes=None,
              prompt=None, unique_id=None, **regions):
        refuse_unknown_inputs(ROUTING_ID, regions, REGION_INPUTS)
        check_flux1(ROUTING_ID, model)
        # ComfyUI checks a dropdown's widget value, not one linked from an any-type output (switch nodes)
        if mode not in MODES:
            raise DreamOError(ROUTING_ID, "mode", f"unknown mode '{mode}'.", f"choose one of {', '.join(MODES)}.")
        if blocks not in BLOCKS:
            raise DreamOError(ROUTING_ID, "blocks", f"unknown choice '{blocks}'.", f"choose one of {', '.join(BLOCKS)}.")
        if start_percent > end_percent:
            raise DreamOError(ROUTING_ID, "start_percent", f"start_percent {start_percent} is after end_percent "
                              f"{end_percent}.", "make start_percent ≤ end_percent.")
        chosen = {}
        for i, name in enumerate(REGION_INPUTS, start=1):
            mask = regions.get(name)
            if mask is None:
                continue
            if mask.ndim == 3 and mask.shape[0] != 1:
                raise DreamOError(ROUTING_ID, name, f"the mask batch has {mask.shape[0]} masks.",
                                  "give one mask per region (e.g. pick one with a batch-index node).")
            if mask.ndim not in (2, 3) or mask.shape[-1] < 1 or mask.shape[-2] < 1:
                raise DreamOError(ROUTING_ID, name, f"a MASK of shape {tuple(mask.shape)} is not a 2-D mask.",
                                  "connect a MASK output (e.g. SolidMask, a LoadImage mask, MaskComposite).")
            chosen[i] = mask.reshape(mask.shape[-2:]).detach().float().cpu()
        sources = {slot: name for slot, name in zip(range(1, MAX_SLOTS + 1), REGION_INPUTS) if slot in chosen}
        boxes = drawn.parse(drawn_regions, ROUTING_ID)
        if bboxes is not None:  # core's bounding boxes: box k is region k, unless region_k is connected
            for slot, area in enumerate(parse_bboxes(bboxes, ROUTING_ID), start=1):
                if slot not in chosen:
                    chosen[slot], sources[slot] = area, "bboxes"
        for slot, rectangle in (boxes.regions() if boxes else {}).items():
            if slot not in chosen:  # a connected region_k (or bounding box) wins over the box drawn for slot k
                chosen[slot] = rectangle  # geometry, not pixels: any picture size costs the same
                sources[slot] = drawn.INPUT
        texts = boxes.texts if boxes else {}
        if not regional_in_prompt(prompt):
            worded = set(texts)
            for regions_of in region_prompts_of(positive) if positive is not None else ():
                worded |= regions_of.indices() if regions_of is not None else set()
            check_region_slots(sources, model.model_options.get(APPLY_SLOTS_KEY), worded)
        spec = RoutingSpec(regions=chosen, sources=sources, mode=mode, strength=float(strength), isolate=bool(isolate_references),
                           start_percent=float(start_percent), end_percent=float(end_percent), blocks=blocks,
                           capture=RoutingCapture() if capture_maps else None, worded=tuple(sorted(texts)),
                           node=ROUTING_ID)
        positive = self.region_prompts(positive, texts, chosen, sources, clip, dreamo, base_placeholders_follow,
                                       prompt, unique_id)
        m = model.clone()
        m.model_options.setdefault("transformer_options", {})[ROUTING_KEY] = spec
        kind = comfy.patcher_extension.CallbacksMP.ON_PRE_RUN
        m.remove_callbacks_with_key(kind, ROUTING_KEY)
        m.add_callback_with_key(kind, ROUTING_KEY, on_pre_run)
        return (m, positive)

    @staticmethod
    def region_prompts(positive, texts, areas, sources, clip, dreamo, follow, prompt=None, unique_id=None):
        """The positive conditioning with each worded region's prompt appended (unchanged without words)."""
        if not texts:
            if positive is None and output_linked(prompt, unique_id, POSITIVE_OUTPUT):
                raise DreamOError(ROUTING_ID, "positive", "the positive output is connected but the positive input "
                                  "is not.", "connect the positive conditioning (DreamO Text Encode, or DreamO "
                                  "Apply's positive) to DreamO Routing's positive input.")
            return positive
        first = min(texts)
        missing = [slot for slot in sorted(texts) if slot not in areas]
        if missing:
            raise DreamOError(ROUTING_ID, drawn.INPUT, f"region {missing[0]} has words but no area.",
                              f"draw a box for slot {missing[0]} (or connect region_{missing[0]}), or clear its words.")
        if positive is None:
            raise DreamOError(ROUTING_ID, "positive", f"region {first} has words but no positive conditioning is "
                              "connected to add them to.", "connect the positive conditioning (e.g. DreamO Text "
                              "Encode) to DreamO Routing's positive input, and its positive output on to the sampler.")
        segments = []
        for slot in sorted(texts):
            try:
                encoded, _ = encode_prompt(clip, dreamo, texts[slot], MINIMAL, None, False, node=ROUTING_ID,
                                           text_input=drawn.INPUT)
            except DreamOError as e:
                if e.input_name != drawn.INPUT:
                    raise
                raise DreamOError(ROUTING_ID, drawn.INPUT, f"region {slot}'s words: {e.problem}", e.fix) from None
            if len(encoded) != 1:
                raise DreamOError(ROUTING_ID, "clip", f"this text encoder gives {len(encoded)} scheduled "
                                  "conditionings (CLIP hooks); a region's words need one.",
                                  "remove the CLIP hooks from the text encoder used for the regions.")
            segments.append(Segment(slot, encoded[0][0], areas[slot], texts[slot], sources.get(slot, drawn.INPUT)))
        return with_region_prompts(positive, segments, follow, ROUTING_ID, "positive", comfy.conds.CONDConstant)


@finite_numbers
class DreamORoutingMap:
    NODE_ID = MAP_ID
    DISPLAY_NAME = "DreamO Routing Map"
    CATEGORY = "DreamO"
    FUNCTION = "render"
    # The overlay shown on the node is UI output: on ComfyUI 0.33+ it only reaches /history (and the page) after a
    # cache hit when the node declares it (0.3.x ignores the flag and always sends it).
    HAS_INTERMEDIATE_OUTPUT = True
    # An output node: the templates show the overlay on the node with nothing after it (the server runs only
    # output nodes and what they need).
    OUTPUT_NODE = True
    RETURN_TYPES = ("MASK", "IMAGE")
    RETURN_NAMES = ("masks", "overlay")
    OUTPUT_TOOLTIPS = ("One mask per routed reference slot (slot order, then batch order), then one per region with "
                       "words, each scaled to a peak of 1: where that reference's (or region's words') attention went.",
                       "The maps as a heat map, one colour per slot, over the image (or black), with a legend.")
    DESCRIPTION = ("Shows where each DreamO reference went: the attention from the reference's tokens to each "
                   "image token, averaged over heads, the routed blocks and the steps of the last sampling run; and "
                   "where each region's words went (a lighter shade of the slot's colour, named in the legend). The "
                   "overlay is also shown on the node.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The model from DreamO Routing (capture_maps on) that was sampled."}),
                "latent": ("LATENT", {"tooltip": "The sampler's output, so the maps are read after sampling."}),
            },
            "optional": {
                "image": ("IMAGE", {"tooltip": "The decoded image to draw the maps over (else a black picture)."}),
            },
        }

    def render(self, model, latent, image=None):
        spec = routing_spec(model)
        if spec is None or spec.capture is None:
            raise DreamOError(MAP_ID, "model", "this model does not capture routing maps.",
                              "connect the model output of DreamO Routing with capture_maps on.")
        capture = spec.capture
        if not capture.sums:
            raise DreamOError(MAP_ID, "model", "no routing map was captured in the last sampling run.",
                              "sample this model (with DreamOApply references, inside the routing step range) "
                              "before this node, and feed that sampler's LATENT here.")
        samples = latent["samples"]
        if tuple(samples.shape[-2:]) != tuple(capture.latent_hw):
            raise DreamOError(MAP_ID, "latent", f"the maps were captured for a {capture.latent_hw} latent, this one "
                              f"is {tuple(samples.shape[-2:])}.", "feed the LATENT of the sampler that used this model.")
        with in_node(MAP_ID):
            masks, picture = draw_maps(capture, image)
        shown = save_temp_images(list(to_uint8(picture)), prefix="dreamo_routing_map")
        return {"ui": {"images": shown}, "result": (masks, picture)}
