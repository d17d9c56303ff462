"""The example workflow files: only UI-format templates directly in workflows/ (ComfyUI lists every *.json there),
each named as its card in the Templates dialog reads, with its API twin in workflows/api/, a thumbnail and a short
markdown note, the node titles the API client fills, and the pack's category name for the dialog."""
import json
import os
import re

import pytest

from dreamo_testkit.template_files import API_FILES, REPO, UI_FILES, WORKFLOWS, api_path, key_of, ui_path

FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
# node class -> the title it carries in every example workflow (README: "Workflow inputs the API client fills")
FIXED_TITLES = {"ModelSamplingFlux": "shift", "EmptySD3LatentImage": "size", "EmptyLatentImage": "size"}
BRANCH_TITLES = {"DreamOTextEncode": "prompt", "KSampler": "sampler", "SaveImage": "output"}
# other SaveImage nodes (e.g. routing maps) may carry their own titles; the image is "output" (+ " k")


def name_of(path):
    return os.path.basename(path).removesuffix(".json")


def test_there_are_templates_and_api_twins():
    assert len(UI_FILES) >= 6 and len(API_FILES) >= 6


@pytest.mark.parametrize("path", UI_FILES, ids=name_of)
def test_every_template_is_ui_format_with_an_api_twin_a_thumbnail_and_a_short_note(path):
    wf = json.load(open(path))
    assert isinstance(wf.get("nodes"), list) and isinstance(wf.get("links"), list) and "version" in wf, \
        f"{os.path.basename(path)} is not a UI-format workflow: ComfyUI lists every *.json here as a template"
    assert os.path.isfile(api_path(key_of(path)))
    assert os.path.isfile(path.removesuffix(".json") + ".jpg")
    notes = [n for n in wf["nodes"] if n["type"] == "MarkdownNote"]
    assert len(notes) == 1, "a markdown note says what the template does, the files and the settings"
    text = notes[0]["widgets_values"][0]
    assert text.startswith(f"### {name_of(path)}\n") and "**Needs**" in text and "**Settings**" in text
    assert len(text) < 900 and "](https://github.com/comfyui-dreamo/comfyui-dreamo#" in text  # short, with links
    assert wf.get("groups"), "nodes are grouped"


@pytest.mark.parametrize("path", API_FILES, ids=name_of)
def test_every_api_workflow_has_a_template_and_is_api_format(path):
    api = json.load(open(path))
    assert all("class_type" in n and "inputs" in n for n in api.values())
    assert os.path.isfile(ui_path(key_of(path)))


def test_nothing_else_sits_in_the_template_folder():
    """Templates are named as their cards read (the dialog shows the file name as title and description): words and
    spaces, no underscores, nothing a file system or URL would trip on."""
    names = [f for f in os.listdir(WORKFLOWS) if f != "api"]
    assert all(re.fullmatch(r"DreamO [A-Za-z0-9 ,()-]+\.(json|jpg)", f) for f in names), names
    assert sorted(name_of(p) for p in UI_FILES) == sorted(os.path.basename(ui_path(key_of(p))).removesuffix(".json")
                                                          for p in API_FILES)
    assert not any("DreamOTest" in open(p).read() for p in UI_FILES + API_FILES), "test-only nodes in an example"


def test_the_templates_dialog_names_the_pack_dreamo():
    """Both frontends name a pack's template category by the translation templateWorkflows.category.<folder>, which
    ComfyUI serves from the pack's locales/<lang>/main.json; the folder is the clone's name (README: comfyui-dreamo)."""
    main = json.load(open(os.path.join(REPO, "locales", "en", "main.json")))
    category = main["templateWorkflows"]["category"]
    assert category["comfyui-dreamo"] == "DreamO" and category["comfyui_dreamo"] == "DreamO"
    assert "git clone https://github.com/comfyui-dreamo/comfyui-dreamo" in open(os.path.join(REPO, "README.md")).read()


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
    api = json.load(open(api_path(key_of(path))))
    nodes = {str(n["id"]): n for n in ui["nodes"]}
    for k, n in api.items():
        assert nodes[k]["type"] == n["class_type"]
        assert nodes[k].get("title", n["_meta"]["title"]) == n["_meta"]["title"], k
    assert {n["type"] for n in ui["nodes"]} - FRONTEND_ONLY == {n["class_type"] for n in api.values()}
