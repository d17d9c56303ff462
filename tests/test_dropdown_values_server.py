"""Dropdown (COMBO) inputs on a live server. ComfyUI refuses a widget value that is not in the list before
anything runs, naming the node and the input, so the nodes need not check those. A value linked from an any-type
output (a switch node: core's If/Else Switch on 0.33+, any-type outputs of custom packs on every release) passes
ComfyUI's check (it compares the link's type, not the value) and reaches the node: the node's own check names it."""
import json

import pytest
import requests

from dreamo_testkit import kit_workflow

pytestmark = [pytest.mark.host, pytest.mark.server]

BAD = "sideways"
# (node in the tiny multi-subject workflow, its class, the dropdown input); None: a prompt of its own
CASES = [("3", "DreamOStageLoader", "version"), ("6", "DreamOTextEncode", "t5_length"),
         ("23", "DreamORouting", "mode"), ("23", "DreamORouting", "blocks"),
         ("1", "DreamOPreprocessorLoader", "face_detector")]
IDS = [f"{cls}.{name}" for _, cls, name in CASES]


@pytest.fixture(scope="module")
def server(session_server):
    """The session's shared tiny server (conftest.py)."""
    return session_server


def workflow(cls):
    if cls == "DreamOPreprocessorLoader":
        return {"1": {"class_type": cls, "inputs": {"face_detector": "none", "background_remover": "none",
                                                    "download_missing_weights": False}},
                "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    return json.load(open(kit_workflow("dreamo_multi_subject_tiny_api.json")))


@pytest.mark.parametrize("node, cls, name", CASES, ids=IDS)
def test_a_widget_value_not_in_the_list_is_refused_by_comfyui_naming_the_input(server, node, cls, name):
    prompt = workflow(cls)
    prompt[node]["inputs"][name] = BAD
    r = requests.post(f"{server.url}/prompt", json={"prompt": prompt}, timeout=30)
    assert r.status_code == 400, r.text
    errors = r.json()["node_errors"][node]
    assert errors["class_type"] == cls
    assert [(e["type"], e["extra_info"]["input_name"]) for e in errors["errors"]] == [("value_not_in_list", name)]
    assert BAD in errors["errors"][0]["details"]


def run_linked(server, prompt, node, cls, name):
    result = server.run(prompt, timeout=600)
    assert result["status"] == "error", result
    assert (result["error"]["node_id"], result["error"]["node_type"]) == (node, cls)
    message = result["error"]["exception_message"]
    # the node's own words: the value and the choices (not a later step's error with another fix)
    assert message.startswith(f"{cls} (input '{name}'): ") and BAD in message and "choose one of" in message, message


@pytest.mark.parametrize("node, cls, name", CASES, ids=IDS)
def test_a_linked_value_not_in_the_list_reaches_the_node_and_is_named(server, node, cls, name):
    prompt = workflow(cls)
    prompt["90"] = {"class_type": "DreamOTestAnyValue", "inputs": {"value": BAD}}
    prompt[node]["inputs"][name] = ["90", 0]
    run_linked(server, prompt, node, cls, name)


def test_core_switch_node_passes_a_string_to_a_dropdown_unchecked(server):
    """The same on a stock install: PrimitiveString -> If/Else Switch -> DreamO Routing's mode."""
    info = requests.get(f"{server.url}/object_info", timeout=60).json()
    if "ComfySwitchNode" not in info or "PrimitiveString" not in info:
        pytest.skip("this ComfyUI release has no core node with an any-type output (If/Else Switch: 0.33+)")
    prompt = workflow("DreamORouting")
    prompt["90"] = {"class_type": "PrimitiveString", "inputs": {"value": BAD}}
    prompt["91"] = {"class_type": "ComfySwitchNode", "inputs": {"switch": True, "on_true": ["90", 0],
                                                                "on_false": ["90", 0]}}
    prompt["23"]["inputs"]["mode"] = ["91", 0]
    run_linked(server, prompt, "23", "DreamORouting", "mode")
