"""DreamORouting / DreamORoutingMap through a real ModelPatcher and ComfyUI's sampler on the tiny Flux (float32).

Locality is measured at the attention level, per block (the final image still changes through indirect paths,
DESIGN §8): a spy around the routed attention recomputes the attention probabilities from the very q/k the kernel
receives (model channels + routing channels) and the tests read them.
"""
import os

import numpy as np
import pytest
import torch

from dreamo_testkit.host_graph import N_BLOCKS, Spy, apply, make_ref, route, sample, stripes

pytestmark = pytest.mark.host

def token_sets(layout, txt_len, coverage):
    """Per slot: (reference token indices, image indices inside, image indices outside) in the joint sequence."""
    out, start = {}, txt_len + layout.image_count
    for r in layout.refs:
        refs = torch.arange(start, start + r.count)
        start += r.count
        if r.slot in coverage:
            inside = coverage[r.slot].reshape(-1) >= 0.5
            img = torch.arange(txt_len, txt_len + layout.image_count)
            out[r.slot] = (refs, img[inside], img[~inside])
    return out


def expected_layout(latent_hw, refs):
    from comfyui_dreamo.dreamo_ops.areas import region_to_tokens
    from comfyui_dreamo.dreamo_ops.token_layout import reference_layout

    return reference_layout(latent_hw, [r.latent.shape[-2:] for r in refs.values()], tuple(refs)), \
        (lambda masks: {s: region_to_tokens(m, latent_hw) for s, m in masks.items()})


CASES = {
    "one_ref": ((8, 8), {1: (8, 8)}, 1, 1.0, (32, 32)),
    "two_refs": ((8, 8), {1: (6, 8), 2: (8, 4)}, 1, 1.0, (32, 32)),
    "nine_refs": ((6, 18), {k: (2, 2 * (1 + k % 2)) for k in range(1, 10)}, 1, 1.0, (16, 48)),
    "batch_2": ((8, 8), {1: (6, 6), 3: (4, 8)}, 2, 1.0, (32, 32)),
    "cfg_2_5": ((8, 8), {1: (6, 6), 2: (4, 4)}, 1, 2.5, (32, 32)),
    "non_square_other_mask_size": ((6, 12), {1: (8, 4), 2: (4, 4)}, 1, 1.0, (37, 53)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hard_routing_zeroes_outside_attention_in_every_block(flux, dreamo, monkeypatch, case):
    from dreamo_testkit import tiny_models
    from dreamo_testkit.host_sampling import add_recorder

    latent_hw, shapes, batch, cfg, mask_hw = CASES[case]
    refs = {s: make_ref(h, w, seed=10 + s) for s, (h, w) in shapes.items()}
    masks = dict(zip(refs, stripes(max(2, len(refs)), *mask_hw)))  # one ref: the left half
    model, cond = apply(flux, dreamo, refs, tiny_models.conditioning(seed=3))
    model = route(model, masks)
    rec = add_recorder(model)
    spy = Spy(monkeypatch)
    sample(model, torch.zeros(batch, 16, *latent_hw), cond, tiny_models.conditioning(seed=4), cfg=cfg,
           sigmas=(0.8, 0.0))
    with_refs = [c for c in rec.calls if c["n_refs"]]
    assert len(with_refs) == 1 and len(spy.calls) == N_BLOCKS
    if cfg > 1:
        assert any(c["n_refs"] == 0 for c in rec.calls), "the negative pass runs without references"
    layout, cover = expected_layout(latent_hw, refs)
    txt_len = 7
    sets = token_sets(layout, txt_len, cover({s: m[0] for s, m in masks.items()}))
    for p in spy.calls:
        assert p.shape[0] == batch and p.shape[-1] == txt_len + layout.total_count
        for slot, (ref, inside, outside) in sets.items():
            assert len(outside) and len(inside)
            assert (p[:, :, ref][..., outside] == 0).all(), f"ref {slot} → outside is not cut"
            assert (p[:, :, outside][..., ref] == 0).all(), f"outside → ref {slot} is not cut"
            assert (p[:, :, ref][..., inside] > 0).all() and (p[:, :, inside][..., ref] > 0).all()


def test_isolation_cuts_reference_to_reference(flux, dreamo, monkeypatch):
    from dreamo_testkit import tiny_models

    refs = {1: make_ref(6, 6, seed=20), 2: make_ref(4, 4, seed=21)}
    model, cond = apply(flux, dreamo, refs, tiny_models.conditioning(seed=3))
    spy = Spy(monkeypatch)
    sample(route(model, {}, isolate_references=True), torch.zeros(1, 16, 8, 8), cond,
           tiny_models.conditioning(seed=4), sigmas=(0.8, 0.0))
    assert len(spy.calls) == N_BLOCKS
    a, b = torch.arange(7 + 16, 7 + 16 + 9), torch.arange(7 + 16 + 9, 7 + 16 + 9 + 4)
    for p in spy.calls:
        assert (p[:, :, a][..., b] == 0).all() and (p[:, :, b][..., a] == 0).all()
        assert (p[:, :, a][..., a] > 0).all() and (p[:, :, a][..., 7:23] > 0).all()


def test_soft_routing_lowers_outside_attention_monotonically(flux, dreamo, monkeypatch):
    from dreamo_testkit import tiny_models

    refs = {1: make_ref(6, 6, seed=22)}
    left = stripes(2)[0]
    model, cond = apply(flux, dreamo, refs, tiny_models.conditioning(seed=3))
    outside = torch.arange(7, 7 + 16).reshape(4, 4)[:, 2:].reshape(-1)
    ref = torch.arange(7 + 16, 7 + 16 + 9)
    masses = []
    for strength in (0.25, 1.0, 4.0, 16.0):
        spy = Spy(monkeypatch)
        sample(route(model, {1: left}, mode="soft", strength=strength), torch.zeros(1, 16, 8, 8), cond,
               tiny_models.conditioning(seed=4), sigmas=(0.8, 0.0))
        assert len(spy.calls) == N_BLOCKS
        masses.append([p[:, :, ref][..., outside].sum().item() for p in spy.calls])
    for block in range(N_BLOCKS):
        series = [m[block] for m in masses]
        assert all(a > b for a, b in zip(series, series[1:])), series


class Probe:
    """Another pack's attention override: records what it is called with and calls through."""

    def __init__(self):
        self.calls = []

    def __deepcopy__(self, memo):
        return self  # clones deep-copy model_options; packs set plain functions there, which deepcopy keeps

    def __call__(self, func, *args, **kwargs):
        self.calls.append((func, args, {k: v for k, v in kwargs.items() if k != "transformer_options"}))
        return func(*args, **kwargs)


def with_probe(model):
    m = model.clone()
    probe = Probe()
    m.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = probe
    return m, probe


def test_other_override_still_runs_and_reference_values_do_not_reach_outside(flux, dreamo):
    from dreamo_testkit import tiny_models

    refs = {1: make_ref(6, 6, seed=23), 2: make_ref(4, 4, seed=24)}
    left, right = stripes(2)
    base, probe = with_probe(flux)  # set before DreamO: routing must chain it
    model, cond = apply(base, dreamo, refs, tiny_models.conditioning(seed=3))
    sample(route(model, {1: left, 2: right}), torch.zeros(1, 16, 8, 8), cond, tiny_models.conditioning(seed=4),
           cfg=2.0, sigmas=(0.8, 0.0))
    assert len(probe.calls) == 2 * N_BLOCKS  # cond (routed) and uncond (untouched) passes
    routed = [c for c in probe.calls if c[1][0].shape[-1] > 24]  # the folded call: 24-wide heads + routing channels
    assert len(routed) == N_BLOCKS
    func, (q, k, v, heads), kwargs = routed[1]
    img = torch.arange(7, 23).reshape(4, 4)  # 7 text tokens, then the 4×4 image
    ref1 = torch.arange(23, 23 + 9)
    v2 = v.clone()
    v2[:, :, ref1] += torch.randn(v2[:, :, ref1].shape, generator=torch.Generator().manual_seed(0))
    out, out2 = func(q, k, v, heads, **kwargs), func(q, k, v2, heads, **kwargs)
    outside, inside = img[:, 2:].reshape(-1), img[:, :2].reshape(-1)
    assert torch.equal(out[:, outside], out2[:, outside])
    assert not torch.allclose(out[:, inside], out2[:, inside])


def test_step_range_is_honoured(flux, dreamo, monkeypatch):
    from dreamo_testkit import tiny_models

    refs = {1: make_ref(6, 6, seed=25)}
    model, cond = apply(flux, dreamo, refs, tiny_models.conditioning(seed=3))
    model = route(model, {1: stripes(2)[0]}, start_percent=0.3, end_percent=0.6)
    ms = model.get_model_object("model_sampling")
    start, end = float(ms.percent_to_sigma(0.3)), float(ms.percent_to_sigma(0.6))
    sigmas = (0.95, 0.85, 0.75, 0.65, 0.55, 0.45, 0.35, 0.25, 0.15, 0.0)
    expected = [end <= s <= start for s in sigmas[:-1]]
    assert any(expected) and not all(expected)
    spy = Spy(monkeypatch)
    counts, seen = [], []

    class Counting:
        def __call__(self, executor, *args, **kwargs):
            out = executor(*args, **kwargs)
            counts.append(len(spy.calls))
            return out
    import comfy.patcher_extension
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "count", Counting())
    sample(model, torch.zeros(1, 16, 8, 8), cond, tiny_models.conditioning(seed=4), sigmas=sigmas, seen=seen)
    per_step = [b - a for a, b in zip([0] + counts, counts)]
    assert per_step == [N_BLOCKS if e else 0 for e in expected]


@pytest.mark.parametrize("regions", ["none", "all_ones"])
@pytest.mark.parametrize("capture", [False, True])
def test_no_constraint_is_bit_identical(flux, dreamo, regions, capture):
    from dreamo_testkit import tiny_models

    refs = {1: make_ref(6, 6, seed=26), 2: make_ref(4, 8, seed=27)}
    model, cond = apply(flux, dreamo, refs, tiny_models.conditioning(seed=3))
    neg = tiny_models.conditioning(seed=4)
    plain = sample(model, torch.zeros(2, 16, 8, 10), cond, neg, cfg=1.5)
    masks = {} if regions == "none" else {1: torch.ones(1, 13, 17), 2: torch.ones(1, 64, 64)}
    for mode in ("hard", "soft"):
        routed = sample(route(model, masks, mode=mode, capture_maps=capture), torch.zeros(2, 16, 8, 10), cond, neg,
                        cfg=1.5)
        assert torch.equal(plain, routed)


def test_routing_changes_the_image_and_works_in_either_order(flux, dreamo):
    from dreamo_testkit import tiny_models

    refs = {1: make_ref(6, 6, seed=28), 2: make_ref(4, 4, seed=29)}
    left, right = stripes(2)
    pos, neg = tiny_models.conditioning(seed=3), tiny_models.conditioning(seed=4)
    model, cond = apply(flux, dreamo, refs, pos)
    plain = sample(model, torch.zeros(1, 16, 8, 8), cond, neg)
    after = sample(route(model, {1: left, 2: right}), torch.zeros(1, 16, 8, 8), cond, neg)
    before_model, cond2 = apply(route(flux, {1: left, 2: right}), dreamo, refs, pos)
    before = sample(before_model, torch.zeros(1, 16, 8, 8), cond2, neg)
    assert torch.equal(after, before) and not torch.allclose(after, plain, atol=1e-4)


def test_region_for_an_empty_slot_and_missing_dreamo_are_errors(flux, dreamo):
    from dreamo_testkit import tiny_models
    from comfyui_dreamo.dreamo_ops.errors import DreamOError

    refs = {1: make_ref(6, 6, seed=30)}
    model, cond = apply(flux, dreamo, refs, tiny_models.conditioning(seed=3))
    with pytest.raises(DreamOError, match="region_3"):
        sample(route(model, {3: stripes(2)[0]}), torch.zeros(1, 16, 8, 8), cond, tiny_models.conditioning(seed=4))
    with pytest.raises(DreamOError, match="DreamOApply"):
        sample(route(flux, {1: stripes(2)[0]}), torch.zeros(1, 16, 8, 8), tiny_models.conditioning(seed=3),
               tiny_models.conditioning(seed=4))


def test_routing_maps_from_the_node(flux, dreamo):
    from dreamo_testkit import tiny_models
    from comfyui_dreamo.nodes.routing import DreamORoutingMap, routing_spec

    refs = {1: make_ref(6, 6, seed=31), 2: make_ref(4, 4, seed=32)}
    left, right = stripes(2)
    model, cond = apply(flux, dreamo, refs, tiny_models.conditioning(seed=3))
    routed = route(model, {1: left, 2: right})
    out = sample(routed, torch.zeros(2, 16, 8, 12), cond, tiny_models.conditioning(seed=4))
    capture = routing_spec(routed).capture
    maps, mass = capture.maps(), capture.mass()
    assert set(maps) == {1, 2} and maps[1].shape == (2, 4, 6)
    for s in maps:
        assert (maps[s] >= 0).all() and torch.allclose(maps[s].sum(dim=(1, 2)), mass[s])
        assert (mass[s] > 0).all() and (mass[s] < 1).all()
    image = torch.rand(2, 96, 64, 3)
    shown = DreamORoutingMap().render(routed, {"samples": out}, image=image)
    masks, picture = shown["result"]
    assert masks.shape == (4, 96, 64) and picture.shape == image.shape
    # The overlay is also shown on the node: one picture per image, saved in ComfyUI's temp folder.
    import folder_paths
    from PIL import Image

    entries = shown["ui"]["images"]
    assert len(entries) == 2 and all(e["type"] == "temp" for e in entries)
    for entry, expected in zip(entries, picture):
        path = os.path.join(folder_paths.get_temp_directory(), entry["subfolder"], entry["filename"])
        saved = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).float() / 255
        assert saved.shape == expected.shape and (saved - expected).abs().max() <= 0.5 / 255 + 1e-6
    assert DreamORoutingMap.HAS_INTERMEDIATE_OUTPUT is True
    assert (masks >= 0).all() and torch.allclose(masks.flatten(1).amax(1), torch.ones(4))
    with pytest.raises(Exception, match="latent"):
        DreamORoutingMap().render(routed, {"samples": torch.zeros(1, 16, 8, 8)})


def region_peak_column(flux, dreamo, mask, mode):
    from dreamo_testkit import tiny_models
    from comfyui_dreamo.nodes.routing import routing_spec

    refs = {1: make_ref(6, 6, seed=33)}
    model, cond = apply(flux, dreamo, refs, tiny_models.conditioning(seed=3))
    routed = route(model, {1: mask}, mode=mode)
    sample(routed, torch.zeros(1, 16, 8, 16), cond, tiny_models.conditioning(seed=4),
           sigmas=(0.9, 0.7, 0.5, 0.3, 0.0))
    m = routing_spec(routed).capture.maps()[1][0]
    return m.sum(dim=0)  # attention mass per token column


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_routing_map_peak_follows_the_region(flux, dreamo, mode):
    left, right = stripes(2, 16, 32)
    cols_left = region_peak_column(flux, dreamo, left, mode)
    cols_right = region_peak_column(flux, dreamo, right, mode)
    assert cols_left[:4].sum() > cols_left[4:].sum() and cols_right[4:].sum() > cols_right[:4].sum()
    assert int(cols_left.argmax()) < 4 <= int(cols_right.argmax())


def test_routing_refuses_a_tenth_region():
    from dreamo_testkit import tiny_models
    from comfyui_dreamo.dreamo_ops.errors import DreamOError
    from comfyui_dreamo.nodes.routing import DreamORouting

    with pytest.raises(DreamOError, match=r"DreamORouting \(input 'region_10'\): 'region_10' is not an input"):
        DreamORouting().route(tiny_models.flux_patcher(), "hard", 8.0, False, 0.0, 1.0, "all", False,
                              region_10=torch.ones(1, 8, 8))


def test_drawn_regions_become_the_masks_of_unconnected_slots(flux, dreamo):
    import json

    from comfyui_dreamo.dreamo_ops.areas import Rectangle, region_to_tokens
    from comfyui_dreamo.nodes.routing import routing_spec

    drawn = json.dumps({"width": 40, "height": 20, "boxes": {"1": [0, 0, 10, 20], "2": [10.4, 5, 20, 10.6],
                                                              "3": [30, 0, 10, 20]}})
    connected = stripes(2, 8, 8)[1]
    spec = routing_spec(route(flux, {3: connected}, drawn_regions=drawn))
    assert sorted(spec.regions) == [1, 2, 3]
    assert spec.sources == {1: "drawn_regions", 2: "drawn_regions", 3: "region_3"}
    expected = {1: torch.zeros(20, 40), 2: torch.zeros(20, 40)}
    expected[1][:, :10] = 1
    expected[2][5:16, 10:30] = 1  # edges rounded: x 10.4 → 10, 30.4 → 30 (exclusive), y 5 → 5, 15.6 → 16
    for slot in (1, 2):  # drawn boxes reach the routing as geometry; their pixels are exactly the rectangles
        assert isinstance(spec.regions[slot], Rectangle) and spec.regions[slot].shape == (20, 40)
        assert torch.equal(spec.regions[slot].mask(), expected[slot])
        assert torch.equal(region_to_tokens(spec.regions[slot], (8, 8)), region_to_tokens(expected[slot], (8, 8)))
    assert torch.equal(spec.regions[3], connected[0])  # the connected mask wins over the drawn box
    # Empty text (old workflows, API prompts without the input): no drawn region at all.
    assert routing_spec(route(flux, {}, drawn_regions="")).regions == {}
    assert routing_spec(route(flux, {})).regions == {}


@pytest.mark.parametrize("text, words", [
    ("{not json", "not valid JSON"),
    ('{"width": 64, "height": 64, "boxes": {"10": [0, 0, 8, 8]}}', "box '10' is not a reference slot"),
    ('{"width": 64, "height": 64, "boxes": {"1": [0, 0, 0, 8]}}', "empty or negative"),
    ('{"width": 64, "height": 64, "boxes": {"1": [60, 0, 8, 8]}}', "reaches outside the 64 × 64 picture"),
])
def test_bad_drawn_regions_are_named_errors(flux, text, words):
    from comfyui_dreamo.dreamo_ops.errors import DreamOError

    with pytest.raises(DreamOError, match="DreamORouting \\(input 'drawn_regions'\\)") as e:
        route(flux, {}, drawn_regions=text)
    assert words in str(e.value) and "Fix:" in str(e.value)


def test_a_box_drawn_for_an_empty_slot_is_reported_as_drawn(flux, dreamo):
    from dreamo_testkit import tiny_models
    from comfyui_dreamo.dreamo_ops.errors import DreamOError

    refs = {1: make_ref(6, 6, seed=30)}
    model, cond = apply(flux, dreamo, refs, tiny_models.conditioning(seed=3))
    drawn = '{"width": 16, "height": 16, "boxes": {"2": [0, 0, 8, 16]}}'
    # DreamO Apply before DreamO Routing: the routing node itself stops (the run error points at it).
    with pytest.raises(DreamOError) as e:
        route(model, {}, drawn_regions=drawn)
    assert str(e.value) == ("DreamORouting (input 'drawn_regions'): slot 2 has a region but DreamO Apply has no "
                            "reference in ref_2 (references are in ref_1). Fix: connect a reference to DreamO Apply's "
                            "ref_2, or clear slot 2's box in the region editor (drawn_regions).")
    with pytest.raises(DreamOError, match=r"input 'region_2'\): slot 2 has a region .* or disconnect region_2"):
        route(model, {2: stripes(2)[0]})
    # DreamO Apply after it: the slots are only known when sampling starts.
    routed, cond2 = apply(route(flux, {}, drawn_regions=drawn), dreamo, refs, tiny_models.conditioning(seed=3))
    with pytest.raises(DreamOError, match="input 'drawn_regions'.*slot 2 has no DreamO reference.*region editor"):
        sample(routed, torch.zeros(1, 16, 8, 8), cond2, tiny_models.conditioning(seed=4))
