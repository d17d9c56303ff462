"""DreamO with ComfyUI's speed features, on tiny models in a real ComfyUI (each where the release has it):
step caches (EasyCache, LazyCache), Flux's reference K/V cache (FluxKVCache, 0.33), user LoRAs stacked with the
stage loader, and the fp8 matmul path (`--fast fp8_matrix_mult` / `fp8_e4m3fn_fast`). torch.compile has its own
file (test_torch_compile_host.py). Each test fails when DreamO's references or routing are silently dropped.
"""
import pytest
import torch

from dreamo_testkit.host_graph import N_BLOCKS, apply, make_ref, route, sample, stripes
from dreamo_testkit.stage_weights import OFFICIAL, assert_weights, base_weights, expected, patched_weights, run

pytestmark = pytest.mark.host

STEPS = tuple(float(s) for s in torch.linspace(0.95, 0.0, 9))  # 8 steps


@pytest.fixture(scope="module")
def flux():
    from dreamo_testkit import tiny_models

    return tiny_models.flux_patcher(seed=1, scale=0.05)


@pytest.fixture(scope="module")
def dreamo():
    from dreamo_testkit import tiny_models
    from comfyui_dreamo.dreamo_ops.condition_embedding import DreamOEmbeddings

    t = tiny_models.embedding_tensors(seed=2)
    return DreamOEmbeddings(task=t["dreamo_task_embedding.weight"] * 0.1, index=t["dreamo_idx_embedding.weight"] * 0.1,
                            placeholders=None)


REF_SHAPES = ((6, 6, 31), (4, 8, 32))


def dreamo_refs():
    return {slot: make_ref(h, w, seed=s) for slot, (h, w, s) in enumerate(REF_SHAPES, start=1)}


class DreamOWork:
    """Counts, per sampling run, the model calls that got DreamO's embeddings and the routed attention calls."""

    def __init__(self, monkeypatch):
        from comfyui_dreamo.dreamo_ops import flux_wrapper, routing

        self.embedded, self.routed = 0, 0
        real_patch, real_fold = flux_wrapper.ConditionEmbeddingPatch.__call__, routing.fold_channels

        def patch(p, args):
            self.embedded += 1
            return real_patch(p, args)

        def fold(*a, **kw):
            self.routed += 1
            return real_fold(*a, **kw)

        monkeypatch.setattr(flux_wrapper.ConditionEmbeddingPatch, "__call__", patch)
        monkeypatch.setattr(routing, "fold_channels", fold)


# --------------------------------------------------------------------------------------------- step caches

def step_cache(kind, model):
    from comfy_extras.nodes_easycache import EasyCacheNode, LazyCacheNode

    node = {"EasyCache": EasyCacheNode, "LazyCache": LazyCacheNode}[kind]
    out = node.execute(model, reuse_threshold=3.0, start_percent=0.0, end_percent=1.0, verbose=False)
    return out.result[0] if hasattr(out, "result") else out[0]


@pytest.mark.parametrize("order", ["cache_last", "cache_first"])
@pytest.mark.parametrize("kind", ["EasyCache", "LazyCache"])
def test_step_caches_skip_steps_but_every_computed_step_is_dreamo_with_routing(flux, dreamo, monkeypatch, kind,
                                                                                order):
    """EasyCache / LazyCache replace some steps by the last computed step's change. Those changes were computed by
    DreamO with its references and routing, so nothing is dropped: every model call that runs has DreamO's
    embeddings and routed blocks, and the routing maps average the computed steps."""
    from dreamo_testkit import tiny_models
    from comfyui_dreamo.nodes.routing import routing_spec
    from dreamo_testkit.host_sampling import add_recorder

    left, right = stripes(2)
    pos, neg = tiny_models.conditioning(seed=3), tiny_models.conditioning(seed=4)
    base = step_cache(kind, flux) if order == "cache_first" else flux
    model, cond = apply(base, dreamo, dreamo_refs(), pos)
    model = route(model, {1: left, 2: right})
    if order == "cache_last":
        model = step_cache(kind, model)
    rec = add_recorder(model)
    work = DreamOWork(monkeypatch)
    cached = sample(model, torch.zeros(1, 16, 8, 8), cond, neg, sigmas=STEPS)
    ran = [c for c in rec.calls if c["n_refs"]]
    assert len(rec.calls) == len(ran), "every call carries the references"
    assert 2 <= len(ran) < len(STEPS) - 1, f"{kind} skipped no step (or every step): the test would prove nothing"
    assert work.embedded == len(ran) and work.routed == N_BLOCKS * len(ran)
    capture = routing_spec(model).capture
    assert capture.events == {1: N_BLOCKS * len(ran), 2: N_BLOCKS * len(ran)}
    # a computed step is DreamO's exact step: the first one equals the uncached DreamO + routing model's first call
    full = route(apply(flux, dreamo, dreamo_refs(), pos)[0], {1: left, 2: right})
    rec_full = add_recorder(full)
    sample(full, torch.zeros(1, 16, 8, 8), cond, neg, sigmas=STEPS[:2])
    assert torch.allclose(rec.calls[0]["out"], rec_full.calls[0]["out"], rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------- FluxKVCache (0.33)

@pytest.mark.parametrize("order", ["kv_cache_last", "kv_cache_first"])
def test_flux_kv_cache_is_refused_by_name_before_any_step(flux, dreamo, order):
    from dreamo_testkit.gguf_fixtures import _comfyui_nodes_module

    _comfyui_nodes_module()  # comfy_extras import ComfyUI's `nodes`, which this repo's `nodes` package shadows
    import comfy_extras.nodes_flux as nodes_flux

    if not hasattr(nodes_flux, "FluxKVCache"):
        pytest.skip("this ComfyUI has no FluxKVCache (added after 0.3.64)")
    from dreamo_testkit import tiny_models
    from comfyui_dreamo.dreamo_ops.errors import DreamOError
    from dreamo_testkit.host_sampling import add_recorder

    def kv(m):
        out = nodes_flux.FluxKVCache.execute(m)
        return out.result[0] if hasattr(out, "result") else out[0]

    base = kv(flux) if order == "kv_cache_first" else flux
    model, cond = apply(base, dreamo, dreamo_refs(), tiny_models.conditioning(seed=3))
    if order == "kv_cache_last":
        model = kv(model)
    rec = add_recorder(model)
    with pytest.raises(DreamOError, match=r"DreamOApply \(input 'model'\).*Flux KV Cache.*Fix: remove the Flux KV Cache"):
        sample(model, torch.zeros(1, 16, 8, 8), cond, tiny_models.conditioning(seed=4), sigmas=STEPS)
    assert rec.calls == []


# ----------------------------------------------------------------------------- user LoRAs + the stage loader

@pytest.mark.parametrize("order", ["user_lora_first", "stage_loader_first"])
def test_user_lora_stacks_with_the_stage_loader(folders, release, order):  # noqa: F811
    """A user's LoRA (kohya format, ComfyUI's own LoraLoaderModelOnly) before or after DreamO Stage Loader: the
    weights ComfyUI computes hold both, exactly, and DreamO on that model matches the official forward on the merged
    weights (so the references are used)."""
    import folder_paths
    from dreamo_testkit import lora_fixtures as lf
    from dreamo_testkit import tiny_models
    from dreamo_testkit.gguf_fixtures import _comfyui_nodes_module
    from dreamo_testkit.host_sampling import add_recorder, sample_once
    from dreamo_testkit.official_dreamo_reference import diffusers_flux_from_comfy
    from dreamo_testkit.official_dreamo_reference import check_call

    flux = tiny_models.flux_patcher(seed=1)
    tensors, user = lf.kohya(seed=21)
    lf.save(folders["loras"] / "my_style.safetensors", tensors)
    folder_paths.filename_list_cache.clear()

    def user_lora(m):
        return _comfyui_nodes_module().LoraLoaderModelOnly().load_lora_model_only(m, "my_style.safetensors", 0.7)[0]

    base = base_weights(flux)
    if order == "user_lora_first":
        model, dreamo = run(user_lora(flux))
    else:
        model, dreamo = run(flux)
        model = user_lora(model)
    stages = ("main", "cfg_distill", "turbo", "sft", "dpo")
    changes = {**release, "user": user}
    want = expected(base, changes, {**{s: OFFICIAL[s] for s in stages}, "user": 0.7})
    assert_weights(patched_weights(model), want, base, changes, stages + ("user",))

    merged = tiny_models.flux_patcher(seed=1)
    merged.model.diffusion_model.load_state_dict(want)
    reference = diffusers_flux_from_comfy(merged.model.diffusion_model, tiny_models.TINY_FLUX)
    refs = dreamo_refs()
    positive = tiny_models.conditioning(seed=3)
    applied, cond = apply(model, dreamo, refs, positive)
    rec = add_recorder(applied)
    sample_once(applied, torch.zeros(1, 16, 8, 8), cond, tiny_models.conditioning(seed=4))
    assert rec.calls[0]["n_refs"] == 2 and check_call(rec.calls[0], reference, positive, refs, dreamo) < 1e-5


# ------------------------------------------------------------------------------------ fp8 matmul (--fast)

def fp8_patcher(src, fast: bool):
    """The tiny Flux as UNETLoader's fp8_e4m3fn (fast: fp8_e4m3fn_fast, i.e. fp8 matmuls) loads it, on the CPU."""
    import comfy.model_patcher
    from dreamo_testkit import tiny_models

    model = tiny_models.flux_model_config(torch.float8_e4m3fn, torch.float32, fp8_matmul=fast).get_model({})
    model.load_model_weights(src.model.state_dict(), "diffusion_model.")
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def test_fp8_matmul_path_runs_dreamo_and_routing(flux, dreamo, monkeypatch):
    """`--fast fp8_matrix_mult` (or the fp8_e4m3fn_fast weight type) makes ComfyUI multiply in fp8 with
    fp8 matmuls (`comfy.ops.fp8_linear`, torch._scaled_mm), which it only picks on GPUs with fp8 (sm89+) — forced here (`--supports-fp8-compute`), since
    PyTorch's CPU build has `_scaled_mm` too. Activations are then rounded to fp8 (a few % per value), so the check
    is relative: DreamO + routing in fp8 matmuls lands near the same model with fp8 weights and float32 matmuls, and
    far from the same fp8 model without DreamO. Speed and the GPU kernels themselves: bench/gpu_matrix.py."""
    import comfy.model_management
    import comfy.ops
    from dreamo_testkit import tiny_models

    monkeypatch.setattr(comfy.model_management, "SUPPORT_FP8_OPS", True)
    scaled = []  # fp8 matmuls that ran (ComfyUI falls back to a cast matmul, logging at info, when one fails)
    real = comfy.ops.fp8_linear

    def counting(*a, **kw):
        out = real(*a, **kw)
        if out is not None:
            scaled.append(1)
        return out

    monkeypatch.setattr(comfy.ops, "fp8_linear", counting)
    fast, cast = fp8_patcher(flux, fast=True), fp8_patcher(flux, fast=False)
    assert isinstance(fast.model.diffusion_model.img_in, comfy.ops.fp8_ops.Linear)
    assert not isinstance(cast.model.diffusion_model.img_in, comfy.ops.fp8_ops.Linear)
    import inspect
    if fast.model.diffusion_model.training and "self.training" in inspect.getsource(
            comfy.ops.fp8_ops.Linear.forward_comfy_cast_weights):
        pytest.skip("this ComfyUI never takes the fp8 matmul path for Flux: its fp8_ops multiply in fp8 only in eval "
                    "mode and it leaves the diffusion model in training mode (0.3.64); 0.33 takes it")
    left, right = stripes(2)
    pos, neg = tiny_models.conditioning(seed=3), tiny_models.conditioning(seed=4)
    outs = {}
    for name, m in (("fast", fast), ("cast", cast)):
        model, cond = apply(m, dreamo, dreamo_refs(), pos)
        work = DreamOWork(monkeypatch)
        scaled.clear()
        outs[name] = sample(route(model, {1: left, 2: right}), torch.zeros(1, 16, 8, 8), cond, neg, sigmas=STEPS[-3:])
        assert work.embedded == 2 and work.routed == 2 * N_BLOCKS
        assert (len(scaled) > 0) == (name == "fast"), (name, len(scaled))
    plain = sample(fast, torch.zeros(1, 16, 8, 8), pos, neg, sigmas=STEPS[-3:])
    assert torch.isfinite(outs["fast"]).all()
    assert (outs["fast"] - outs["cast"]).norm() < 0.2 * (outs["fast"] - plain).norm()
    comfy.model_management.unload_all_models()
