"""Regional prompts through a real ModelPatcher and ComfyUI's sampler on the tiny Flux and tiny text encoders (float32).

Each region's words are encoded on their own and appended to the positive conditioning; in every routed block the
attention of the one positive forward is checked against a dense-mask reference written here from the rules
(region words ↔ image outside the region cut or biased both ways, region words cut from one another, the base prompt
free, its [ref#k] tokens with reference k's region), and its probabilities read directly: exactly 0 where cut.
"""
import json

import pytest
import torch

from dreamo_testkit.host_graph import N_BLOCKS, apply, make_ref
from dreamo_testkit.host_graph import Spy as RoutingSpy
from dreamo_testkit.host_graph import sample as sample_steps

pytestmark = pytest.mark.host

TOL = 1e-5
BASE = "a rainy street at dusk, [ref#1] and [ref#2]"
WORDS = {1: "an old man in a grey coat [ref#1]", 2: "a girl in a yellow raincoat [ref#2]", 3: "a red car",
         4: "a lamp post", 5: "a dog", 6: "wet stones"}


@pytest.fixture(scope="module")
def clip():
    from dreamo_testkit import tiny_text_encoders

    return tiny_text_encoders.flux_clip(seed=5)


def encode(clip, dreamo, text, t5_length="minimal"):
    """DreamO Text Encode's conditioning, without the record of the slots its prompt names: BASE names [ref#1] and
    [ref#2] whatever references a case samples with (their tokens' routing is checked), which the run would
    otherwise refuse for a slot without a reference (slot_agreement, tested in test_text_encode_host.py)."""
    from comfyui_dreamo.dreamo_ops.slot_agreement import RECORD_KEY
    from comfyui_dreamo.nodes.text_encode import DreamOTextEncode

    encoded = DreamOTextEncode().encode(clip, dreamo, text, t5_length, False)["result"][0]
    return [[c, {k: v for k, v in d.items() if k != RECORD_KEY}] for c, d in encoded]


def route(model, clip, dreamo, positive, boxes, texts, size, **kw):
    """DreamO Routing with boxes {slot: [x, y, w, h]} drawn on a `size` (W, H) picture and their words."""
    from comfyui_dreamo.dreamo_ops.drawn_regions import dumps
    from comfyui_dreamo.nodes.routing import DreamORouting

    args = dict(mode="hard", strength=4.0, isolate_references=False, start_percent=0.0, end_percent=1.0,
                blocks="all", capture_maps=True)
    args.update(kw)
    drawn = dumps(size[0], size[1], boxes, texts) if boxes else ""
    return DreamORouting().route(model, **args, drawn_regions=drawn, positive=positive, clip=clip, dreamo=dreamo)


def sample(model, latent, positive, negative, cfg=1.0, sigmas=(0.8, 0.0), seed=0):
    return sample_steps(model, latent, positive, negative, cfg=cfg, sigmas=sigmas, seed=seed)


class Spy(RoutingSpy):
    """Wraps dreamo_ops.routing.fold_channels: keeps what each routed call got (q, k, v, the routing channels) and the
    attention the backend is asked for — plain attention over the folded tensors at its default scale, in float64."""

    def __call__(self, q, k, v, channels, scale=None):
        q2, k2, v2 = self.real(q, k, v, channels, scale)
        p = torch.softmax(q2.double() @ k2.double().transpose(-1, -2) * q2.shape[-1] ** -0.5, dim=-1)
        self.calls.append({"q": q, "k": k, "v": v, "channels": channels, "p": p,
                           "out": (p @ v2.double())[..., :q.shape[-1]]})
        return q2, k2, v2

    @staticmethod
    def probabilities(call):
        """Attention probabilities from the very folded q/k the backend got."""
        return call["p"]


# ----------------------------------------------------------------------------- the independent reference

def token_count(clip, dreamo, text):
    """Tokens a region's words take: encoded alone, unpadded (the words and </s>)."""
    return encode(clip, dreamo, text)[0][0].shape[1]


def placeholder_positions(text):
    """Token positions of [ref#k] in a prompt, from DreamO's tokenizer ids (32100 + k - 1)."""
    from comfyui_dreamo.dreamo_ops.t5_placeholder_tokenizer import load_tokenizer
    from comfyui_dreamo.nodes.text_encode import comfy_t5_tokenizer_file

    ids = load_tokenizer(comfy_t5_tokenizer_file()).ids(text)
    return {i: t - 32100 + 1 for i, t in enumerate(ids) if 32100 <= t < 32109}


def box_inside(box, latent_hw, size):
    """Tokens (row-major) whose whole 16-pixel cell lies in a token-aligned box drawn on the image's own pixels."""
    rows, cols = latent_hw[0] // 2, latent_hw[1] // 2
    assert size == (latent_hw[1] * 8, latent_hw[0] * 8) and all(v % 16 == 0 for v in box)
    x, y, w, h = (v // 16 for v in box)
    inside = torch.zeros(rows, cols, dtype=torch.bool)
    inside[y:y + h, x:x + w] = True
    return inside.reshape(-1)


def dense_bias(layout, base_len, spans, inside, follow, placeholders, mode, strength):
    """The L×L bias written token by token from the rules (−inf for cuts). `spans` {k: range of region k's words},
    `inside` {k: bool per image token} for every region."""
    txt_len = base_len + sum(len(r) for r in spans.values())
    L = txt_len + layout.total_count
    bias = torch.zeros(L, L, dtype=torch.float64)
    img = list(range(txt_len, txt_len + layout.image_count))

    def cut(rows, k):
        for n, j in enumerate(img):
            value = 0.0 if inside[k][n] else (float("-inf") if mode == "hard" else -strength)
            for i in rows:
                bias[i, j] = bias[j, i] = value

    start, refs = txt_len + layout.image_count, {}
    for r in layout.refs:
        refs[r.slot] = range(start, start + r.count)
        start += r.count
    for k, rows in spans.items():
        cut(rows, k)
        for m, other in spans.items():
            if m != k:
                for i in rows:
                    for j in other:
                        bias[i, j] = float("-inf")
    for k, rows in refs.items():
        if k in inside:
            cut(rows, k)
    if follow:
        for pos, k in placeholders.items():
            if k in refs and k in inside:
                cut([pos], k)
    return bias


def dense_attention(q, k, v, bias):
    s = (q.double() @ k.double().transpose(-1, -2)) * q.shape[-1] ** -0.5 + bias
    return torch.softmax(s, dim=-1) @ v.double()


def stripes(n, latent_hw):
    """n token-aligned vertical stripes over the image's pixels (W = latent width × 8); one region: the left half."""
    W, H = latent_hw[1] * 8, latent_hw[0] * 8
    cols = latent_hw[1] // 2
    edges = [round(i * cols / n) * 16 for i in range(n + 1)] if n > 1 else [0, cols // 2 * 16]
    return {i + 1: [edges[i], 0, edges[i + 1] - edges[i], H] for i in range(n)}, (W, H)


# ----------------------------------------------------------------------------- cases

CASES = {  # regions, reference slots, latent (h, w), batch, cfg, mode, follow
    "1_region_text_only": (1, (), (8, 12), 1, 1.0, "hard", True),
    "2_regions_2_refs": (2, (1, 2), (8, 12), 1, 1.0, "hard", True),
    "3_regions_cfg_batch2": (3, (1, 2), (8, 12), 2, 2.5, "hard", True),
    "4_regions_soft": (4, (1, 2), (12, 8), 1, 1.0, "soft", True),
    "5_regions_no_follow": (5, (1,), (8, 20), 1, 1.0, "hard", False),
    "6_regions_soft_batch2_cfg": (6, (1, 2), (8, 12), 2, 2.0, "soft", True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_region_words_are_routed_like_the_dense_reference(flux, dreamo, clip, monkeypatch, case):
    from dreamo_testkit import tiny_models
    from comfyui_dreamo.dreamo_ops.token_layout import reference_layout
    from dreamo_testkit.host_sampling import add_recorder

    n, ref_slots, latent_hw, batch, cfg, mode, follow = CASES[case]
    refs = {s: make_ref(4 + 2 * s, 4, seed=10 + s) for s in ref_slots}
    base = encode(clip, dreamo, BASE)
    boxes, size = stripes(n, latent_hw)
    texts = {k: WORDS[k] for k in boxes}
    model = flux
    if refs:
        model, base = apply(flux, dreamo, refs, base)
    else:  # no reference in the sampled conditioning: DreamO is on the model, the positive has words only
        model, _ = apply(flux, dreamo, {1: make_ref(4, 4, seed=9)}, base)
    model, positive = route(model, clip, dreamo, base, boxes, texts, size, mode=mode, strength=3.0,
                            base_placeholders_follow=follow)
    negative = tiny_models.conditioning(seed=4, tokens=9)
    rec = add_recorder(model)
    spy = Spy(monkeypatch)
    latent = torch.zeros(batch, 16, *latent_hw)
    sample(model, latent, positive, negative, cfg=cfg)

    # one positive forward per step, whatever the number of regions; the negative is its own, unrouted, call
    assert len(spy.calls) == N_BLOCKS
    assert sorted(c["cond_or_uncond"] for c in rec.calls) == ([[0], [1]] if cfg > 1 else [[0]])
    base_len = base[0][0].shape[1]
    spans, start = {}, base_len
    for k in sorted(texts):
        spans[k] = range(start, start + token_count(clip, dreamo, texts[k]))
        start = spans[k].stop
    assert positive[0][0].shape[1] == start  # the words are appended, unpadded
    layout = reference_layout(latent_hw, [r.latent.shape[-2:] for r in refs.values()], tuple(refs))
    inside = {k: box_inside(box, latent_hw, size) for k, box in boxes.items()}
    bias = dense_bias(layout, base_len, spans, inside, follow, placeholder_positions(BASE), mode, 3.0)
    txt_len = start
    img = torch.arange(txt_len, txt_len + layout.image_count)
    free = torch.tensor([i for i in range(base_len) if i not in placeholder_positions(BASE)])  # the base's words
    for call in spy.calls:
        assert call["q"].shape[0] == batch and call["q"].shape[2] == bias.shape[0]
        expected = dense_attention(call["q"], call["k"], call["v"], bias)
        err = ((call["out"].double() - expected).norm() / expected.norm()).item()
        assert err < TOL, err
        p = Spy.probabilities(call)
        for k, rows in spans.items():
            rows = torch.tensor(list(rows))
            out_k, in_k = img[~inside[k]], img[inside[k]]
            if mode == "hard":
                if len(out_k):
                    assert (p[:, :, rows][..., out_k] == 0).all() and (p[:, :, out_k][..., rows] == 0).all()
            assert (p[:, :, rows][..., in_k] > 0).all() and (p[:, :, in_k][..., rows] > 0).all()
            others = torch.tensor([i for m, r in spans.items() if m != k for i in r], dtype=torch.long)
            if len(others):
                assert (p[:, :, rows][..., others] == 0).all()
            assert (p[:, :, rows][..., :base_len] > 0).all() and (p[:, :, :base_len][..., rows] > 0).all()
        assert (p[:, :, free][..., img] > 0).all() and (p[:, :, img][..., free] > 0).all()


def test_soft_region_words_are_monotone_in_strength(flux, dreamo, clip, monkeypatch):
    from dreamo_testkit import tiny_models

    latent_hw = (8, 12)
    boxes, size = stripes(2, latent_hw)
    base = encode(clip, dreamo, BASE)
    model, cond = apply(flux, dreamo, {1: make_ref(6, 6, seed=20)}, base)
    masses = []
    for strength in (0.25, 1.0, 4.0, 16.0):
        m, positive = route(model, clip, dreamo, cond, {2: boxes[2]}, {2: WORDS[3]}, size, mode="soft",
                            strength=strength)
        spy = Spy(monkeypatch)
        sample(m, torch.zeros(1, 16, *latent_hw), positive, tiny_models.conditioning(seed=4))
        base_len = cond[0][0].shape[1]
        rows = torch.arange(base_len, positive[0][0].shape[1])
        img = torch.arange(positive[0][0].shape[1], positive[0][0].shape[1] + 24).reshape(4, 6)
        outside = img[:, :3].reshape(-1)
        masses.append([Spy.probabilities(c)[:, :, rows][..., outside].sum().item() for c in spy.calls])
    for block in range(N_BLOCKS):
        series = [m[block] for m in masses]
        assert all(a > b for a, b in zip(series, series[1:])), series


@pytest.mark.parametrize("cfg", [1.0, 2.0])
def test_no_region_words_is_bit_identical(flux, dreamo, clip, cfg):
    from dreamo_testkit import tiny_models

    latent_hw = (8, 12)
    boxes, size = stripes(2, latent_hw)
    base = encode(clip, dreamo, BASE, "512")
    refs = {1: make_ref(6, 6, seed=21), 2: make_ref(4, 8, seed=22)}
    model, cond = apply(flux, dreamo, refs, base)
    neg = tiny_models.conditioning(seed=4)
    plain_model, _ = route(model, None, None, None, boxes, {}, size)
    plain = sample(plain_model, torch.zeros(2, 16, *latent_hw), cond, neg, cfg=cfg)
    routed_model, positive = route(model, clip, dreamo, cond, boxes, {}, size)
    assert positive is cond  # no words: the conditioning passes through untouched
    assert torch.equal(plain, sample(routed_model, torch.zeros(2, 16, *latent_hw), positive, neg, cfg=cfg))
    # ... and DreamO Text Encode's bookkeeping (where the placeholders are) changes nothing either
    stripped = [[c, {k: v for k, v in d.items() if k != "dreamo_text"}] for c, d in cond]
    assert torch.equal(plain, sample(plain_model, torch.zeros(2, 16, *latent_hw), stripped, neg, cfg=cfg))


def test_negative_pass_is_untouched(flux, dreamo, clip):
    from dreamo_testkit import tiny_models
    from dreamo_testkit.host_sampling import add_recorder

    latent_hw = (8, 12)
    boxes, size = stripes(3, latent_hw)
    refs = {1: make_ref(6, 6, seed=23)}
    model, cond = apply(flux, dreamo, refs, encode(clip, dreamo, BASE))
    neg = tiny_models.conditioning(seed=4, tokens=9)
    uncond = {}
    for words in ({}, {k: WORDS[k] for k in boxes}):
        drawn = boxes if words else {1: boxes[1]}  # a box without words needs its reference
        m, positive = route(model, clip, dreamo, cond, drawn, words, size)
        rec = add_recorder(m)
        sample(m, torch.zeros(2, 16, *latent_hw), positive, neg, cfg=3.0)
        calls = [c for c in rec.calls if c["cond_or_uncond"] == [1]]
        assert len(calls) == 1 and calls[0]["n_refs"] == 0
        uncond[bool(words)] = calls[0]["out"]
    assert torch.equal(uncond[False], uncond[True])


def test_base_placeholders_follow_their_reference_switchable(flux, dreamo, clip, monkeypatch):
    from dreamo_testkit import tiny_models

    latent_hw = (8, 12)
    boxes, size = stripes(2, latent_hw)
    base = encode(clip, dreamo, BASE)
    positions = placeholder_positions(BASE)
    assert sorted(positions.values()) == [1, 2]
    model, cond = apply(flux, dreamo, {1: make_ref(6, 6, seed=24), 2: make_ref(4, 4, seed=25)}, base)
    for follow in (True, False):
        m, positive = route(model, clip, dreamo, cond, boxes, {1: WORDS[1]}, size, base_placeholders_follow=follow)
        spy = Spy(monkeypatch)
        sample(m, torch.zeros(1, 16, *latent_hw), positive, tiny_models.conditioning(seed=4))
        txt = positive[0][0].shape[1]
        img = torch.arange(txt, txt + 24).reshape(4, 6)
        for pos, slot in positions.items():
            outside = (img[:, 3:] if slot == 1 else img[:, :3]).reshape(-1)
            for call in spy.calls:
                p = Spy.probabilities(call)
                cut = (p[:, :, [pos]][..., outside] == 0).all() and (p[:, :, outside][..., [pos]] == 0).all()
                assert bool(cut) == follow, (slot, follow)


def test_routing_map_shows_where_each_regions_words_went(flux, dreamo, clip):
    from dreamo_testkit import tiny_models
    from comfyui_dreamo.nodes.routing import DreamORoutingMap, routing_spec

    latent_hw = (8, 12)
    boxes, size = stripes(2, latent_hw)
    model, cond = apply(flux, dreamo, {1: make_ref(6, 6, seed=26)}, encode(clip, dreamo, BASE))
    m, positive = route(model, clip, dreamo, cond, boxes, {1: WORDS[1], 2: WORDS[2]}, size)
    out = sample(m, torch.zeros(1, 16, *latent_hw), positive, tiny_models.conditioning(seed=4),
                 sigmas=(0.9, 0.5, 0.0))
    capture = routing_spec(m).capture
    maps = capture.maps()
    assert list(maps) == [1, ("region", 1), ("region", 2)]
    for key, k in ((("region", 1), 1), (("region", 2), 2)):
        cols = maps[key][0].sum(dim=0)  # words' attention per token column: all inside the region's stripe
        inside = slice(0, 3) if k == 1 else slice(3, 6)
        assert cols[inside].sum() > 0 and torch.allclose(cols.sum(), cols[inside].sum())
    assert capture.labels[("region", 2)].startswith("region 2: a girl in a yellow")
    shown = DreamORoutingMap().render(m, {"samples": out})
    masks, picture = shown["result"]
    assert masks.shape == (3, 64, 96) and picture.shape == (1, 64, 96, 3)


def test_region_costs_its_words_in_tokens(clip, dreamo):
    from comfyui_dreamo.dreamo_ops.t5_placeholder_tokenizer import load_tokenizer
    from comfyui_dreamo.nodes.text_encode import comfy_t5_tokenizer_file

    tok = load_tokenizer(comfy_t5_tokenizer_file())
    for text in WORDS.values():
        assert token_count(clip, dreamo, text) == len(tok.ids(text))  # the words and </s>, no padding


# ----------------------------------------------------------------------------- the three ways in, one meaning

def masked_path(clip, dreamo, base_text, boxes, texts, size):
    """Core nodes: a DreamO Text Encode per region → ConditioningSetMask → ConditioningCombine, then ours."""
    from comfyui_dreamo.dreamo_ops.drawn_regions import box_mask
    from comfyui_dreamo.nodes.regional import DreamORegionalConditioning
    from dreamo_testkit.host_sampling import core_nodes

    nodes = core_nodes()
    combined = encode(clip, dreamo, base_text)
    for k in sorted(texts):
        x, y, w, h = boxes[k]
        mask = box_mask(size[0], size[1], (x, y, x + w, y + h))[None]
        (masked,) = nodes.ConditioningSetMask().append(encode(clip, dreamo, texts[k]), mask, "default", 1.0)
        (combined,) = nodes.ConditioningCombine().combine(combined, masked)
    return DreamORegionalConditioning().convert(combined)[0]


def regions_of(conditioning):
    from comfyui_dreamo.dreamo_ops.regional import region_prompts_of

    (regions,) = region_prompts_of(conditioning)
    return regions


def pixels(area):
    """A region's area as a pixel mask (a drawn box reaches the routing as its geometry, a Rectangle)."""
    return area if isinstance(area, torch.Tensor) else area.mask()


def assert_same_routed_conditioning(a, b):
    assert len(a) == len(b) == 1 and torch.equal(a[0][0], b[0][0])
    ra, rb = regions_of(a), regions_of(b)
    assert (ra.base_length, ra.placeholders, ra.follow) == (rb.base_length, rb.placeholders, rb.follow)
    assert len(ra.prompts) == len(rb.prompts)
    for pa, pb in zip(ra.prompts, rb.prompts):
        assert (pa.index, pa.start, pa.length, pa.text) == (pb.index, pb.start, pb.length, pb.text)
        assert torch.equal(pixels(pa.area), pixels(pb.area))
    assert torch.equal(a[0][1]["pooled_output"], b[0][1]["pooled_output"])


def test_masked_conditioning_path_equals_the_editor_path(flux, dreamo, clip):
    from dreamo_testkit import tiny_models

    latent_hw = (8, 12)
    boxes, size = stripes(3, latent_hw)
    texts = {k: WORDS[k] for k in boxes}
    masked = masked_path(clip, dreamo, BASE, boxes, texts, size)
    model, editor = route(flux, clip, dreamo, encode(clip, dreamo, BASE), boxes, texts, size)
    assert_same_routed_conditioning(masked, editor)
    # and they sample the same: reference 1 goes to region 1 either way
    refs = {1: make_ref(6, 6, seed=27)}
    neg = tiny_models.conditioning(seed=4)
    m1, c1 = apply(model, dreamo, refs, editor)
    m2, c2 = apply(flux, dreamo, refs, masked)
    from comfyui_dreamo.nodes.routing import DreamORouting

    m2 = DreamORouting().route(m2, "hard", 4.0, False, 0.0, 1.0, "all", True)[0]  # same settings, no boxes
    assert torch.equal(sample(m1, torch.zeros(1, 16, *latent_hw), c1, neg),
                       sample(m2, torch.zeros(1, 16, *latent_hw), c2, neg))


def core_masked(clip, dreamo, **set_mask):
    from dreamo_testkit.host_sampling import core_nodes

    nodes = core_nodes()
    args = {"set_cond_area": "default", "strength": 1.0, **set_mask}
    mask = torch.zeros(1, 32, 32)
    mask[:, :, :16] = 1
    (masked,) = nodes.ConditioningSetMask().append(encode(clip, dreamo, "a red car"), mask, **args)
    return nodes, masked


@pytest.mark.parametrize("what, words", [
    ("bounds", "set_area_to_bounds on"),
    ("strength", "mask strength 0.5"),
    ("area", "'area' (set by ConditioningSetArea)"),
    ("timestep", "'end_percent' (set by ConditioningSetTimestepRange)"),
    ("no_base", "there is no base prompt"),
    ("ten", "10 masked conditionings"),
    ("guidance", "guidance 2 but the base prompt has 3.5"),
])
def test_what_the_masked_path_cannot_keep_is_named(clip, dreamo, what, words):
    from comfy_extras.nodes_flux import FluxGuidance

    from comfyui_dreamo.dreamo_ops.errors import DreamOError
    from comfyui_dreamo.nodes.regional import DreamORegionalConditioning

    nodes, masked = core_masked(clip, dreamo, **({"set_cond_area": "mask bounds"} if what == "bounds" else {}),
                                **({"strength": 0.5} if what == "strength" else {}))
    base = FluxGuidance.execute(encode(clip, dreamo, BASE), guidance=3.5).result[0]
    if what == "area":
        (base,) = nodes.ConditioningSetArea().append(base, 64, 64, 0, 0, 1.0)
    if what == "timestep":
        (masked,) = nodes.ConditioningSetTimestepRange().set_range(masked, 0.0, 0.5)
    if what == "guidance":
        masked = FluxGuidance.execute(masked, guidance=2.0).result[0]
    parts = [masked] if what == "no_base" else [base] + [masked] * (10 if what == "ten" else 1)
    combined = [e for p in parts for e in p]
    with pytest.raises(DreamOError) as e:
        DreamORegionalConditioning().convert(combined)
    message = str(e.value)
    assert message.startswith("DreamORegionalConditioning (input 'conditioning'): ") and "Fix:" in message
    assert words in message, message


def test_bounding_boxes_are_a_region_source_where_core_has_them(flux, dreamo, clip):
    from comfyui_dreamo.dreamo_ops.areas import area_coverage
    from comfyui_dreamo.nodes.routing import DreamORouting, bounding_box_type, routing_spec

    optional = DreamORouting.INPUT_TYPES()["optional"]
    try:
        from comfy_api.latest import io
    except ImportError:
        io = None
    if getattr(io, "BoundingBox", None) is None:  # ComfyUI 0.3.64: no such type, no such input
        assert bounding_box_type() is None and "bboxes" not in optional
        return
    assert optional["bboxes"][0] == "BOUNDING_BOX" == io.BoundingBox.io_type
    latent_hw = (8, 12)
    boxes, size = stripes(2, latent_hw)
    texts = {1: WORDS[1], 2: WORDS[2]}
    # core's value: frames of {x, y, width, height} in pixels of the generated image (CreateBoundingBoxes' output)
    value = [[{"x": b[0], "y": b[1], "width": b[2], "height": b[3]} for _, b in sorted(boxes.items())]]
    from comfyui_dreamo.dreamo_ops.drawn_regions import dumps

    words_only = json.loads(dumps(*size, {}, texts))
    m, from_boxes = DreamORouting().route(flux, "hard", 4.0, False, 0.0, 1.0, "all", True,
                                          drawn_regions=json.dumps(words_only), positive=encode(clip, dreamo, BASE),
                                          clip=clip, dreamo=dreamo, bboxes=value)
    _, drawn = route(flux, clip, dreamo, encode(clip, dreamo, BASE), boxes, texts, size)
    assert torch.equal(from_boxes[0][0], drawn[0][0])
    for pa, pb in zip(regions_of(from_boxes).prompts, regions_of(drawn).prompts):
        assert torch.equal(area_coverage(pa.area, latent_hw), area_coverage(pb.area, latent_hw))
    assert routing_spec(m).sources == {1: "bboxes", 2: "bboxes"}


def test_words_need_an_area_and_a_positive_path(flux, dreamo, clip):
    from dreamo_testkit import tiny_models
    from comfyui_dreamo.dreamo_ops.errors import DreamOError
    from comfyui_dreamo.nodes.routing import DreamORouting

    latent_hw = (8, 12)
    boxes, size = stripes(2, latent_hw)
    base = encode(clip, dreamo, BASE)
    with pytest.raises(DreamOError, match=r"input 'drawn_regions'\): region 3 has words but no area"):
        route(flux, clip, dreamo, base, boxes, {3: "a cat"}, size)
    with pytest.raises(DreamOError, match=r"input 'positive'\): region 1 has words but no positive"):
        route(flux, clip, dreamo, None, boxes, {1: "a cat"}, size)
    with pytest.raises(DreamOError, match=r"input 'clip'\)"):
        route(flux, None, dreamo, base, boxes, {1: "a cat"}, size)
    with pytest.raises(DreamOError, match=r"input 'drawn_regions'\): region 1's words: .*\[REF#1\]"):
        route(flux, clip, dreamo, base, boxes, {1: "a cat [REF#1]"}, size)
    # the positive output is wired on but the input is not (the API prompt says so)
    prompt = {"5": {"class_type": "DreamORouting", "inputs": {}}, "6": {"class_type": "KSampler",
                                                                      "inputs": {"positive": ["5", 1]}}}
    with pytest.raises(DreamOError, match=r"input 'positive'\): the positive output is connected"):
        DreamORouting().route(flux, "hard", 4.0, False, 0.0, 1.0, "all", True, prompt=prompt, unique_id="5")
    # words typed, but the conditioning sampled is not the one DreamO Routing made
    model, cond = apply(flux, dreamo, {1: make_ref(6, 6, seed=28)}, base)
    m, _ = route(model, clip, dreamo, cond, {1: boxes[1]}, {1: "a cat"}, size)
    with pytest.raises(DreamOError, match=r"input 'positive'\): the boxes of slots \[1\] have words"):
        sample(m, torch.zeros(1, 16, *latent_hw), cond, tiny_models.conditioning(seed=4))
