"""Prompt checks and planning (dreamo_ops.placeholders): no ComfyUI needed."""
import pytest

from comfyui_dreamo.dreamo_ops.errors import DreamOError
from comfyui_dreamo.dreamo_ops.placeholders import (STYLE_INSTRUCTION, build_prompt, find_near_misses,
                                                    find_placeholders, parse_weights, with_style_instruction)

NODE = "DreamOTextEncode"


# --- weighting syntax ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("a cat", [("a cat", 1.0)]),
    ("a (red:1.3) dress", [("a ", 1.0), ("red", 1.3), (" dress", 1.0)]),
    ("a (red) dress", [("a ", 1.0), ("red", 1.1), (" dress", 1.0)]),
    ("((red))", [("red", 1.1 * 1.1)]),
    ("(a (b:0.5) c:1.5)", [("a ", 1.5), ("b", 0.5), (" c", 1.5)]),
    ("(time: 12:30)", [("time: 12", 30.0)]),
    ("(note: big)", [("note: big", 1.1)]),
    ("a \\(literal\\) b", [("a (literal) b", 1.0)]),
    ("(unclosed", [("(unclosed", 1.0)]),
    ("([ref#1]:1.2) x", [("[ref#1]", 1.2), (" x", 1.0)]),
])
def test_parse_weights_reads_comfyui_syntax(text, expected):
    got = parse_weights(text)
    assert [p for p, _ in got] == [p for p, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


def test_plain_text_and_char_weights():
    plan = build_prompt("a (red:1.3) dress [ref#1]")
    assert plan.plain == "a red dress [ref#1]"
    assert plan.char_weights[plan.plain.index("red")] == pytest.approx(1.3)
    assert plan.char_weights[plan.plain.index("dress")] == 1.0
    assert len(plan.char_weights) == len(plan.plain)


def test_glued_weighted_pieces_get_a_word_break_but_not_next_to_placeholders():
    assert build_prompt("a(red:1.2)dress").plain == "a red dress"
    assert build_prompt("man([ref#1]:1.2)wearing").plain == "man[ref#1]wearing"
    assert build_prompt("(man:1.2)[ref#1]").plain == "man[ref#1]"


# --- placeholders and their weights -----------------------------------------------------------------------------

def test_find_placeholders_all_ten():
    text = " ".join(f"[ref#{i}]" for i in range(1, 10)) + " [res]"
    found = find_placeholders(text)
    assert [name for name, _, _ in found] == [f"[ref#{i}]" for i in range(1, 10)] + ["[res]"]
    assert all(text[s:e] == name for name, s, e in found)


def test_placeholder_plan_has_slots_and_rows():
    plan = build_prompt("[res] of a woman [ref#3] and [ref#1]", {1: "ip", 3: "id"})
    assert [(p.name, p.slot, p.index) for p in plan.placeholders] == [("[res]", None, 9), ("[ref#3]", 3, 2),
                                                                      ("[ref#1]", 1, 0)]
    assert all(plan.plain[p.start:p.end] == p.name for p in plan.placeholders)


@pytest.mark.parametrize("text, weight", [
    ("a woman [ref#1] smiling", 1.0),
    ("(a woman [ref#1] smiling:1.4)", 1.0),  # weighted text around it: the placeholder stays at 1.0
    ("((a woman [ref#1]))", 1.0),
    ("a woman ([ref#1]:1.4) smiling", 1.4),  # weighted alone: the user insists
    ("a woman ( [ref#1] :0.7) smiling", 0.7),
    ("a woman ([ref#1]) smiling", 1.1),
])
def test_placeholder_weight_stays_one_unless_weighted_alone(text, weight):
    (p,) = build_prompt(text).placeholders
    assert p.weight == pytest.approx(weight)


# --- near misses ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, snippet, suggestion", [
    ("a woman [REF#1] smiling", "[REF#1]", "[ref#1]"),
    ("a woman [Ref#2] smiling", "[Ref#2]", "[ref#2]"),
    ("a woman [ref 1] smiling", "[ref 1]", "[ref#1]"),
    ("a woman [ref1] smiling", "[ref1]", "[ref#1]"),
    ("a woman [ref_3] smiling", "[ref_3]", "[ref#3]"),
    ("a woman [ref-3] smiling", "[ref-3]", "[ref#3]"),
    ("a woman [ ref#1 ] smiling", "[ ref#1 ]", "[ref#1]"),
    ("a woman [ref #4] smiling", "[ref #4]", "[ref#4]"),
    ("a woman [ref#0] smiling", "[ref#0]", "there is no slot 0"),
    ("a woman [ref#10] smiling", "[ref#10]", "there is no slot 10"),
    ("a woman [ref#1 smiling", "[ref#1 smiling", "[ref#1]"),
    ("a woman ref#2 smiling", "ref#2", "[ref#2]"),
    ("a woman (ref#2:1.2) smiling", "ref#2", "[ref#2]"),
    ("a woman {ref#5} smiling", "ref#5", "[ref#5]"),
    ("a woman [ref] smiling", "[ref]", "[ref#1]…[ref#9] or [res]"),
    ("the result [RES]", "[RES]", "[res]"),
    ("the result [res ]", "[res ]", "[res]"),
    ("a woman ［ref#1］ smiling", "［ref#1］", "[ref#1]"),  # full-width brackets
    ("a woman [ref＃2] smiling", "[ref＃2]", "[ref#2]"),  # full-width '#'
    ("a woman [ref#１] smiling", "[ref#１]", "[ref#1]"),  # full-width digit
    ("a woman [ref#1:1.2] smiling", "[ref#1:1.2]", "[ref#1]"),
    ("a woman [ref#(1:1.2)] smiling", "[ref#(1:1.2)]", "[ref#1]"),
])
def test_near_misses_are_errors_naming_node_placeholder_and_fix(text, snippet, suggestion):
    (nm,) = find_near_misses(text)
    assert nm.snippet == snippet and suggestion in nm.suggestion
    assert text[nm.position:].startswith(snippet)
    with pytest.raises(DreamOError) as e:
        build_prompt(text, {1: "ip"}, node=NODE)
    msg = str(e.value)
    assert msg.startswith(f"{NODE} (input 'text'):")
    assert snippet in msg and suggestion in msg and "Fix: write placeholders exactly as [ref#1]" in msg


def test_every_near_miss_is_listed():
    text = "[REF#1] with [ref 2] and [ref#10]"
    assert [nm.snippet for nm in find_near_misses(text)] == ["[REF#1]", "[ref 2]", "[ref#10]"]
    with pytest.raises(DreamOError, match=r"'\[REF#1\]'.*'\[ref 2\]'.*'\[ref#10\]'"):
        build_prompt(text)


@pytest.mark.parametrize("text", [
    "a woman [ref#1] [ref#2] [ref#9] [res]",
    "a reference photo of a red [rest] area, refs 1 and 2, [reference image], ref 3",
    "prefix [ref#1]]", "a restaurant at night", "(ref:1.2) sheet", "",
])
def test_no_false_near_misses(text):
    assert find_near_misses(text) == []


# --- slots ------------------------------------------------------------------------------------------------------

def test_missing_slot_lists_the_slots_present_and_the_fix():
    with pytest.raises(DreamOError) as e:
        build_prompt("a woman [ref#1] wearing [ref#3]", {1: "ip", 2: "ip"}, node=NODE)
    msg = str(e.value)
    assert msg.startswith(f"{NODE} (input 'text'): the prompt names [ref#3] but there is no reference in ref_3")
    assert "references are connected to ref_1, ref_2" in msg
    assert "Fix: connect the reference meant by [ref#3] to ref_3" in msg and "([ref#1], [ref#2])" in msg


def test_several_missing_slots_are_all_named():
    with pytest.raises(DreamOError, match=r"names \[ref#4\], \[ref#7\] but there is no reference in ref_4, ref_7"):
        build_prompt("[ref#7] [ref#2] [ref#4]", {2: "ip"})


def test_a_near_miss_and_an_empty_slot_are_both_named_with_both_fixes():
    with pytest.raises(DreamOError) as e:
        build_prompt("a [REF#1] next to [ref#2]", {1: "ip"}, node=NODE)
    msg = str(e.value)
    assert msg.startswith(f"{NODE} (input 'text'): the prompt has 2 problems: (1) the prompt has text that looks like")
    assert "'[REF#1]' at character 3" in msg and "(2) the prompt names [ref#2] but there is no reference in ref_2" in msg
    fix = msg.split(" Fix: ", 1)[1]
    assert fix.startswith("(1) write placeholders exactly as") and "(2) connect the reference meant by [ref#2]" in fix


def test_slot_follows_the_socket_not_the_count():
    plan = build_prompt("a bag [ref#2]", {2: "ip"})
    assert plan.placeholders[0].slot == 2
    with pytest.raises(DreamOError, match=r"\[ref#1\] but there is no reference in ref_1"):
        build_prompt("a bag [ref#1]", {2: "ip"})


def test_res_needs_no_reference_and_unchecked_without_references():
    assert build_prompt("[res] a cat [ref#1]", {1: "ip"}).placeholders[0].name == "[res]"
    assert len(build_prompt("[ref#5] and [ref#6]", None).placeholders) == 2  # nothing connected: not checked


def test_connected_but_unnamed_reference_is_a_note_not_an_error():
    plan = build_prompt("a woman [ref#1]", {1: "ip", 2: "ip"})
    assert any("ref_2 is connected but not named" in n for n in plan.notes)


# --- style instruction ------------------------------------------------------------------------------------------

def test_style_reference_adds_the_instruction():
    plan = build_prompt("a castle on a hill", {1: "style"})
    assert plan.text == f"{STYLE_INSTRUCTION} a castle on a hill"
    assert plan.plain.startswith(STYLE_INSTRUCTION)
    assert any("ref_1 is a style reference" in n for n in plan.notes)


def test_style_instruction_toggle_and_existing_instruction():
    assert build_prompt("a castle", {1: "style"}, add_style_instruction=False).text == "a castle"
    for text in (f"{STYLE_INSTRUCTION} a castle", "Generate a same style image. a castle",
                 "(generate a same style image.:1.1) a castle", "a castle. generate a same style image."):
        assert build_prompt(text, {2: "style"}).text == text
    assert build_prompt("a castle", {1: "ip"}).text == "a castle"  # no style reference, no instruction


def test_style_instruction_keeps_placeholders_and_weights():
    plan = build_prompt("  a cat [ref#2] in (oil paint:1.2)", {1: "style", 2: "ip"})
    assert plan.text == f"{STYLE_INSTRUCTION} a cat [ref#2] in (oil paint:1.2)"
    assert plan.placeholders[0].name == "[ref#2]"
    assert with_style_instruction("") == STYLE_INSTRUCTION


def test_text_must_be_a_string():
    with pytest.raises(DreamOError, match="must be text"):
        build_prompt(None)


# --- hostile and oversized prompts (issue 19): bounded work, short messages --------------------------------------

HOSTILE = {  # the cases that froze the server, about 100,000 characters each
    "open_brackets": "[ref" * 25_000,
    "unbracketed": "ref#1 " * 16_666,
    "res_groups": "[res](x)" * 12_500,
    "nested": "(" * 50_000 + ")" * 50_000,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_prompts_get_a_short_error_or_a_plan(name):
    from comfyui_dreamo.dreamo_ops.placeholders import MAX_PROMPT_CHARS

    text = HOSTILE[name]
    assert len(text) <= MAX_PROMPT_CHARS
    try:
        plan = build_prompt(text, {1: "ip"}, node=NODE)
    except DreamOError as e:
        message = str(e)
        assert message.startswith(f"{NODE} (input 'text'): ") and "Fix: " in message
        assert len(message) < 1_000, len(message)  # was 1.9 MB for 'ref#1 ' ×16,666
        return
    assert name == "res_groups" and len(plan.placeholders) == 12_500
    assert all(p.weight == 1.0 for p in plan.placeholders)


def test_many_near_misses_name_the_first_five_and_count_the_rest():
    text = " ".join(f"[REF#{k % 9 + 1}]" for k in range(1_000))
    with pytest.raises(DreamOError) as e:
        build_prompt(text, node=NODE)
    message = str(e.value)
    assert message.count("did you mean") == 5 and "and 995 more" in message
    assert "'[REF#1]' at character 1 " in message


def test_a_long_near_miss_is_quoted_short_and_any_number_of_digits_is_read():
    snippet = "ref#" + "7" * 5_000  # more digits than Python turns into an int by default
    (nm,) = find_near_misses(f"a {snippet} b")
    assert nm.snippet == snippet and "there is no slot 7777777777" in nm.suggestion
    with pytest.raises(DreamOError) as e:
        build_prompt(f"a {snippet} b")
    assert len(str(e.value)) < 600 and "'ref#777" in str(e.value)


def test_nesting_up_to_the_limit_is_read_deeper_is_refused():
    from comfyui_dreamo.dreamo_ops.placeholders import MAX_NESTING

    deep = "(" * MAX_NESTING + "red" + ")" * MAX_NESTING
    assert parse_weights(deep) == [("red", pytest.approx(1.1 ** MAX_NESTING))]
    assert build_prompt(deep).plain == "red"
    deeper = "(" + deep + ")"
    with pytest.raises(DreamOError, match=rf"nested more than {MAX_NESTING} levels deep.*Fix: use at most "
                                          rf"{MAX_NESTING} levels"):
        build_prompt(deeper, node=NODE)
    # unbalanced brackets are not nesting: ComfyUI reads them as text
    assert parse_weights("(" * 50_000 + "x") == [("(" * 50_000 + "x", 1.0)]
    assert build_prompt(")" * 50_000 + "(" * 50_000).placeholders == ()


@pytest.mark.parametrize("text", ["(red:nan) dress", "(red:inf)", "(red:-Infinity)", "(x:1" + "0" * 400 + ")",
                                  "((x):1.7e308)"],  # 1.7e308 × 1.1 inside
                         ids=["nan", "inf", "-inf", "1e400", "overflow"])
def test_a_weight_that_is_not_a_finite_number_is_refused(text):
    with pytest.raises(DreamOError, match=r"not a finite number\..*Fix: .*numbers as weights") as e:
        build_prompt(text, node=NODE)
    assert len(str(e.value)) < 400


def test_the_longest_prompt_is_read_a_longer_one_refused_unread():
    from comfyui_dreamo.dreamo_ops.placeholders import MAX_PROMPT_CHARS, check_prompt

    longest = ("a red dress [ref#1] " * (MAX_PROMPT_CHARS // 20 + 1))[:MAX_PROMPT_CHARS]
    assert len(build_prompt(longest, {1: "ip"}).placeholders) == MAX_PROMPT_CHARS // 20
    with pytest.raises(DreamOError, match=r"the prompt is 100,001 characters long; DreamO reads prompts of at most "
                                          r"100,000 characters\. Fix: shorten"):
        build_prompt(longest + "x", node=NODE)
    answer = check_prompt("[REF#1]" + longest[7:] + "x", {1: "ip"}, node=NODE)
    assert answer["error"].startswith(f"{NODE} (input 'text'): the prompt is 100,001 characters long")
    assert answer["marks"] == [] and answer["marks_left_off"] == 0


def test_the_editors_marks_are_capped_and_counted():
    from comfyui_dreamo.dreamo_ops.placeholders import MAX_MARKS, check_prompt

    answer = check_prompt("[ref" * 25_000, {1: "ip"})
    assert len(answer["marks"]) == MAX_MARKS and answer["marks_left_off"] == 25_000 - MAX_MARKS
    assert [m["start"] for m in answer["marks"]] == [4 * k for k in range(MAX_MARKS)]  # the first ones, in order
    assert len(answer["error"]) < 1_000 and "and 24,995 more" in answer["error"]
    assert check_prompt("a [ref#1]", {1: "ip"})["marks_left_off"] == 0
