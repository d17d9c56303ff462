"""DreamOApply: references into the positive conditioning, DreamO's embeddings onto a clone of the model."""
from __future__ import annotations

import logging

import comfy.conds
import comfy.patcher_extension

from ..dreamo_ops.errors import DreamOError, finite_numbers, in_node, refuse_unknown_inputs
from ..dreamo_ops.flux_wrapper import (APPLY_SLOTS_KEY, REQUIRED_METHOD, ROUTING_KEY, SLOTS_KWARG, WRAPPER_KEY,
                                       DreamOFluxWrapper,
                                        ReferenceBatchCheck)
from ..dreamo_ops.slot_agreement import RECORD_KEY, check_apply, fingerprint, style_note
from .model_check import check_flux1
from .sockets import DREAMO_REF_TYPE, DREAMO_TYPE, REF_INPUTS

NODE_ID = "DreamOApply"


def check_model(model, dreamo):
    dm = check_flux1(NODE_ID, model)
    if dm.hidden_size != dreamo.hidden_size:
        raise DreamOError(NODE_ID, "dreamo", f"the embeddings are {dreamo.hidden_size}-wide but the model's hidden "
                          f"size is {dm.hidden_size}.", "load the DreamO file made for this model (FLUX.1-dev).")
    return dm


def existing_dreamo_slots(cond: dict) -> tuple[int, ...]:
    c = cond.get("model_conds", {}).get(SLOTS_KWARG)
    return tuple(c.cond) if c is not None else ()


def add_references(positive, refs: list[tuple[int, object]]):
    """New conditioning with DreamO's references appended, positioned by the 'uxo' method."""
    out = []
    new_slots = tuple(slot for slot, _ in refs)
    for context, cond in positive:
        old_latents = list(cond.get("reference_latents") or [])
        old_slots = existing_dreamo_slots(cond)
        if len(old_latents) != len(old_slots):
            raise DreamOError(
                NODE_ID, "positive", f"this conditioning already carries {len(old_latents) - len(old_slots)} "
                "reference latent(s) from another node (ReferenceLatent or an edit-model node); DreamO "
                "positions its references itself.", "remove the other reference node, or apply DreamO to a "
                "conditioning without reference latents.")
        taken = sorted(set(old_slots) & set(new_slots))
        if taken:
            raise DreamOError(NODE_ID, f"ref_{taken[0]}", f"slot {taken[0]} is already used by an earlier "
                              "DreamOApply on this conditioning; each slot names one reference ([ref#k]).",
                              "connect this reference to a free slot.")
        cond = cond.copy()
        cond["reference_latents"] = old_latents + [r.latent for _, r in refs]
        cond["reference_latents_method"] = REQUIRED_METHOD
        model_conds = dict(cond.get("model_conds", {}))
        model_conds[SLOTS_KWARG] = comfy.conds.CONDConstant(old_slots + new_slots)
        cond["model_conds"] = model_conds
        out.append([context, cond])
    return out


def patch_model(model, dreamo, slots=()):
    m = model.clone()
    # The slots this model has references in (with earlier Apply nodes'): DreamO Routing after it checks its regions.
    m.model_options[APPLY_SLOTS_KEY] = tuple(sorted(set(m.model_options.get(APPLY_SLOTS_KEY, ())) | set(slots)))
    kind = comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL
    m.remove_wrappers_with_key(kind, WRAPPER_KEY)
    m.add_wrapper_with_key(kind, WRAPPER_KEY, DreamOFluxWrapper(dreamo, NODE_ID))
    outer = comfy.patcher_extension.WrappersMP.OUTER_SAMPLE
    m.remove_wrappers_with_key(outer, WRAPPER_KEY)
    m.add_wrapper_with_key(outer, WRAPPER_KEY, ReferenceBatchCheck(NODE_ID))
    # The routing key is always there (None until DreamO Routing sets it): ComfyUI 0.33's TorchCompileModel keeps no
    # guard on transformer_options, and a key that comes and goes between runs of one compiled model breaks it.
    m.model_options.setdefault("transformer_options", {}).setdefault(ROUTING_KEY, None)
    return m


@finite_numbers
class DreamOApply:
    NODE_ID = NODE_ID
    DISPLAY_NAME = "DreamO Apply"
    CATEGORY = "DreamO"
    FUNCTION = "apply"
    # The note shown on the node is UI output: on ComfyUI 0.33+ it only reaches the page after a cache hit when the
    # node declares it (0.3.x ignores the flag and always sends it).
    HAS_INTERMEDIATE_OUTPUT = True
    RETURN_TYPES = ("MODEL", "CONDITIONING")
    RETURN_NAMES = ("model", "positive")
    OUTPUT_TOOLTIPS = ("The model with DreamO's embeddings (a patched clone; the input model is untouched).",
                       "The positive conditioning carrying the references. Keep the negative as it is.")
    DESCRIPTION = ("Adds up to nine DreamO references. The socket number is the reference's slot: a reference in "
                   "ref_2 is [ref#2] in the prompt and gets DreamO's second index embedding. Use the DreamO LoRA "
                   "on the model as well.")

    @classmethod
    def INPUT_TYPES(cls):
        optional = {name: (DREAMO_REF_TYPE, {"tooltip": f"Reference in slot {i} ([ref#{i}] in the prompt)."})
                    for i, name in enumerate(REF_INPUTS, start=1)}
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "A FLUX.1-dev model, with the DreamO LoRA(s) applied."}),
                "positive": ("CONDITIONING", {"tooltip": "The positive prompt's conditioning."}),
                "dreamo": (DREAMO_TYPE, {"tooltip": "DreamO's embeddings, from DreamOLoader."}),
            },
            "optional": optional,
        }

    def apply(self, model, positive, dreamo, **refs):
        refuse_unknown_inputs(NODE_ID, refs, REF_INPUTS)
        dm = check_model(model, dreamo)
        chosen = [(i, refs[name]) for i, name in enumerate(REF_INPUTS, start=1) if refs.get(name) is not None]
        if not chosen:
            raise DreamOError(NODE_ID, "ref_1", "no reference is connected.",
                              "connect a DreamORefEncode output to at least one of ref_1…ref_9 (or bypass the node).")
        for slot, ref in chosen:
            latent = getattr(ref, "latent", None)
            if latent is None or latent.ndim != 4 or latent.shape[1] != dm.params.in_channels:
                shape = None if latent is None else tuple(latent.shape)
                raise DreamOError(NODE_ID, f"ref_{slot}", f"the reference latent has shape {shape}, this model "
                                  f"needs {dm.params.in_channels}-channel image latents.",
                                  "encode the reference with the Flux VAE (ae.safetensors) in DreamORefEncode.")
        provided = {slot: (str(ref.task), fingerprint(ref.latent)) for slot, ref in chosen}
        notes = []
        for _, cond in positive:
            record = cond.get(RECORD_KEY)
            if record is not None:
                with in_node(NODE_ID):
                    check_apply(record, provided)
                note = style_note(record, {slot: task for slot, (task, _) in provided.items()})
                if note and note not in notes:
                    notes.append(note)
        for note in notes:
            logging.warning("%s: %s", NODE_ID, note)
        result = (patch_model(model, dreamo, [slot for slot, _ in chosen]), add_references(positive, chosen))
        return {"ui": {"dreamo_info": ["\n".join(notes)]}, "result": result}
