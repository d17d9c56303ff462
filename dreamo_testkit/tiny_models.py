"""Tiny random models for tests and the install check, built with ComfyUI's own classes (needs the host)."""
from __future__ import annotations

import re

import torch
from safetensors.torch import save_file

TINY_FLUX = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=24, context_in_dim=32,
                 hidden_size=48, mlp_ratio=4.0, num_heads=2, depth=2, depth_single_blocks=2, axes_dim=[4, 10, 10],
                 theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True)
TINY_T5_DIM = 32
TINY_VAE = {"params": {"embed_dim": 16, "ddconfig": {
    "double_z": True, "z_channels": 16, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 32,
    "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}}}


def _randomize(module: torch.nn.Module, seed: int, scale: float) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, t in sorted(module.state_dict().items()):
            t.copy_(torch.randn(t.shape, generator=g) * scale)


def flux_build():
    """bench/flux_build.py (FLUX.1 configs by ComfyUI's own detection, shared with the GPU benchmark), loaded by file:
    it has no imports of the pack, and the tests also run inside a ComfyUI server where the pack has another name."""
    import importlib.util
    import os
    import sys

    name = "dreamo_bench_flux_build"
    if name not in sys.modules:
        from . import REPO

        path = os.path.join(REPO, "bench", "flux_build.py")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def flux_unet_config(**overrides) -> dict:
    """The unet config of a FLUX.1 as the running ComfyUI's own model detection describes one (on FLUX.1 key names,
    so every field a release adds, like 0.33's `txt_ids_dims`, is filled as for a real file), resized to TINY_FLUX
    (+ overrides)."""
    return flux_build().flux_unet_config(**{**TINY_FLUX, **overrides})


def flux_model_config(dtype=torch.float32, manual_cast=None, **overrides):
    """ComfyUI's model config (comfy.supported_models.Flux) for a tiny FLUX.1, inference dtype set."""
    return flux_build().flux_model_config(dtype, manual_cast, **{**TINY_FLUX, **overrides})


def flux_patcher(seed: int = 0, scale: float = 0.1, **overrides):
    """A ModelPatcher around a tiny random ComfyUI Flux (TINY_FLUX, with `overrides`), float32 on the CPU."""
    import comfy.model_patcher

    model = flux_model_config(**overrides).get_model({})
    _randomize(model.diffusion_model, seed, scale)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def vae(seed: int = 0, latent_channels: int = 16):
    """A tiny random 8x-downscaling VAE as ComfyUI's VAE object: 16 latent channels as Flux's, or another count
    (4: an SD1.x/SDXL-style VAE, for error tests)."""
    import copy

    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    config = copy.deepcopy(TINY_VAE)
    config["params"]["embed_dim"] = config["params"]["ddconfig"]["z_channels"] = latent_channels
    ae = AutoencoderKL(**config["params"])
    _randomize(ae, seed, 0.05)
    return comfy.sd.VAE(sd=ae.state_dict(), config=config)


def embedding_tensors(seed: int = 0, hidden: int = TINY_FLUX["hidden_size"], t5_dim: int = TINY_T5_DIM,
                      vocab: int = 40) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "dreamo_task_embedding.weight": torch.randn(2, hidden, generator=g),
        "dreamo_idx_embedding.weight": torch.randn(10, hidden, generator=g),
        "dreamo_t5_embedding.weight": torch.randn(vocab + 10, t5_dim, generator=g),
    }


def write_dreamo_file(path: str, seed: int = 0, with_t5: bool = True,
                      hidden: int = TINY_FLUX["hidden_size"]) -> dict[str, torch.Tensor]:
    """A dreamo.safetensors look-alike: embeddings plus one XLabs-style LoRA pair, as the release has."""
    tensors = embedding_tensors(seed, hidden=hidden)
    if not with_t5:
        del tensors["dreamo_t5_embedding.weight"]
    h = hidden
    g = torch.Generator().manual_seed(seed + 1)
    tensors["double_blocks.0.processor.qkv_lora1.down.weight"] = torch.randn(4, h, generator=g) * 0.05
    tensors["double_blocks.0.processor.qkv_lora1.up.weight"] = torch.randn(3 * h, 4, generator=g) * 0.05
    save_file(tensors, path)
    return tensors


def conditioning(seed: int = 0, tokens: int = 7, batch: int = 1, guidance: float = 3.5):
    """A Flux CONDITIONING of random T5 context and CLIP pooled vectors."""
    g = torch.Generator().manual_seed(seed)
    context = torch.randn(batch, tokens, TINY_FLUX["context_in_dim"], generator=g)
    pooled = torch.randn(batch, TINY_FLUX["vec_in_dim"], generator=g)
    return [[context, {"pooled_output": pooled, "guidance": guidance}]]


def sd3_patcher():
    """A tiny SD3 (MMDiT) ModelPatcher: a non-Flux model for error tests."""
    import comfy.model_patcher
    import comfy.supported_models

    cfg = {"in_channels": 16, "pos_embed_scaling_factor": None, "depth": 1, "patch_size": 2, "adm_in_channels": 32,
           "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 32, "out_features": 64}},
           "pos_embed_max_size": 8, "out_channels": 16, "num_patches": 64}
    config = comfy.supported_models.SD3(cfg)
    config.set_inference_dtype(torch.float32, None)
    return comfy.model_patcher.ModelPatcher(config.get_model({}), load_device=torch.device("cpu"),
                                            offload_device=torch.device("cpu"))


def write_flux_unet_file(path: str, seed: int = 0, dtype=torch.float8_e4m3fn, scale: float = 0.02) -> None:
    """A FLUX.1-shaped diffusion-model file that ComfyUI's UNETLoader detects as Flux (it fixes hidden size
    3072, so only the depth can be small): one double block, no single blocks, stored in `dtype` (fp8 by
    default, ~0.36 GB), random weights. Norm scales are ones so activations stay tame."""
    import comfy.ldm.flux.model
    import comfy.ops

    params = flux_unet_config(vec_in_dim=768, context_in_dim=4096, hidden_size=3072, num_heads=24, depth=1,
                              depth_single_blocks=0, axes_dim=[16, 56, 56])
    params.pop("image_model")
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in comfy.ldm.flux.model.Flux(
            operations=comfy.ops.disable_weight_init, **params).state_dict().items()}
    # Written with the release file's (BFL) key names whatever this ComfyUI calls its RMSNorm weights.
    shapes = {re.sub(r"(query_norm|key_norm)\.weight$", r"\1.scale", k): v for k, v in shapes.items()}
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for key, shape in sorted(shapes.items()):
        if key.endswith(".scale"):
            tensors[key] = torch.ones(shape, dtype=torch.bfloat16)
        else:
            tensors[key] = (torch.randn(shape, generator=g) * scale).to(dtype)
    save_file(tensors, path)


def flux_sized_conditioning(seed: int = 0, tokens: int = 8):
    """CONDITIONING shaped for a FLUX.1-sized model (T5 4096-d context, CLIP-L 768-d pooled)."""
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, 4096, generator=g), {"pooled_output": torch.randn(1, 768, generator=g),
                                                          "guidance": 3.5}]]


# SDXL's UNet as released (what ComfyUI's detection reports for an SDXL checkpoint); only used on the meta device.
SDXL_UNET = dict(use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
                 num_classes="sequential", adm_in_channels=2816, in_channels=4, model_channels=320,
                 num_res_blocks=[2, 2, 2], transformer_depth=[0, 0, 2, 2, 10, 10], channel_mult=[1, 2, 4],
                 transformer_depth_middle=10, use_linear_in_transformer=True, context_dim=2048, num_head_channels=64,
                 transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10], use_temporal_attention=False,
                 use_temporal_resblock=False)
TINY_SDXL = dict(model_channels=32, num_res_blocks=[1, 1], channel_mult=[1, 2], transformer_depth=[0, 1],
                 transformer_depth_output=[0, 0, 1, 1], transformer_depth_middle=1, context_dim=32,
                 num_head_channels=16)


def sdxl_model_config():
    """ComfyUI's model config for a tiny SDXL: the config ComfyUI's own detection reads off an SDXL-sized UNet's
    state dict (meta tensors: nothing allocated), which must pick ComfyUI's SDXL class, resized to TINY_SDXL."""
    import comfy.model_detection
    import comfy.ops
    import comfy.supported_models
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    with torch.device("meta"):
        unet = UNetModel(**SDXL_UNET, dtype=torch.float32, device="meta", operations=comfy.ops.disable_weight_init)
    detected = comfy.model_detection.detect_unet_config(unet.state_dict(), "")
    found = comfy.model_detection.model_config_from_unet_config(detected)
    if type(found) is not comfy.supported_models.SDXL:
        raise RuntimeError(f"this ComfyUI does not detect an SDXL UNet as SDXL: {type(found).__name__}")
    detected.update(TINY_SDXL)
    config = comfy.supported_models.SDXL(detected)
    config.set_inference_dtype(torch.float32, None)
    return config


def sdxl_patcher(seed: int = 0):
    """A tiny random SDXL ModelPatcher (ComfyUI's SDXL model class): a non-Flux model for error tests."""
    import comfy.model_patcher

    model = sdxl_model_config().get_model({})
    _randomize(model.diffusion_model, seed, 0.05)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
