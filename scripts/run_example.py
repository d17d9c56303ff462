"""The main job: run an example DreamO workflow end to end in a real ComfyUI server.

With your real models present (FLUX.1-dev, its text encoders and VAE, and dreamo.safetensors in the ComfyUI
models folders) it runs workflows/dreamo_ip_api.json on them. Otherwise it says so and runs
workflows/dreamo_install_check_api.json on tiny random models it generates: an install check that the pack
loads and its nodes work in your ComfyUI, not a picture worth looking at.

    python scripts/run_example.py [--image PATH] [--tiny] [--keep DIR]
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
REAL_MODELS = [  # (folders it may sit in, file the real workflow names)
    (("diffusion_models", "unet"), "flux1-dev.safetensors"),
    (("text_encoders", "clip"), "clip_l.safetensors"),
    (("text_encoders", "clip"), "t5xxl_fp16.safetensors"),
    (("vae",), "ae.safetensors"),
    (("dreamo", "loras"), "dreamo.safetensors"),
]


def missing_real_models() -> list[str]:
    models = os.path.join(comfyui_path(), "models")
    missing = []
    for folders, name in REAL_MODELS:
        if not any(os.path.isfile(os.path.join(models, f, name)) for f in folders):
            missing.append(f"models/{folders[0]}/{name}")
    return missing


def default_image() -> str:
    candidate = os.path.join(SHARED_REFS, "perfume.png")
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
    parser.add_argument("--image", help="reference picture (default: a sample photo)")
    parser.add_argument("--tiny", action="store_true", help="run the install check even if real models exist")
    parser.add_argument("--keep", help="folder to keep the sandbox (server log, outputs) in")
    args = parser.parse_args(argv)

    missing = missing_real_models()
    tiny = args.tiny or bool(missing)
    if tiny and missing and not args.tiny:
        print("Real models not found (missing: " + ", ".join(missing) + ").")
        print("Running the INSTALL CHECK on tiny generated models instead: it proves the pack works in this "
              "ComfyUI; the picture is noise.")
    root = args.keep or tempfile.mkdtemp(prefix="dreamo_example_")
    sandbox = Sandbox(root, isolated=tiny, test_nodes=tiny).prepare()
    shutil.copy(args.image or default_image(), os.path.join(sandbox.input_dir, "reference.png"))
    workflow = "dreamo_install_check_api.json" if tiny else "dreamo_ip_api.json"
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
