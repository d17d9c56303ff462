"""Make tests/data/placeholder_token_ids.json: DreamO's own T5 tokenization of a set of prompts.

Run by hand, once, in a throwaway environment with the transformers release the official DreamO
pipeline pinned (4.45.2); the tests only read the JSON it writes:

    python -m venv /tmp/tf445
    /tmp/tf445/bin/pip install transformers==4.45.2 sentencepiece   # pulls tokenizers 0.20.x
    /tmp/tf445/bin/python tests/data/make_placeholder_token_ids.py $COMFYUI_PATH/comfy/text_encoders/t5_tokenizer

The tokenizer is set up the way DreamO's pipeline does it: a T5TokenizerFast (here read from ComfyUI's
t5_tokenizer folder, the tokenizer FLUX.1 uses) and `add_tokens([...], special_tokens=False)` for
[ref#1]..[ref#9] and [res]. Prompts are tokenized with the pipeline's own call (padding to 512,
truncation). The JSON keeps the ids without the padding and without truncation; the script checks that
padding/truncating them gives the pipeline's 512 ids, so a test can rebuild them exactly.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys

PLACEHOLDERS = [f"[ref#{i}]" for i in range(1, 10)] + ["[res]"]
MAX_LENGTH = 512
STYLE = "generate a same style image."

LONG = "a very detailed photograph of a person [ref#1] standing in a garden, " * 45 + "the end [ref#2]"

PROMPTS = {
    "plain_no_placeholder": "a cat sitting on a sofa",
    "empty": "",
    "only_placeholder": "[ref#1]",
    "only_res": "[res]",
    "start": "[ref#1] is playing a guitar",
    "start_then_comma": "[ref#1], a man, smiling",
    "middle": "a woman [ref#1] wearing a dress",
    "end": "a photo of the bag [ref#2]",
    "end_period": "a man wearing the shirt [ref#2].",
    "two_refs": "a woman [ref#1] wearing the dress [ref#2]",
    "three_refs": "the man [ref#1] and the woman [ref#2] sit on the bench [ref#3] in a park",
    "all_slots": " ".join(f"[ref#{i}]" for i in range(1, 10)) + " [res]",
    "res_middle": "the result [res] shows a cat [ref#1]",
    "after_comma": "a dog, [ref#1], running",
    "before_colon": "[ref#1]: a portrait",
    "before_question": "who is [ref#1]?",
    "exclamation": "look at [ref#1]!",
    "in_quotes": "a sign saying \"[ref#1]\" on the wall",
    "in_single_quotes": "the word '[ref#2]' printed",
    "possessive": "[ref#1]'s face in close-up",
    "hyphen": "a [ref#1]-style hat",
    "slash": "[ref#1]/[ref#2] side by side",
    "in_round_brackets_literal": "a woman (wearing [ref#2])",
    "in_square_brackets_literal": "a man [with [ref#1]]",
    "glued_left": "man[ref#1] wearing a hat",
    "glued_right": "a man [ref#1]wearing a hat",
    "glued_both": "man[ref#1]wearing",
    "glued_digits": "photo2[ref#3]4k",
    "adjacent": "[ref#1][ref#2]",
    "adjacent_in_sentence": "two people [ref#1][ref#2] talking",
    "adjacent_spaced": "two people [ref#1] [ref#2] talking",
    "adjacent_three": "[ref#3][ref#2][ref#1] in a row",
    "double_space_before": "a woman  [ref#1] smiling",
    "double_space_after": "a woman [ref#1]  smiling",
    "many_spaces": "a    woman     [ref#1]      smiling",
    "leading_spaces": "   [ref#1] at the beach",
    "trailing_spaces": "a woman [ref#1]   ",
    "tab": "a woman\t[ref#1]\tsmiling",
    "newline": "a woman\n[ref#1]\nsmiling",
    "newlines_blank_line": "first line [ref#1]\n\nsecond line [ref#2]",
    "crlf": "a woman\r\n[ref#1] smiling",
    "accents": "café [ref#2] naïve résumé",
    "german": "eine Frau [ref#1] trägt das Kleid [ref#2] über der Straße",
    "cjk": "一个女人 [ref#1] 穿着裙子 [ref#2]",
    "emoji": "a smiling face 😀 [ref#1] 🎸",
    "nbsp": "a woman\u00a0[ref#1]\u00a0smiling",
    "zero_width_space": "a woman\u200b[ref#1] smiling",
    "fullwidth_text": "ＡＢＣ [ref#1] ｘｙｚ",
    "style_prefix": f"{STYLE} a cat [ref#1]",
    "style_prefix_only": f"{STYLE} a castle on a hill",
    "style_prefix_newline": f"{STYLE}\na castle [ref#1]",
    "near_miss_upper": "a woman [REF#1] smiling",
    "near_miss_zero": "a woman [ref#0] smiling",
    "near_miss_ten": "a woman [ref#10] smiling",
    "near_miss_space": "a woman [ref 1] smiling",
    "fullwidth_brackets": "a woman ［ref#1］ smiling",
    "fullwidth_hash": "a woman [ref＃1] smiling",
    "for_weighting": "a woman [ref#1] smiling in a red dress [ref#2]",
    "numbers_and_units": "a 3.5m tall statue [ref#1], 50% smaller",
    "long_over_512": LONG,
}


def official_ids(tok, text):
    return tok(text, padding="max_length", max_length=MAX_LENGTH, truncation=True)["input_ids"]


def main():
    tokenizer_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.environ.get("COMFYUI_PATH", "."), "comfy", "text_encoders", "t5_tokenizer")
    import tokenizers
    import transformers
    from transformers import T5TokenizerFast

    tok = T5TokenizerFast.from_pretrained(tokenizer_dir)
    base = len(tok)
    added = tok.add_tokens(PLACEHOLDERS, special_tokens=False)
    assert added == len(PLACEHOLDERS), added
    placeholder_ids = tok.convert_tokens_to_ids(PLACEHOLDERS)
    assert placeholder_ids == list(range(base, base + len(PLACEHOLDERS))), placeholder_ids
    pad, eos = tok.pad_token_id, tok.eos_token_id

    cases = {}
    for name, text in PROMPTS.items():
        ids = tok(text)["input_ids"]  # with </s>, no padding, no truncation
        assert ids[-1] == eos
        truncated = ids if len(ids) <= MAX_LENGTH else ids[:MAX_LENGTH - 1] + [eos]
        assert official_ids(tok, text) == truncated + [pad] * (MAX_LENGTH - len(truncated)), name
        cases[name] = {"text": text, "ids": ids, "tokens": tok.convert_ids_to_tokens(ids)}

    with open(os.path.join(tokenizer_dir, "tokenizer.json"), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    out = {
        "made_by": "tests/data/make_placeholder_token_ids.py (run by hand; see its docstring)",
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "tokenizer_json_sha256": digest,
        "placeholders": dict(zip(PLACEHOLDERS, placeholder_ids)),
        "eos_id": eos,
        "pad_id": pad,
        "max_length": MAX_LENGTH,
        "cases": cases,
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "placeholder_token_ids.json")
    cases_json = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in cases.items())
    head = json.dumps({k: v for k, v in out.items() if k != "cases"}, ensure_ascii=False, indent=1)
    with open(path, "w", encoding="utf-8") as f:  # one line per case keeps diffs readable
        f.write(head[:-2] + ',\n "cases": {\n' + cases_json + "\n }\n}\n")
    with open(path, encoding="utf-8") as f:
        assert json.load(f) == out
    print(f"wrote {len(cases)} cases to {path}")


if __name__ == "__main__":
    main()
