"""DreamO on a FLUX.1 loaded by city96's ComfyUI-GGUF pack (Q8_0), in a real ComfyUI.

The pack comes from outside the repo (`COMFYUI_GGUF_PATH`, see dreamo_testkit/gguf_fixtures.py); without it these tests
skip with that reason. A FLUX.1-shaped .gguf (one double block) is written the way the pack's tools write one and
loaded with the pack's own nodes (UnetLoaderGGUF / UnetLoaderGGUFAdvanced). DreamOStageLoader puts DreamO's
release-format LoRAs on it as ComfyUI patches; the GGUF pack applies them itself while dequantizing, so the
weights checked here are the ones its layers compute for a forward (`get_weight`), compared with
W + s * scale * up @ down from an independent reference:
  * W: the file's tensors dequantized by the `gguf` package (numpy), rounded to float16 where the pack
    dequantizes Q8_0 in float16 (its default `dequant_dtype`) - Q8_0's int8 x fp16-scale products are exact in
    float32, so that rounding is the only difference;
  * the LoRA deltas: from the generator's own description of each file (dreamo_testkit/lora_fixtures.py).
"""
import os

import pytest
import torch

from dreamo_testkit import gguf_fixtures as gf

pytestmark = [pytest.mark.host, pytest.mark.skipif(gf.pack_path() is None, reason=gf.SKIP_REASON)]

REL_TOL = 1e-5
PREFIX = "diffusion_model."
OFFICIAL = {"main": 1.0, "cfg_distill": 1.0, "turbo": 1.0, "sft": 1.0, "dpo": 1.25}
GGUF_NAME = "flux1_one_block_Q8_0.gguf"


def flux1_dims():
    from dreamo_testkit import lora_fixtures as lf

    p = gf.FLUX1_ONE_BLOCK
    return lf.Dims(hidden=p["hidden_size"], mlp=int(p["hidden_size"] * p["mlp_ratio"]), depth=p["depth"],
                   depth_single=p["depth_single_blocks"], in_channels=p["in_channels"] * 4,
                   context=p["context_in_dim"], vec=p["vec_in_dim"], out=4 * p["out_channels"])


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    pytest.importorskip("gguf")
    source, types = gf.shared_flux_gguf(tmp_path_factory)
    path = gf.link_into(source, str(tmp_path_factory.mktemp("diffusion_models")), GGUF_NAME)
    return path, types


@pytest.fixture(scope="module")
def reference(gguf_file):
    return gf.DequantizedReader(gguf_file[0])


@pytest.fixture
def folders(tmp_path, gguf_file):
    """diffusion_models/ (with the .gguf), dreamo/ and loras/ model folders (restored afterwards)."""
    from dreamo_testkit import comfy_host

    unet_dir = os.path.dirname(gguf_file[0])
    also = {name: (unet_dir, (".gguf", ".safetensors")) for name in ("diffusion_models", "unet_gguf")}
    with comfy_host.model_folders(tmp_path, also=also) as paths:  # the pack lists .gguf files under its own key
        yield paths


@pytest.fixture
def release(folders):
    """DreamO's v1.1 files and FLUX.1-Turbo-Alpha, FLUX.1-sized, in the formats ByteDance/alimama released."""
    import folder_paths
    from dreamo_testkit import lora_fixtures as lf
    from dreamo_testkit import tiny_models

    d, dims = folders["dreamo"], flux1_dims()
    files = {"main": ("dreamo.safetensors", lf.xlabs(seed=1, sep="_", d=dims)),
             "cfg_distill": ("dreamo_cfg_distill.safetensors", lf.xlabs(seed=2, sep=".", d=dims)),
             "sft": ("dreamo_sft_lora.safetensors", lf.diffusers(seed=5, full=False, d=dims)),
             "dpo": ("dreamo_dpo_lora.safetensors", lf.diffusers(seed=6, full=False, d=dims)),
             "turbo": (os.path.join("FLUX.1-Turbo-Alpha", "diffusion_pytorch_model.safetensors"),
                       lf.diffusers(seed=7, full=True, d=dims))}
    (d / "FLUX.1-Turbo-Alpha").mkdir()
    changes = {}
    for stage, (name, (tensors, ch)) in files.items():
        if stage == "main":
            tensors = {**tensors, **tiny_models.embedding_tensors(seed=8, hidden=dims.hidden, t5_dim=4096)}
        lf.save(d / name, tensors)
        changes[stage] = ch
    folder_paths.filename_list_cache.clear()
    return changes


def pack_nodes():
    return gf.import_pack().nodes


def load_gguf(dequant_dtype="default"):
    """The pack's loader node, as a workflow runs it."""
    nodes = pack_nodes()
    with torch.inference_mode():
        if dequant_dtype == "default":
            return nodes.UnetLoaderGGUF().load_unet(GGUF_NAME)[0]
        return nodes.UnetLoaderGGUFAdvanced().load_unet(GGUF_NAME, dequant_dtype, "default", False)[0]


def run_stage_loader(model, **overrides):
    """DreamOStageLoader with a fresh node's inputs (first combo entry, declared defaults) and `overrides`."""
    from comfyui_dreamo.nodes.stage_loader import DreamOStageLoader

    inputs = {}
    for name, (kind, opts) in DreamOStageLoader.INPUT_TYPES()["required"].items():
        if name != "model":
            inputs[name] = opts.get("default", kind[0] if isinstance(kind, list) else None)
    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        return DreamOStageLoader().load(model, **{**inputs, **overrides})


def layer_tensors(patcher):
    """(BFL tensor name, float32 weight or bias as the pack's layers compute it for a forward), one at a time, with
    the patches applied as ComfyUI loads the model; the model is unpatched afterwards."""
    cpu = torch.device("cpu")
    with torch.inference_mode():
        patcher.patch_model(device_to=cpu)
        try:
            for name, module in patcher.model.diffusion_model.named_modules():
                if not hasattr(module, "get_weight"):
                    continue
                for kind in ("weight", "bias"):
                    tensor = getattr(module, kind, None)
                    if tensor is not None:
                        yield f"{name}.{kind}", module.get_weight(tensor, torch.float32)
        finally:
            patcher.unpatch_model(device_to=cpu)


def rel_err(got, want):
    return ((got.float() - want).abs().max() / want.abs().max()).item()


def reference_tensor(reference, key, kind, dequant_dtype):
    """The file's tensor dequantized by the `gguf` package, as the pack sees it: its default dequantization
    rounds Q8_0's (exact in float32) int8 x fp16-scale products to float16."""
    t = reference.dequantized(key)
    if kind == "Q8_0" and dequant_dtype == "default":
        t = t.to(torch.float16).float()
    return t


@pytest.mark.parametrize("dequant_dtype", ["default", "float32"])
def test_stage_loader_patches_a_q8_0_gguf_flux_exactly(gguf_file, reference, release, dequant_dtype):
    import comfy.model_base

    path, types = gguf_file
    unet = load_gguf(dequant_dtype)
    assert isinstance(unet, pack_nodes().GGUFModelPatcher) and isinstance(unet.model, comfy.model_base.Flux)
    qkv = unet.model.diffusion_model.double_blocks[0].img_attn.qkv.weight
    assert qkv.tensor_type.name == "Q8_0" and tuple(qkv.shape) == (9216, 3072)

    model, dreamo = run_stage_loader(unet)
    assert isinstance(model, pack_nodes().GGUFModelPatcher), "the clone stays a GGUF patcher"
    assert not unet.patches, "the input model must stay untouched"
    assert dreamo.hidden_size == 3072

    changes = {}  # BFL weight -> [(strength, Change)]
    for stage, strength in OFFICIAL.items():
        for c in release[stage]:
            changes.setdefault(c.weight, []).append((strength, c))
    assert {types[k] for k in changes} == {"Q8_0", "BF16"}, "both the quantized and the kept-BF16 weights are hit"
    seen, untouched = set(), []
    for key, got in layer_tensors(model):  # one FLUX.1-sized tensor at a time
        base = reference_tensor(reference, key, types[key], dequant_dtype)
        if key not in changes:
            assert torch.equal(got, base), f"{key} changed but no stage targets it"
            untouched.append(key)
            continue
        want = base.clone()
        for strength, c in changes[key]:  # W + s * scale * up @ down
            want[c.start:c.start + c.rows] += (strength * c.scale) * torch.mm(c.up.float(), c.down.float())
        err = rel_err(got, want)
        assert err < REL_TOL, f"{key} ({types[key]}): relative error {err:.2e}"
        assert (got - base).abs().max() > 1e-3, f"{key} was not patched"
        seen.add(key)
    assert seen == set(changes), f"patched weights not found in the model: {sorted(set(changes) - seen)}"
    assert untouched and all(k.endswith(".bias") for k in untouched), "turbo touches every linear weight"
    # The clone shares the loaded model with the input: unpatching must clear the patches the pack put on it.
    assert not any(getattr(p, "patches", None) for p in unet.model.parameters()), "GGUF patches left behind"


def test_gguf_flux_stage_loader_apply_sampler(gguf_file, release):
    """UnetLoaderGGUF -> DreamOStageLoader -> DreamOApply -> a sampling step (comfy.sample.sample)."""
    import comfy.model_management
    import comfy.sample
    from dreamo_testkit import tiny_models
    from dreamo_testkit.host_sampling import add_recorder
    from comfyui_dreamo.dreamo_ops.reference import DreamOReference
    from comfyui_dreamo.nodes.apply import DreamOApply

    unet = load_gguf()
    g = torch.Generator().manual_seed(0)
    ref = DreamOReference(latent=torch.randn(1, 16, 8, 8, generator=g), task="ip", pixels=torch.zeros(1, 64, 64, 3))
    latent = torch.zeros(1, 16, 8, 8)
    noise = torch.randn(latent.shape, generator=g)
    outputs, calls = {}, {}
    try:
        for label, overrides in (("stages", {}), ("no_stages", {f"{s}_strength": 0.0 for s in OFFICIAL})):
            model, dreamo = run_stage_loader(unet, **overrides)
            with torch.inference_mode():
                model2, positive = DreamOApply().apply(model, tiny_models.flux_sized_conditioning(seed=3), dreamo,
                                                       ref_1=ref)["result"]
                assert isinstance(model2, pack_nodes().GGUFModelPatcher)
                assert set(model2.patches) == set(model.patches)  # DreamOApply keeps the stage patches
                recorder = add_recorder(model2)
                outputs[label] = comfy.sample.sample(model2, noise, 1, 1.0, "euler", "simple", positive,
                                                     tiny_models.flux_sized_conditioning(seed=4), latent, seed=0)
            calls[label] = recorder.calls
            comfy.model_management.unload_all_models()
    finally:
        comfy.model_management.unload_all_models()
    for label, out in outputs.items():
        assert out.shape == latent.shape and torch.isfinite(out).all(), label
        assert calls[label] and all(c["n_refs"] == 1 for c in calls[label]), "the reference reached the model"
    assert (outputs["stages"] - outputs["no_stages"]).abs().max() > 1e-4, "the stage LoRAs must change the result"
    assert not unet.patches
