"""A real ComfyUI server in a sandbox with the pack, the test-only tiny-model nodes and tiny model files."""
from __future__ import annotations

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
REFS = os.path.join(os.path.dirname(REPO), "shared", "data", "refs")


def install_check_prompt() -> dict:
    """The install-check API workflow (tiny models through the test-only nodes)."""
    return json.load(open(os.path.join(REPO, "tests", "workflows", "dreamo_install_check_api.json")))


def drawn_regions_prompt(boxes: dict, width: int = 192, height: int = 128) -> dict:
    """The tiny multi-subject workflow with regions drawn (DreamO Routing's drawn_regions, boxes {slot: [x, y, w,
    h]} on a width × height picture) instead of connected masks, and the test node that reports the regions
    DreamO Routing used (node "40")."""
    prompt = json.load(open(os.path.join(REPO, "tests", "workflows", "dreamo_multi_subject_tiny_api.json")))
    routing = prompt["23"]["inputs"]
    del routing["region_1"], routing["region_2"]
    routing["drawn_regions"] = json.dumps({"width": width, "height": height,
                                           "boxes": {str(k): v for k, v in boxes.items()}})
    prompt["40"] = {"class_type": "DreamOTestRoutingRegions", "inputs": {"model": ["23", 0]}}
    return prompt


def start(root: str, images: dict[str, str] | None = None, prepare=None):
    """Start a server in `root` with tiny DreamO files; `images` maps input names to sample photos in REFS;
    `prepare(sandbox)`, when given, adds files to the sandbox before the server starts."""
    from comfyui_runner import Server

    return Server(sandbox(root, images, prepare)).start()


def sandbox(root: str, images: dict[str, str] | None = None, prepare=None):
    """The sandbox `start` runs a server in, made but not started (the Ray tests' workers start their own)."""
    from PIL import Image

    import tiny_models
    from comfyui_runner import Sandbox

    box = Sandbox(root, isolated=True, test_nodes=True).prepare()
    os.makedirs(os.path.join(box.models_dir, "dreamo"), exist_ok=True)
    tiny_models.write_dreamo_file(os.path.join(box.models_dir, "dreamo", "dreamo_tiny.safetensors"))
    for target, sample in (images or {"reference.png": "perfume.png"}).items():
        source = os.path.join(REFS, sample)
        img = Image.open(source).convert("RGB") if os.path.isfile(source) else Image.new("RGB", (300, 300), "red")
        img.save(os.path.join(box.input_dir, target))
    if prepare is not None:
        prepare(box)
    return box
