"""DreamORegionalConditioning: core's masked conditionings (ConditioningSetMask + ConditioningCombine) → one routed
conditioning, so an existing regional workflow runs in one model evaluation per step by inserting one node."""
from __future__ import annotations

import comfy.conds

from ..dreamo_ops.errors import finite_numbers
from ..dreamo_ops.regional import split_masked, with_region_prompts

NODE_ID = "DreamORegionalConditioning"


@finite_numbers
class DreamORegionalConditioning:
    NODE_ID = NODE_ID
    DISPLAY_NAME = "DreamO Regional Conditioning"
    CATEGORY = "DreamO"
    FUNCTION = "convert"
    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("positive",)
    OUTPUT_TOOLTIPS = ("One conditioning: the unmasked prompt with every masked prompt's words appended, each routed "
                       "to its mask. Connect it to DreamO Apply's positive (or the sampler).",)
    DESCRIPTION = ("Turns a regional prompt built with core nodes (a text encode per region → ConditioningSetMask "
                   "→ ConditioningCombine, plus one unmasked prompt for the whole picture) into one routed "
                   "conditioning: instead of one model evaluation per region, each region's words are appended to "
                   "the unmasked prompt and routed to its mask inside attention (as DreamO routes references), one "
                   "evaluation per step. The masked prompts become regions 1, 2, … in the order they were combined "
                   "(ConditioningCombine's first input first), and region k also places reference k unless DreamO "
                   "Routing gives it a region. What one pass cannot keep is an error naming it: set_area_to_bounds "
                   "('mask bounds'), a mask strength other than 1, areas, per-region timestep ranges, ControlNets or "
                   "hooks on a region. Each region's own CLIP-L pooled vector is not used (FLUX.1 has one for the "
                   "whole picture: the unmasked prompt's). Needs DreamO on the model (DreamO Apply).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "conditioning": ("CONDITIONING", {"tooltip": "ConditioningCombine's output: masked prompts (regions) "
                                                  "and one unmasked prompt (the whole picture)."}),
            },
            "optional": {
                "base_placeholders_follow": ("BOOLEAN", {"default": True, "tooltip": "The unmasked prompt's [ref#k] "
                                             "tokens are routed with reference k's region too."}),
            },
        }

    def convert(self, conditioning, base_placeholders_follow=True):
        bases, segments = split_masked(conditioning, NODE_ID)
        return (with_region_prompts(bases, segments, base_placeholders_follow, NODE_ID, "conditioning",
                                    comfy.conds.CONDConstant),)
