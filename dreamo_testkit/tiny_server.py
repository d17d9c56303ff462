"""A real ComfyUI server in a sandbox with the pack, the test-only tiny-model nodes and tiny model files."""
from __future__ import annotations

import json
import os

from . import kit_workflow


def install_check_prompt() -> dict:
    """The install-check API workflow (tiny models through the test-only nodes)."""
    return json.load(open(kit_workflow("dreamo_install_check_api.json")))


def drawn_regions_prompt(boxes: dict, width: int = 192, height: int = 128) -> dict:
    """The tiny multi-subject workflow with regions drawn (DreamO Routing's drawn_regions, boxes {slot: [x, y, w,
    h]} on a width × height picture) instead of connected masks, and the test node that reports the regions
    DreamO Routing used (node "40")."""
    prompt = json.load(open(kit_workflow("dreamo_multi_subject_tiny_api.json")))
    routing = prompt["23"]["inputs"]
    del routing["region_1"], routing["region_2"]
    routing["drawn_regions"] = json.dumps({"width": width, "height": height,
                                           "boxes": {str(k): v for k, v in boxes.items()}})
    prompt["40"] = {"class_type": "DreamOTestRoutingRegions", "inputs": {"model": ["23", 0]}}
    return prompt


def drawn_picture(path: str, size=(300, 300)) -> str:
    """The picture of tests that never look at what it shows: a drawn bottle-like shape on a plain ground."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, (150, 170, 190))
    w, h = size
    ImageDraw.Draw(img).ellipse((w // 5, h // 8, 4 * w // 5, 7 * h // 8), fill=(180, 40, 60), outline=(20, 20, 20),
                                width=max(1, w // 50))
    img.save(path)
    return path


def start(root: str, images: dict[str, str] | None = None, prepare=None):
    """Start a server in `root` with tiny DreamO files.

    `images` maps input names to test photos (dreamo_testkit/photos.py): a missing photo skips the calling test with the
    variable to set (fails it in CI); nothing stands in for it. Without `images` the input folder holds one drawn
    picture, reference.png, for tests that do not look at what the picture shows. `prepare(sandbox)`, when given,
    adds files to the sandbox before the server starts."""
    from .comfyui_runner import Server

    return Server(sandbox(root, images, prepare)).start()


def sandbox(root: str, images: dict[str, str] | None = None, prepare=None):
    """The sandbox `start` runs a server in, made but not started (the Ray tests' workers start their own)."""
    from . import photos

    sources = {target: photos.photo(name) for target, name in (images or {}).items()}  # skips before any work
    from PIL import Image

    from . import tiny_models
    from .comfyui_runner import Sandbox

    box = Sandbox(root, isolated=True, test_nodes=True).prepare()
    os.makedirs(os.path.join(box.models_dir, "dreamo"), exist_ok=True)
    tiny_models.write_dreamo_file(os.path.join(box.models_dir, "dreamo", "dreamo_tiny.safetensors"))
    if images is None:
        drawn_picture(os.path.join(box.input_dir, "reference.png"))
    for target, source in sources.items():
        Image.open(source).convert("RGB").save(os.path.join(box.input_dir, target))
    if prepare is not None:
        prepare(box)
    return box


def shared_sandbox(root: str):
    """The sandbox of the session's shared server (tests/conftest.py's `session_server`): the pack, the test-only
    nodes and every tiny model file the example workflows need, and in its input folder every sample photo found
    (under its own name) plus the names the tiny workflows read: reference.png (perfume.png as RGBA, as the routing
    tests load it; a drawn picture without the photos), reference2.png (cat.png as RGBA) and other.png (cat.png).
    A test that needs a photo requires it itself (a skip naming DREAMO_REFS_DIR); nothing here skips.
    Returns (sandbox, {what: why not} for the optional model files that could not be made)."""
    import shutil

    from PIL import Image

    from . import photos, template_files, tiny_models, tiny_workflows
    from .comfyui_runner import Sandbox

    box = Sandbox(root, isolated=True, test_nodes=True).prepare()
    os.makedirs(os.path.join(box.models_dir, "dreamo"), exist_ok=True)
    tiny_models.write_dreamo_file(os.path.join(box.models_dir, "dreamo", "dreamo_tiny.safetensors"))
    unavailable = tiny_workflows.write_model_files(box.models_dir)
    template_files.write_menu_files(box.models_dir)  # what the templates' loaders pick, listed as for a user
    folder = photos.refs_dir()
    found = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    for name in found:
        if os.path.isfile(os.path.join(folder, name)):
            shutil.copy(os.path.join(folder, name), os.path.join(box.input_dir, name))
    if "perfume.png" in found:
        perfume = Image.open(os.path.join(folder, "perfume.png"))
        perfume.convert("RGBA").save(os.path.join(box.input_dir, "reference.png"))
    else:
        drawn_picture(os.path.join(box.input_dir, "reference.png"))
    if "cat.png" in found:
        cat = Image.open(os.path.join(folder, "cat.png"))
        cat.convert("RGBA").save(os.path.join(box.input_dir, "reference2.png"))
        cat.convert("RGB").save(os.path.join(box.input_dir, "other.png"))
    return box, unavailable


def start_shared(root: str):
    """Start the session's shared server (see shared_sandbox); its `unavailable` says which optional model files
    are missing."""
    from .comfyui_runner import Server

    box, unavailable = shared_sandbox(root)
    srv = Server(box).start()
    srv.unavailable = unavailable
    return srv
