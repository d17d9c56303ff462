"""The multi-subject routing workflow end to end in a real ComfyUI server (POST /prompt) on tiny models: the
image and the routing maps are saved, and the test reads the maps back."""
import json
import os
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.host, pytest.mark.server]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
REFS = os.path.join(os.path.dirname(REPO), "shared", "data", "refs")
WORKFLOW = os.path.join(REPO, "tests", "workflows", "dreamo_multi_subject_tiny_api.json")
SAVE_MAP_TO = os.environ.get("DREAMO_SAVE_ROUTING_MAP")  # copy the overlay there (the README picture)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import tiny_models
    from comfyui_runner import Sandbox, Server

    sandbox = Sandbox(str(tmp_path_factory.mktemp("comfy")), isolated=True, test_nodes=True).prepare()
    os.makedirs(os.path.join(sandbox.models_dir, "dreamo"))
    tiny_models.write_dreamo_file(os.path.join(sandbox.models_dir, "dreamo", "dreamo_tiny.safetensors"))
    for name, source, colour in (("reference.png", "perfume.png", (200, 30, 30)),
                                 ("reference2.png", "cat.png", (30, 30, 200))):
        path = os.path.join(REFS, source)
        img = Image.open(path).convert("RGBA") if os.path.isfile(path) else Image.new("RGBA", (300, 300), colour)
        img.save(os.path.join(sandbox.input_dir, name))
    srv = Server(sandbox).start()
    yield srv
    srv.stop()


def by_prefix(server, outputs, prefix):
    return sorted(p for p in server.image_paths(outputs) if os.path.basename(p).startswith(prefix + "_0"))


def test_multi_subject_workflow_saves_image_and_routing_maps(server):
    prompt = json.load(open(WORKFLOW))
    result = server.run(prompt, timeout=600)
    assert result["status"] == "success", result["error"]
    outs = result["outputs"]
    image = by_prefix(server, outs, "dreamo_multi_subject_tiny")
    overlay = by_prefix(server, outs, "dreamo_multi_subject_tiny_routing")
    masks = by_prefix(server, outs, "dreamo_multi_subject_tiny_routing_mask")
    assert len(image) == 1 and len(overlay) == 1 and len(masks) == 2
    pic = np.asarray(Image.open(image[0]).convert("RGB")).astype(np.int32)
    over = np.asarray(Image.open(overlay[0]).convert("RGB")).astype(np.int32)
    assert pic.shape == over.shape == (128, 192, 3) and np.abs(pic - over).mean() > 5
    m1, m2 = (np.asarray(Image.open(p).convert("L")).astype(np.float32) / 255 for p in masks)
    assert m1.shape == m2.shape == (128, 192)
    # hard routing: reference 1 (left region) puts no attention on the right half, reference 2 none on the left
    assert m1[:, 96:].max() == 0 and m1[:, :96].max() == 1.0
    assert m2[:, :96].max() == 0 and m2[:, 96:].max() == 1.0
    if SAVE_MAP_TO:
        shutil.copyfile(overlay[0], SAVE_MAP_TO)


def test_a_region_for_an_empty_slot_is_reported(server):
    prompt = json.load(open(WORKFLOW))
    prompt["23"]["inputs"]["region_3"] = ["21", 0]
    result = server.run(prompt, timeout=600)
    assert result["status"] == "error" and result["error"]["node_type"] == "KSampler"
    assert "DreamORouting (input 'region_3')" in result["error"]["exception_message"]


def test_routing_nodes_are_registered(server):
    info = server.object_info("DreamORouting")["DreamORouting"]
    assert list(info["input"]["optional"]) == [f"region_{i}" for i in range(1, 10)]
    assert info["output"] == ["MODEL"]
    info = server.object_info("DreamORoutingMap")["DreamORoutingMap"]
    assert info["output"] == ["MASK", "IMAGE"] and list(info["input"]["optional"]) == ["image"]


def test_ui_workflow_gives_the_same_prompt_as_the_api_file(server):
    """workflows/dreamo_multi_subject.json (UI format, made by the real frontend from the API file) queues exactly
    what workflows/api/dreamo_multi_subject_api.json does."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (pip) is not installed")
    from export_ui_workflows import CHROMIUM, open_frontend

    if not os.path.isfile(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    ui = json.load(open(os.path.join(REPO, "workflows", "dreamo_multi_subject.json")))
    api = json.load(open(os.path.join(REPO, "workflows", "api", "dreamo_multi_subject_api.json")))
    with sync_api.sync_playwright() as p:
        browser, page = open_frontend(p, server.url)
        prompt = page.evaluate("async (wf) => { await app.loadGraphData(wf); return (await app.graphToPrompt()).output; }",
                               ui)
        browser.close()
    assert {k: (v["class_type"], v["inputs"]) for k, v in prompt.items()} == \
        {k: (v["class_type"], v["inputs"]) for k, v in api.items()}
    titles = {v["_meta"]["title"] for v in api.values()}
    assert {"ref 1 image", "ref 2 image", "ref 1 encode", "ref 2 encode", "prompt", "sampler", "size", "shift",
            "output"} <= titles
