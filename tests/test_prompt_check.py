"""The prompt check the editor asks for (dreamo_ops.placeholders.check_prompt and POST /dreamo/check_prompt):
the same verdict and words as DreamOTextEncode's own check, with the spans to mark."""
import pytest

from comfyui_dreamo.dreamo_ops.errors import DreamOError
from comfyui_dreamo.dreamo_ops.placeholders import build_prompt, check_prompt


def node_error(text, references=None, add_style=True):
    try:
        build_prompt(text, references, add_style)
    except DreamOError as e:
        return str(e)
    return None


@pytest.mark.parametrize("text, references", [
    ("a bottle [ref#1] on a table", {1: "ip"}),
    ("a bottle [ref#1] next to [ref#3]", {1: "ip"}),
    ("a bottle [ref#1] next to [ref#3] and [ref#2]", {1: "ip", 4: "ip"}),
    ("a [REF#1] and [ref 2] and [ref#10]", {1: "ip", 2: "ip"}),
    ("a [REF#1] and [ref#3]", {1: "ip"}),  # two kinds of problem: one message names both
    ("[ref#2] without references is not checked", None),
    ("a [ref#1]", {}),
    ("", {1: "style"}),
])
def test_error_is_the_nodes_own_message(text, references):
    assert check_prompt(text, references)["error"] == node_error(text, references or None)


def test_marks_are_spans_of_the_prompt_as_written():
    text = "a [REF#1], [ref#1] with [ref#2] in ［ref#3］ [res]"
    answer = check_prompt(text, {1: "ip"})
    got = [(m["kind"], text[m["start"]:m["end"]]) for m in answer["marks"]]
    assert got == [("near_miss", "[REF#1]"), ("placeholder", "[ref#1]"), ("empty_slot", "[ref#2]"),
                   ("near_miss", "［ref#3］"), ("placeholder", "[res]")]
    near = answer["marks"][0]
    assert "'[REF#1]' at character 3 (did you mean [ref#1]?)" in near["message"]
    assert "'[REF#1]' at character 3 (did you mean [ref#1]?)" in answer["error"]  # the same words
    empty = answer["marks"][2]
    assert empty["slot"] == 2 and "there is no reference in ref_2" in empty["message"]


def test_empty_slots_are_only_marked_when_a_reference_is_connected():
    assert [m["kind"] for m in check_prompt("[ref#2] [res]", None)["marks"]] == ["placeholder", "placeholder"]
    marks = check_prompt("[ref#2] [res]", {1: "ip"})["marks"]
    assert [m["kind"] for m in marks] == ["empty_slot", "placeholder"]
    assert check_prompt("[ref#2]", {1: "ip"})["error"] == node_error("[ref#2]", {1: "ip"})


def test_positions_count_characters_as_python_does():
    text = "emoji \U0001F600 then [REF#1]"
    (mark,) = check_prompt(text, None)["marks"]
    assert text[mark["start"]:mark["end"]] == "[REF#1]"


def test_notes_of_an_accepted_prompt_are_returned():
    answer = check_prompt("a vase [ref#1]", {1: "ip", 2: "style"})
    assert answer["error"] is None
    assert any("generate a same style image." in n for n in answer["notes"])
    assert any("ref_2 is connected but not named" in n for n in answer["notes"])
    assert check_prompt("a vase [ref#1]", {1: "ip", 2: "style"}, add_style_instruction=False)["notes"] != \
        answer["notes"]


@pytest.mark.host
@pytest.mark.parametrize("body, problem", [
    ([1, 2], "JSON object"),
    ({"text": 3}, "'text' must be a string"),
    ({"text": "a", "references": [1]}, "'references' must map"),
    ({"text": "a", "references": {"x": "ip"}}, "'x' is not a slot number"),
    ({"text": "a", "references": {"10": "ip"}}, "slot 10 is not between 1 and 9"),
])
def test_route_refuses_bad_bodies_with_the_reason(body, problem):
    from comfyui_dreamo.nodes.prompt_check_route import BadRequest, answer

    with pytest.raises(BadRequest, match=problem):
        answer(body)


@pytest.mark.host
def test_route_answers_as_the_node_checks():
    from comfyui_dreamo.nodes.prompt_check_route import answer, register_routes

    got = answer({"text": "a [ref#1] and [ref#3]", "references": {"1": "ip"}, "add_style_instruction": True})
    assert got == check_prompt("a [ref#1] and [ref#3]", {1: "ip"})
    assert got["error"].startswith("DreamOTextEncode (input 'text'): the prompt names [ref#3]")
    assert register_routes() is False  # no ComfyUI server in this process: nothing is registered
