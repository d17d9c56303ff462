"""DreamOStageLoader: DreamO's staged LoRAs, read from the files as released, on a clone of a FLUX.1 model.

The format mapping lives in `dreamo_ops.lora_formats` and the stage catalogue in `dreamo_ops.stages`; this
module only turns their targets into ComfyUI LoRA patches (`comfy.weight_adapter.LoRAAdapter`, keyed
`(weight_key, (dim, start, size))` for rows of a fused weight) on `ModelPatcher.clone()`. ComfyUI applies
them itself when it loads the model, so fp8 and other quantized weights are handled the way core LoRAs are,
and no base weight is copied or fused here.
"""
from __future__ import annotations

import logging

import comfy.lora
import comfy.utils
import folder_paths
from comfy.weight_adapter import LoRAAdapter

from ..dreamo_ops import stages as st
from ..dreamo_ops.errors import DreamOError, finite_numbers
from ..dreamo_ops.lora_formats import (LoraFormatError, ParsedLora, check_against_model, file_keys,
                                       read_lora_file)
from ..dreamo_ops.weights import INDEX_KEY, TASK_KEY, WeightFileError
from .loader import load_embeddings
from .model_check import check_flux1
from .model_folders import WEIGHT_FOLDERS, resolve_weight_file, weight_file_names
from .sockets import DREAMO_TYPE
from .widget_rules import follows, shown_if

NODE_ID = "DreamOStageLoader"
STRENGTH = {"min": -10.0, "max": 10.0, "step": 0.01}
STAGE_TOOLTIP = ("'auto' follows the version preset: the stage is on when the preset uses it, read from the file "
                 "with its official name ({names}) closest to the main file in models/dreamo or models/loras "
                 "(an error if it cannot be found). 'none' switches the stage off. A file name switches the stage "
                 "on with that file, whatever the preset.")


def _folders() -> list[str]:
    found = []
    for folder in WEIGHT_FOLDERS:
        found += folder_paths.get_folder_paths(folder)
    return found


def flux_dims(model):
    """(diffusion model, {Flux module: state-dict key}, {Flux module: weight shape}, hidden, mlp_hidden)."""
    dm = check_flux1(NODE_ID, model)
    base = model.model
    key_map = comfy.lora.model_lora_keys_unet(base, {})
    sd = model.model_state_dict()
    keys, shapes = {}, {}
    prefix = "diffusion_model."
    for name, key in key_map.items():
        if isinstance(key, str) and name.startswith(prefix) and key == f"{name}.weight" and key in sd:
            # The weight's own shape, not its state-dict entry's: ComfyUI-GGUF's quantized weights show their
            # packed bytes' shape in state_dict() (plus a "temp.weight" stand-in for memory estimates that is
            # no weight at all), the weight's real shape on the tensor itself.
            try:
                weight = comfy.utils.get_attr(base, key)
            except AttributeError:
                continue
            module = name[len(prefix):]
            keys[module] = key
            shapes[module] = tuple(weight.shape)
    hidden = dm.hidden_size
    linear1 = shapes.get("single_blocks.0.linear1")
    mlp_hidden = linear1[0] - 3 * hidden if linear1 else 4 * hidden
    return dm, keys, shapes, hidden, mlp_hidden


def lora_patches(lora: ParsedLora, keys: dict) -> dict:
    """ComfyUI patches for `ModelPatcher.add_patches`: LoRAAdapter per weight (or per rows of a fused one)."""
    patches = {}
    for t in lora.targets:
        key = keys[t.module]
        patches[key if t.offset is None else (key, t.offset)] = LoRAAdapter(
            set(t.keys), (t.up, t.down, t.alpha, None, None, None))
    return patches


def _stage_error(input_name: str, e: WeightFileError) -> DreamOError:
    if isinstance(e, LoraFormatError):
        fix = ("choose the DreamO file meant for this stage (official names in the tooltip), or 'none'. "
               "LoRAs for other models or model sizes cannot be used here.")
    else:
        fix = "re-download the file (it may be incomplete) or choose another one; only .safetensors files are read."
    return DreamOError(NODE_ID, input_name, str(e), fix)


def _stage_tooltip(stage: st.Stage) -> str:
    return STAGE_TOOLTIP.format(names=" / ".join(f"{s}.safetensors" for s in stage.stems))


def shown_with(stage: st.Stage) -> dict:
    """A stage's file input is shown under the presets that use it, under 'custom' (stages are chosen by file
    there), and whenever it names a file (which switches the stage on whatever the preset)."""
    if stage is st.TURBO:
        return shown_if(("turbo", "in", [True]))
    if stage is st.MAIN:
        return {}
    return shown_if(("version", "in", sorted(set(stage.presets) | {"custom"})),
                    (st.input_name(stage), "not_in", [st.AUTO, st.NONE]))


@finite_numbers
class DreamOStageLoader:
    NODE_ID = NODE_ID
    DISPLAY_NAME = "DreamO Stage Loader"
    CATEGORY = "DreamO"
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL", DREAMO_TYPE)
    RETURN_NAMES = ("model", "dreamo")
    OUTPUT_TOOLTIPS = (
        "The model with DreamO's stage LoRAs as ComfyUI patches (a clone; the input model is untouched). "
        "Connect it to DreamOApply.",
        "DreamO's learned embeddings from the main file (or embedding.safetensors), for DreamOApply.")
    DESCRIPTION = (
        "Loads DreamO's LoRA stages from the files ByteDance released, in one node: the main LoRA, cfg-distill, "
        "the v1.1 SFT + DPO pair (1.0 / 1.25) or the v1 quality pair (+0.15 / -0.8), and optionally "
        "FLUX.1-Turbo-Alpha for ~12-step sampling. The version preset decides which stages 'auto' switches on; "
        "strengths default to the official values. Reads the XLabs, diffusers, ComfyUI/BFL and kohya LoRA "
        "formats and the pre-converted *_comfyui copies; a key that fits no FLUX.1 weight is an error. Also "
        "outputs DreamO's embeddings, so no DreamOLoader is needed.")

    @classmethod
    def INPUT_TYPES(cls):
        names = weight_file_names()
        auto = [st.AUTO] + names
        stage_choices = [st.AUTO, st.NONE] + names

        def strength(stage, extra=""):
            rule = {} if stage is st.MAIN else follows(st.input_name(stage))
            return ("FLOAT", {"default": stage.strength, **STRENGTH, "advanced": True, **rule, "tooltip": (
                f"Strength of the {stage.name.replace('_', ' ')} stage (official: {stage.strength:g}).{extra} "
                "0 leaves the model's weights untouched by this stage.")})

        return {"required": {
            "model": ("MODEL", {"tooltip": "FLUX.1-dev, as loaded by UNETLoader, a checkpoint loader or "
                                           "ComfyUI-GGUF's Unet Loader (GGUF) (fp8, GGUF and other quantized "
                                           "models work)."}),
            "dreamo_file": (auto, {"tooltip": (
                "DreamO's main file: dreamo.safetensors (main LoRA + embeddings) or the pre-converted "
                "dreamo_comfyui.safetensors. 'auto' takes dreamo.safetensors from models/dreamo or models/loras "
                "(the copy if only it exists).")}),
            "version": (list(st.VERSIONS), {"default": st.DEFAULT_VERSION, "tooltip": (
                "Which stages 'auto' switches on. v1.1: main + cfg distill + SFT + DPO. v1: main + cfg distill + "
                "quality pos/neg. custom: only the main LoRA and the stages given an explicit file.")}),
            "main_strength": strength(st.MAIN),
            "cfg_distill_file": (stage_choices, {**shown_with(st.CFG_DISTILL), "tooltip": (
                "The cfg-distill stage (lets DreamO run at cfg 1). " + _stage_tooltip(st.CFG_DISTILL))}),
            "cfg_distill_strength": strength(st.CFG_DISTILL),
            "turbo": ("BOOLEAN", {"default": True, "tooltip": (
                "Apply FLUX.1-Turbo-Alpha (alimama-creative) for ~12-step sampling, as DreamO's own pipeline does "
                "by default. Off: use 25+ steps.")}),
            "turbo_file": (stage_choices, {**shown_with(st.TURBO), "tooltip": (
                "The turbo LoRA when 'turbo' is on. 'auto' takes the file with 'turbo' in its path (e.g. "
                "FLUX.1-Turbo-Alpha/diffusion_pytorch_model.safetensors) closest to the main file, or "
                "diffusion_pytorch_model.safetensors next to it; an error if none is found. 'none' = off.")}),
            "turbo_strength": strength(st.TURBO),
            "sft_file": (stage_choices, {**shown_with(st.SFT), "tooltip": "v1.1 SFT stage. " + _stage_tooltip(st.SFT)}),
            "sft_strength": strength(st.SFT, " Used by the v1.1 preset."),
            "dpo_file": (stage_choices, {**shown_with(st.DPO), "tooltip": "v1.1 DPO stage. " + _stage_tooltip(st.DPO)}),
            "dpo_strength": strength(st.DPO, " Used by the v1.1 preset."),
            "quality_pos_file": (stage_choices, {**shown_with(st.QUALITY_POS), "tooltip": "v1 positive quality stage. "
                                                            + _stage_tooltip(st.QUALITY_POS)}),
            "quality_pos_strength": strength(st.QUALITY_POS, " Used by the v1 preset."),
            "quality_neg_file": (stage_choices, {**shown_with(st.QUALITY_NEG), "tooltip": "v1 negative quality stage. "
                                                            + _stage_tooltip(st.QUALITY_NEG)}),
            "quality_neg_strength": strength(st.QUALITY_NEG, " Used by the v1 preset."),
            "embedding_file": (auto, {"advanced": True, "tooltip": (
                "Where DreamO's embeddings come from. 'auto': the main file when it has them (dreamo.safetensors), "
                "otherwise embedding.safetensors (the ComfyUI port's file) closest to it.")}),
        }}

    def load(self, model, dreamo_file, version, main_strength, cfg_distill_file, cfg_distill_strength, turbo,
             turbo_file, turbo_strength, sft_file, sft_strength, dpo_file, dpo_strength, quality_pos_file,
             quality_pos_strength, quality_neg_file, quality_neg_strength, embedding_file=st.AUTO):
        # ComfyUI checks a dropdown's widget value, not one linked from an any-type output (switch nodes)
        if version not in st.VERSIONS:
            raise DreamOError(NODE_ID, "version", f"unknown version '{version}'.",
                              f"choose one of {', '.join(st.VERSIONS)}.")
        _, keys, shapes, hidden, mlp_hidden = flux_dims(model)
        names = weight_file_names()
        main_name = self._main_file(dreamo_file, names)
        choices = {"main": (main_name, main_strength), "cfg_distill": (cfg_distill_file, cfg_distill_strength),
                   "turbo": (turbo_file, turbo_strength),
                   "quality_pos": (quality_pos_file, quality_pos_strength),
                   "quality_neg": (quality_neg_file, quality_neg_strength),
                   "sft": (sft_file, sft_strength), "dpo": (dpo_file, dpo_strength)}

        plan = []  # (stage, input name, file name, strength), all resolved before anything is read
        for stage, input_name, choice in st.active_stages(version, choices, bool(turbo)):
            strength = choices[stage.name][1]
            name = choice
            if choice == st.AUTO:
                name = st.find_stage_file(stage, names, near=main_name)
                if name is None:
                    raise self._not_found(stage, input_name, version)
            plan.append((stage, input_name, name, float(strength)))

        loaded = []
        for stage, input_name, name, strength in plan:
            path = resolve_weight_file(NODE_ID, input_name, name)
            try:
                lora = read_lora_file(path, hidden, mlp_hidden)
                check_against_model(lora, shapes)
            except WeightFileError as e:
                raise _stage_error(input_name, e) from e
            loaded.append((stage, name, strength, lora))

        dreamo = self._embeddings(embedding_file, main_name, names)
        if dreamo.hidden_size != hidden:
            raise DreamOError(NODE_ID, "embedding_file", f"the embeddings in '{dreamo.source}' are "
                              f"{dreamo.hidden_size}-wide but the model's hidden size is {hidden}.",
                              "use the DreamO files made for this model (FLUX.1-dev).")

        patched = model.clone()
        for stage, name, strength, lora in loaded:
            patches = lora_patches(lora, keys)
            added = patched.add_patches(patches, strength_patch=strength)
            if len(added) != len(patches):
                missing = sorted(str(k) for k in set(patches) - set(added))
                raise DreamOError(NODE_ID, f"{stage.name}_file", f"ComfyUI did not accept patches for {missing[:3]}.",
                                  "report this with the model and file used.")
            logging.info("DreamO stage %s: %s x%g (%s, %d weights, %.1f MB)", stage.name, name, strength,
                         "/".join(lora.formats), len(lora.targets), lora.nbytes / 2**20)
        return (patched, dreamo)

    @staticmethod
    def _main_file(dreamo_file: str, names: list[str]) -> str:
        if dreamo_file != st.AUTO:
            return dreamo_file
        found = st.find_stage_file(st.MAIN, names)
        if found is None:
            raise DreamOError(NODE_ID, "dreamo_file", f"no dreamo.safetensors was found in {_folders()}.",
                              f"download it from {st.HF_DREAMO} into models/dreamo and refresh the page.")
        return found

    @staticmethod
    def _not_found(stage: st.Stage, input_name: str, version: str) -> DreamOError:
        if stage is st.TURBO:
            problem = "turbo is on but no FLUX.1-Turbo-Alpha file (a path containing 'turbo') was found"
        else:
            problem = f"the {version} preset uses the {stage.name} stage but no {stage.stems[0]}.safetensors was found"
        return DreamOError(NODE_ID, input_name, f"{problem} in {_folders()}.",
                           f"download it from {stage.download} into models/dreamo (next to dreamo.safetensors), "
                           f"pick the file in '{input_name}', or set '{input_name}' to 'none'"
                           + (" / switch 'turbo' off." if stage is st.TURBO else "."))

    @staticmethod
    def _embeddings(embedding_file: str, main_name: str, names: list[str]):
        if embedding_file != st.AUTO:
            return load_embeddings(NODE_ID, "embedding_file", embedding_file)
        try:
            main_keys = set(file_keys(resolve_weight_file(NODE_ID, "dreamo_file", main_name)))
        except WeightFileError as e:
            raise _stage_error("dreamo_file", e) from e
        if {TASK_KEY, INDEX_KEY} <= main_keys:
            return load_embeddings(NODE_ID, "dreamo_file", main_name)
        found = st.find_file(st.EMBEDDING_STEMS, names, near=main_name)
        if found is None:
            raise DreamOError(NODE_ID, "embedding_file", f"'{main_name}' holds no DreamO embeddings (a LoRA-only "
                              "copy) and no embedding.safetensors was found next to it.",
                              "choose dreamo.safetensors as 'dreamo_file', or put the ComfyUI embedding.safetensors "
                              f"from {st.HF_DREAMO} next to the main file, or pick it in 'embedding_file'.")
        return load_embeddings(NODE_ID, "embedding_file", found)
