"""ComfyUI-like folder trees with model files whose headers are the real ones, for the doctor and downloader.

Big models are written as safetensors files with the real tensor names, shapes and dtypes but only a few of
the tensors and a sparse, zero body: the doctor reads headers only, so a "24 GB" FLUX.1-dev costs no disk.
LoRAs use the real FLUX.1-dev dimensions at rank 4. facexlib files are real (random) state dicts.
"""
from __future__ import annotations

import json
import os
import struct

from . import REPO  # dreamo_cli and dreamo_ops import as top-level packages from here, as the console scripts do

H, MLP = 3072, 12288
BYTES = {"F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8}


def write_header_file(path: str, tensors: dict[str, tuple[tuple[int, ...], str]], cut: int = 0) -> str:
    """A valid safetensors file of zeros (sparse on disk); `cut` bytes removed from the end make it truncated."""
    header, offset = {}, 0
    for name, (shape, dtype) in tensors.items():
        n = BYTES[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        f.truncate(8 + len(blob) + offset - cut)
    return path


def flux_dev(dtype="BF16", guidance=True, hidden=H, double=19, single=38, prefix=""):
    t = {f"{prefix}img_in.weight": ((hidden, 64), dtype), f"{prefix}txt_in.weight": ((hidden, 4096), dtype),
         f"{prefix}double_blocks.0.img_attn.qkv.weight": ((3 * hidden, hidden), dtype)}
    if guidance:
        t[f"{prefix}guidance_in.in_layer.weight"] = ((hidden, 256), dtype)
    for i in range(double):
        t[f"{prefix}double_blocks.{i}.img_attn.norm.query_norm.scale"] = ((128,), "BF16")
    for i in range(single):
        t[f"{prefix}single_blocks.{i}.norm.key_norm.scale"] = ((128,), "BF16")
    return t


def t5xxl(dtype="F16", width=4096, blocks=24, vocab=32128):
    t = {"shared.weight": ((vocab, width), dtype),
         "encoder.block.0.layer.0.SelfAttention.q.weight": ((width, width), dtype)}
    for i in range(blocks):
        t[f"encoder.block.{i}.layer.0.layer_norm.weight"] = ((width,), "F16")
    return t


def clip_text(width=768, layers=12):
    t = {"text_model.embeddings.token_embedding.weight": ((49408, width), "F16"),
         "text_model.encoder.layers.0.self_attn.q_proj.weight": ((width, width), "F16")}
    for i in range(layers):
        t[f"text_model.encoder.layers.{i}.layer_norm1.weight"] = ((width,), "F16")
    return t


def vae(channels=16):
    return {"decoder.conv_in.weight": ((512, channels, 3, 3), "F32"),
            "encoder.conv_out.weight": ((2 * channels, 512, 3, 3), "F32")}


def sdxl_unet():
    return {"model.diffusion_model.input_blocks.0.0.weight": ((320, 4, 3, 3), "F16"),
            "model.diffusion_model.middle_block.0.in_layers.2.weight": ((1280, 1280, 3, 3), "F16")}


def xlabs_lora(rank=4, blocks=(0, 1), single=(0,), embeddings=False, hidden=H):
    t = {}
    for i in blocks:
        for proc, rows in (("qkv_lora1", 3 * hidden), ("qkv_lora2", 3 * hidden), ("proj_lora1", hidden),
                           ("proj_lora2", hidden)):
            t[f"double_blocks.{i}.processor.{proc}.down.weight"] = ((rank, hidden), "BF16")
            t[f"double_blocks.{i}.processor.{proc}.up.weight"] = ((rows, rank), "BF16")
    for i in single:
        t[f"single_blocks.{i}.processor.qkv_lora.down.weight"] = ((rank, hidden), "BF16")
        t[f"single_blocks.{i}.processor.qkv_lora.up.weight"] = ((3 * hidden, rank), "BF16")
        t[f"single_blocks.{i}.processor.proj_lora.down.weight"] = ((rank, hidden + MLP), "BF16")
        t[f"single_blocks.{i}.processor.proj_lora.up.weight"] = ((hidden, rank), "BF16")
    if embeddings:
        t["dreamo_task_embedding.weight"] = ((2, hidden), "F32")
        t["dreamo_idx_embedding.weight"] = ((10, hidden), "F32")
        t["dreamo_t5_embedding.weight"] = ((32110, 4096), "F32")
    return t


def diffusers_lora(rank=4, blocks=(0,)):
    t = {}
    for i in blocks:
        for m in ("to_q", "to_k", "to_v"):
            t[f"transformer.transformer_blocks.{i}.attn.{m}.lora_A.weight"] = ((rank, H), "BF16")
            t[f"transformer.transformer_blocks.{i}.attn.{m}.lora_B.weight"] = ((H, rank), "BF16")
        t[f"transformer.single_transformer_blocks.{i}.proj_mlp.lora_A.weight"] = ((rank, H), "BF16")
        t[f"transformer.single_transformer_blocks.{i}.proj_mlp.lora_B.weight"] = ((MLP, rank), "BF16")
    return t


def random_face_state(network: str | None):
    """A random facexlib RetinaFace ('mobile0.25'/'resnet50') or BiSeNet (None) state dict."""
    import torch

    torch.manual_seed(0)
    if network is None:
        from facexlib.parsing.bisenet import BiSeNet

        return BiSeNet(num_class=19).state_dict()
    from facexlib.detection.retinaface import RetinaFace

    return RetinaFace(network_name=network, half=False, device=torch.device("cpu")).state_dict()


_FACE_CACHE: dict = {}


def write_face_file(path: str, network: str | None) -> str:
    import torch

    if network not in _FACE_CACHE:
        _FACE_CACHE[network] = random_face_state(network)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(_FACE_CACHE[network], path)
    return path


def make_comfyui(root: str, version: str = "0.3.64", pack: bool = True) -> str:
    """An empty ComfyUI-like folder: folder_paths.py, comfy/, comfyui_version.py, models/, and this pack
    (a link to the repo) in custom_nodes/."""
    os.makedirs(os.path.join(root, "comfy"), exist_ok=True)
    os.makedirs(os.path.join(root, "models"), exist_ok=True)
    os.makedirs(os.path.join(root, "custom_nodes"), exist_ok=True)
    if pack and not os.path.exists(os.path.join(root, "custom_nodes", "comfyui-dreamo")):
        os.symlink(REPO, os.path.join(root, "custom_nodes", "comfyui-dreamo"))
    open(os.path.join(root, "folder_paths.py"), "w").close()
    with open(os.path.join(root, "comfyui_version.py"), "w") as f:
        f.write(f'__version__ = "{version}"\n')
    return root


def model(root: str, rel: str) -> str:
    return os.path.join(root, "models", rel)


def full_install(root: str, turbo: bool = True, version: str = "0.3.64", pack: bool = True) -> str:
    """Every file of the v1.1 preset (+ turbo) in the documented folders, official names."""
    make_comfyui(root, version, pack)
    write_header_file(model(root, "diffusion_models/flux1-dev.safetensors"), flux_dev())
    write_header_file(model(root, "text_encoders/clip_l.safetensors"), clip_text())
    write_header_file(model(root, "text_encoders/t5xxl_fp16.safetensors"), t5xxl())
    write_header_file(model(root, "vae/ae.safetensors"), vae())
    write_header_file(model(root, "dreamo/dreamo.safetensors"), xlabs_lora(embeddings=True))
    write_header_file(model(root, "dreamo/dreamo_cfg_distill.safetensors"), xlabs_lora(blocks=(2,), single=(3,)))
    write_header_file(model(root, "dreamo/v1.1/dreamo_sft_lora.safetensors"), diffusers_lora(blocks=(0, 1)))
    write_header_file(model(root, "dreamo/v1.1/dreamo_dpo_lora.safetensors"), diffusers_lora(blocks=(4,)))
    if turbo:
        write_header_file(model(root, "dreamo/FLUX.1-Turbo-Alpha/diffusion_pytorch_model.safetensors"),
                          diffusers_lora(blocks=(0, 7)))
    return root
