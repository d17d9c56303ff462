"""dreamo_ops.routing without the host: region rule, folded-channel attention vs a dense-mask reference, capture,
and the override's pass-through / chaining behaviour."""
import pytest
import torch

from comfyui_dreamo.dreamo_ops import routing_backends
from comfyui_dreamo.dreamo_ops.areas import region_to_tokens
from comfyui_dreamo.dreamo_ops.errors import DreamOError
from comfyui_dreamo.dreamo_ops.routing import RoutedAttention, RoutingSpec
from comfyui_dreamo.dreamo_ops.routing_bias import routed_attention, routing_channels
from comfyui_dreamo.dreamo_ops.routing_map import RoutingCapture, capture_reference_maps
from comfyui_dreamo.dreamo_ops.token_layout import reference_layout
from dreamo_testkit import rel_err
from dreamo_testkit.dense_routing import dense_attention, dense_bias, ref_spans

TOL = 1e-5


# ----------------------------------------------------------------------------- independent references

def supersampled_coverage(mask, latent_hw, patch=2):
    """Coverage by brute force: both the mask and the latent cells drawn on a common fine pixel grid."""
    H, W = mask.shape
    h, w = latent_hw
    # each mask pixel becomes p*h × p*w fine pixels, so a fine row is 1/(p*H) latent rows and a token's p latent
    # rows are p*p*H fine rows (likewise for columns); a token cell past the image edge is cut by the slicing
    fine = mask.double().repeat_interleave(patch * h, 0).repeat_interleave(patch * w, 1)
    rows, cols = -(-h // patch), -(-w // patch)
    out = torch.zeros(rows, cols, dtype=torch.float64)
    ry, rx = patch * patch * H, patch * patch * W
    for r in range(rows):
        for c in range(cols):
            cell = fine[r * ry:(r + 1) * ry, c * rx:(c + 1) * rx]
            out[r, c] = cell.mean()
    return out.float()


def make_case(seed=0, batch=1, heads=3, dim=16, txt=5, image_hw=(6, 8), refs=((4, 4), (2, 6)), slots=(1, 2)):
    layout = reference_layout(image_hw, refs, slots)
    L = txt + layout.total_count
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, L, dim, generator=g) for _ in range(3))
    return layout, q, k, v


def left_right_masks(H=32, W=48):
    left = torch.zeros(H, W)
    left[:, : W // 2] = 1
    return left, 1 - left


# ----------------------------------------------------------------------------- region rule

@pytest.mark.parametrize("mask_hw,latent_hw", [((32, 32), (8, 8)), ((10, 7), (8, 12)), ((3, 5), (7, 9)),
                                               ((64, 16), (6, 6))])
def test_region_coverage_is_exact_area(mask_hw, latent_hw):
    g = torch.Generator().manual_seed(1)
    mask = (torch.rand(*mask_hw, generator=g) > 0.5).float()
    got = region_to_tokens(mask, latent_hw)
    assert got.shape == (-(-latent_hw[0] // 2), -(-latent_hw[1] // 2))
    assert torch.allclose(got, supersampled_coverage(mask, latent_hw), atol=1e-6)


def test_region_coverage_any_resolution_same_answer():
    small = torch.zeros(4, 4)
    small[:, :2] = 1
    big = small.repeat_interleave(16, 0).repeat_interleave(16, 1)
    assert torch.equal(region_to_tokens(small, (8, 8)), region_to_tokens(big, (8, 8)))
    assert torch.equal(region_to_tokens(big, (8, 8))[:, :2], torch.ones(4, 2))


# ----------------------------------------------------------------------------- folded channels vs dense reference

CASES = [
    ("hard", 4.0, False), ("soft", 0.7, False), ("soft", 6.0, False), ("hard", 4.0, True), ("soft", 2.0, True),
]


@pytest.mark.parametrize("mode,strength,isolate", CASES)
@pytest.mark.parametrize("batch", [1, 2])
def test_routed_attention_matches_dense_mask_reference(mode, strength, isolate, batch):
    layout, q, k, v = make_case(seed=batch, batch=batch)
    left, right = left_right_masks(19, 23)  # a mask at another resolution, soft edges after resizing
    cov = {1: region_to_tokens(left, (6, 8)), 2: region_to_tokens(right, (6, 8))}
    spec = RoutingSpec(regions={1: left, 2: right}, mode=mode, strength=strength, isolate=isolate)
    ch = routing_channels(layout, 5, spec, cov, scale=16 ** -0.5)
    got = routed_attention(q, k, v, ch)
    want = dense_attention(q, k, v, dense_bias(layout, 5, cov, mode, strength, isolate))
    assert rel_err(got, want) < TOL


def test_one_region_of_three_references_and_flux_mask_combined():
    layout, q, k, v = make_case(seed=3, refs=((2, 2), (4, 2), (2, 4)), slots=(2, 5, 9))
    L = q.shape[2]
    cov = {5: region_to_tokens(left_right_masks()[1], (6, 8))}
    spec = RoutingSpec(regions={5: left_right_masks()[1]}, mode="hard")
    ch = routing_channels(layout, 5, spec, cov, scale=16 ** -0.5)
    g = torch.Generator().manual_seed(4)
    flux_mask = torch.randn(1, 1, L, L, generator=g)
    got = routed_attention(q, k, v, ch, mask=flux_mask)
    want = dense_attention(q, k, v, dense_bias(layout, 5, cov, "hard", 0, False), extra_mask=flux_mask[0, 0])
    assert rel_err(got, want) < TOL


def test_hard_cut_probabilities_are_exactly_zero():
    layout, q, k, _ = make_case(seed=5)
    q, k = q * 4, k * 4  # large logits
    left, right = left_right_masks()
    cov = {1: region_to_tokens(left, (6, 8)), 2: region_to_tokens(right, (6, 8))}
    ch = routing_channels(layout, 5, RoutingSpec(regions={1: left, 2: right}, isolate=True), cov, scale=0.25)
    qx = torch.cat((q, ch.q.expand(*q.shape[:3], -1)), -1)
    kx = torch.cat((k, ch.k.expand(*k.shape[:3], -1)), -1)
    p = torch.softmax(qx @ kx.transpose(-1, -2) * 0.25, dim=-1)
    cut = torch.isinf(dense_bias(layout, 5, cov, "hard", 0, True))
    assert cut.any() and (p[..., cut] == 0).all() and (p[..., ~cut] > 0).all()


def test_soft_bias_lowers_outside_probability_monotonically():
    layout, q, k, _ = make_case(seed=6)
    left, _ = left_right_masks()
    cov = {1: region_to_tokens(left, (6, 8))}
    outside = (dense_bias(layout, 5, cov, "hard", 0, False) != 0)
    prev = None
    for strength in (0.0, 0.5, 2.0, 8.0):
        ch = routing_channels(layout, 5, RoutingSpec(regions={1: left}, mode="soft", strength=strength), cov, 0.25)
        if ch is None:
            p = torch.softmax(q @ k.transpose(-1, -2) * 0.25, -1)
        else:
            qx = torch.cat((q, ch.q.expand(*q.shape[:3], -1)), -1)
            kx = torch.cat((k, ch.k.expand(*k.shape[:3], -1)), -1)
            p = torch.softmax(qx @ kx.transpose(-1, -2) * 0.25, dim=-1)
        mass = p[..., outside].sum().item()
        assert prev is None or mass < prev
        prev = mass


def test_nothing_to_constrain_gives_no_channels():
    layout, *_ = make_case()
    ones = torch.ones(7, 9)
    for spec in (RoutingSpec(), RoutingSpec(regions={1: ones, 2: ones}), RoutingSpec(regions={1: ones}, mode="soft"),
                 RoutingSpec(regions={1: left_right_masks()[0]}, mode="soft", strength=0.0)):
        cov = {s: region_to_tokens(m, (6, 8)) for s, m in spec.regions.items()}
        assert routing_channels(layout, 5, spec, cov, 0.25) is None
    one_ref = reference_layout((6, 8), [(4, 4)], (1,))
    assert routing_channels(one_ref, 5, RoutingSpec(isolate=True), {}, 0.25) is None


def test_fp16_channels_stay_finite():
    layout, *_ = make_case()
    cov = {1: region_to_tokens(left_right_masks()[0], (6, 8))}
    ch = routing_channels(layout, 5, RoutingSpec(regions={1: left_right_masks()[0]}), cov, scale=128 ** -0.5,
                          dtype=torch.float16)
    assert torch.isfinite(ch.q).all() and ch.q.abs().max() <= 65504


LOW_PRECISION = {torch.bfloat16: 1e-2, torch.float16: 1.5e-3}  # ≈ 1.3× / 3× the unit roundoff of each dtype


@pytest.mark.parametrize("dtype", sorted(LOW_PRECISION, key=str))
@pytest.mark.parametrize("mode,isolate", [("hard", True), ("soft", False)])
def test_routed_attention_in_half_precision_matches_a_dense_mask_in_the_same_dtype(dtype, mode, isolate):
    """Flux's real head width (128) in bf16 / fp16: the folded call against SDPA with a dense additive mask in the
    same dtype, and both against float64. The folded call rounds q once more (its scale for the wider heads), so its
    error may exceed the dense mask's, by at most 2× (measured ≈ 1.25×)."""
    layout, q, k, v = make_case(seed=13, heads=4, dim=128, txt=16, image_hw=(16, 16), refs=((8, 8), (8, 12)))
    left, right = left_right_masks(19, 23)
    cov = {1: region_to_tokens(left, (16, 16)), 2: region_to_tokens(right, (16, 16))}
    spec = RoutingSpec(regions={1: left, 2: right}, mode=mode, strength=3.0, isolate=isolate)
    q, k, v = (t.to(dtype) for t in (q, k, v))
    got = routed_attention(q, k, v, routing_channels(layout, 16, spec, cov, scale=128 ** -0.5, dtype=dtype))
    bias = dense_bias(layout, 16, cov, mode, 3.0, isolate)
    dense = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(dtype))
    truth = dense_attention(q.float(), k.float(), v.float(), bias)
    assert got.dtype == dtype and torch.isfinite(got).all()
    assert rel_err(got.float(), dense.float()) < LOW_PRECISION[dtype]
    assert rel_err(got.float(), truth) <= 2 * rel_err(dense.float(), truth)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_hard_cut_is_exactly_zero_in_half_precision(dtype):
    """Through the SDPA kernel itself: v = 1 on the keys a query may not see, so its output must be exactly 0."""
    layout, q, k, _ = make_case(seed=14, heads=4, dim=128, txt=16, image_hw=(16, 16), refs=((8, 8), (8, 12)))
    q, k = (t.to(dtype) * 4 for t in (q, k))  # large logits
    left, right = left_right_masks(19, 23)
    cov = {1: region_to_tokens(left, (16, 16)), 2: region_to_tokens(right, (16, 16))}
    ch = routing_channels(layout, 16, RoutingSpec(regions={1: left, 2: right}, isolate=True), cov, 128 ** -0.5,
                          dtype=dtype)
    cut = torch.isinf(dense_bias(layout, 16, cov, "hard", 0, True))  # (query, key) pairs that must get 0
    assert ch.q.abs().max() < torch.finfo(dtype).max
    for query in torch.nonzero(cut.any(dim=1)).flatten()[::7].tolist():
        v = cut[query].to(dtype)[None, None, :, None].expand(1, 4, -1, 128)
        out = routed_attention(q, k, v, ch)[:, :, query]
        assert (out == 0).all(), (dtype, query, out.abs().max().item())
        free = (~cut[query]).to(dtype)[None, None, :, None].expand(1, 4, -1, 128)
        assert torch.allclose(routed_attention(q, k, free, ch)[:, :, query].float(), torch.ones(1, 4, 128))


# ----------------------------------------------------------------------------- capture

def test_capture_matches_dense_softmax_and_is_chunked():
    layout, q, k, _ = make_case(seed=7, batch=2)
    got = capture_reference_maps(q, k, layout, 5, chunk=37)  # tiny chunks: many head/row pieces
    p = torch.softmax(q.double() @ k.double().transpose(-1, -2) * 16 ** -0.5, dim=-1)
    spans = ref_spans(layout, 5)
    for slot, span in spans.items():
        want = p[:, :, list(span), 5:5 + layout.image_count].mean(dim=(1, 2)).float()
        assert got[slot].shape == (2, layout.image_count)
        assert rel_err(got[slot], want) < TOL
        assert (got[slot] >= 0).all() and (got[slot].sum(-1) <= 1 + 1e-6).all()


@pytest.mark.parametrize("mode,isolate", [("hard", False), ("soft", True)])
def test_capture_sees_the_routed_attention(mode, isolate):
    layout, q, k, _ = make_case(seed=10, batch=2)
    left, right = left_right_masks(9, 13)
    cov = {1: region_to_tokens(left, (6, 8)), 2: region_to_tokens(right, (6, 8))}
    ch = routing_channels(layout, 5, RoutingSpec(regions={1: left, 2: right}, mode=mode, strength=3.0,
                                                 isolate=isolate), cov, scale=0.25)
    got = capture_reference_maps(q, k, layout, 5, channels=ch, chunk=53)
    bias = dense_bias(layout, 5, cov, mode, 3.0, isolate)
    p = torch.softmax(q.double() @ k.double().transpose(-1, -2) * 0.25 + bias, dim=-1)
    for slot, span in ref_spans(layout, 5).items():
        want = p[:, :, list(span), 5:5 + layout.image_count].mean(dim=(1, 2)).float()
        assert rel_err(got[slot], want) < TOL
    if mode == "hard":
        assert (got[1].reshape(2, 3, 4)[..., 2:] == 0).all() and (got[2].reshape(2, 3, 4)[..., :2] == 0).all()


def test_capture_with_a_flux_mask():
    layout, q, k, _ = make_case(seed=11, batch=2)
    L = q.shape[2]
    flux_mask = torch.randn(2, 1, L, L, generator=torch.Generator().manual_seed(12))
    got = capture_reference_maps(q, k, layout, 5, mask=flux_mask, chunk=64)
    p = torch.softmax(q.double() @ k.double().transpose(-1, -2) * 0.25 + flux_mask.double(), dim=-1)
    for slot, span in ref_spans(layout, 5).items():
        want = p[:, :, list(span), 5:5 + layout.image_count].mean(dim=(1, 2)).float()
        assert rel_err(got[slot], want) < TOL


def test_capture_store_averages_and_survives_deepcopy():
    import copy

    cap = RoutingCapture()
    spec = RoutingSpec(capture=cap)
    assert copy.deepcopy(spec).capture is cap
    a, b = torch.rand(1, 12), torch.rand(1, 12)
    cap.add(1, a, (3, 4), (6, 8))
    cap.add(1, b, (3, 4), (6, 8))
    m = cap.maps()[1]
    assert m.shape == (1, 3, 4) and torch.allclose(m.reshape(1, -1), (a + b) / 2)
    assert torch.allclose(cap.mass()[1], ((a + b) / 2).sum(-1))


# ----------------------------------------------------------------------------- the override

def call_override(ov, func, q, k, v, block_type=None):
    opts = {} if block_type is None else {"block_type": block_type}
    return ov(func, q, k, v, q.shape[1], mask=None, skip_reshape=True, transformer_options=opts,
              _inside_attn_wrapper=True)


def backend(q, k, v, heads, mask=None, skip_reshape=False, **kwargs):
    assert "transformer_options" not in kwargs or kwargs.get("_inside_attn_wrapper")
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(q.shape[0], -1, heads * q.shape[-1])


def test_override_passes_through_untouched_without_constraint():
    layout, q, k, v = make_case()
    sentinel = object()
    seen = []

    def func(*args, **kwargs):
        seen.append((args, kwargs))
        return sentinel

    ov = RoutedAttention(RoutingSpec(regions={1: torch.ones(4, 4)}), layout, {1: torch.ones(3, 4)}, n_double=1)
    assert call_override(ov, func, q, k, v) is sentinel
    assert seen[0][0][0] is q and seen[0][1]["transformer_options"] == {}


def test_override_routes_chosen_blocks_and_chains_previous():
    layout, q, k, v = make_case(seed=8)
    left, right = left_right_masks()
    cov = {1: region_to_tokens(left, (6, 8)), 2: region_to_tokens(right, (6, 8))}
    spec = RoutingSpec(regions={1: left, 2: right}, blocks="single")
    log = []

    def previous(func, *args, **kwargs):
        log.append((func, args[0].shape[-1]))
        return func(*args, **kwargs)

    ov = RoutedAttention(spec, layout, cov, n_double=2, previous=previous)
    outs = [call_override(ov, backend, q, k, v) for _ in range(4)]  # 2 double, then 2 single (counted)
    # the other pack's override runs on every block: with the original call on unrouted blocks, with the folded
    # (wider) call on routed ones, and always with the backend ComfyUI chose
    assert [f for f, _ in log] == [backend] * 4 and [w for _, w in log] == [16, 16, 24, 24]
    want = dense_attention(q, k, v, dense_bias(layout, 5, cov, "hard", 0, False))
    want = want.transpose(1, 2).reshape(1, q.shape[2], -1)
    assert rel_err(outs[3], want) < TOL and torch.equal(outs[0], backend(q, k, v, 3))
    ov2 = RoutedAttention(spec, layout, cov, n_double=0)
    assert torch.equal(call_override(ov2, backend, q, k, v, block_type="double"), backend(q, k, v, 3))


def test_a_previous_override_that_computes_attention_itself_still_routes():
    """A Sage-style patch ignores `func` and computes attention itself: it gets the folded call, so the result is
    routed (it used to be refused)."""
    layout, q, k, v = make_case()
    left = left_right_masks()[0]
    cov = {1: region_to_tokens(left, (6, 8))}
    ov = RoutedAttention(RoutingSpec(regions={1: left}), layout, cov, n_double=1,
                         previous=lambda func, *a, **kw: backend(*a, **kw), dispatch=routing_backends.BackendDispatch())
    want = dense_attention(q, k, v, dense_bias(layout, 5, cov, "hard", 0, False))
    assert rel_err(call_override(ov, backend, q, k, v), want.transpose(1, 2).reshape(1, q.shape[2], -1)) < TOL


def test_override_rejects_misaligned_sequences_and_masks():
    layout, q, k, v = make_case()
    left = left_right_masks()[0]
    ov = RoutedAttention(RoutingSpec(regions={1: left}), layout, {1: region_to_tokens(left, (6, 8))}, n_double=1)
    with pytest.raises(DreamOError, match="changed the sequence"):
        call_override(ov, backend, q, k[:, :, 1:], v[:, :, 1:])
    L = q.shape[2]
    with pytest.raises(DreamOError, match="attention mask covers"):
        ov(backend, q, k, v, 3, mask=torch.zeros(1, 1, L - 4, L - 4), skip_reshape=True, transformer_options={})


def test_capture_only_override_is_bit_identical_and_records():
    layout, q, k, v = make_case(seed=9)
    cap = RoutingCapture()
    ov = RoutedAttention(RoutingSpec(capture=cap), layout, {}, n_double=1, latent_hw=(6, 8))
    assert torch.equal(call_override(ov, backend, q, k, v), backend(q, k, v, 3))
    assert set(cap.maps()) == {1, 2} and cap.maps()[1].shape == (1, 3, 4)


def test_step_range():
    spec = RoutingSpec(sigma_range=(0.8, 0.3))
    assert [spec.active_at(s) for s in (0.9, 0.8, 0.5, 0.3, 0.1)] == [False, True, True, True, False]
    assert RoutingSpec().active_at(torch.tensor(0.99))


def test_module_has_no_comfy_imports():
    import inspect

    from comfyui_dreamo.dreamo_ops import areas, routing, routing_bias, routing_map

    for mod in (areas, routing, routing_bias, routing_backends, routing_map):
        assert "import comfy" not in inspect.getsource(mod)


@pytest.mark.parametrize("chunk", [1, 10_000, None])
def test_routed_attention_a_few_heads_at_a_time_gives_the_same_result(chunk):
    """On the CPU the widened q/k/v copies are made a few heads at a time: the same numbers as one call."""
    layout, q, k, v = make_case(seed=3, batch=2, heads=5)
    left, right = left_right_masks()
    coverage = {1: region_to_tokens(left, (6, 8)), 2: region_to_tokens(right, (6, 8))}
    channels = routing_channels(layout, 5, RoutingSpec(regions={1: left, 2: right}), coverage, scale=16 ** -0.5)
    whole = routed_attention(q, k, v, channels, chunk_bytes=1 << 40)
    mask = torch.zeros(2, 5, q.shape[2], q.shape[2])
    mask[:, 2, :, 3] = -1.0  # a per-head mask is sliced with its heads
    parts = routed_attention(q, k, v, channels, chunk_bytes=chunk, mask=mask)
    assert parts.shape == whole.shape
    assert torch.equal(parts, routed_attention(q, k, v, channels, chunk_bytes=1 << 40, mask=mask))
    assert torch.equal(routed_attention(q, k, v, channels, chunk_bytes=chunk), whole)
