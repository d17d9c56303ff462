"""The example workflow files: only UI-format templates directly in workflows/ (ComfyUI lists every *.json there),
each with its API twin in workflows/api/ and a thumbnail, and the node titles the API client fills."""
import glob
import json
import os
import re

import pytest

from dreamo_testkit import REPO

WORKFLOWS = os.path.join(REPO, "workflows")
UI_FILES = sorted(glob.glob(os.path.join(WORKFLOWS, "*.json")))
API_FILES = sorted(glob.glob(os.path.join(WORKFLOWS, "api", "*_api.json")))
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
# node class -> the title it carries in every example workflow (README: "Workflow inputs the API client fills")
FIXED_TITLES = {"ModelSamplingFlux": "shift", "EmptySD3LatentImage": "size", "EmptyLatentImage": "size"}
BRANCH_TITLES = {"DreamOTextEncode": "prompt", "KSampler": "sampler", "SaveImage": "output"}
# other SaveImage nodes (e.g. routing maps) may carry their own titles; the image is "output" (+ " k")


def name_of(path):
    return os.path.basename(path).removesuffix(".json").removesuffix("_api")


def test_there_are_templates_and_api_twins():
    assert len(UI_FILES) >= 6 and len(API_FILES) >= 6


@pytest.mark.parametrize("path", UI_FILES, ids=name_of)
def test_every_template_is_ui_format_with_an_api_twin_and_a_thumbnail(path):
    wf = json.load(open(path))
    assert isinstance(wf.get("nodes"), list) and isinstance(wf.get("links"), list) and "version" in wf, \
        f"{os.path.basename(path)} is not a UI-format workflow: ComfyUI lists every *.json here as a template"
    assert os.path.isfile(os.path.join(WORKFLOWS, "api", f"{name_of(path)}_api.json"))
    assert os.path.isfile(os.path.join(WORKFLOWS, f"{name_of(path)}.jpg"))
    assert any(n["type"] in ("Note", "MarkdownNote") for n in wf["nodes"]), "a Note lists the files and settings"
    assert wf.get("groups"), "nodes are grouped"


@pytest.mark.parametrize("path", API_FILES, ids=name_of)
def test_every_api_workflow_has_a_template_and_is_api_format(path):
    api = json.load(open(path))
    assert all("class_type" in n and "inputs" in n for n in api.values())
    assert os.path.isfile(os.path.join(WORKFLOWS, f"{name_of(path)}.json"))


def test_nothing_else_sits_in_the_template_folder():
    extra = [f for f in os.listdir(WORKFLOWS) if not re.fullmatch(r"[a-z0-9_]+\.(json|jpg)", f) and f != "api"]
    assert extra == []
    assert not glob.glob(os.path.join(WORKFLOWS, "*_api.json"))
    assert not any("DreamOTest" in open(p).read() for p in UI_FILES + API_FILES), "test-only nodes in an example"


def slot_of_reference(api, encode_id):
    """The DreamOApply slot (ref_k input) an encode node feeds; DreamO numbers references by that slot."""
    slots = {int(k[4:]) for n in api.values() if n["class_type"] == "DreamOApply"
             for k, v in n["inputs"].items() if k.startswith("ref_") and str(v[0]) == encode_id}
    assert len(slots) == 1, f"node {encode_id} feeds DreamO Apply slots {slots}"
    return slots.pop()


@pytest.mark.parametrize("path", API_FILES, ids=name_of)
def test_api_workflows_carry_the_titles_the_api_client_fills(path):
    api = json.load(open(path))
    title = {k: n.get("_meta", {}).get("title") for k, n in api.items()}
    for k, n in api.items():
        cls = n["class_type"]
        if cls in FIXED_TITLES:
            assert title[k] == FIXED_TITLES[cls], (k, cls, title[k])
        elif cls == "DreamORefEncode":
            slot = slot_of_reference(api, k)
            assert title[k] == f"ref {slot} encode"
            image = str(n["inputs"]["image"][0])
            assert api[image]["class_type"] == "LoadImage" and title[image] == f"ref {slot} image"
    for cls, base in BRANCH_TITLES.items():
        got = sorted(title[k] for k, n in api.items() if n["class_type"] == cls
                     and (cls != "SaveImage" or re.fullmatch(rf"{base}( \d+)?", title[k])))
        assert got and got[0] == base, (cls, got)
        assert got == [base] + [f"{base} {i}" for i in range(2, len(got) + 1)], (cls, got)
    titles = [t for t in title.values()]
    assert len(titles) == len(set(titles)), "titles are unique"
    for needed in ("shift", "size"):
        assert needed in titles


@pytest.mark.parametrize("path", UI_FILES, ids=name_of)
def test_ui_files_carry_the_same_titles(path):
    ui = json.load(open(path))
    api = json.load(open(os.path.join(WORKFLOWS, "api", f"{name_of(path)}_api.json")))
    nodes = {str(n["id"]): n for n in ui["nodes"]}
    for k, n in api.items():
        assert nodes[k]["type"] == n["class_type"]
        assert nodes[k].get("title", n["_meta"]["title"]) == n["_meta"]["title"], k
    assert {n["type"] for n in ui["nodes"]} - FRONTEND_ONLY == {n["class_type"] for n in api.values()}
