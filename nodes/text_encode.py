"""DreamOTextEncode: a Flux prompt whose [ref#k] / [res] placeholders reach T5 as DreamO's learned tokens."""
from __future__ import annotations

import logging
import os

from ..dreamo_ops.errors import DreamOError, finite_numbers, refuse_unknown_inputs
from ..dreamo_ops.placeholders import STYLE_INSTRUCTION, build_prompt, has_style_instruction
from ..dreamo_ops.regional import TEXT_KEY
from ..dreamo_ops.slot_agreement import RECORD_KEY, make_record
from ..dreamo_ops.t5_placeholder_tokenizer import (COMFYUI_T5_LENGTH, DREAMO_T5_LENGTH, PlaceholderMismatch,
                                                   TokenizerSetupError, load_tokenizer, t5_tokens)
from .sockets import DREAMO_REF_TYPE, DREAMO_TYPE, REF_INPUTS

NODE_ID = "DreamOTextEncode"
MINIMAL = "minimal"
T5_LENGTHS = (str(DREAMO_T5_LENGTH), str(COMFYUI_T5_LENGTH), MINIMAL)
"""T5 padding choices; "minimal" pads nothing (the words and `</s>`): what a region prompt costs."""
T5_KEY = "t5xxl"


def comfy_t5_tokenizer_file() -> str:
    """ComfyUI's own T5 tokenizer.json: the one its Flux text encoder tokenizes with."""
    import comfy.text_encoders.flux

    return os.path.join(os.path.dirname(os.path.realpath(comfy.text_encoders.flux.__file__)), "t5_tokenizer",
                        "tokenizer.json")


def t5_width(clip):
    """Width of the CLIP's T5 input embeddings, or None when it cannot be told."""
    try:
        emb = clip.cond_stage_model.t5xxl.transformer.get_input_embeddings()
    except AttributeError:
        return None
    width = getattr(emb, "embedding_dim", None)
    if width is None and getattr(emb, "weight", None) is not None:
        width = emb.weight.shape[-1]
    return int(width) if width is not None else None


def connected_references(refs: dict):
    """{slot: task} of the connected references, or None when none is connected."""
    found = {}
    for slot, name in enumerate(REF_INPUTS, start=1):
        ref = refs.get(name)
        if ref is None:
            continue
        task = getattr(ref, "task", None)
        if task is None:
            raise DreamOError(NODE_ID, name, f"expected a DreamO reference, got {type(ref).__name__}.",
                              "connect the output of DreamORefEncode (the same one connected to DreamOApply).")
        found[slot] = task
    return found or None


def placeholder_vectors(dreamo, plan, node=NODE_ID):
    vectors = getattr(dreamo, "placeholders", None)
    if vectors is None and plan.placeholders:
        names = ", ".join(sorted({p.name for p in plan.placeholders}))
        source = getattr(dreamo, "source", "") or "this DreamO file"
        raise DreamOError(node, "dreamo", f"the prompt uses {names} but '{source}' has no placeholder vectors "
                          "(the ComfyUI embedding.safetensors holds only the task and index embeddings).",
                          "load dreamo.safetensors from ByteDance/DreamO in DreamOLoader, or remove the "
                          "placeholders from the prompt.")
    return vectors


@finite_numbers
class DreamOTextEncode:
    NODE_ID = NODE_ID
    DISPLAY_NAME = "DreamO Text Encode"
    CATEGORY = "DreamO"
    FUNCTION = "encode"
    # The preview/info shown on the node is UI output: on ComfyUI 0.33+ it only reaches /history (and the page)
    # after a cache hit when the node declares it (0.3.x ignores the flag and always sends it).
    HAS_INTERMEDIATE_OUTPUT = True
    RETURN_TYPES = ("CONDITIONING", "STRING")
    RETURN_NAMES = ("conditioning", "prompt")
    OUTPUT_TOOLTIPS = (
        "Flux conditioning: T5 read the prompt with DreamO's placeholder tokens, CLIP-L read the text. Use it as "
        "DreamOApply's positive (FluxGuidance and the conditioning combine/concat nodes work on it as usual).",
        "The prompt that was encoded, with the style instruction when it was added.",
    )
    DESCRIPTION = (
        "Encodes a FLUX prompt the way DreamO does: [ref#1]…[ref#9] name the references in DreamOApply's slots "
        "1…9 and [res] the result, each read by T5 as DreamO's learned token (the T5 model itself is untouched, so "
        "fp8/GGUF encoders work). The prompt is checked against the references of the DreamO Apply it feeds: a "
        "placeholder without a reference is an error. Connecting the references here too is optional (it adds the "
        "style instruction for a style reference); they must then be Apply's, slot by slot. Weighting like "
        "(red dress:1.2) works; placeholders keep "
        "weight 1.0 inside weighted text (DreamO never trained weighted placeholders) unless weighted alone, "
        "as ([ref#1]:1.2)."
    )

    @classmethod
    def INPUT_TYPES(cls):
        optional = {name: (DREAMO_REF_TYPE, {"tooltip": f"Optional: the reference in DreamO Apply's ref_{i} "
                                             f"([ref#{i}]) again, so a style reference gets its instruction. It must "
                                             "be the same as Apply's (checked)."})
                    for i, name in enumerate(REF_INPUTS, start=1)}
        return {
            "required": {
                "clip": ("CLIP", {"tooltip": "FLUX.1's text encoders (DualCLIPLoader: clip_l + t5xxl, type flux)."}),
                "dreamo": (DREAMO_TYPE, {"tooltip": "DreamO's embeddings from DreamOLoader; dreamo.safetensors "
                                         "holds the placeholder vectors."}),
                "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip":
                         "The prompt. Name references with [ref#1]…[ref#9] (slot = DreamOApply socket) and the "
                         "result with [res], written exactly so, e.g. 'a woman [ref#1] wearing the dress "
                         "[ref#2]'."}),
                "t5_length": (list(T5_LENGTHS), {"default": T5_LENGTHS[0], "tooltip":
                              "T5 padding: 512 as DreamO (faithful), or 256 as ComfyUI's CLIPTextEncode for Flux, "
                              "or minimal (none: the words and </s>; for a region's words in masked conditionings "
                              "given to DreamO Regional Conditioning). Padding changes the result slightly. Longer "
                              "prompts are kept whole."}),
                "add_style_instruction": ("BOOLEAN", {"default": True, "tooltip":
                                          f"With a style reference connected, start the prompt with "
                                          f"'{STYLE_INSTRUCTION}' when it lacks it (DreamO's style task was "
                                          "trained so)."}),
            },
            "optional": optional,
        }

    def encode(self, clip, dreamo, text, t5_length=T5_LENGTHS[0], add_style_instruction=True, **refs):
        refuse_unknown_inputs(NODE_ID, refs, REF_INPUTS)
        # ComfyUI checks a dropdown's widget value, not one linked from an any-type output (switch nodes)
        if str(t5_length) not in T5_LENGTHS:
            raise DreamOError(NODE_ID, "t5_length", f"'{t5_length}' is not a choice.",
                              f"choose one of {', '.join(T5_LENGTHS)}.")
        conditioning, plan = encode_prompt(clip, dreamo, text, t5_length, connected_references(refs),
                                           add_style_instruction)
        for note in plan.notes:
            logging.info("%s: %s", NODE_ID, note)
        # What the prompt was checked against travels with it: DreamO Apply compares its own references.
        connected = {slot: refs[name] for slot, name in enumerate(REF_INPUTS, start=1) if refs.get(name) is not None}
        record = make_record([p.slot for p in plan.placeholders], connected or None,
                             has_style_instruction(plan.plain))
        conditioning = [[c, {**d, RECORD_KEY: record}] for c, d in conditioning]
        return {"ui": {"dreamo_info": ["\n".join(plan.notes)]}, "result": (conditioning, plan.text)}


def encode_prompt(clip, dreamo, text, t5_length, references=None, add_style_instruction=True, node=NODE_ID,
                  text_input="text"):
    """(conditioning, plan) of a prompt encoded DreamO's way: T5 reads the placeholders as DreamO's learned tokens
    (padded to `t5_length`, or not at all for "minimal"), CLIP-L the text. Each entry also records the prompt and
    where its [ref#k] tokens are (`regional.TEXT_KEY`), so region prompts can route them."""
    if clip is None:
        raise DreamOError(node, "clip", "no text encoder is connected (the checkpoint has none).",
                          "load FLUX.1's text encoders with DualCLIPLoader (clip_l + t5xxl, type flux).")
    plan = build_prompt(text, references, add_style_instruction, node=node, input_name=text_input)
    vectors = placeholder_vectors(dreamo, plan, node)
    tokens = clip.tokenize(plan.text)
    if T5_KEY not in tokens:
        raise DreamOError(node, "clip", f"this text encoder has no T5-XXL (it has {', '.join(tokens)}).",
                          "load FLUX.1's text encoders with DualCLIPLoader (clip_l + t5xxl, type flux).")
    width = t5_width(clip)
    if vectors is not None and width is not None and vectors.shape[-1] != width:
        raise DreamOError(node, "dreamo", f"the placeholder vectors are {vectors.shape[-1]}-wide but this "
                          f"T5's embeddings are {width}-wide.", "use FLUX.1's T5-XXL with dreamo.safetensors.")
    try:
        tokenizer = load_tokenizer(comfy_t5_tokenizer_file())
        t5 = t5_tokens(plan, tokenizer, vectors, 0 if str(t5_length) == MINIMAL else int(t5_length))
    except TokenizerSetupError as e:
        raise DreamOError(node, "clip", str(e), "reinstall ComfyUI's comfy/text_encoders/t5_tokenizer, or "
                          "pip install tokenizers.") from e
    except PlaceholderMismatch as e:
        raise DreamOError(node, text_input, str(e), "write placeholders as plain ASCII [ref#1]…[ref#9] / [res] "
                          "and nothing else in that form.") from e
    tokens[T5_KEY] = [t5]
    # t5 is the prompt's tokens in order, then </s> and padding: a token's index is its position in the text
    indices = [tokenizer.placeholder_index(t.id) for t in tokenizer.encode(plan.plain)]
    placeholders = tuple((i, k + 1) for i, k in enumerate(indices) if k is not None and k < 9)
    conditioning = clip.encode_from_tokens_scheduled(tokens)
    for _, entry in conditioning:
        entry[TEXT_KEY] = {"text": plan.text, "placeholders": placeholders}
    return conditioning, plan

