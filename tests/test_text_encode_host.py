"""DreamOTextEncode in a real ComfyUI: encoder parity with DreamO's T5 route, errors, and a full sampling pass.

The reference for parity is HF `T5EncoderModel` (eager attention, float32) holding the same tiny random
weights, set up as DreamO's pipeline does (table resized to the tokenizer, ten rows added and overwritten with
the placeholder vectors) and fed the ids transformers 4.45.2 made (tests/data/placeholder_token_ids.json).
"""
import json
import os

import pytest
import torch

pytestmark = pytest.mark.host

PARITY_TOL = 1e-5
NODE = "DreamOTextEncode"
DATA = os.path.join(os.path.dirname(__file__), "data", "placeholder_token_ids.json")
with open(DATA, encoding="utf-8") as f:
    CASES = json.load(f)["cases"]


@pytest.fixture(scope="module")
def tok():
    from comfyui_dreamo.dreamo_ops.t5_placeholder_tokenizer import load_tokenizer
    from comfyui_dreamo.nodes.text_encode import comfy_t5_tokenizer_file

    return load_tokenizer(comfy_t5_tokenizer_file())


@pytest.fixture(scope="module")
def vectors():
    return torch.randn(10, 32, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def t5_pair(vectors):
    """A tiny random ComfyUI T5 and DreamO's HF reference with the same weights."""
    from dreamo_testkit import tiny_text_encoders as tte

    comfy_t5 = tte.comfy_t5(seed=3, scale=0.05)
    reference = tte.dreamo_reference_t5(tte.hf_t5_from_comfy(comfy_t5), vectors)
    return comfy_t5, reference


def reference_encode(reference, ids, length):
    from dreamo_testkit import tiny_text_encoders as tte

    with torch.no_grad():
        return reference(input_ids=torch.tensor([tte.official_padded(ids, length)])).last_hidden_state


def comfy_encode(comfy_t5, text, tok, vectors, length=512, refs=None):
    from comfyui_dreamo.dreamo_ops.placeholders import build_prompt
    from comfyui_dreamo.dreamo_ops.t5_placeholder_tokenizer import t5_tokens

    tokens = t5_tokens(build_prompt(text, refs), tok, vectors, length)
    return comfy_t5.encode_token_weights([tokens])[0]


# --- ComfyUI compatibility of the weighting parser --------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "a cat", "a (red:1.3) dress", "((red))", "(a (b:0.5) c:1.5)", "(time: 12:30)", "(note: big)", "(x:abc)",
    "a \\(literal\\) b", "(unclosed", "closed) extra", ")(", "a ((b) c:0.7) d", "(:1.2)", "()", "\\((a:1.2)\\)",
    "([ref#1]:1.2) x", "(a woman [ref#1]:1.3) [ref#2]", "((((deep))))", "(a:1e-1)", "(a:-0.5)",
])
def test_weight_parser_matches_comfyui(text):
    from comfy.sd1_clip import escape_important, token_weights, unescape_important
    from comfyui_dreamo.dreamo_ops.placeholders import parse_weights

    expected = [(unescape_important(t), w) for t, w in token_weights(escape_important(text), 1.0)]
    got = parse_weights(text)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


def test_weight_parser_matches_comfyui_on_random_and_deep_text():
    """The parser is a loop (no recursion, bounded work) but reads exactly as ComfyUI's recursive one, stray and
    unclosed brackets included, up to the deepest nesting DreamO accepts."""
    import random

    from comfy.sd1_clip import escape_important, token_weights, unescape_important
    from comfyui_dreamo.dreamo_ops.placeholders import MAX_NESTING, parse_weights

    def comfy(text):
        return [(unescape_important(t), w) for t, w in token_weights(escape_important(text), 1.0)]

    rng = random.Random(19)
    alphabet = list("((((())))):: ab.1") + [":1.2)", ":0.5", "\\(", "\\)", "[ref#1]"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120))) for _ in range(3_000)]
    texts += ["(" * MAX_NESTING + "x" + ")" * MAX_NESTING, "(" * (MAX_NESTING + 1) + "x" + ")" * MAX_NESTING,
              ")" * 40 + "(" * 40 + "x" + ")" * 40, "(" * 45 + "x", "(a:1.5)" * 500]
    for text in texts:
        expected, got = comfy(text), parse_weights(text)
        assert [t for t, _ in got] == [t for t, _ in expected], text
        assert [w for _, w in got] == pytest.approx([w for _, w in expected]), text


# --- encoder parity ----------------------------------------------------------------------------------------------

PARITY_CASES = ["two_refs", "all_slots", "start", "end_period", "glued_both", "adjacent_in_sentence", "many_spaces",
                "newline", "cjk", "accents", "res_middle", "style_prefix", "plain_no_placeholder", "empty"]


@pytest.mark.parametrize("name", PARITY_CASES)
def test_t5_parity_with_dreamo_at_512(t5_pair, tok, vectors, name):
    comfy_t5, reference = t5_pair
    got = comfy_encode(comfy_t5, CASES[name]["text"], tok, vectors, 512)
    expected = reference_encode(reference, CASES[name]["ids"], 512)
    assert got.shape == expected.shape == (1, 512, 32)
    assert (got - expected).abs().max().item() < PARITY_TOL


@pytest.mark.parametrize("name", ["two_refs", "glued_both"])
def test_t5_parity_at_comfyui_length(t5_pair, tok, vectors, name):
    comfy_t5, reference = t5_pair
    got = comfy_encode(comfy_t5, CASES[name]["text"], tok, vectors, 256)
    expected = reference_encode(reference, CASES[name]["ids"], 256)
    assert got.shape == (1, 256, 32) and (got - expected).abs().max().item() < PARITY_TOL


def test_parity_fails_without_the_learned_vectors(t5_pair, tok, vectors):
    """Controls: the comparison can fail — ids instead of vectors, or ComfyUI's stock tokenization, differ."""
    import comfy.text_encoders.flux

    comfy_t5, reference = t5_pair
    case = CASES["two_refs"]
    expected = reference_encode(reference, case["ids"], 512)
    as_ids = comfy_encode(comfy_t5, case["text"], tok, None, 512)  # rows 32100.. of T5's own table
    assert (as_ids - expected).abs().max().item() > 1e-2
    stock = comfy.text_encoders.flux.T5XXLTokenizer().tokenize_with_weights(case["text"])[0]
    stock_ids = [t for t, _ in stock]
    assert 32100 not in stock_ids and stock_ids[:len(case["ids"])] != case["ids"]


def test_placeholder_rows_ignore_weights_around_them(t5_pair, tok, vectors):
    comfy_t5, _ = t5_pair
    words = CASES["for_weighting"]["tokens"]
    plain = comfy_encode(comfy_t5, CASES["for_weighting"]["text"], tok, vectors)
    around = comfy_encode(comfy_t5, "(a woman [ref#1] smiling:1.3) in a red dress [ref#2]", tok, vectors)
    alone = comfy_encode(comfy_t5, "a woman ([ref#1]:1.3) smiling in a red dress [ref#2]", tok, vectors)
    ref1, woman = words.index("[ref#1]"), words.index("▁woman")
    assert torch.equal(around[0, ref1], plain[0, ref1])
    assert not torch.allclose(around[0, woman], plain[0, woman], atol=1e-4)
    assert not torch.allclose(alone[0, ref1], plain[0, ref1], atol=1e-4)


def test_fp8_t5_weights_work_with_placeholder_vectors(tok, vectors):
    from dreamo_testkit import tiny_text_encoders as tte

    full = tte.comfy_t5(seed=3, scale=0.05)
    fp8 = tte.comfy_t5(seed=3, scale=0.05, dtype=torch.float8_e4m3fn)
    assert fp8.transformer.shared.weight.dtype == torch.float8_e4m3fn
    a = comfy_encode(full, CASES["two_refs"]["text"], tok, vectors)
    b = comfy_encode(fp8, CASES["two_refs"]["text"], tok, vectors)
    assert torch.isfinite(b).all() and ((a - b).norm() / a.norm()).item() < 0.1
    assert fp8.transformer.shared.weight.dtype == torch.float8_e4m3fn


# --- the node -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clip():
    from dreamo_testkit import tiny_text_encoders as tte

    return tte.flux_clip(seed=1, scale=0.05)


@pytest.fixture(scope="module")
def dreamo(vectors):
    from dreamo_testkit import tiny_models
    from comfyui_dreamo.dreamo_ops.condition_embedding import DreamOEmbeddings

    t = tiny_models.embedding_tensors(seed=2)
    return DreamOEmbeddings(task=t["dreamo_task_embedding.weight"], index=t["dreamo_idx_embedding.weight"],
                            placeholders=vectors, source="dreamo.safetensors")


def make_ref(slot, task="ip", size=(4, 6)):
    from comfyui_dreamo.dreamo_ops.reference import DreamOReference

    g = torch.Generator().manual_seed(100 + slot)
    h, w = size
    return DreamOReference(latent=torch.randn(1, 16, h, w, generator=g), task=task,
                           pixels=torch.zeros(1, h * 8, w * 8, 3))


def run_node(clip, dreamo, text, t5_length="512", add_style_instruction=True, **refs):
    from comfyui_dreamo.nodes.text_encode import DreamOTextEncode

    out = DreamOTextEncode().encode(clip, dreamo, text, t5_length, add_style_instruction, **refs)
    return out["result"]


def test_node_schema_is_documented():
    from comfyui_dreamo.nodes.text_encode import DreamOTextEncode as N

    spec = N.INPUT_TYPES()
    inputs = {**spec["required"], **spec["optional"]}
    assert list(spec["optional"]) == [f"ref_{i}" for i in range(1, 10)]
    assert all(opts.get("tooltip") for _, opts in inputs.values())
    assert spec["required"]["text"][1]["multiline"] and spec["required"]["t5_length"][1]["default"] == "512"
    assert len(N.OUTPUT_TOOLTIPS) == len(N.RETURN_TYPES) == len(N.RETURN_NAMES) == 2
    assert (N.NODE_ID, N.CATEGORY, N.RETURN_TYPES) == (NODE, "DreamO", ("CONDITIONING", "STRING"))
    assert N.DESCRIPTION and N.DISPLAY_NAME and callable(getattr(N, N.FUNCTION))


def test_node_t5_matches_dreamo_and_clip_l_reads_the_raw_text(clip, dreamo, tok):
    from dreamo_testkit import tiny_text_encoders as tte

    text = CASES["two_refs"]["text"]
    before = {k: v.clone() for k, v in clip.cond_stage_model.state_dict().items()}
    cond, prompt = run_node(clip, dreamo, text, ref_1=make_ref(1), ref_2=make_ref(2))
    assert prompt == text and len(cond) == 1
    reference = tte.dreamo_reference_t5(tte.hf_t5_from_comfy(clip.cond_stage_model.t5xxl), dreamo.placeholders)
    expected = reference_encode(reference, CASES["two_refs"]["ids"], 512)
    assert (cond[0][0] - expected).abs().max().item() < PARITY_TOL
    stock = clip.encode_from_tokens_scheduled(clip.tokenize(text))  # what CLIPTextEncode does
    assert torch.equal(cond[0][1]["pooled_output"], stock[0][1]["pooled_output"])
    after = clip.cond_stage_model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert clip.cond_stage_model.t5xxl.transformer.shared.weight.shape[0] == 32128


def test_node_lengths_and_style_instruction(clip, dreamo):
    from comfyui_dreamo.dreamo_ops.placeholders import STYLE_INSTRUCTION

    cond, _ = run_node(clip, dreamo, "a cat [ref#1]", "256", ref_1=make_ref(1))
    assert cond[0][0].shape == (1, 256, 32)
    cond, prompt = run_node(clip, dreamo, "a cat [ref#1]", ref_1=make_ref(1), ref_2=make_ref(2, "style"))
    assert prompt == f"{STYLE_INSTRUCTION} a cat [ref#1]" and cond[0][0].shape == (1, 512, 32)
    _, prompt = run_node(clip, dreamo, "a cat [ref#1]", "512", False, ref_1=make_ref(1), ref_2=make_ref(2, "style"))
    assert prompt == "a cat [ref#1]"


def test_node_errors_name_node_placeholder_and_fix(clip, dreamo):
    from comfyui_dreamo.dreamo_ops.errors import DreamOError

    with pytest.raises(DreamOError, match=rf"^{NODE} \(input 'text'\): the prompt names \[ref#3\] but there is no "
                       r"reference in ref_3; references are connected to ref_1, ref_2\. Fix: connect"):
        run_node(clip, dreamo, "a [ref#1] and [ref#3]", ref_1=make_ref(1), ref_2=make_ref(2))
    with pytest.raises(DreamOError, match=rf"^{NODE} \(input 'text'\):.*'\[REF#1\]'.*did you mean \[ref#1\].*Fix"):
        run_node(clip, dreamo, "a woman [REF#1]", ref_1=make_ref(1))
    with pytest.raises(DreamOError, match=rf"^{NODE} \(input 'ref_2'\): expected a DreamO reference.*Fix"):
        run_node(clip, dreamo, "a woman", ref_2="not a reference")
    with pytest.raises(DreamOError, match=rf"^{NODE} \(input 'clip'\): no text encoder.*Fix: load FLUX"):
        run_node(None, dreamo, "a woman")


def test_dreamo_without_placeholder_vectors(clip, dreamo):
    from dataclasses import replace

    from comfyui_dreamo.dreamo_ops.errors import DreamOError

    no_vectors = replace(dreamo, placeholders=None, source="embedding.safetensors")
    with pytest.raises(DreamOError, match=rf"^{NODE} \(input 'dreamo'\): the prompt uses \[ref#1\] but "
                       r"'embedding.safetensors' has no placeholder vectors.*Fix: load dreamo.safetensors"):
        run_node(clip, no_vectors, "a woman [ref#1]", ref_1=make_ref(1))
    cond, _ = run_node(clip, no_vectors, "a woman", ref_1=make_ref(1))  # nothing to map: fine
    assert cond[0][0].shape == (1, 512, 32)


def test_placeholder_width_must_match_t5(clip, dreamo):
    from dataclasses import replace

    from comfyui_dreamo.dreamo_ops.errors import DreamOError

    with pytest.raises(DreamOError, match=r"\(input 'dreamo'\): the placeholder vectors are 16-wide but this T5's "
                       r"embeddings are 32-wide"):
        run_node(clip, replace(dreamo, placeholders=torch.zeros(10, 16)), "a woman [ref#1]")


def test_text_encoder_without_t5_is_refused(dreamo):
    import comfy.sd
    import comfy.sd1_clip
    from dreamo_testkit import tiny_text_encoders as tte
    from comfyui_dreamo.dreamo_ops.errors import DreamOError

    class SD1Target:
        params = {}
        clip = comfy.sd1_clip.SD1ClipModel
        tokenizer = comfy.sd1_clip.SD1Tokenizer

    sd1 = comfy.sd.CLIP(SD1Target, model_options={"clip_l_model_config": dict(tte.TINY_CLIP_L),
                                                  "dtype": torch.float32, "load_device": torch.device("cpu"),
                                                  "offload_device": torch.device("cpu"),
                                                  "initial_device": torch.device("cpu")})
    with pytest.raises(DreamOError, match=rf"^{NODE} \(input 'clip'\): this text encoder has no T5-XXL \(it has l\)"):
        run_node(sd1, dreamo, "a woman [ref#1]")


# --- end to end: text -> stock Flux nodes -> DreamOApply -> sampler ----------------------------------------------

def sample_one_step(flux, dreamo, positive, negative, refs, seed=0):
    import comfy.sample
    from comfyui_dreamo.nodes.apply import DreamOApply

    model, positive = DreamOApply().apply(flux, positive, dreamo, **refs)["result"]
    latent = torch.zeros(1, 16, 8, 8)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    return comfy.sample.sample(model, noise, 1, 1.0, "euler", "simple", positive, negative, latent, seed=seed,
                               disable_pbar=True)


def test_workflow_two_references_placeholder_prompt_end_to_end(flux, clip, dreamo):
    from dataclasses import replace

    from dreamo_testkit.host_sampling import core_nodes

    nodes = core_nodes()  # ComfyUI's stock nodes
    from comfy_extras.nodes_flux import FluxGuidance

    refs = {"ref_1": make_ref(1, size=(4, 4)), "ref_2": make_ref(2, size=(4, 6))}
    text = "a woman [ref#1] wearing the dress [ref#2]"
    cond, _ = run_node(clip, dreamo, text, **refs)
    (positive,) = FluxGuidance.execute(cond, guidance=4.5).result
    assert positive[0][1]["guidance"] == 4.5
    negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    out = sample_one_step(flux, dreamo, positive, negative, refs)
    assert out.shape == (1, 16, 8, 8) and torch.isfinite(out).all()
    assert torch.equal(out, sample_one_step(flux, dreamo, positive, negative, refs))

    # the learned [ref#2] vector reaches the model: changing it changes the image
    other = replace(dreamo, placeholders=dreamo.placeholders.clone())
    other.placeholders[1] += 1.0
    cond2, _ = run_node(clip, other, text, **refs)
    (positive2,) = FluxGuidance.execute(cond2, guidance=4.5).result
    assert not torch.allclose(sample_one_step(flux, other, positive2, negative, refs), out, atol=1e-5)

    # stock conditioning nodes work on DreamO's conditioning
    extra = clip.encode_from_tokens_scheduled(clip.tokenize("at sunset"))
    (concat,) = nodes.ConditioningConcat().concat(positive, extra)
    assert concat[0][0].shape == (1, 512 + 256, 32)
    (combined,) = nodes.ConditioningCombine().combine(positive, FluxGuidance.execute(extra, guidance=4.5).result[0])
    for conditioning in (concat, combined):
        res = sample_one_step(flux, dreamo, conditioning, negative, refs)
        assert res.shape == (1, 16, 8, 8) and torch.isfinite(res).all()


# --- DreamO Text Encode and DreamO Apply mean the same picture by the same slot --------------------------------

def test_apply_refuses_references_swapped_against_text_encodes(clip, dreamo, flux):
    from comfyui_dreamo.dreamo_ops.errors import DreamOError
    from comfyui_dreamo.nodes.apply import DreamOApply

    a, b = make_ref(1), make_ref(3, task="style")
    cond, _ = run_node(clip, dreamo, "the bottle [ref#1] in the style of [ref#3]", ref_1=a, ref_3=b)
    DreamOApply().apply(flux, cond, dreamo, ref_1=a, ref_3=b)  # the same references: accepted
    with pytest.raises(DreamOError) as e:
        DreamOApply().apply(flux, cond, dreamo, ref_1=b, ref_3=a)
    msg = str(e.value)
    assert msg.startswith("DreamOApply (input 'ref_1'): the reference in ref_1 here is not the one DreamO Text "
                          "Encode got in ref_1 (it got this picture in ref_3: are ref_1 and ref_3 swapped?)")
    assert "connected to DreamO Apply only is enough" in msg
    with pytest.raises(DreamOError, match=r"input 'ref_2'\): DreamO Text Encode has no reference in ref_2"):
        DreamOApply().apply(flux, cond, dreamo, ref_1=a, ref_2=make_ref(2), ref_3=b)


def test_references_connected_to_apply_only_are_enough(clip, dreamo, flux):
    """Text Encode without references: the prompt's placeholders are checked against Apply's references when
    sampling starts (the run stops naming DreamO Apply's socket), and a style reference it never saw is noted."""
    from comfyui_dreamo.dreamo_ops.errors import DreamOError
    from comfyui_dreamo.nodes.apply import DreamOApply

    negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    cond, _ = run_node(clip, dreamo, "a woman [ref#1] wearing the dress [ref#2]")
    refs = {"ref_1": make_ref(1, size=(4, 4)), "ref_2": make_ref(2, size=(4, 6))}
    out = sample_one_step(flux, dreamo, cond, negative, refs)
    assert torch.isfinite(out).all()
    with pytest.raises(DreamOError) as e:
        sample_one_step(flux, dreamo, cond, negative, {"ref_1": refs["ref_1"]})
    assert str(e.value).startswith("DreamOApply (input 'ref_2'): the prompt names [ref#2] but there is no reference "
                                   "in ref_2 (references are connected to ref_1).")
    # Text Encode given ref_1 and ref_2 but Apply only ref_1: stopped too.
    both, _ = run_node(clip, dreamo, "a woman [ref#1] wearing the dress [ref#2]", **refs)
    with pytest.raises(DreamOError, match=r"input 'ref_2'\): DreamO Text Encode was given a reference in "
                                                  r"ref_2 but no DreamO Apply on its conditioning has one"):
        sample_one_step(flux, dreamo, both, negative, {"ref_1": refs["ref_1"]})
    # A style reference Text Encode never saw: DreamO Apply says what the prompt lacks (shown on the node).
    style = make_ref(1, task="style")
    plain, _ = run_node(clip, dreamo, "a castle [ref#1]")
    info = DreamOApply().apply(flux, plain, dreamo, ref_1=style)["ui"]["dreamo_info"][0]
    assert "ref_1 is a style reference but the prompt lacks 'generate a same style image.'" in info
    written, _ = run_node(clip, dreamo, "generate a same style image. a castle [ref#1]")
    assert DreamOApply().apply(flux, written, dreamo, ref_1=style)["ui"]["dreamo_info"] == [""]


def test_chained_apply_nodes_and_other_text_encoders_pass(clip, dreamo, flux):
    from comfyui_dreamo.nodes.apply import DreamOApply

    refs = {"ref_1": make_ref(1, size=(4, 4)), "ref_2": make_ref(2), "ref_3": make_ref(3, size=(4, 4))}
    cond, _ = run_node(clip, dreamo, "[ref#1] [ref#2] [ref#3]", **refs)
    model, cond1 = DreamOApply().apply(flux, cond, dreamo, ref_1=refs["ref_1"], ref_2=refs["ref_2"])["result"]
    model, cond2 = DreamOApply().apply(model, cond1, dreamo, ref_3=refs["ref_3"])["result"]
    negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    import comfy.sample

    latent = torch.zeros(1, 16, 8, 8)
    out = comfy.sample.sample(model, torch.randn(latent.shape, generator=torch.Generator().manual_seed(0)), 1, 1.0,
                              "euler", "simple", cond2, negative, latent, seed=0, disable_pbar=True)
    assert torch.isfinite(out).all()
    # Conditioning from another text encoder (no DreamO record) is never checked.
    stock = clip.encode_from_tokens_scheduled(clip.tokenize("a woman and a dress"))
    assert torch.isfinite(sample_one_step(flux, dreamo, stock, negative, {"ref_2": refs["ref_2"]})).all()
