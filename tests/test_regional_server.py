"""Regional prompts in a real ComfyUI server (POST /prompt, /history), tiny models: the example workflow
workflows/api/dreamo_regional_api.json as users get it (tiny files under the official names), the same layout
built from core nodes (ConditioningSetMask + ConditioningCombine) through DreamO Regional Conditioning, and what
that path cannot keep, reported by name in /history."""
import json
import os
import shutil

import pytest
import requests

from dreamo_testkit import REPO

pytestmark = [pytest.mark.host, pytest.mark.server]

WORKFLOW = os.path.join(REPO, "workflows", "api", "dreamo_regional_api.json")
MAP = "24"  # DreamO Routing Map
REPORT = "90"  # the test-only node reporting the region prompts and what the routing captured
SIZE = (320, 192)  # the example's 1280×768, a quarter of each side: the routing map's legend stays legible
SAVE_MAP_TO = os.environ.get("DREAMO_SAVE_REGIONAL_MAP")  # copy the routing map there (the README picture)


@pytest.fixture(scope="module")
def server(session_server):
    """The session's shared tiny server (conftest.py): the example workflow's photos and tiny model files."""
    from dreamo_testkit import photos, tiny_workflows

    photos.require(*tiny_workflows.input_images(json.load(open(WORKFLOW))))
    if "face models (id references)" in session_server.unavailable:
        pytest.skip(session_server.unavailable["face models (id references)"])
    return session_server


def tiny_regional():
    """The example workflow on tiny models, plus the report node (after the sampler)."""
    from dreamo_testkit import tiny_workflows

    prompt, _ = tiny_workflows.tiny_prompt(json.load(open(WORKFLOW)))
    for node in ("5", "6"):  # shift and size
        prompt[node]["inputs"].update(width=SIZE[0], height=SIZE[1])
    prompt[REPORT] = {"class_type": "DreamOTestRegionPrompts",
                      "inputs": {"positive": ["32", 1], "model": ["32", 0], "latent": ["33", 0]}}
    return prompt


def report(result):
    return json.loads(result["outputs"][REPORT]["dreamo_region_prompts"][0])


def test_regional_workflow_through_post_prompt(server):
    prompt = tiny_regional()
    drawn = json.loads(prompt["23"]["inputs"]["drawn_regions"])
    result = server.run(prompt, timeout=600)
    assert result["status"] == "success", json.dumps(result["error"], indent=1)[:3000]
    (entry,) = report(result)["entries"]
    regions = entry["regions"]
    w, h = drawn["width"], drawn["height"]
    assert [p["index"] for p in regions["prompts"]] == [1, 2]
    for p in regions["prompts"]:
        x, y, bw, bh = drawn["boxes"][str(p["index"])]
        assert p["text"] == drawn["texts"][str(p["index"])] and p["source"] == "drawn_regions"
        assert p["area"] == {"shape": [h, w], "box": [x, y, x + bw, y + bh], "ones": bw * bh}
    # appended after the base prompt (512 T5 tokens), each only as long as its words
    assert regions["base_length"] == 512 and regions["prompts"][0]["start"] == 512
    assert entry["tokens"] == 512 + sum(p["length"] for p in regions["prompts"]) < 512 + 2 * 32
    assert regions["follow"] and sorted(s for _, s in regions["placeholders"]) == [1, 2]
    # the sampling routed (and captured) both references and both regions' words, named by their words
    out = report(result)
    assert out["captured"] == [1, 2, "region 1", "region 2"]
    assert out["labels"]["region 2"].startswith("region 2: a young woman [ref#2]")
    assert {k: v["box"] for k, v in out["routing"].items()} == {
        k: [x, y, x + bw, y + bh] for k, (x, y, bw, bh) in drawn["boxes"].items()}
    # the routing map is shown on its node (a temp picture), as the template shows it
    (overlay,) = result["outputs"][MAP]["images"]
    assert overlay["type"] == "temp"
    if SAVE_MAP_TO:
        shutil.copyfile(os.path.join(server.sandbox.root, "temp", "temp", overlay.get("subfolder", ""),
                                     overlay["filename"]), SAVE_MAP_TO)


def core_regional(prompt):
    """The same layout with core nodes: a DreamO Text Encode per region → ConditioningSetMask (a box drawn with
    SolidMask + MaskComposite) → ConditioningCombine → DreamO Regional Conditioning; no words on DreamO Routing."""
    drawn = json.loads(prompt["23"]["inputs"]["drawn_regions"])
    w, h = drawn["width"], drawn["height"]
    size = prompt["6"]["inputs"]
    combined = ["31", 0]
    for k in ("1", "2"):
        x, y, bw, bh = drawn["boxes"][k]
        n = 100 + 10 * int(k)
        prompt[str(n)] = {"class_type": "DreamOTextEncode", "inputs": {
            "clip": ["3", 0], "dreamo": ["4", 1], "text": drawn["texts"][k], "t5_length": "minimal",
            "add_style_instruction": False}}
        prompt[str(n + 1)] = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": w, "height": h}}
        prompt[str(n + 2)] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": bw, "height": bh}}
        prompt[str(n + 3)] = {"class_type": "MaskComposite", "inputs": {
            "destination": [str(n + 1), 0], "source": [str(n + 2), 0], "x": x, "y": y, "operation": "add"}}
        prompt[str(n + 4)] = {"class_type": "ConditioningSetMask", "inputs": {
            "conditioning": [str(n), 0], "mask": [str(n + 3), 0], "strength": 1.0, "set_cond_area": "default"}}
        prompt[str(n + 5)] = {"class_type": "ConditioningCombine", "inputs": {
            "conditioning_1": combined, "conditioning_2": [str(n + 4), 0]}}
        combined = [str(n + 5), 0]
    prompt["140"] = {"class_type": "DreamORegionalConditioning", "inputs": {"conditioning": combined}}
    routing = prompt["23"]["inputs"]
    routing["drawn_regions"] = ""
    for name in ("positive", "clip", "dreamo"):
        del routing[name]
    prompt["32"]["inputs"]["positive"] = ["140", 0]
    assert size["width"] and size["height"]
    return prompt


def test_core_masked_conditionings_run_routed_through_post_prompt(server):
    editor = server.run(tiny_regional(), timeout=600)
    assert editor["status"] == "success"
    result = server.run(core_regional(tiny_regional()), timeout=600)
    assert result["status"] == "success", json.dumps(result["error"], indent=1)[:3000]
    got, want = report(result), report(editor)
    for a, b in zip(got["entries"][0]["regions"]["prompts"], want["entries"][0]["regions"]["prompts"]):
        assert {k: v for k, v in a.items() if k != "source"} == {k: v for k, v in b.items() if k != "source"}
        assert a["source"] == "conditioning"
    assert got["entries"][0]["tokens"] == want["entries"][0]["tokens"]
    # references follow their region's mask (DreamO Routing has no box here), words are routed and captured
    assert got["routing"] == {} and got["captured"] == [1, 2, "region 1", "region 2"]


def test_what_core_regions_cannot_keep_is_named_in_history(server):
    prompt = core_regional(tiny_regional())
    prompt["114"]["inputs"]["set_cond_area"] = "mask bounds"  # region 1's ConditioningSetMask
    result = server.run(prompt, timeout=600)
    assert result["status"] == "error"
    message = result["error"]["exception_message"]
    assert result["error"]["node_type"] == "DreamORegionalConditioning"
    assert "DreamORegionalConditioning (input 'conditioning'): masked entry 1 (region 1) has set_area_to_bounds" \
        in message and "Fix: set ConditioningSetMask's set_cond_area to 'default'" in message
    history = requests.get(f"{server.url}/history", timeout=30).json()
    assert any(h["status"]["status_str"] == "error" for h in history.values() if h["prompt"][2] == prompt)  # its own
    # the next good prompt runs
    assert server.run(tiny_regional(), timeout=600)["status"] == "success"
