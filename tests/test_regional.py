"""dreamo_ops.regional without the host: region prompts' channels against a dense-mask reference, box coverage,
the words stored in drawn_regions, core's bounding boxes and masked conditionings (as plain lists)."""
import json

import pytest
import torch

from comfyui_dreamo.dreamo_ops.drawn_regions import box_mask, dumps, parse
from comfyui_dreamo.dreamo_ops.errors import DreamOError
from comfyui_dreamo.dreamo_ops.areas import BoxArea, area_coverage, region_to_tokens
from comfyui_dreamo.dreamo_ops.regional import (REGIONS_KWARG, TEXT_KEY, RegionPrompts, Segment, parse_bboxes,
                                                region_prompts_of, split_masked, with_region_prompts)
from comfyui_dreamo.dreamo_ops.routing import RoutingSpec
from comfyui_dreamo.dreamo_ops.routing_bias import routed_attention, routing_channels
from comfyui_dreamo.dreamo_ops.token_layout import reference_layout

NODE = "DreamORouting"


def supersampled(box, frame, latent_hw, patch=2):
    """Coverage by brute force: the image drawn on a fine pixel grid on which the stretched box's edges fall on pixel
    edges (frame / gcd(frame, latent) fine pixels per latent cell), each fine pixel in or out by its centre."""
    import math

    h, w = latent_hw
    fy, fx = frame[1] // math.gcd(frame[1], h), frame[0] // math.gcd(frame[0], w)
    H, W = h * fy, w * fx
    ys = (torch.arange(H, dtype=torch.float64) + 0.5) / H * frame[1]
    xs = (torch.arange(W, dtype=torch.float64) + 0.5) / W * frame[0]
    x0, y0, x1, y1 = box
    img = ((ys >= y0) & (ys < y1))[:, None].double() * ((xs >= x0) & (xs < x1))[None, :].double()
    rows, cols = -(-h // patch), -(-w // patch)
    out = torch.zeros(rows, cols, dtype=torch.float64)
    for r in range(rows):
        for q in range(cols):
            out[r, q] = img[r * patch * fy:(r + 1) * patch * fy, q * patch * fx:(q + 1) * patch * fx].mean()
    return out.float()


@pytest.mark.parametrize("box, frame, latent_hw", [
    ((0, 0, 48, 64), (96, 64), (8, 12)), ((10, 7, 70, 41), (96, 64), (8, 12)), ((3, 2, 9, 13), (20, 16), (7, 9)),
    ((0, 0, 90, 50), (96, 96), (6, 6)), ((5, 3, 11, 7), (13, 11), (5, 7))])
def test_box_coverage_is_exact_area(box, frame, latent_hw):
    got = BoxArea(*box, frame=frame).coverage(latent_hw)
    assert torch.allclose(got, supersampled(box, frame, latent_hw), atol=1e-6)


def test_box_coverage_equals_its_mask_and_image_pixels_by_default():
    box = (16, 8, 80, 56)
    mask = box_mask(96, 64, box)
    assert torch.allclose(BoxArea(*box, frame=(96, 64)).coverage((8, 12)), region_to_tokens(mask, (8, 12)), atol=1e-7)
    assert torch.equal(BoxArea(*box).coverage((8, 12)), BoxArea(*box, frame=(96, 64)).coverage((8, 12)))
    assert torch.equal(area_coverage(mask, (8, 12)), region_to_tokens(mask, (8, 12)))
    with pytest.raises(DreamOError, match="input 'bboxes'.*outside the 96 × 64 image"):
        BoxArea(200, 0, 220, 10).coverage((8, 12))


# ----------------------------------------------------------------------------- channels vs a dense mask

def dense(layout, txt_len, spans, placeholders, cover, ref_cover, mode, strength):
    L = txt_len + layout.total_count
    bias = torch.zeros(L, L, dtype=torch.float64)
    img = range(txt_len, txt_len + layout.image_count)

    def cut(rows, cov):
        cov = cov.reshape(-1)
        for n, j in enumerate(img):
            v = (0.0 if cov[n] >= 0.5 else float("-inf")) if mode == "hard" else -strength * (1 - float(cov[n]))
            for i in rows:
                bias[i, j] = bias[j, i] = v

    for k, rows in spans.items():
        cut(rows, cover[k])
        for m, other in spans.items():
            if m != k:
                for i in rows:
                    for j in other:
                        bias[i, j] = float("-inf")
    start = txt_len + layout.image_count
    for r in layout.refs:
        if r.slot in ref_cover:
            cut(range(start, start + r.count), ref_cover[r.slot])
        start += r.count
    for pos, slot in placeholders:
        if slot in ref_cover:
            cut([pos], ref_cover[slot])
    return bias


@pytest.mark.parametrize("mode, strength", [("hard", 4.0), ("soft", 0.7), ("soft", 5.0)])
@pytest.mark.parametrize("n_regions", [1, 3, 6])
def test_region_channels_equal_the_dense_mask(mode, strength, n_regions):
    g = torch.Generator().manual_seed(n_regions)
    layout = reference_layout((6, 8), [(4, 4), (2, 6)], (1, 2))
    base, lengths = 5, [3, 4, 2, 5, 3, 2][:n_regions]
    areas = {k: (torch.rand(24, 32, generator=g) > 0.4).float() for k in range(1, n_regions + 1)}
    prompts, start = [], base
    from comfyui_dreamo.dreamo_ops.regional import RegionPrompt

    for k, n in zip(areas, lengths):
        prompts.append(RegionPrompt(k, start, n, areas[k]))
        start += n
    txt_len = start + 2  # two more tokens after the regions (e.g. a ConditioningConcat): base words too
    regions = RegionPrompts(tuple(prompts), base, placeholders=((1, 1), (3, 2)), follow=True, node="test")
    ref_masks = {2: (torch.rand(10, 10, generator=g) > 0.5).float()}  # ref 2 has its own region; ref 1 follows
    spec = RoutingSpec(regions=ref_masks, mode=mode, strength=strength)
    ref_cover = {s: region_to_tokens(m, (6, 8)) for s, m in ref_masks.items()}
    text, follow = regions.text_routing(txt_len, ref_cover, {1, 2}, (6, 8), 2)
    assert set(follow) == {1}
    channels = routing_channels(layout, txt_len, spec, {**ref_cover, **follow}, scale=16 ** -0.5, text=text)
    L = txt_len + layout.total_count
    q, k, v = (torch.randn(2, 3, L, 16, generator=g) for _ in range(3))
    cover = {p.index: region_to_tokens(p.area, (6, 8)) for p in prompts}
    spans = {p.index: range(p.start, p.start + p.length) for p in prompts}
    bias = dense(layout, txt_len, spans, regions.placeholders, cover, {**ref_cover, 1: cover[1]}, mode, strength)
    s = (q.double() @ k.double().transpose(-1, -2)) * 16 ** -0.5 + bias
    expected = torch.softmax(s, dim=-1) @ v.double()
    got = routed_attention(q, k, v, channels)
    assert ((got.double() - expected).norm() / expected.norm()).item() < 1e-5
    # a reference and the words of its region share one pair of channels: few channels for many regions
    assert channels.q.shape[-1] <= 8 * -(-(2 * (n_regions + 1) + n_regions) // 8)


def test_follow_off_leaves_base_placeholders_free():
    layout = reference_layout((4, 4), [(2, 2)], (1,))
    area = torch.zeros(8, 8)
    area[:, :4] = 1
    from comfyui_dreamo.dreamo_ops.regional import RegionPrompt

    regions = RegionPrompts((RegionPrompt(1, 4, 2, area),), 4, placeholders=((2, 1),), follow=False, node="t")
    text, _ = regions.text_routing(6, {}, {1}, (4, 4), 2)
    assert [len(ix) for ix, _ in text.items] == [2]  # only the region's words
    regions.follow = True
    text, _ = regions.text_routing(6, {}, {1}, (4, 4), 2)
    assert [ix.tolist() for ix, _ in text.items] == [[4, 5], [2]]


# ----------------------------------------------------------------------------- words in drawn_regions

def test_words_are_stored_with_the_boxes_and_old_values_stay_valid():
    old = '{"width":64,"height":64,"boxes":{"1":[0,0,32,64]}}'
    assert parse(old, NODE).texts == {}
    text = dumps(64, 64, {1: [0, 0, 32, 64]}, {1: "  an old man [ref#1] ", 2: "a red car", 3: "  "})
    assert json.loads(text)["texts"] == {"1": "  an old man [ref#1] ", "2": "a red car"}
    assert parse(text, NODE).texts == {1: "an old man [ref#1]", 2: "a red car"}
    assert dumps(64, 64, {1: [0, 0, 32, 64]}, {}) == old
    assert "über" in dumps(8, 8, {}, {1: "über"})  # as the editor writes it (JSON.stringify keeps non-ASCII)


@pytest.mark.parametrize("texts, words", [
    ([], "'texts' must map slot numbers"), ({"0": "x"}, "text '0' is not a region number"),
    ({"10": "x"}, "text '10' is not a region number"), ({" 1": "x"}, "text ' 1' is not a region number"),
    ({"1": 5}, "the words of region 1 must be text"), ({"1": "x" * 4001}, "4001 characters long")])
def test_bad_words_are_named_errors(texts, words):
    text = json.dumps({"width": 64, "height": 64, "boxes": {}, "texts": texts})
    with pytest.raises(DreamOError, match=r"DreamORouting \(input 'drawn_regions'\)") as e:
        parse(text, NODE)
    assert words in str(e.value) and "Fix:" in str(e.value)


# ----------------------------------------------------------------------------- core's bounding boxes

def test_bounding_boxes_in_every_shape_core_gives_them():
    one = {"x": 10, "y": 20, "width": 30, "height": 40}
    two = {"x": 0, "y": 0, "width": 8, "height": 8}
    for value in (one, [one, two], [[one, two]], [[one, two], [one, two]]):
        boxes = parse_bboxes(value, NODE)
        assert boxes[0] == BoxArea(10.0, 20.0, 40.0, 60.0, None, "bboxes")
    assert parse_bboxes([], NODE) == [] and parse_bboxes([[]], NODE) == []


@pytest.mark.parametrize("value, words", [
    ("boxes", "expected bounding boxes, got str"), ([[{"x": 0, "y": 0, "width": 8, "height": 8}], []], None),
    ([[{"x": 0, "y": 0, "width": 8, "height": 8}], [{"x": 1, "y": 0, "width": 8, "height": 8}]], "differ between 2"),
    ([{"x": 0, "y": 0, "width": 8, "height": 8}] * 10, "10 boxes"),
    ([{"x": 0, "y": 0, "width": 0, "height": 8}], "box 1 is empty"),
    ([{"x": float("nan"), "y": 0, "width": 1, "height": 8}], "finite numbers"),
    ([{"x": 1e9, "y": 0, "width": 1, "height": 8}], "finite numbers"), ([["a"]], "box 1 is a str"),
])
def test_bad_bounding_boxes_are_named_errors(value, words):
    if words is None:  # an empty frame besides one with boxes: the boxes
        assert len(parse_bboxes(value, NODE)) == 1
        return
    with pytest.raises(DreamOError, match=r"DreamORouting \(input 'bboxes'\)") as e:
        parse_bboxes(value, NODE)
    assert words in str(e.value)


# ----------------------------------------------------------------------------- conditionings as lists

def entry(tokens, seed, **keys):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, tokens, 8, generator=g), {"pooled_output": torch.randn(1, 4, generator=g), **keys}]


def test_region_prompts_are_appended_to_every_entry_and_carried_once():
    base = [entry(5, 0, **{TEXT_KEY: {"text": "x", "placeholders": ((1, 1), (7, 2))}}), entry(4, 1)]
    base[1][0] = base[1][0].expand(2, -1, -1)
    words = [Segment(1, torch.ones(1, 3, 8), torch.ones(4, 4), "a"), Segment(3, torch.zeros(1, 2, 8), torch.ones(4, 4))]
    out = with_region_prompts(base, words, True, NODE, "positive", wrap=lambda r: ("wrapped", r))
    assert [c.shape for c, _ in out] == [(1, 10, 8), (2, 9, 8)]
    assert torch.equal(out[0][0][:, :5], base[0][0]) and torch.equal(out[1][0][:, 4:7], torch.ones(2, 3, 8))
    first = out[0][1]["model_conds"][REGIONS_KWARG][1]
    assert [(p.index, p.start, p.length) for p in first.prompts] == [(1, 5, 3), (3, 8, 2)]
    assert first.placeholders == ((1, 1),)  # position 7 is past the base's 5 tokens
    assert REGIONS_KWARG not in base[0][1].get("model_conds", {})  # the input is left as it was
    with pytest.raises(DreamOError, match="already carries region prompts"):
        with_region_prompts(out, words, True, NODE, "positive", wrap=lambda r: r)
    assert with_region_prompts(base, [], True, NODE, "positive", wrap=None) is base
    assert region_prompts_of([[None, {"model_conds": {REGIONS_KWARG: type("C", (), {"cond": 5})()}}]]) == [5]


def test_masked_entries_become_regions_in_order_and_the_rest_is_the_base():
    mask = torch.zeros(1, 8, 8)
    mask[..., :4] = 1
    conditioning = [entry(5, 0, guidance=3.5), entry(3, 1, mask=mask, set_area_to_bounds=False, mask_strength=1.0),
                    entry(2, 2, mask=1 - mask, set_area_to_bounds=False, mask_strength=1.0,
                          **{TEXT_KEY: {"text": "a dog", "placeholders": ()}})]
    bases, segments = split_masked(conditioning, "N")
    assert len(bases) == 1 and bases[0][0] is conditioning[0][0]
    assert [(s.index, s.tokens.shape[1], s.text) for s in segments] == [(1, 3, ""), (2, 2, "a dog")]
    assert torch.equal(segments[1].area, (1 - mask)[0])
    with pytest.raises(DreamOError, match="masked entry 1 \\(region 1\\) has 'hooks'"):
        split_masked([entry(5, 0), entry(3, 1, mask=mask, hooks=object())], "N")
    with pytest.raises(DreamOError, match="'model_conds' \\(set by DreamO Apply or ReferenceLatent\\)"):
        split_masked([entry(5, 0), entry(3, 1, mask=mask, model_conds={})], "N")
    with pytest.raises(DreamOError, match="mask is empty"):
        split_masked([entry(5, 0), entry(3, 1, mask=torch.zeros(1, 8, 8))], "N")
    with pytest.raises(DreamOError, match="a region is one 2-D mask"):
        split_masked([entry(5, 0), entry(3, 1, mask=torch.ones(2, 8, 8))], "N")
    with pytest.raises(DreamOError, match="the conditioning is empty"):
        split_masked([], "N")
