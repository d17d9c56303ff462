"""Where each official file comes from (DESIGN.md section 2 and 3) and what a workflow or preset needs.

A `Need` is one file a workflow cannot run without: which ComfyUI folder(s) it is looked up in, the accepted
names (or, for DreamO's stages with 'auto', the stage loader's own search), the content check it must pass,
and where the official file comes from. Needs are made from an API-format workflow (its loader nodes and
the file names in them) or from a preset (v1.1 / v1, turbo, id preprocessing, background remover, fp8).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import math

from dreamo_ops import stages as st
from dreamo_ops.background import session_name
from dreamo_ops.face_weights import DETECTORS, PARSER

FACEXLIB_RELEASES = "https://github.com/xinntao/facexlib/releases/download"


@dataclass(frozen=True)
class Source:
    """An official file: a Hugging Face repo path, or a direct URL (facexlib's GitHub releases)."""

    filename: str  # path inside the repo, or the URL's file name
    repo: Optional[str] = None
    url_path: Optional[str] = None  # for URL sources: the path after the releases base ("v0.1.0/x.pth")
    gated: bool = False  # the repo asks users to accept a licence first
    approx_size: Optional[int] = None  # bytes as published (rounded); the Hub's own figure wins when reachable

    @property
    def where(self) -> str:
        return f"{self.repo} ({self.filename})" if self.repo else f"facexlib's release ({self.url_path})"

    def url(self, base: str = FACEXLIB_RELEASES) -> str:
        return f"{base.rstrip('/')}/{self.url_path}"


BFL_DEV = "black-forest-labs/FLUX.1-dev"
TEXT_ENCODERS = "comfyanonymous/flux_text_encoders"
DREAMO_REPO = "ByteDance/DreamO"
TURBO_REPO = "alimama-creative/FLUX.1-Turbo-Alpha"

FLUX_DEV = Source("flux1-dev.safetensors", BFL_DEV, gated=True, approx_size=23_800_000_000)
FLUX_DEV_FP8 = Source("flux1-dev-fp8-e4m3fn.safetensors", "Kijai/flux-fp8", approx_size=11_900_000_000)
FLUX_VAE = Source("ae.safetensors", BFL_DEV, gated=True, approx_size=335_000_000)
CLIP_L = Source("clip_l.safetensors", TEXT_ENCODERS, approx_size=246_000_000)
T5_FP16 = Source("t5xxl_fp16.safetensors", TEXT_ENCODERS, approx_size=9_790_000_000)
T5_FP8 = Source("t5xxl_fp8_e4m3fn.safetensors", TEXT_ENCODERS, approx_size=4_890_000_000)
TURBO = Source("diffusion_pytorch_model.safetensors", TURBO_REPO, approx_size=694_000_000)
TURBO_DIR = "FLUX.1-Turbo-Alpha"  # its folder under models/dreamo: the stage loader finds turbo by "turbo" in the path
DREAMO_FILES = {  # stage -> path in ByteDance/DreamO
    st.MAIN.name: "dreamo.safetensors", st.CFG_DISTILL.name: "dreamo_cfg_distill.safetensors",
    st.QUALITY_POS.name: "dreamo_quality_lora_pos.safetensors",
    st.QUALITY_NEG.name: "dreamo_quality_lora_neg.safetensors",
    st.SFT.name: "v1.1/dreamo_sft_lora.safetensors", st.DPO.name: "v1.1/dreamo_dpo_lora.safetensors",
}
DREAMO_SOURCES = {stage: Source(path, DREAMO_REPO) for stage, path in DREAMO_FILES.items()}
DREAMO_SOURCES[st.TURBO.name] = TURBO
FACE_SIZES = {"detection_Resnet50_Final.pth": 109_500_000, "detection_mobilenet0.25_Final.pth": 1_790_000,
              "parsing_bisenet.pth": 53_300_000}
FACE_SOURCES = {w.name: Source(w.name, url_path=w.url.split("/releases/download/", 1)[1],
                               approx_size=FACE_SIZES.get(w.name))
                for w in [d[1] for d in DETECTORS.values()] + [PARSER]}
REMOVER_NAMES = ("BEN2_Base.onnx", "birefnet-general.onnx", "bria-rmbg.onnx", "isnet-general-use.onnx",
                 "u2net.onnx")

BY_NAME = {s.filename.rsplit("/", 1)[-1]: s for s in (FLUX_DEV, FLUX_DEV_FP8, FLUX_VAE, CLIP_L, T5_FP16, T5_FP8)}
BY_NAME.update({s.filename.rsplit("/", 1)[-1]: s for k, s in DREAMO_SOURCES.items() if k != st.TURBO.name})
BY_NAME.update(FACE_SOURCES)
FLUX_NAMES = (FLUX_DEV.filename, FLUX_DEV_FP8.filename, "flux1-dev-fp8.safetensors")
T5_NAMES = (T5_FP16.filename, T5_FP8.filename, "t5xxl_fp8_e4m3fn_scaled.safetensors")


@dataclass
class Need:
    """One file a workflow needs."""

    label: str  # what it is, for people: "FLUX.1-dev diffusion model"
    asked_by: str  # the workflow node and input, or the preset
    folders: tuple[str, ...]  # ComfyUI folders it is looked up in
    names: tuple[str, ...] = ()  # accepted relative names, preferred first; empty: found by `stage`
    check: str = ""  # content check: see content_checks.CHECKS
    source: Optional[Source] = None  # where the (first) official file comes from
    stage: Optional[st.Stage] = None  # an 'auto' DreamO stage, found as the stage loader finds it
    stems: tuple[str, ...] = ()  # or: a file of one of these stems, the one closest to the main file
    dest: Optional[str] = None  # relative path it is downloaded to in folders[0]'s download folder
    note: str = ""  # shown when it cannot be downloaded


def _flux_need(asked_by: str, fp8: bool) -> Need:
    src = FLUX_DEV_FP8 if fp8 else FLUX_DEV
    names = (src.filename,) + tuple(n for n in FLUX_NAMES if n != src.filename)
    return Need("FLUX.1-dev diffusion model", asked_by, ("diffusion_models",), names, "flux", src, dest=src.filename)


def _text_needs(asked_by: str, fp8: bool) -> list[Need]:
    t5 = T5_FP8 if fp8 else T5_FP16
    return [Need("CLIP-L text encoder", asked_by, ("text_encoders",), (CLIP_L.filename,), "clip_l", CLIP_L,
                 dest=CLIP_L.filename),
            Need("T5-XXL text encoder", asked_by, ("text_encoders",),
                 (t5.filename,) + tuple(n for n in T5_NAMES if n != t5.filename), "t5xxl", t5, dest=t5.filename)]


def stage_needs(asked_by: str, version: str, turbo: bool, choices: Optional[dict] = None) -> list[Need]:
    """The stage files DreamOStageLoader reads for these inputs ({stage: (choice, strength)}, default: auto
    and the official strengths), in the loader's order; main first."""
    choices = dict(choices or {})
    needs = []
    for stage, input_name, choice in st.active_stages(version, choices, turbo):
        label = ("FLUX.1-Turbo-Alpha LoRA" if stage is st.TURBO else f"DreamO {stage.name.replace('_', ' ')} stage")
        src = DREAMO_SOURCES.get(stage.name)
        check = "dreamo_main" if stage is st.MAIN else "lora"
        where = f"{asked_by} '{input_name}'"
        dest = (f"{TURBO_DIR}/{TURBO.filename}" if stage is st.TURBO else src.filename) if src else None
        if choice == st.AUTO:
            needs.append(Need(label, where, st.WEIGHT_FOLDERS, (), check, src, stage=stage, dest=dest))
        else:
            needs.append(Need(label, where, st.WEIGHT_FOLDERS, (choice,), check,
                              src if src and choice.rsplit("/", 1)[-1] == src.filename.rsplit("/", 1)[-1] else None,
                              dest=dest))
    return needs


def face_needs(asked_by: str, detector: str = "retinaface_resnet50") -> list[Need]:
    weight = DETECTORS[detector][1]
    network = DETECTORS[detector][0]
    return [Need(f"RetinaFace {network} face detector", asked_by, ("facexlib",), weight.candidates()[::-1],
                 f"face:{network}", FACE_SOURCES[weight.name], dest=weight.name),
            Need("BiSeNet face parser", asked_by, ("facexlib",), PARSER.candidates()[::-1], "face:parser",
                 FACE_SOURCES[PARSER.name], dest=PARSER.name)]


def embedding_need(asked_by: str) -> Need:
    """embedding.safetensors, which the stage loader reads when the main file is a LoRA-only copy."""
    return Need("DreamO embeddings", f"{asked_by} 'embedding_file'", st.WEIGHT_FOLDERS, (), "embeddings",
                stems=st.EMBEDDING_STEMS, dest="embedding.safetensors",
                note="the main file is a LoRA-only copy: put the ComfyUI port's embedding.safetensors from "
                     "ByteDance/DreamO next to it, or use dreamo.safetensors as the main file.")


def remover_need(asked_by: str, name: Optional[str] = None) -> Need:
    names = (name,) if name else REMOVER_NAMES
    return Need("background remover (ONNX)", asked_by, ("rembg",), names, "rembg", None,
                note="get it from rembg's releases (e.g. birefnet-general.onnx, u2net.onnx) or PramaLLC/BEN2 "
                     "(BEN2_Base.onnx) and put it in models/rembg; `pip install rembg onnxruntime`.")


def preset_needs(version: str = st.DEFAULT_VERSION, turbo: bool = True, face: bool = False,
                 remover: bool = False, fp8: bool = False) -> list[Need]:
    tag = f"preset {version}" + (" +turbo" if turbo else "") + (" +id" if face else "") + (
        " +remover" if remover else "") + (" fp8" if fp8 else "")
    needs = [_flux_need(tag, fp8), *_text_needs(tag, fp8),
             Need("FLUX.1 VAE", tag, ("vae",), (FLUX_VAE.filename,), "vae", FLUX_VAE, dest=FLUX_VAE.filename)]
    needs += stage_needs(tag, version, turbo)
    if face:
        needs += face_needs(tag)
    if remover:
        needs.append(remover_need(tag))
    return needs


class WorkflowError(ValueError):
    """The workflow file is not an API-format ComfyUI workflow."""


def _known(name: str) -> Optional[Source]:
    return BY_NAME.get(name.replace("\\", "/").rsplit("/", 1)[-1])


def _file_need(label, asked_by, folders, name, check) -> Need:
    src = _known(name)
    return Need(label, asked_by, folders, (name,), check, src, dest=name.replace("\\", "/").rsplit("/", 1)[-1]
                if src else None)


# Widget order of the loaders the doctor reads, as the UI format stores them (`widgets_values`): the node's
# inputs without links, in schema order (tests/test_doctor.py checks ours against the nodes and the repo's
# UI workflows against their API twins).
STAGE_WIDGETS = ("dreamo_file", "version", "main_strength", "cfg_distill_file", "cfg_distill_strength", "turbo",
                 "turbo_file", "turbo_strength", "sft_file", "sft_strength", "dpo_file", "dpo_strength",
                 "quality_pos_file", "quality_pos_strength", "quality_neg_file", "quality_neg_strength",
                 "embedding_file")
UI_WIDGETS = {
    "UNETLoader": ("unet_name", "weight_dtype"), "UnetLoaderGGUF": ("unet_name",),
    "CheckpointLoaderSimple": ("ckpt_name",), "VAELoader": ("vae_name",),
    "DualCLIPLoader": ("clip_name1", "clip_name2", "type", "device"), "DualCLIPLoaderGGUF": ("clip_name1",
                                                                                             "clip_name2", "type"),
    "CLIPLoader": ("clip_name", "type", "device"), "CLIPLoaderGGUF": ("clip_name", "type"),
    "LoraLoader": ("lora_name", "strength_model", "strength_clip"), "LoraLoaderModelOnly": ("lora_name", "strength_model"),
    "DreamOLoader": ("dreamo_file",), "DreamOStageLoader": STAGE_WIDGETS,
    "DreamOPreprocessorLoader": ("face_detector", "background_remover", "download_missing_weights"),
}
UI_SKIPPED_MODES = (2, 4)  # muted, bypassed: not run, so not needed


NONE = "none"
STRENGTH_RANGE = (-10.0, 10.0)  # DreamOStageLoader's strength inputs (nodes/stage_loader.py STRENGTH; tested)
FILE_INPUTS = {"UNETLoader": ("unet_name",), "UnetLoaderGGUF": ("unet_name",), "CheckpointLoaderSimple": ("ckpt_name",),
               "CheckpointLoader": ("ckpt_name",), "VAELoader": ("vae_name",), "LoraLoader": ("lora_name",),
               "LoraLoaderModelOnly": ("lora_name",), "DreamOLoader": ("dreamo_file",),
               "DualCLIPLoader": ("clip_name1", "clip_name2"), "DualCLIPLoaderGGUF": ("clip_name1", "clip_name2"),
               "CLIPLoader": ("clip_name",), "CLIPLoaderGGUF": ("clip_name",),
               "DreamOStageLoader": tuple(n for n in STAGE_WIDGETS if n.endswith("_file")),
               "DreamOPreprocessorLoader": ("background_remover",)}


def _fix(at: str, name: str, problem: str, fix: str) -> WorkflowError:
    return WorkflowError(f"{at} input '{name}' {problem}; {fix}")


def _show(value) -> str:
    return repr(value[:60]) if isinstance(value, str) else str(value)[:60]


def check_values(cls: str, at: str, inputs: dict) -> None:
    """The literal values of a loader's inputs against the node's own options (a link, a list, is not checked):
    a file name is text, a choice is one of the node's choices, a strength a finite number in its range, a
    switch true/false. WorkflowError names the node, the input and the accepted values."""
    def literal(name):
        v = inputs.get(name)
        return None if v is None or isinstance(v, list) else v
    for name in FILE_INPUTS.get(cls, ()):
        v = literal(name)
        if v is not None and not isinstance(v, str):
            raise _fix(at, name, f"is {_show(v)}, not a file name", "pick the file again in "
                       "ComfyUI and save the workflow")
        parts = v.replace("\\", "/").split("/") if isinstance(v, str) else []
        if isinstance(v, str) and (v.startswith(("/", "\\")) or ":" in v[:3] or ".." in parts):
            raise _fix(at, name, f"is {_show(v)}, a path outside ComfyUI's model folders", "ComfyUI lists files "
                       "by their name inside a model folder; pick the file again in ComfyUI")
    choices = {}
    if cls == "DreamOStageLoader":
        choices["version"] = st.VERSIONS
        for stage in st.STAGES:
            name = f"{stage.name}_strength"
            v = literal(name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                                  or not STRENGTH_RANGE[0] <= v <= STRENGTH_RANGE[1]):
                raise _fix(at, name, f"is {_show(v)}", f"a strength is a number from {STRENGTH_RANGE[0]:g} to "
                           f"{STRENGTH_RANGE[1]:g} (official: {stage.strength:g})")
        switches = ("turbo",)
    elif cls == "DreamOPreprocessorLoader":
        choices["face_detector"] = tuple(DETECTORS) + (NONE,)
        switches = ("download_missing_weights",)
    else:
        switches = ()
    for name, options in choices.items():
        v = literal(name)
        if v is not None and v not in options:
            raise _fix(at, name, f"is {_show(v)}, not one of the node's options",
                       f"choose one of {', '.join(options)}")
    for name in switches:
        v = literal(name)
        if v is not None and not isinstance(v, bool):
            raise _fix(at, name, f"is {_show(v)}", "it is a switch: true or false")


def ui_to_api(workflow: dict) -> dict:
    """The loader nodes of a UI-format workflow (what the canvas saves) as API-format entries."""
    prompt = {}
    for i, node in enumerate(workflow.get("nodes", [])):
        if not isinstance(node, dict):
            raise WorkflowError(f"entry {i} of the workflow's 'nodes' is not a node (an object with type and "
                                "widgets_values): the file is damaged; save it again from ComfyUI.")
        kind, mode = node.get("type"), node.get("mode", 0)
        if not isinstance(kind, str) or kind not in UI_WIDGETS or mode in UI_SKIPPED_MODES:
            continue
        widgets = node.get("widgets_values")
        if not isinstance(widgets, list):
            raise WorkflowError(f"node {str(node.get('id'))[:20]} ({kind}) stores its values in a form this doctor "
                                "does not read; export the workflow in API format (Workflow > Export (API)).")
        prompt[str(node.get("id"))[:40]] = {"class_type": kind, "inputs": dict(zip(UI_WIDGETS[kind], widgets))}
    return prompt


def workflow_needs(prompt: dict) -> list[Need]:
    """Needs of a workflow, from the loaders it contains: API format ({node id: {class_type, inputs}}) or the
    UI format the canvas saves (its loader nodes' widget values). WorkflowError for anything else, and for a
    loader value the node would refuse."""
    if isinstance(prompt, dict) and isinstance(prompt.get("nodes"), list):
        prompt = ui_to_api(prompt)
    if not isinstance(prompt, dict):
        raise WorkflowError("not a ComfyUI workflow (API format: {node id: {class_type, inputs}}).")
    needs: list[Need] = []
    for node_id, node in sorted(prompt.items(), key=lambda kv: (len(str(kv[0])), str(kv[0]))):
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise WorkflowError(f"node '{str(node_id)[:40]}' has no class_type: not an API-format workflow.")
        cls, inputs = node["class_type"], node.get("inputs", {})
        at = f"{cls[:60]} #{str(node_id)[:40]}"
        if not isinstance(inputs, dict):
            raise WorkflowError(f"{at}: 'inputs' is {type(inputs).__name__}, not an object of input values: not "
                                "an API-format workflow.")
        check_values(cls, at, inputs)

        def value(name, default=None):
            v = inputs.get(name, default)
            return None if isinstance(v, list) else v  # a link, not a literal
        if cls in ("UNETLoader", "UnetLoaderGGUF") and value("unet_name"):
            needs.append(_file_need("FLUX.1-dev diffusion model", f"{at} 'unet_name'", ("diffusion_models",),
                                    value("unet_name"), "flux"))
        elif cls in ("CheckpointLoaderSimple", "CheckpointLoader") and value("ckpt_name"):
            needs.append(_file_need("FLUX.1-dev checkpoint", f"{at} 'ckpt_name'", ("checkpoints",),
                                    value("ckpt_name"), "flux"))
        elif cls in ("DualCLIPLoader", "DualCLIPLoaderGGUF", "CLIPLoader", "CLIPLoaderGGUF"):
            for key in ("clip_name1", "clip_name2", "clip_name"):
                if value(key):
                    needs.append(_file_need("text encoder", f"{at} '{key}'", ("text_encoders",), value(key),
                                            "text_encoder"))
        elif cls == "VAELoader" and value("vae_name") and "." in value("vae_name"):
            needs.append(_file_need("FLUX.1 VAE", f"{at} 'vae_name'", ("vae",), value("vae_name"), "vae"))
        elif cls in ("LoraLoader", "LoraLoaderModelOnly") and value("lora_name"):
            needs.append(_file_need("FLUX.1 LoRA", f"{at} 'lora_name'", ("loras",), value("lora_name"), "lora"))
        elif cls == "DreamOLoader" and value("dreamo_file"):
            needs.append(_file_need("DreamO embeddings", f"{at} 'dreamo_file'", st.WEIGHT_FOLDERS,
                                    value("dreamo_file"), "embeddings"))
        elif cls == "DreamOStageLoader":
            choices = {s.name: (value("dreamo_file" if s is st.MAIN else f"{s.name}_file", st.AUTO),
                                value(f"{s.name}_strength", s.strength)) for s in st.STAGES}
            needs += stage_needs(at, value("version", st.DEFAULT_VERSION), bool(value("turbo", True)), choices)
            emb = value("embedding_file", st.AUTO)
            if emb and emb != st.AUTO:
                needs.append(_file_need("DreamO embeddings", f"{at} 'embedding_file'", st.WEIGHT_FOLDERS, emb,
                                        "embeddings"))
        elif cls == "DreamOPreprocessorLoader":
            detector = value("face_detector", "retinaface_resnet50")
            if detector in DETECTORS:
                needs += face_needs(f"{at} 'face_detector'", detector)
            remover = value("background_remover", "none")
            if remover and remover != "none":
                need = remover_need(f"{at} 'background_remover'", remover)
                if session_name(remover) is None:
                    need.note = f"'{remover}' is not a background remover the pack can run. " + need.note
                needs.append(need)
    return needs
