"""The main job: run an example DreamO workflow end to end in a real ComfyUI server.

With your real models present (FLUX.1-dev, its text encoders and VAE, DreamO's v1.1 stage files and the
turbo LoRA in the ComfyUI models folders; for id_tryon also facexlib's weights) it runs
workflows/dreamo_<workflow>_api.json on them. Otherwise it says what is missing and runs
workflows/dreamo_install_check_api.json on tiny random models it generates: an install check that the pack
loads and its nodes work in your ComfyUI, not a picture worth looking at.

    python scripts/run_example.py [--workflow ip|id_tryon] [--image PATH] [--garment PATH] [--tiny] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))

from comfyui_runner import Sandbox, Server, comfyui_path  # noqa: E402

SHARED_REFS = os.path.join(os.path.dirname(REPO), "shared", "data", "refs")
DREAMO_FOLDERS = ("dreamo", "loras")
REAL_MODELS = [  # (folders it may sit in, file the real workflows name; None = a path containing "turbo")
    (("diffusion_models", "unet"), "flux1-dev.safetensors"),
    (("text_encoders", "clip"), "clip_l.safetensors"),
    (("text_encoders", "clip"), "t5xxl_fp16.safetensors"),
    (("vae",), "ae.safetensors"),
    (DREAMO_FOLDERS, "dreamo.safetensors"),
    (DREAMO_FOLDERS, "dreamo_cfg_distill.safetensors"),
    (DREAMO_FOLDERS, "dreamo_sft_lora.safetensors"),
    (DREAMO_FOLDERS, "dreamo_dpo_lora.safetensors"),
    (DREAMO_FOLDERS, None),
]
FACE_MODELS = [(("facexlib",), "detection_Resnet50_Final.pth"), (("facexlib",), "parsing_bisenet.pth")]
WORKFLOW_IMAGES = {"ip": {"reference.png": "perfume.png"},
                   "id_tryon": {"face.png": "woman1.png", "garment.png": "dress.png"}}


def _found(models: str, folders, name) -> bool:
    for folder in folders:
        for root, _, files in os.walk(os.path.join(models, folder)):
            for f in files:
                path = os.path.join(root, f)
                if (name is None and "turbo" in path.lower() and f.endswith(".safetensors")) or f == name:
                    return True
    return False


def missing_real_models(workflow: str) -> list[str]:
    models = os.path.join(comfyui_path(), "models")
    needed = REAL_MODELS + (FACE_MODELS if workflow == "id_tryon" else [])
    return [f"models/{folders[0]}/{name or '<a FLUX.1-Turbo-Alpha folder>/diffusion_pytorch_model.safetensors'}"
            for folders, name in needed if not _found(models, folders, name)]


def default_image(name: str = "perfume.png") -> str:
    candidate = os.path.join(SHARED_REFS, name)
    if os.path.isfile(candidate):
        return candidate
    from PIL import Image, ImageDraw  # a plain drawn subject when the sample photos are not beside the repo
    path = os.path.join(tempfile.mkdtemp(), "reference.png")
    img = Image.new("RGB", (320, 320), "white")
    ImageDraw.Draw(img).ellipse((60, 40, 260, 290), fill=(180, 40, 60), outline=(20, 20, 20), width=6)
    img.save(path)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflow", choices=sorted(WORKFLOW_IMAGES), default="ip",
                        help="ip: one subject reference; id_tryon: a face (id) wearing a garment (ip)")
    parser.add_argument("--image", help="the (first) reference picture (default: a sample photo)")
    parser.add_argument("--garment", help="id_tryon: the garment picture (default: a sample photo)")
    parser.add_argument("--tiny", action="store_true", help="run the install check even if real models exist")
    parser.add_argument("--keep", help="folder to keep the sandbox (server log, outputs) in")
    args = parser.parse_args(argv)

    missing = missing_real_models(args.workflow)
    tiny = args.tiny or bool(missing)
    if tiny and missing and not args.tiny:
        print("Real models not found (missing: " + ", ".join(missing) + ").")
        print("Running the INSTALL CHECK on tiny generated models instead: it proves the pack works in this "
              "ComfyUI; the picture is noise.")
    root = args.keep or tempfile.mkdtemp(prefix="dreamo_example_")
    sandbox = Sandbox(root, isolated=tiny, test_nodes=tiny).prepare()
    images = WORKFLOW_IMAGES["ip" if tiny else args.workflow]  # input file name -> sample photo
    for (target, sample), given in zip(images.items(), (args.image, args.garment)):
        shutil.copy(given or default_image(sample), os.path.join(sandbox.input_dir, target))
    workflow = "dreamo_install_check_api.json" if tiny else f"dreamo_{args.workflow}_api.json"
    prompt = json.load(open(os.path.join(REPO, "workflows", workflow)))
    if tiny:
        import tiny_models
        os.makedirs(os.path.join(sandbox.models_dir, "dreamo"), exist_ok=True)
        tiny_models.write_dreamo_file(os.path.join(sandbox.models_dir, "dreamo", "dreamo_tiny.safetensors"))

    print(f"Starting ComfyUI from {comfyui_path()} (sandbox {root}) ...", flush=True)
    with Server(sandbox) as server:
        print(f"Queueing workflows/{workflow} on {server.url} ...", flush=True)
        result = server.run(prompt, timeout=3600 if not tiny else 600)
    if result["status"] != "success":
        print(f"Workflow failed ({result['status']}): {json.dumps(result['error'], indent=1)}")
        print(f"Server log: {os.path.join(root, 'server.log')}")
        return 1
    for path in server.image_paths(result["outputs"]):
        print(f"Saved {path}")
    print("OK: " + ("install check passed." if tiny else "DreamO workflow finished."))
    return 0


if __name__ == "__main__":
    sys.exit(main())
