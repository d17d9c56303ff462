"""The multi-subject routing workflow end to end in a real ComfyUI server (POST /prompt) on tiny models: the
image and the routing maps are saved, and the test reads the maps back."""
import io
import json
import os
import shutil

import numpy as np
import pytest
import requests
from PIL import Image

from dreamo_testkit import REPO, kit_workflow

# the shared server's reference.png and reference2.png are these two (conftest.py: server)
pytestmark = [pytest.mark.host, pytest.mark.server, pytest.mark.photos("perfume.png", "cat.png")]

WORKFLOW = kit_workflow("dreamo_multi_subject_tiny_api.json")
SAVE_MAP_TO = os.environ.get("DREAMO_SAVE_ROUTING_MAP")  # copy the overlay there (the README picture)


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
    # DreamO Apply comes before DreamO Routing here: the routing node itself stops, so the error points at it.
    assert result["status"] == "error" and result["error"]["node_type"] == "DreamORouting"
    assert result["error"]["node_id"] == "23"
    assert result["error"]["exception_message"].startswith(
        "DreamORouting (input 'region_3'): slot 3 has a region but DreamO Apply has no reference in ref_3")


def test_routing_nodes_are_registered(server):
    info = server.object_info("DreamORouting")["DreamORouting"]
    optional = list(info["input"]["optional"])
    assert optional[:14] == [f"region_{i}" for i in range(1, 10)] + ["drawn_regions", "base_placeholders_follow",
                                                                     "positive", "clip", "dreamo"]
    assert optional[14:] in ([], ["bboxes"])  # core's BOUNDING_BOX where the release has it (0.33+)
    # The region editor's slot colours come from the routing map's legend colours (one source).
    from comfyui_dreamo.dreamo_ops.routing_map import SLOT_COLOURS

    options = info["input"]["optional"]["drawn_regions"][1]
    assert options["default"] == ""
    assert options["dreamo_slot_colours"] == {str(k): "#%02x%02x%02x" % rgb for k, rgb in SLOT_COLOURS.items()}
    assert info["output"] == ["MODEL", "CONDITIONING"]
    info = server.object_info("DreamORoutingMap")["DreamORoutingMap"]
    assert info["output"] == ["MASK", "IMAGE"] and list(info["input"]["optional"]) == ["image"]


@pytest.mark.browser
def test_ui_workflow_gives_the_same_prompt_as_the_api_file(page):
    """The multi-subject template (UI format, made by the real frontend from the API file) queues exactly
    what workflows/api/dreamo_multi_subject_api.json does."""
    from dreamo_testkit import template_files

    ui = json.load(open(template_files.ui_path("dreamo_multi_subject")))
    api = json.load(open(os.path.join(REPO, "workflows", "api", "dreamo_multi_subject_api.json")))
    prompt = page.js("async (wf) => { await app.loadGraphData(wf); return (await app.graphToPrompt()).output; }", ui)
    assert {k: (v["class_type"], v["inputs"]) for k, v in prompt.items()} == \
        {k: (v["class_type"], v["inputs"]) for k, v in api.items()}
    titles = {v["_meta"]["title"] for v in api.values()}
    assert {"ref 1 image", "ref 2 image", "ref 1 encode", "ref 2 encode", "prompt", "sampler", "size", "shift",
            "output"} <= titles


def drawn_workflow(boxes, width=192, height=128):
    from dreamo_testkit import tiny_server

    return tiny_server.drawn_regions_prompt(boxes, width, height)


def test_drawn_regions_route_like_masks_and_the_map_is_shown_on_its_node(server):
    boxes = {1: [0, 0, 80, 128], 2: [112, 32, 80, 64]}  # on the 16-pixel token grid of the 192×128 image
    result = server.run(drawn_workflow(boxes), timeout=600)
    assert result["status"] == "success", result["error"]
    outs = result["outputs"]
    used = json.loads(outs["40"]["dreamo_regions"][0])
    for slot, (x, y, w, h) in boxes.items():
        region = used[str(slot)]
        assert region["source"] == "drawn_regions" and region["shape"] == [128, 192]
        assert region["box"] == [x, y, x + w, y + h]
        assert region["ones"] == w * h and region["zeros"] == 128 * 192 - w * h  # a filled 0/1 rectangle
    masks = by_prefix(server, outs, "dreamo_multi_subject_tiny_routing_mask")
    m1, m2 = (np.asarray(Image.open(p).convert("L")).astype(np.float32) / 255 for p in masks)
    # hard routing: each reference's attention stays inside its drawn rectangle
    for m, (x, y, w, h) in ((m1, boxes[1]), (m2, boxes[2])):
        inside = np.zeros_like(m, dtype=bool)
        inside[y:y + h, x:x + w] = True
        assert m[~inside].max() == 0 and m[inside].max() == 1.0
    # DreamO Routing Map shows its overlay on the node: a temp picture in the history, equal to the saved one.
    shown = outs["24"]["images"]
    assert len(shown) == 1 and shown[0]["type"] == "temp"
    saved = by_prefix(server, outs, "dreamo_multi_subject_tiny_routing")
    view = requests.get(f"{server.url}/view", params=shown[0], timeout=10)  # as the frontend fetches it
    assert view.ok
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(view.content)).convert("RGB")),
                          np.asarray(Image.open(saved[0]).convert("RGB")))
    # Queued again, everything comes from the cache: the picture is still in that run's history (on 0.33 only
    # because the node declares HAS_INTERMEDIATE_OUTPUT), so the node still shows it.
    again = server.run(drawn_workflow(boxes), timeout=600)
    assert again["status"] == "success", again["error"]
    assert again["outputs"]["24"]["images"] == shown


def test_a_connected_region_wins_over_the_drawn_box(server):
    prompt = drawn_workflow({1: [96, 0, 96, 128], 2: [0, 0, 96, 128]})
    prompt["23"]["inputs"]["region_1"] = ["21", 0]  # the left half, connected
    prompt["10"]["inputs"]["steps"] = 1
    result = server.run(prompt, timeout=600)
    assert result["status"] == "success", result["error"]
    used = json.loads(result["outputs"]["40"]["dreamo_regions"][0])
    assert used["1"]["source"] == "region_1" and used["1"]["box"] == [0, 0, 64, 128]  # the 128×128 mask's left half
    assert used["2"]["source"] == "drawn_regions" and used["2"]["box"] == [0, 0, 96, 128]


def test_bad_drawn_regions_are_reported_by_name(server):
    prompt = drawn_workflow({})
    prompt["23"]["inputs"]["drawn_regions"] = '{"width": 192, "height": 128, "boxes": {"3": [0, 0, 10, 10]}}'
    result = server.run(prompt, timeout=600)
    assert result["status"] == "error" and result["error"]["node_type"] == "DreamORouting"
    assert "DreamORouting (input 'drawn_regions'): slot 3 has a region but DreamO Apply has no reference in ref_3" \
        in result["error"]["exception_message"]
    prompt["23"]["inputs"]["drawn_regions"] = '{"width": 192, "height": 128, "boxes": {"1": [0, 0, -5, 10]}}'
    result = server.run(prompt, timeout=600)
    assert result["status"] == "error" and result["error"]["node_type"] == "DreamORouting"
    assert "the box of slot 1 is empty or negative" in result["error"]["exception_message"]
