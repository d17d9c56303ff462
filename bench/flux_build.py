"""FLUX.1 models of the running ComfyUI's own classes with random weights, for benchmarks and tests.

Needs ComfyUI importable (`comfy` on the path). The config comes from ComfyUI's own model detection run on FLUX.1
key names (BFL layout, as in flux1-dev.safetensors) holding meta tensors, so every field a ComfyUI release adds to
Flux's config (0.33's `txt_ids_dims`, say) is filled the way that release fills it for a real file; only the sizes
are then set. Used by bench/gpu_matrix.py (FLUX.1-dev's real sizes on a GPU) and dreamo_testkit/tiny_models.py (tiny).
"""
from __future__ import annotations

import torch

FLUX1_DEV = dict(in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096, hidden_size=3072,
                 mlp_ratio=4.0, num_heads=24, depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56], theta=10000,
                 patch_size=2, qkv_bias=True, guidance_embed=True)
"""FLUX.1-dev as released: 19 double + 38 single blocks, hidden 3072, 24 heads of 128."""

SIZE_KEYS = tuple(FLUX1_DEV)


def flux_unet_config(**sizes) -> dict:
    """The unet config of a FLUX.1 as the running ComfyUI's detection describes one, with `sizes` (SIZE_KEYS)."""
    import comfy.model_detection

    cfg = {**FLUX1_DEV, **{k: v for k, v in sizes.items() if k in SIZE_KEYS}}
    h, head = cfg["hidden_size"], cfg["hidden_size"] // cfg["num_heads"]
    shapes = {"img_in.weight": (h, cfg["in_channels"] * cfg["patch_size"] ** 2),
              "txt_in.weight": (h, cfg["context_in_dim"]), "vector_in.in_layer.weight": (h, cfg["vec_in_dim"]),
              "guidance_in.in_layer.weight": (h, 256)}
    shapes.update({f"double_blocks.{i}.img_attn.norm.key_norm.scale": (head,) for i in range(cfg["depth"])})
    shapes.update({f"single_blocks.{i}.norm.key_norm.scale": (head,) for i in range(cfg["depth_single_blocks"])})
    detected = comfy.model_detection.detect_unet_config({k: torch.empty(s, device="meta")
                                                         for k, s in shapes.items()}, "")
    if detected is None or detected.get("image_model") != "flux":
        raise RuntimeError(f"this ComfyUI does not detect FLUX.1 key names as Flux: {detected}")
    detected.update({k: cfg[k] for k in SIZE_KEYS})
    return detected


def flux_model_config(dtype=torch.float32, manual_cast=None, fp8_matmul: bool = False, **sizes):
    """ComfyUI's model config (comfy.supported_models.Flux) for a FLUX.1 of `sizes`, weights stored in `dtype` and
    computed in `manual_cast` (None: the same). `fp8_matmul`: what UNETLoader's fp8_e4m3fn_fast sets (fp8 matmuls
    where ComfyUI supports them on the device)."""
    import comfy.supported_models

    config = comfy.supported_models.Flux(flux_unet_config(**sizes))
    config.set_inference_dtype(dtype, manual_cast)
    if fp8_matmul:
        config.optimizations["fp8"] = True
    return config


@torch.no_grad()
def random_flux_patcher(device, dtype=torch.bfloat16, manual_cast=None, fp8_matmul: bool = False, seed: int = 0,
                        std: float = 0.02, **sizes):
    """A ModelPatcher around a random FLUX.1 of `sizes` built on `device` (no CPU copy: FLUX.1-dev's 12B weights are
    allocated and filled on the GPU in seconds). Weights ~ N(0, std²), RMSNorm scales 1."""
    import comfy.model_patcher

    device = torch.device(device)
    model = flux_model_config(dtype, manual_cast, fp8_matmul, **sizes).get_model({}, device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    fill = torch.bfloat16 if device.type == "cuda" else torch.float32
    for name, t in list(model.diffusion_model.named_parameters()) + list(model.diffusion_model.named_buffers()):
        if t.device != device:
            t.data = t.data.to(device)
        if name.endswith(("norm.scale", "norm.weight")):
            t.fill_(1.0)
        elif t.dtype.is_floating_point and t.dtype.itemsize >= 2:
            t.normal_(0.0, std, generator=gen)
        else:  # fp8 storage: draw in a wider type, then round
            t.copy_(torch.randn(t.shape, generator=gen, device=device, dtype=fill).mul_(std).to(t.dtype))
    offload = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=offload)
