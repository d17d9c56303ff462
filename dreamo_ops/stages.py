"""DreamO's training stages as released: official file names, version presets, and how "auto" finds a file.

Stages are applied as LoRAs on top of FLUX.1-dev in this order: main, cfg_distill, turbo, then the v1 quality
pair or the v1.1 SFT/DPO pair. A preset only decides which stages "auto" switches on; strengths come from the
node's inputs, whose defaults are the official values (the v1 and v1.1 stages are disjoint, so one default
per stage is the official value of the preset that uses it).

Choices for a stage's file: "auto" follows the preset (on when the preset uses the stage, found by its official
name); "none" switches the stage off; a file name switches it on with that file, whatever the preset.
Pure string logic over ComfyUI-style relative file names ("DreamO/v1.1/dreamo_sft_lora.safetensors").
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Optional, Sequence

AUTO = "auto"
NONE = "none"
VERSIONS = ("v1.1", "v1", "custom")
DEFAULT_VERSION = "v1.1"
HF_DREAMO = "huggingface.co/ByteDance/DreamO"
HF_TURBO = "huggingface.co/alimama-creative/FLUX.1-Turbo-Alpha"


@dataclass(frozen=True)
class Stage:
    name: str  # the node's input prefix: f"{name}_file", f"{name}_strength"
    stems: tuple[str, ...]  # official file names without extension (plus the "_comfyui" copies)
    strength: float  # official strength
    presets: tuple[str, ...]  # presets in which "auto" switches it on
    download: str  # where the official file lives, for error messages


MAIN = Stage("main", ("dreamo", "dreamo_comfyui"), 1.0, ("v1.1", "v1", "custom"), f"{HF_DREAMO} (dreamo.safetensors)")
CFG_DISTILL = Stage("cfg_distill", ("dreamo_cfg_distill", "dreamo_cfg_distill_comfyui"), 1.0, ("v1.1", "v1"),
                    f"{HF_DREAMO} (dreamo_cfg_distill.safetensors)")
TURBO = Stage("turbo", (), 1.0, (), f"{HF_TURBO} (diffusion_pytorch_model.safetensors)")
QUALITY_POS = Stage("quality_pos", ("dreamo_quality_lora_pos", "dreamo_quality_lora_pos_comfyui"), 0.15, ("v1",),
                    f"{HF_DREAMO} (dreamo_quality_lora_pos.safetensors)")
QUALITY_NEG = Stage("quality_neg", ("dreamo_quality_lora_neg", "dreamo_quality_lora_neg_comfyui"), -0.8, ("v1",),
                    f"{HF_DREAMO} (dreamo_quality_lora_neg.safetensors)")
SFT = Stage("sft", ("dreamo_sft_lora", "dreamo_sft_lora_comfyui"), 1.0, ("v1.1",),
            f"{HF_DREAMO} (v1.1/dreamo_sft_lora.safetensors)")
DPO = Stage("dpo", ("dreamo_dpo_lora", "dreamo_dpo_lora_comfyui"), 1.25, ("v1.1",),
            f"{HF_DREAMO} (v1.1/dreamo_dpo_lora.safetensors)")
STAGES = (MAIN, CFG_DISTILL, TURBO, QUALITY_POS, QUALITY_NEG, SFT, DPO)
WEIGHT_FOLDERS = ("dreamo", "loras")  # ComfyUI folders the stage files are looked up in, in this order
EMBEDDING_STEMS = ("embedding",)  # the ComfyUI port's stand-alone task/index embeddings
TURBO_DEFAULT_FILE = "diffusion_pytorch_model.safetensors"


def stage_is_on(stage: Stage, choice: str, version: str, strength: float) -> bool:
    if choice == NONE or strength == 0:
        return False
    if choice == AUTO:
        return version in stage.presets
    return True


def input_name(stage: Stage) -> str:
    """The stage loader's file input for a stage."""
    return "dreamo_file" if stage is MAIN else f"{stage.name}_file"


def active_stages(version: str, choices: dict, turbo: bool = True) -> list[tuple[Stage, str, str]]:
    """(stage, input name, file choice) of every stage the stage loader applies, in its order.

    `choices` maps a stage name to (file choice, strength); a stage left out is 'auto' at its official strength.
    Turbo is on when `turbo` is and its choice is not 'none'; the others follow `stage_is_on`."""
    active = []
    for stage in STAGES:
        choice, strength = choices.get(stage.name, (AUTO, stage.strength))
        if stage is TURBO:
            on = turbo and choice != NONE and strength != 0
        else:
            on = stage_is_on(stage, choice, version, strength)
        if on:
            active.append((stage, input_name(stage), choice))
    return active


def _parts(name: str) -> list[str]:
    return [p for p in posixpath.dirname(name.replace("\\", "/")).split("/") if p]


def _stem(name: str) -> str:
    base = posixpath.basename(name.replace("\\", "/"))
    return base.rsplit(".", 1)[0].lower() if "." in base else base.lower()


def _closeness(name: str, near: Optional[str]) -> tuple[int, int]:
    """Sort key: longest common folder with `near` first, then fewest extra folders."""
    parts = _parts(name)
    if near is None:
        return 0, len(parts)
    ref = _parts(near)
    common = 0
    for a, b in zip(parts, ref):
        if a != b:
            break
        common += 1
    return -common, len(parts) - common


def _comfyui_copy(name: str) -> bool:
    return _stem(name).endswith("_comfyui")


def find_file(stems: Sequence[str], names: Sequence[str], near: Optional[str] = None) -> Optional[str]:
    """The file named like one of `stems`: closest to `near` (the main file) and of the same kind (original
    or "_comfyui" copy) as `near`; without `near`, originals first, then the shallowest. None if none."""
    wanted = {s.lower() for s in stems}
    hits = [n for n in names if _stem(n) in wanted]
    if not hits:
        return None
    near_copy = near is not None and _comfyui_copy(near)

    def key(n):
        closeness, copy = _closeness(n, near), _comfyui_copy(n) != near_copy
        return (copy, *closeness, n) if near is None else (*closeness, copy, n)
    return min(hits, key=key)


def find_turbo(names: Sequence[str], near: Optional[str] = None) -> Optional[str]:
    """FLUX.1-Turbo-Alpha: a file with 'turbo' in its path, or diffusion_pytorch_model.safetensors in the
    main file's folder (where DreamO's own code downloads it)."""
    near_dir = None if near is None else _parts(near)
    hits = [n for n in names if "turbo" in n.lower().replace("\\", "/")
            or (posixpath.basename(n.replace("\\", "/")) == TURBO_DEFAULT_FILE and _parts(n) == near_dir)]
    if not hits:
        return None
    return min(hits, key=lambda n: (*_closeness(n, near), n))


def find_stage_file(stage: Stage, names: Sequence[str], near: Optional[str] = None) -> Optional[str]:
    if stage is TURBO:
        return find_turbo(names, near)
    return find_file(stage.stems, names, near)
