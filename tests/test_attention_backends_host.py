"""Routing on every attention backend: the routed blocks run on the active backend where it takes the folded call,
and on PyTorch SDPA (one log line) where it does not — never a crash, never an unrouted image.

A stand-in backend that, like SageAttention, takes only 64/96/128-wide heads (dreamo_testkit/restricted_backend.py) is
installed the two ways users install Sage: as another pack's override (as KJNodes does) and as the function ComfyUI
chose. The tiny Flux here has 64-wide heads, so its unrouted blocks fit the stand-in and the routed blocks
(64 + 8 routing channels) do not. Also ComfyUI's own attention functions (those this machine has) run the folded
call, in float32 against a dense-mask reference and in bfloat16 / float16.
"""
import logging

import pytest
import torch

from dreamo_testkit.restricted_backend import (RestrictedKernel, attention_function, install_override,
                                               override_like_kjnodes, sdpa_function)
from dreamo_testkit import rel_err
from dreamo_testkit.dense_routing import dense_attention, dense_bias

pytestmark = pytest.mark.host

HIDDEN, HEADS = 128, 2  # 64-wide heads: what the stand-in takes
TINY64 = dict(hidden_size=HIDDEN, num_heads=HEADS, depth=1, depth_single_blocks=1, axes_dim=[8, 28, 28])
LOG_TEXT = "DreamO routing: the attention backend"


@pytest.fixture(scope="module")
def flux():
    from dreamo_testkit import tiny_models

    return tiny_models.flux_patcher(seed=5, **TINY64)


@pytest.fixture(scope="module")
def dreamo():
    from dreamo_testkit import tiny_models
    from comfyui_dreamo.dreamo_ops.condition_embedding import DreamOEmbeddings

    t = tiny_models.embedding_tensors(seed=6, hidden=HIDDEN)
    return DreamOEmbeddings(task=t["dreamo_task_embedding.weight"], index=t["dreamo_idx_embedding.weight"],
                            placeholders=None)


class RoutedCalls:
    """Records each routed block's (override, q, k, v, output) from `RoutedAttention._routed`."""

    def __init__(self, monkeypatch):
        from comfyui_dreamo.dreamo_ops.routing import RoutedAttention

        self.calls = []
        real = RoutedAttention._routed

        def spy(ov, func, q, k, v, heads, channels, mask, scale, extra):
            out = real(ov, func, q, k, v, heads, channels, mask, scale, extra)
            self.calls.append((ov, q, k, v, out))
            return out

        monkeypatch.setattr(RoutedAttention, "_routed", spy)

    def max_error_vs_dense(self) -> float:
        errs = []
        for ov, q, k, v, out in self.calls:
            txt_len = q.shape[2] - ov.layout.total_count
            bias = dense_bias(ov.layout, txt_len, ov.coverage, ov.spec.mode, ov.spec.strength, ov.spec.isolate)
            errs.append(rel_err(out, dense_attention(q, k, v, bias)))
        assert errs, "no routed block ran"
        return max(errs)


def dreamo_model(flux, dreamo, blocks="single", mode="hard"):
    from dreamo_testkit import tiny_models
    from dreamo_testkit.host_graph import apply, make_ref, route, stripes

    refs = {1: make_ref(6, 6, seed=40), 2: make_ref(4, 6, seed=41)}
    left, right = stripes(2)
    model, cond = apply(flux, dreamo, refs, tiny_models.conditioning(seed=3))
    if blocks == "none":  # DreamO without routing
        return model, cond
    return route(model, {1: left, 2: right}, mode=mode, blocks=blocks, capture_maps=False), cond


def run(model, cond, cfg=2.0):
    from dreamo_testkit import tiny_models
    from dreamo_testkit.host_graph import sample

    return sample(model, torch.zeros(1, 16, 8, 8), cond, tiny_models.conditioning(seed=4), cfg=cfg,
                  sigmas=(0.9, 0.5, 0.0))


def chosen_function(monkeypatch, fn):
    """Make `fn` the attention function ComfyUI chose for Flux (what --use-sage-attention does)."""
    import comfy.ldm.flux.math

    monkeypatch.setattr(comfy.ldm.flux.math, "optimized_attention", fn)


def log_lines(caplog):
    return [r.getMessage() for r in caplog.records if LOG_TEXT in r.getMessage()]


@pytest.mark.parametrize("install", ["other_pack_override", "comfyui_choice"])
def test_restricted_backend_routed_blocks_fall_back_once_and_stay_routed(flux, dreamo, monkeypatch, caplog, install):
    kernel = RestrictedKernel()
    attention = attention_function(kernel)
    base = flux
    if install == "other_pack_override":
        base = install_override(flux, override_like_kjnodes(attention))
    else:
        chosen_function(monkeypatch, attention)
    model, cond = dreamo_model(base, dreamo, blocks="single")  # the double block stays unrouted
    routed = RoutedCalls(monkeypatch)
    caplog.set_level(logging.WARNING)
    first = run(model, cond)
    second = run(model, cond)
    # the stand-in computed only widths it takes: 64, for the unrouted double block (2 steps) and for every block of
    # the negative pass (no references, so DreamO installs nothing there) — 2 runs × 2 steps × (1 + 2) calls
    assert set(kernel.computed) == {64} and len(kernel.computed) == 2 * 2 * 3
    # it was offered the folded 72-wide call once, refused it, and was never offered it again
    assert kernel.refused == [72]
    # every routed block (2 runs × 2 steps × 1 single block) ran on SDPA with the routing, = dense reference
    assert len(routed.calls) == 4 and routed.max_error_vs_dense() < 1e-5
    lines = log_lines(caplog)
    assert len(lines) == 1, lines
    assert "72-wide heads: 64 + 8 routing channels" in lines[0] and "ValueError: head_dim should be in" in lines[0]
    assert torch.equal(first, second)
    # and the image is the routed one: the same as with an unrestricted SDPA backend, far from the unrouted one
    monkeypatch.undo()
    chosen_function(monkeypatch, sdpa_function())
    reference, _ = dreamo_model(flux, dreamo, blocks="single")
    want = run(reference, cond)
    assert rel_err(first, want) < 1e-5
    assert rel_err(run(dreamo_model(flux, dreamo, blocks="none")[0], cond), want) > 1e-3


def test_backend_that_takes_the_width_runs_the_routed_blocks(flux, dreamo, monkeypatch, caplog):
    kernel = RestrictedKernel(mode="permissive")
    model, cond = dreamo_model(install_override(flux, override_like_kjnodes(attention_function(kernel))), dreamo,
                               blocks="all")
    routed = RoutedCalls(monkeypatch)
    caplog.set_level(logging.WARNING)
    run(model, cond, cfg=1.0)
    assert kernel.computed == [72, 72] * 2  # both blocks, both steps: the folded call on the stand-in itself
    assert routed.max_error_vs_dense() < 1e-5 and not log_lines(caplog)


def test_backend_that_silently_mangles_wide_heads_is_caught(flux, dreamo, monkeypatch, caplog):
    kernel = RestrictedKernel(mode="wrong")
    chosen_function(monkeypatch, attention_function(kernel))
    model, cond = dreamo_model(flux, dreamo, blocks="all")
    routed = RoutedCalls(monkeypatch)
    caplog.set_level(logging.WARNING)
    run(model, cond, cfg=1.0)
    assert kernel.computed.count(72) == 1  # its first (wrong) answer was checked against SDPA and refused
    assert routed.max_error_vs_dense() < 1e-5
    lines = log_lines(caplog)
    assert len(lines) == 1 and "differs from PyTorch SDPA's by" in lines[0]


def test_backend_that_falls_back_by_itself_is_replaced_after_its_first_call(flux, dreamo, monkeypatch, caplog):
    """ComfyUI's own attention_sage catches the kernel's error, logs it and runs PyTorch attention — on every call.
    The routed blocks use SDPA after the first call, so its error is logged once, not per block and step."""
    kernel = RestrictedKernel()
    chosen_function(monkeypatch, attention_function(kernel, falls_back_itself=True))
    model, cond = dreamo_model(flux, dreamo, blocks="all")
    routed = RoutedCalls(monkeypatch)
    caplog.set_level(logging.WARNING)
    run(model, cond, cfg=1.0)
    assert kernel.refused == [72] and routed.max_error_vs_dense() < 1e-5 and len(routed.calls) == 4
    own = [r for r in caplog.records if r.getMessage().startswith("Error running restricted attention")]
    lines = log_lines(caplog)
    assert len(own) == 1 and len(lines) == 1 and "falls back by itself" in lines[0]


# ----------------------------------------------------------------------- ComfyUI's own attention functions

def comfy_backends():
    import comfy.ldm.modules.attention as attn

    found = {"basic": attn.attention_basic, "sub_quad": attn.attention_sub_quad, "split": attn.attention_split,
             "pytorch": attn.attention_pytorch}
    found.update(getattr(attn, "REGISTERED_ATTENTION_FUNCTIONS", {}))
    return found


def case(dtype, seed=0, heads=3, dim=64):
    from comfyui_dreamo.dreamo_ops.areas import region_to_tokens
    from comfyui_dreamo.dreamo_ops.routing import RoutingSpec
    from comfyui_dreamo.dreamo_ops.token_layout import reference_layout

    layout = reference_layout((6, 8), [(4, 4), (2, 6)], (1, 2))
    length = 5 + layout.total_count
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, heads, length, dim, generator=g).to(dtype) for _ in range(3))
    left = torch.zeros(8, 8)
    left[:, :4] = 1
    spec = RoutingSpec(regions={1: left, 2: 1 - left}, mode="hard", isolate=True)
    cov = {s: region_to_tokens(m, (6, 8)) for s, m in spec.regions.items()}
    return layout, spec, cov, q, k, v


def routed_through(func, layout, spec, cov, q, k, v):
    from comfyui_dreamo.dreamo_ops.routing import RoutedAttention
    from comfyui_dreamo.dreamo_ops.routing_backends import BackendDispatch

    ov = RoutedAttention(spec, layout, cov, n_double=1, dispatch=BackendDispatch())
    out = ov(getattr(func, "__wrapped__", func), q, k, v, q.shape[1], mask=None, skip_reshape=True,
             transformer_options={}, _inside_attn_wrapper=True)
    return out, ov.dispatch.report()


@pytest.mark.parametrize("name", ["basic", "sub_quad", "split", "pytorch"])
def test_comfyui_backends_run_the_folded_call_exactly(name):
    func = comfy_backends()[name]
    layout, spec, cov, q, k, v = case(torch.float32)
    out, report = routed_through(func, layout, spec, cov, q, k, v)
    assert report and all(r["usable"] for r in report), report  # ComfyUI's function itself ran the routed call
    want = dense_attention(q, k, v, dense_bias(layout, 5, cov, "hard", 0, True))
    assert rel_err(out, want.transpose(1, 2).reshape(1, q.shape[2], -1)) < 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["sub_quad", "pytorch"])
def test_comfyui_backends_keep_hard_cuts_exactly_zero_in_half_precision(name, dtype):
    """v = indicator of the tokens a query may not see: its attention output must be exactly 0."""
    func = comfy_backends()[name]
    layout, spec, cov, q, k, _ = case(dtype, seed=1)
    q, k = q * 3, k * 3  # large logits
    length, n_img = q.shape[2], layout.image_count
    outside1 = torch.zeros(length, dtype=torch.bool)
    outside1[5:5 + n_img] = cov[1].reshape(-1) < 0.5
    ref1 = torch.zeros(length, dtype=torch.bool)
    ref1[5 + n_img:5 + n_img + layout.refs[0].count] = True
    for cut_keys, queries in ((outside1, ref1), (ref1, outside1)):
        v = cut_keys.to(dtype)[None, None, :, None].expand(*q.shape[:3], 64).contiguous()
        out, _ = routed_through(func, layout, spec, cov, q, k, v)
        seen = out.view(1, length, q.shape[1], 64)[0, queries]
        assert queries.any() and (seen == 0).all(), f"{name} {dtype}: max {seen.abs().max().item()}"
