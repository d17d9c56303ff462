"""Regional prompts in the real ComfyUI frontend (headless Debian Chromium, real server, tiny models): two boxes drawn
on DreamO Routing with the mouse, each region's words typed into the field under the editor, queued from the canvas,
and read back from /history: the routing used exactly those boxes and those words (and captured where each
region's words went). The saved workflow without the extensions (plain text field) queues the same prompt.
Screenshots go to $DREAMO_ARTIFACTS (default: pytest's tmp folder), never the repo."""
import json
import os

import pytest
import requests

from dreamo_testkit import REPO, kit_workflow
from dreamo_testkit.browser import click_button, drag, page_without, stored

# the shared server's reference.png and reference2.png are these two (conftest.py: server)
pytestmark = [pytest.mark.host, pytest.mark.server, pytest.mark.photos("perfume.png", "cat.png")]

WORKFLOW = os.path.join(REPO, "workflows", "api", "dreamo_regional_api.json")
ROUTING, REPORT, MAP = 23, 90, 24
WORDS = {"1": "an old man in a grey coat [ref#1]", "2": "a girl in a yellow raincoat [ref#2], smiling"}


def workflow():
    """The example regional workflow on tiny models, its id references made ip (no face models in this sandbox),
    nothing drawn, and the test node reporting the region prompts and what the routing captured."""
    from dreamo_testkit import tiny_workflows

    prompt, _ = tiny_workflows.tiny_prompt(json.load(open(WORKFLOW)))
    del prompt["8"]  # the face preprocessor
    for encode, image in (("11", "reference.png"), ("13", "reference2.png")):
        prompt[encode]["inputs"].update(task="ip", resolution=64, id_fallback="ip")
        del prompt[encode]["inputs"]["preprocessor"]
        prompt[str(prompt[encode]["inputs"]["image"][0])]["inputs"]["image"] = image
    tiny = json.load(open(kit_workflow("dreamo_multi_subject_tiny_api.json")))
    prompt["4"]["inputs"] = {**tiny["3"]["inputs"], "model": prompt["4"]["inputs"]["model"]}  # the tiny DreamO file
    prompt["23"]["inputs"]["drawn_regions"] = ""
    prompt[str(REPORT)] = {"class_type": "DreamOTestRegionPrompts",
                           "inputs": {"positive": ["32", 1], "model": ["32", 0], "latent": ["33", 0]}}
    return prompt


def arrange(page):
    page.js("""() => { let far = 0;
        for (const n of app.graph._nodes) n.pos = [1700 + 10 * far, 60 + 40 * far++];
        app.graph.getNodeById(23).pos = [80, 60]; app.graph.getNodeById(24).pos = [560, 60];
        app.canvas.ds.scale = 1; app.canvas.ds.offset = [0, 0]; app.canvas.setDirty(true, true); }""")
    page.settle(300)


def type_words(page, words):
    field = page.page.locator("textarea.dreamo-region-words")
    field.click()
    field.fill(words)
    page.settle(150)


def history_run(page, server, drawn):
    for _ in range(900):
        history = requests.get(f"{server.url}/history", timeout=10).json()
        runs = [h for h in history.values() if h["prompt"][2].get("23", {}).get("inputs", {}).get("drawn_regions")
                == drawn and h.get("status", {}).get("completed")]
        if runs:
            return runs
        page.page.wait_for_timeout(200)
    return []


def test_draw_two_boxes_type_their_words_queue_and_read_back(page, browser, server, artifacts):
    from dreamo_testkit import tiny_workflows

    page.load_api(workflow())
    arrange(page)
    preview = page.js("() => app.graph.getNodeById(23).dreamoRegionEditor.previewSize().slice(0, 2)")
    width, height = preview
    size = json.load(open(WORKFLOW))["6"]["inputs"]
    assert preview == [tiny_workflows._tiny_size(size["width"]), tiny_workflows._tiny_size(size["height"])]
    # The field follows the chosen slot: its caption names region 1 first.
    assert "region 1" in page.page.locator("textarea.dreamo-region-words").get_attribute("placeholder")

    # Box 1 on the left, its words; then slot 2, box 2 on the right, its words.
    drag(page, ROUTING, (2, 2), (width // 2 - 2, height - 2))
    type_words(page, WORDS["1"])
    click_button(page, ROUTING, 2)
    assert page.page.locator("textarea.dreamo-region-words").input_value() == ""
    drag(page, ROUTING, (width // 2 + 2, 2), (width - 2, height - 2))
    type_words(page, WORDS["2"])
    drawn = stored(page, ROUTING)
    assert set(drawn["boxes"]) == {"1", "2"} and drawn["texts"] == WORDS
    click_button(page, ROUTING, 1)  # back on slot 1: the field shows region 1's words again
    assert page.page.locator("textarea.dreamo-region-words").input_value() == WORDS["1"]
    page.show([ROUTING], os.path.join(artifacts, "regional_words_typed.png"), below=20)

    # The canvas queues the node's own inputs: drawn_regions holds boxes and words; the field is not queued.
    prompt = page.prompt()
    routing = prompt["23"]["inputs"]
    assert "dreamo_region_words" not in routing and "dreamo_region_editor" not in routing
    assert json.loads(routing["drawn_regions"]) == drawn
    # Without the extensions the saved workflow is a plain text field with the same text: the same prompt.
    saved = page.js("() => app.graph.serialize()")
    with page_without(browser, server, ["DreamO.RegionEditor", "DreamO.RegionWords"], saved) as bare:
        assert bare.js("() => document.querySelectorAll('textarea.dreamo-region-words').length") == 0
        assert bare.prompt() == prompt

    page.js("async () => { await app.queuePrompt(0, 1); }")
    runs = history_run(page, server, routing["drawn_regions"])
    assert len(runs) == 1 and runs[0]["status"]["status_str"] == "success", runs[0]["status"] if runs else None
    report = json.loads(runs[0]["outputs"][str(REPORT)]["dreamo_region_prompts"][0])
    (entry,) = report["entries"]
    prompts = entry["regions"]["prompts"]
    assert [p["text"] for p in prompts] == [WORDS["1"], WORDS["2"]]  # exactly the words typed
    for p in prompts:  # exactly the boxes drawn, as the areas of the words and of the references
        x, y, w, h = drawn["boxes"][str(p["index"])]
        assert p["area"] == {"shape": [height, width], "box": [x, y, x + w, y + h], "ones": w * h}
        assert report["routing"][str(p["index"])]["box"] == [x, y, x + w, y + h]
    assert report["captured"] == [1, 2, "region 1", "region 2"]
    assert report["labels"]["region 1"].startswith("region 1: an old man")
    page.page.wait_for_function("() => (app.graph.getNodeById(24).imgs ?? []).length > 0", timeout=60000)
    page.show([ROUTING, MAP], os.path.join(artifacts, "regional_routing_map.png"), below=40)
