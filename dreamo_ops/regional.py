"""Regional prompts: each region's own words, routed in the same attention call as DreamO's references.

A *region prompt* is a piece of T5 text, encoded on its own (with DreamO's placeholders, so `[ref#k]` works in it),
appended after the base prompt's tokens in the one conditioning the model sees, together with the part of the
picture its words belong to (its *area*). At attention time (`routing.routing_channels`), in every routed block:
  * region-prompt tokens and image tokens outside their area are cut (hard) or biased by −strength·(1 − m) (soft),
    in both directions, with the same rule as references;
  * region prompts do not attend to one another (a cut, in either mode);
  * the base prompt and the image attend freely; the base prompt's `[ref#k]` tokens follow reference k's region
    when it has one (switchable: `RegionPrompts.follow`);
  * reference k goes to region k's area when DreamO Routing gives it no region of its own.
One forward pass per step whatever the number of regions: the bias is folded into a few extra q/k channels (no
L×L mask). FLUX.1's text positions are all zero (DESIGN §10), so appending text segments moves no rotary position.
With no region prompt nothing here runs (bit-identical to plain DreamO).

Regions come from DreamO Routing (boxes drawn with words, `region_k` masks, core's BOUNDING_BOX on releases that
have it) or from DreamO Regional Conditioning (core's ConditioningSetMask + ConditioningCombine, converted).
Nothing here imports ComfyUI: conditionings are handled as the lists of [tensor, dict] they are.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .areas import BoxArea, area_coverage
from .errors import DreamOError, in_node
from .routing_bias import TextRouting
from .slot_agreement import RECORD_KEY
from .token_layout import MAX_SLOTS

REGIONS_KWARG = "dreamo_regions"
"""Model-cond name carrying a conditioning entry's `RegionPrompts` to DreamO's wrapper (one per call)."""
TEXT_KEY = "dreamo_text"
"""Conditioning key DreamO Text Encode sets: {"text": prompt, "placeholders": ((token position, slot), ...)}."""
MAX_BOX_SIDE = 16384
REGION_KEY = "region"
"""Routing-map key of region k's words: (REGION_KEY, k); references keep their slot number."""


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_bboxes(value, node: str, input_name: str = "bboxes", max_boxes: int = MAX_SLOTS) -> list[BoxArea]:
    """Core's BOUNDING_BOX value (ComfyUI 0.33+: CreateBoundingBoxes, detectors) → one `BoxArea` per box, in order.

    The value is a box {"x", "y", "width", "height"} (pixels of the generated image), a list of boxes (one frame)
    or a list of frames; only one frame can be routed (the same boxes on every frame are fine)."""
    def bad(problem, fix="connect a BOUNDING_BOX output (e.g. Create Bounding Boxes) drawn on the image's size."):
        return DreamOError(node, input_name, problem, fix)

    if isinstance(value, dict):
        frames = [[value]]
    elif isinstance(value, (list, tuple)) and value and all(isinstance(f, (list, tuple)) for f in value):
        frames = [list(f) for f in value]
    elif isinstance(value, (list, tuple)):
        frames = [list(value)]
    else:
        raise bad(f"expected bounding boxes, got {type(value).__name__}.")
    frames = [f for f in frames if f]
    if any(f != frames[0] for f in frames[1:]):
        raise bad(f"the boxes differ between {len(frames)} frames; one picture has one layout.",
                  "give the boxes of one frame (e.g. the first).")
    boxes = frames[0] if frames else []
    if len(boxes) > max_boxes:
        raise bad(f"{len(boxes)} boxes, but there are {max_boxes} regions (one per reference slot).",
                  f"give at most {max_boxes} boxes.")
    out = []
    for i, box in enumerate(boxes, start=1):
        if not isinstance(box, dict):
            raise bad(f"box {i} is a {type(box).__name__}, not {{x, y, width, height}}.")
        x, y, w, h = (box.get(k) for k in ("x", "y", "width", "height"))
        if not all(_finite(v) and -MAX_BOX_SIDE <= v <= MAX_BOX_SIDE for v in (x, y, w, h)):
            raise bad(f"box {i} must have finite numbers x, y, width, height within ±{MAX_BOX_SIDE}, got "
                      f"{ {k: box.get(k) for k in ('x', 'y', 'width', 'height')} }.")
        if w <= 0 or h <= 0:
            raise bad(f"box {i} is empty ({w:g} × {h:g} pixels).", "draw boxes with a positive width and height.")
        out.append(BoxArea(float(x), float(y), float(x + w), float(y + h), None, input_name))
    return out


# --------------------------------------------------------------------------- region prompts in a conditioning

@dataclass(frozen=True, eq=False)
class RegionPrompt:
    index: int  # region k (1..9): shares reference slot k's number, area and colour
    start: int  # first token in the conditioning's text
    length: int
    area: object  # (H, W) mask or BoxArea
    text: str = ""  # the words, for routing maps ("" when the encoder did not say)
    source: str = ""  # the node input the area came from (for errors)


@dataclass(eq=False)
class RegionPrompts:
    """The region prompts appended to one conditioning entry (compared by identity: one object per entry)."""
    prompts: tuple
    base_length: int
    placeholders: tuple = ()  # ((token position in the base, slot), ...) of the base prompt's [ref#k]
    follow: bool = True
    node: str | None = None  # the node that appended them, and its input: named in errors during sampling
    input_name: str = "positive"
    coverage_cache: dict = field(default_factory=dict, repr=False)

    def __deepcopy__(self, memo):
        return self  # read-only; ComfyUI copies conditionings

    @property
    def end(self) -> int:
        return max((p.start + p.length for p in self.prompts), default=self.base_length)

    def indices(self) -> set[int]:
        return {p.index for p in self.prompts}

    def coverage(self, latent_hw, patch_size: int) -> dict[int, torch.Tensor]:
        key = (tuple(int(v) for v in latent_hw), patch_size)
        if key not in self.coverage_cache:
            with in_node(self.node):
                self.coverage_cache[key] = {p.index: area_coverage(p.area, latent_hw, patch_size)
                                            for p in self.prompts}
        return self.coverage_cache[key]

    def labels(self) -> dict:
        return {(REGION_KEY, p.index): label(p) for p in self.prompts}

    def text_routing(self, txt_len: int, ref_coverage: dict, present, latent_hw, patch_size: int):
        """This call's `TextRouting`, and {slot: coverage} of present references that follow their region's area
        (those `ref_coverage` has no region for)."""
        if txt_len < self.end:
            raise DreamOError(
                self.node, self.input_name, f"the text has {txt_len} tokens but the region prompts end at token "
                f"{self.end}: a node after this one shortened the conditioning.", "connect this node's "
                "conditioning to the sampler (through DreamO Apply) without nodes that replace its text.")
        cover = self.coverage(latent_hw, patch_size)
        extra = {k: cover[k] for k in sorted(present) if k not in ref_coverage and k in cover}
        refs = {**ref_coverage, **extra}
        items = [(torch.arange(p.start, p.start + p.length), cover[p.index]) for p in self.prompts]
        if self.follow:
            by_slot: dict[int, list[int]] = {}
            for pos, slot in self.placeholders:
                by_slot.setdefault(slot, []).append(pos)
            for slot, positions in sorted(by_slot.items()):
                if slot in present and slot in refs:
                    items.append((torch.tensor(sorted(positions)), refs[slot]))
        exclusive = [torch.arange(p.start, p.start + p.length) for p in self.prompts]
        capture = tuple(((REGION_KEY, p.index), p.start, p.length) for p in self.prompts)
        return TextRouting(txt_len=txt_len, items=items, exclusive=exclusive, capture=capture, node=self.node,
                           input_name=self.input_name), extra


def label(prompt: RegionPrompt, width: int = 28) -> str:
    text = " ".join(prompt.text.split())
    if len(text) > width:
        text = text[:width - 1] + "…"
    return f"region {prompt.index}: {text}" if text else f"region {prompt.index}"


def entry_placeholders(entry: dict, length: int) -> tuple:
    """((position, slot), ...) of the [ref#k] tokens DreamO Text Encode recorded for an entry (inside `length`)."""
    info = entry.get(TEXT_KEY)
    found = info.get("placeholders", ()) if isinstance(info, dict) else ()
    return tuple((int(p), int(s)) for p, s in found if 0 <= int(p) < length and s is not None)


def entry_text(entry: dict) -> str:
    info = entry.get(TEXT_KEY)
    text = info.get("text", "") if isinstance(info, dict) else ""
    return text if isinstance(text, str) else ""


@dataclass
class Segment:
    """A region prompt before it is appended: its encoded words (B or 1, n, D), area and provenance."""
    index: int
    tokens: torch.Tensor
    area: object
    text: str = ""
    source: str = ""
    guidance: float | None = None


def with_region_prompts(conditioning, segments: list[Segment], follow: bool, node: str, input_name: str, wrap):
    """The conditioning with the region prompts appended to every entry's text. `wrap` makes the model cond that
    carries them (ComfyUI's CONDConstant; passed in so this module stays host-free)."""
    if not segments:
        return conditioning
    out = []
    for context, entry in conditioning:
        if REGIONS_KWARG in entry.get("model_conds", {}):
            raise DreamOError(node, input_name, "this conditioning already carries region prompts.",
                              "give region prompts in one place: DreamO Routing's boxes or DreamO Regional "
                              "Conditioning, not both.")
        if entry.get("attention_mask") is not None:
            raise DreamOError(node, input_name, "this conditioning carries an attention mask (e.g. from "
                              "StyleModelApply in attn_bias mode) sized for its own text; region prompts cannot "
                              "extend it.", "apply the style model without attn_bias, or drop the region prompts.")
        batch, width = context.shape[0], context.shape[-1]
        parts, prompts, start = [context], [], context.shape[1]
        for seg in segments:
            t = seg.tokens.to(device=context.device, dtype=context.dtype)
            if t.shape[-1] != width or t.shape[0] not in (1, batch):
                raise DreamOError(node, input_name, f"region {seg.index}'s words are {tuple(t.shape)}, the base "
                                  f"prompt is {tuple(context.shape)}.", "encode every prompt with the same text "
                                  "encoder (FLUX.1's clip_l + t5xxl).")
            parts.append(t.expand(batch, -1, -1))
            prompts.append(RegionPrompt(seg.index, start, t.shape[1], seg.area, seg.text, seg.source))
            start += t.shape[1]
        regions = RegionPrompts(tuple(prompts), context.shape[1], entry_placeholders(entry, context.shape[1]),
                                bool(follow), node, input_name)
        entry = dict(entry)
        model_conds = dict(entry.get("model_conds", {}))
        model_conds[REGIONS_KWARG] = wrap(regions)
        entry["model_conds"] = model_conds
        out.append([torch.cat(parts, dim=1), entry])
    return out


def region_prompts_of(conditioning) -> list:
    """The `RegionPrompts` of each entry (None where it has none), unwrapped from ComfyUI's model cond."""
    out = []
    for _, entry in conditioning:
        c = entry.get("model_conds", {}).get(REGIONS_KWARG)
        out.append(getattr(c, "cond", c))
    return out


# --------------------------------------------------------------------------- core's masked conditionings

KEPT_ON_REGIONS = {"mask", "pooled_output", TEXT_KEY, "mask_strength", "set_area_to_bounds", "guidance",
                   RECORD_KEY}
"""Keys a masked entry may carry (RECORD_KEY: what DreamO Text Encode checked, read on the base prompt only)."""
WHY_NOT = {
    "area": ("ConditioningSetArea", "an area is a separate model evaluation on a crop",
             "make a mask of that rectangle (SolidMask + MaskComposite, or draw it on DreamO Routing)"),
    "strength": ("ConditioningSetAreaStrength", "a per-region strength scales a separate evaluation",
                 "remove the strength node (regions are routed, not blended)"),
    "start_percent": ("ConditioningSetTimestepRange", "a region cannot have its own step range in one pass",
                      "remove the timestep-range node from the region, or use DreamO Routing's step range"),
    "end_percent": ("ConditioningSetTimestepRange", "a region cannot have its own step range in one pass",
                    "remove the timestep-range node from the region, or use DreamO Routing's step range"),
    "control": ("a ControlNet apply node", "the control would act on the region's separate evaluation",
                "apply the ControlNet to DreamO Regional Conditioning's output instead"),
    "gligen": ("GLIGENTextBoxApply", "GLIGEN is an SD1.x mechanism", "remove GLIGEN from the region"),
    "hooks": ("a hook node", "hooks act on the region's separate evaluation", "set hooks on the base prompt"),
    "reference_latents": ("DreamO Apply or ReferenceLatent", "references are routed to regions, not per region",
                          "apply DreamO Apply after DreamO Regional Conditioning"),
    "attention_mask": ("StyleModelApply (attn_bias)", "the mask is sized for the region's own text",
                       "apply the style model to the base prompt only"),
}


def split_masked(conditioning, node: str, input_name: str = "conditioning"):
    """Core's regional conditioning (masked entries from ConditioningSetMask, joined by ConditioningCombine) →
    (base entries, [Segment]). Unmasked entries are the base; masked ones become regions 1, 2, … in order. A
    setting one routed pass cannot keep is an error naming it."""
    if not isinstance(conditioning, list) or not conditioning:
        raise DreamOError(node, input_name, "the conditioning is empty.", "connect ConditioningCombine's output.")
    bases, segments = [], []
    for n, item in enumerate(conditioning, start=1):
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and torch.is_tensor(item[0])
                and isinstance(item[1], dict)):
            raise DreamOError(node, input_name, f"entry {n} is not a conditioning entry.",
                              "connect a CONDITIONING output (text encode → ConditioningSetMask → Combine).")
        context, entry = item
        if entry.get("mask") is None:
            if entry.get("area") is not None:
                core, why, fix = WHY_NOT["area"]
                raise DreamOError(node, input_name, f"entry {n} has 'area' (set by {core}): {why}.", f"{fix}.")
            bases.append([context, entry])
            continue
        index = len(segments) + 1
        where = f"masked entry {index} (region {index})"
        for key in sorted(set(entry) - KEPT_ON_REGIONS):
            core, why, fix = WHY_NOT.get(key, ("another node", "it cannot be kept in one routed pass",
                                               "remove that node from the region's branch"))
            if key == "model_conds":
                core, why, fix = WHY_NOT["reference_latents"]
            raise DreamOError(node, input_name, f"{where} has '{key}' (set by {core}), which one routed pass "
                              f"cannot keep: {why}.", f"{fix}.")
        if entry.get("set_area_to_bounds"):
            raise DreamOError(node, input_name, f"{where} has set_area_to_bounds on (ConditioningSetMask's "
                              "set_cond_area 'mask bounds'): core then renders the region as a crop, which one "
                              "routed pass cannot keep.", "set ConditioningSetMask's set_cond_area to 'default'.")
        strength = entry.get("mask_strength", 1.0)
        if not (_finite(strength) and float(strength) == 1.0):
            raise DreamOError(node, input_name, f"{where} has mask strength {strength!r} (ConditioningSetMask's "
                              "strength): regions are routed, not blended by weight.",
                              "set ConditioningSetMask's strength to 1.0 (use DreamO Routing's soft mode and "
                              "strength for a softer region).")
        segments.append(Segment(index, context, _region_mask(entry["mask"], node, input_name, where),
                                entry_text(entry), input_name, entry.get("guidance")))
    if len(segments) > MAX_SLOTS:
        raise DreamOError(node, input_name, f"{len(segments)} masked conditionings; DreamO has {MAX_SLOTS} regions.",
                          f"combine at most {MAX_SLOTS} masked prompts.")
    if not bases:
        raise DreamOError(node, input_name, "every entry is masked: there is no base prompt for the whole picture.",
                          "combine the masked prompts with one unmasked prompt (e.g. the background's words).")
    for seg in segments:
        for _, entry in bases:
            g, mine = entry.get("guidance"), seg.guidance
            if mine is not None and g is not None and _finite(g) and _finite(mine) and float(g) != float(mine):
                raise DreamOError(node, input_name, f"masked entry {seg.index} has guidance {mine:g} but the base "
                                  f"prompt has {g:g}; one pass has one guidance.",
                                  "apply FluxGuidance once, after DreamO Regional Conditioning.")
    return bases, segments


def _region_mask(mask, node, input_name, where) -> torch.Tensor:
    if not torch.is_tensor(mask) or mask.ndim not in (2, 3) or (mask.ndim == 3 and mask.shape[0] != 1):
        shape = tuple(mask.shape) if torch.is_tensor(mask) else type(mask).__name__
        raise DreamOError(node, input_name, f"{where} has a mask of shape {shape}; a region is one 2-D mask.",
                          "give ConditioningSetMask one mask (not a batch).")
    m = mask.reshape(mask.shape[-2:]).detach().float().cpu()
    if not bool(torch.isfinite(m).all()) or not bool((m > 0).any()):
        raise DreamOError(node, input_name, f"{where}'s mask is empty or not finite.",
                          "give each masked prompt a mask with an area (values in 0 … 1).")
    return m.clamp(0, 1)
