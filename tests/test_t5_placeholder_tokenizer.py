"""DreamO's T5 token ids, rebuilt with `tokenizers`, against ids made by transformers 4.45.2 (stored data).

Needs ComfyUI's own t5_tokenizer/tokenizer.json (a ComfyUI checkout), nothing else of ComfyUI.
"""
import json
import os

import pytest
import torch

from comfyui_dreamo.dreamo_ops.condition_embedding import PLACEHOLDERS
from comfyui_dreamo.dreamo_ops.placeholders import PromptPlan, build_prompt
from comfyui_dreamo.dreamo_ops.t5_placeholder_tokenizer import (DreamOT5Tokenizer, PlaceholderMismatch,
                                                                TokenizerSetupError, load_tokenizer, t5_tokens)

pytestmark = pytest.mark.host

DATA = os.path.join(os.path.dirname(__file__), "data", "placeholder_token_ids.json")
with open(DATA, encoding="utf-8") as f:
    REF = json.load(f)
CASES = REF["cases"]


def official_padded(ids, length):
    if len(ids) > length:
        ids = ids[:length - 1] + [REF["eos_id"]]
    return ids + [REF["pad_id"]] * (length - len(ids))


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(os.path.join(os.environ["COMFYUI_PATH"], "comfy", "text_encoders", "t5_tokenizer",
                                       "tokenizer.json"))


def test_data_covers_the_cases_the_issue_lists():
    texts = [c["text"] for c in CASES.values()]
    assert REF["transformers"] == "4.45.2" and len(texts) >= 50
    assert any(t.startswith("[ref#") for t in texts) and any(t.endswith("[ref#2]") for t in texts)
    assert any("][ref#" in t for t in texts) and any("man[ref#1]wearing" in t for t in texts)
    assert any("\n" in t for t in texts) and any("  " in t for t in texts) and any("é" in t for t in texts)
    assert any(t.startswith("generate a same style image.") for t in texts)
    assert any(len(c["ids"]) > REF["max_length"] for c in CASES.values())


def test_placeholder_ids_match_the_official_setup(tok):
    assert dict(zip(PLACEHOLDERS, tok.placeholder_ids)) == REF["placeholders"]
    assert (tok.eos_id, tok.pad_id) == (REF["eos_id"], REF["pad_id"])


@pytest.mark.parametrize("name", sorted(CASES))
def test_ids_equal_transformers_4_45_2(tok, name):
    assert tok.ids(CASES[name]["text"]) == CASES[name]["ids"]


# Near misses are refused by the checks; round brackets are ComfyUI's weighting syntax (tested below, escaped).
VALID = sorted(n for n in CASES if not n.startswith(("near_miss", "fullwidth_brackets", "fullwidth_hash"))
               and "(" not in CASES[n]["text"])


@pytest.mark.parametrize("name", VALID)
@pytest.mark.parametrize("length", [512, 256])
def test_comfy_token_list_is_the_pipelines_padded_ids(tok, name, length):
    case = CASES[name]
    tokens = t5_tokens(build_prompt(case["text"]), tok, None, length)
    ids = [t for t, _ in tokens]
    assert all(w == 1.0 for _, w in tokens)
    if len(case["ids"]) <= length:
        assert ids == official_padded(case["ids"], length)
    else:  # kept whole, as ComfyUI does; the pipeline would cut it at `length`
        assert ids == case["ids"] and ids[:length - 1] == official_padded(case["ids"], length)[:length - 1]


def test_style_instruction_added_by_the_plan_tokenizes_like_dreamo(tok):
    plan = build_prompt("a cat [ref#1]", {1: "style"})
    assert tok.ids(plan.plain) == CASES["style_prefix"]["ids"]


def test_escaped_brackets_reach_t5_as_literal_brackets(tok):
    plan = build_prompt("a woman \\(wearing [ref#2]\\)")
    assert tok.ids(plan.plain) == CASES["in_round_brackets_literal"]["ids"]


@pytest.mark.parametrize("text", [
    "a woman ([ref#1] smiling:1.2) in a (red:1.3) dress [ref#2]",
    "(a woman [ref#1] smiling in a red dress [ref#2]:0.8)",
    "a woman ([ref#1]:1.2) smiling in a red dress ([ref#2])",
    "(a woman:1.1) [ref#1] (smiling:0.9) in a ((red)) dress [ref#2]",
])
def test_weighting_keeps_dreamo_ids_around_placeholders(tok, text):
    tokens = t5_tokens(build_prompt(text), tok, None, 0)
    assert [t for t, _ in tokens] == CASES["for_weighting"]["ids"]


def test_weights_follow_the_text_and_placeholders_stay_at_one(tok):
    tokens = t5_tokens(build_prompt("(a woman [ref#1] smiling:1.3) in a red dress ([ref#2]:1.2)"), tok, None, 0)
    ids = CASES["for_weighting"]["ids"]
    words = CASES["for_weighting"]["tokens"]
    weights = dict(zip(range(len(ids)), (w for _, w in tokens)))
    pos = {w: i for i, w in enumerate(words)}
    assert weights[pos["▁woman"]] == pytest.approx(1.3) and weights[pos["▁smiling"]] == pytest.approx(1.3)
    assert weights[pos["[ref#1]"]] == 1.0 and weights[pos["[ref#1]"] - 1] == 1.0  # its lone "▁" too
    assert weights[pos["[ref#2]"]] == pytest.approx(1.2) and weights[pos["[ref#2]"] - 1] == pytest.approx(1.2)
    assert weights[pos["▁dress"]] == 1.0 and weights[len(ids) - 1] == 1.0  # </s>


def test_placeholders_become_their_vectors(tok):
    vectors = torch.arange(10 * 4, dtype=torch.float32).reshape(10, 4)
    tokens = t5_tokens(build_prompt("[ref#2] and [res] with [ref#9]"), tok, vectors, 16)
    tensors = [t for t, _ in tokens if torch.is_tensor(t)]
    assert len(tensors) == 3 and len(tokens) == 16
    for got, row in zip(tensors, (1, 9, 8)):
        assert torch.equal(got, vectors[row])


def test_text_t5_reads_as_placeholder_but_the_checks_did_not_is_refused(tok):
    text = "a woman ［ref#1］"  # NFKC turns it into [ref#1] inside T5's tokenizer
    plan = PromptPlan(text=text, plain=text, char_weights=(1.0,) * len(text), placeholders=())
    with pytest.raises(PlaceholderMismatch, match=r"\[ref#1\] at character 9"):
        t5_tokens(plan, tok)


def test_wrong_tokenizer_file_is_refused(tmp_path):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    path = str(tmp_path / "tokenizer.json")
    Tokenizer(WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>")).save(path)
    with pytest.raises(TokenizerSetupError, match="has 2 tokens, T5's tokenizer has 32100"):
        DreamOT5Tokenizer(path)
    with pytest.raises(TokenizerSetupError, match="does not exist"):
        DreamOT5Tokenizer(str(tmp_path / "missing.json"))
