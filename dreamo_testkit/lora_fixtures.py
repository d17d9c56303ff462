"""Synthetic FLUX.1 LoRA files in every format DreamO's stages use, with what each should do to the weights.

Every generator returns (tensors, changes): `changes` lists, from the generator's own knowledge of the format
(not from the pack's mapping), the row ranges of BFL-named Flux weights each LoRA pair adds to:
    weight[start:start + rows] += strength * scale * up @ down
Pure torch (no host), sized by dreamo_testkit/tiny_models.py's TINY_FLUX unless told otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from safetensors.torch import save_file

from .tiny_models import TINY_FLUX, embedding_tensors


@dataclass(frozen=True)
class Change:
    weight: str  # BFL name, e.g. "double_blocks.0.img_attn.qkv.weight"
    start: int
    rows: int
    up: torch.Tensor
    down: torch.Tensor
    scale: float = 1.0


@dataclass(frozen=True)
class Dims:
    hidden: int
    mlp: int
    depth: int
    depth_single: int
    in_channels: int  # img_in input (latent channels * patch^2)
    context: int
    vec: int
    out: int  # final_layer output

    @classmethod
    def of(cls, cfg: dict = TINY_FLUX) -> "Dims":
        h = cfg["hidden_size"]
        p = cfg["patch_size"]
        return cls(h, int(h * cfg["mlp_ratio"]), cfg["depth"], cfg["depth_single_blocks"],
                   cfg["in_channels"] * p * p, cfg["context_in_dim"], cfg["vec_in_dim"], p * p * cfg["out_channels"])


TINY = Dims.of()


def flux_shapes(d: Dims = TINY) -> dict[str, tuple[int, int]]:
    """{BFL module: (out, in)} of every linear weight of a Flux with these dims (guidance embedding included)."""
    h, m = d.hidden, d.mlp
    shapes = {"img_in": (h, d.in_channels), "txt_in": (h, d.context), "time_in.in_layer": (h, 256),
              "time_in.out_layer": (h, h), "vector_in.in_layer": (h, d.vec), "vector_in.out_layer": (h, h),
              "guidance_in.in_layer": (h, 256), "guidance_in.out_layer": (h, h), "final_layer.linear": (d.out, h),
              "final_layer.adaLN_modulation.1": (2 * h, h)}
    for i in range(d.depth):
        for s in ("img", "txt"):
            shapes.update({f"double_blocks.{i}.{s}_mod.lin": (6 * h, h), f"double_blocks.{i}.{s}_attn.qkv": (3 * h, h),
                           f"double_blocks.{i}.{s}_attn.proj": (h, h), f"double_blocks.{i}.{s}_mlp.0": (m, h),
                           f"double_blocks.{i}.{s}_mlp.2": (h, m)})
    for i in range(d.depth_single):
        shapes.update({f"single_blocks.{i}.linear1": (3 * h + m, h), f"single_blocks.{i}.linear2": (h, h + m),
                       f"single_blocks.{i}.modulation.lin": (3 * h, h)})
    return shapes


class _Factors:
    def __init__(self, seed: int, rank: int, dtype=torch.float32):
        self.g = torch.Generator().manual_seed(seed)
        self.rank = rank
        self.dtype = dtype

    def pair(self, rows: int, cols: int, rank: int | None = None):
        r = self.rank if rank is None else rank
        up = (torch.randn(rows, r, generator=self.g) * 0.2).to(self.dtype)
        down = (torch.randn(r, cols, generator=self.g) * 0.2).to(self.dtype)
        return up, down


def xlabs(seed: int = 0, rank: int = 4, sep: str = ".", d: Dims = TINY, dtype=torch.float32):
    """DreamO's own format (dreamo.safetensors, cfg distill, quality LoRAs): XLabs processor LoRAs, no alpha."""
    f, h, m = _Factors(seed, rank, dtype), d.hidden, d.mlp
    tensors, changes = {}, []

    def add(name, weight, start, rows, cols):
        up, down = f.pair(rows, cols)
        tensors[f"{name}.up.weight"], tensors[f"{name}.down.weight"] = up, down
        changes.append(Change(weight, start, rows, up, down))

    for i in range(d.depth):
        p = f"double_blocks{sep}{i}.processor"
        add(f"{p}.qkv_lora1", f"double_blocks.{i}.img_attn.qkv.weight", 0, 3 * h, h)
        add(f"{p}.qkv_lora2", f"double_blocks.{i}.txt_attn.qkv.weight", 0, 3 * h, h)
        add(f"{p}.proj_lora1", f"double_blocks.{i}.img_attn.proj.weight", 0, h, h)
        add(f"{p}.proj_lora2", f"double_blocks.{i}.txt_attn.proj.weight", 0, h, h)
    for i in range(d.depth_single):
        p = f"single_blocks{sep}{i}.processor"
        add(f"{p}.qkv_lora", f"single_blocks.{i}.linear1.weight", 0, 3 * h, h)
        add(f"{p}.proj_lora", f"single_blocks.{i}.linear2.weight", 0, h, h + m)
    return tensors, changes


def diffusers(seed: int = 0, rank: int = 4, d: Dims = TINY, alpha: float | None = None, full: bool = True,
              dtype=torch.float32, prefix: str = "transformer."):
    """PEFT/diffusers Flux LoRA (v1.1 SFT/DPO, FLUX.1-Turbo-Alpha); `full` adds every other linear layer."""
    f, h, m = _Factors(seed, rank, dtype), d.hidden, d.mlp
    tensors, changes = {}, []
    scale = 1.0 if alpha is None else alpha / rank

    def add(name, weight, start, rows, cols, swap_halves=False):
        up, down = f.pair(rows, cols)
        tensors[f"{prefix}{name}.lora_B.weight"], tensors[f"{prefix}{name}.lora_A.weight"] = up, down
        if alpha is not None:
            tensors[f"{prefix}{name}.alpha"] = torch.tensor(alpha)
        if swap_halves:  # diffusers' AdaLayerNormContinuous is (scale, shift); BFL's final modulation (shift, scale)
            half = rows // 2
            changes.append(Change(weight, 0, half, up[half:], down, scale))
            changes.append(Change(weight, half, half, up[:half], down, scale))
        else:
            changes.append(Change(weight, start, rows, up, down, scale))

    for i in range(d.depth):
        b, w = f"transformer_blocks.{i}", f"double_blocks.{i}"
        for j, n in enumerate(("to_q", "to_k", "to_v")):
            add(f"{b}.attn.{n}", f"{w}.img_attn.qkv.weight", j * h, h, h)
        for j, n in enumerate(("add_q_proj", "add_k_proj", "add_v_proj")):
            add(f"{b}.attn.{n}", f"{w}.txt_attn.qkv.weight", j * h, h, h)
        add(f"{b}.attn.to_out.0", f"{w}.img_attn.proj.weight", 0, h, h)
        add(f"{b}.attn.to_add_out", f"{w}.txt_attn.proj.weight", 0, h, h)
        if full:
            add(f"{b}.ff.net.0.proj", f"{w}.img_mlp.0.weight", 0, m, h)
            add(f"{b}.ff.net.2", f"{w}.img_mlp.2.weight", 0, h, m)
            add(f"{b}.ff_context.net.0.proj", f"{w}.txt_mlp.0.weight", 0, m, h)
            add(f"{b}.ff_context.net.2", f"{w}.txt_mlp.2.weight", 0, h, m)
            add(f"{b}.norm1.linear", f"{w}.img_mod.lin.weight", 0, 6 * h, h)
            add(f"{b}.norm1_context.linear", f"{w}.txt_mod.lin.weight", 0, 6 * h, h)
    for i in range(d.depth_single):
        b, w = f"single_transformer_blocks.{i}", f"single_blocks.{i}"
        for j, n in enumerate(("to_q", "to_k", "to_v")):
            add(f"{b}.attn.{n}", f"{w}.linear1.weight", j * h, h, h)
        add(f"{b}.proj_mlp", f"{w}.linear1.weight", 3 * h, m, h)
        add(f"{b}.proj_out", f"{w}.linear2.weight", 0, h, h + m)
        if full:
            add(f"{b}.norm.linear", f"{w}.modulation.lin.weight", 0, 3 * h, h)
    if full:
        add("x_embedder", "img_in.weight", 0, h, d.in_channels)
        add("context_embedder", "txt_in.weight", 0, h, d.context)
        add("time_text_embed.timestep_embedder.linear_1", "time_in.in_layer.weight", 0, h, 256)
        add("time_text_embed.timestep_embedder.linear_2", "time_in.out_layer.weight", 0, h, h)
        add("time_text_embed.text_embedder.linear_1", "vector_in.in_layer.weight", 0, h, d.vec)
        add("time_text_embed.text_embedder.linear_2", "vector_in.out_layer.weight", 0, h, h)
        add("time_text_embed.guidance_embedder.linear_1", "guidance_in.in_layer.weight", 0, h, 256)
        add("time_text_embed.guidance_embedder.linear_2", "guidance_in.out_layer.weight", 0, h, h)
        add("norm_out.linear", "final_layer.adaLN_modulation.1.weight", 0, 2 * h, h, swap_halves=True)
        add("proj_out", "final_layer.linear.weight", 0, d.out, h)
    return tensors, changes


def bfl(seed: int = 0, rank: int = 4, d: Dims = TINY, alpha: float | None = 2.0, prefix: str = "diffusion_model.",
        names: tuple[str, str] = ("lora_up", "lora_down"), dtype=torch.float32):
    """ComfyUI/BFL-native keys (what ComfyUI's own converters write, e.g. the *_comfyui copies)."""
    f, h, m = _Factors(seed, rank, dtype), d.hidden, d.mlp
    tensors, changes = {}, []
    scale = 1.0 if alpha is None else alpha / rank

    def add(module, weight, start, rows, cols):
        up, down = f.pair(rows, cols)
        tensors[f"{prefix}{module}.{names[0]}.weight"], tensors[f"{prefix}{module}.{names[1]}.weight"] = up, down
        if alpha is not None:
            tensors[f"{prefix}{module}.alpha"] = torch.tensor(alpha)
        changes.append(Change(weight, start, rows, up, down, scale))

    for i in range(d.depth):
        for s in ("img", "txt"):
            add(f"double_blocks.{i}.{s}_attn.qkv", f"double_blocks.{i}.{s}_attn.qkv.weight", 0, 3 * h, h)
            add(f"double_blocks.{i}.{s}_attn.proj", f"double_blocks.{i}.{s}_attn.proj.weight", 0, h, h)
            add(f"double_blocks.{i}.{s}_mlp.2", f"double_blocks.{i}.{s}_mlp.2.weight", 0, h, m)
    for i in range(d.depth_single):
        add(f"single_blocks.{i}.linear1_qkv", f"single_blocks.{i}.linear1.weight", 0, 3 * h, h)
        add(f"single_blocks.{i}.linear2", f"single_blocks.{i}.linear2.weight", 0, h, h + m)
    add("img_in", "img_in.weight", 0, h, d.in_channels)
    return tensors, changes


def kohya(seed: int = 0, rank: int = 4, d: Dims = TINY, alpha: float = 1.0, dtype=torch.float32):
    """kohya sd-scripts Flux LoRA: lora_unet_<BFL name with underscores>, with alpha."""
    f, h, m = _Factors(seed, rank, dtype), d.hidden, d.mlp
    tensors, changes = {}, []

    def add(name, weight, rows, cols):
        up, down = f.pair(rows, cols)
        tensors[f"lora_unet_{name}.lora_up.weight"], tensors[f"lora_unet_{name}.lora_down.weight"] = up, down
        tensors[f"lora_unet_{name}.alpha"] = torch.tensor(alpha)
        changes.append(Change(weight, 0, rows, up, down, alpha / rank))

    for i in range(d.depth):
        add(f"double_blocks_{i}_img_attn_qkv", f"double_blocks.{i}.img_attn.qkv.weight", 3 * h, h)
        add(f"double_blocks_{i}_txt_mlp_0", f"double_blocks.{i}.txt_mlp.0.weight", m, h)
        add(f"double_blocks_{i}_img_mod_lin", f"double_blocks.{i}.img_mod.lin.weight", 6 * h, h)
    for i in range(d.depth_single):
        add(f"single_blocks_{i}_linear1", f"single_blocks.{i}.linear1.weight", 3 * h + m, h)
        add(f"single_blocks_{i}_modulation_lin", f"single_blocks.{i}.modulation.lin.weight", 3 * h, h)
    add("final_layer_linear", "final_layer.linear.weight", d.out, h)
    return tensors, changes


def sdxl_lora(seed: int = 0):
    """A LoRA for another model (SDXL UNet and CLIP keys, kohya style)."""
    f = _Factors(seed, 4)
    tensors = {}
    for name, (rows, cols) in {
            "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q": (640, 640),
            "lora_unet_mid_block_attentions_0_proj_in": (1280, 1280),
            "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (768, 768)}.items():
        up, down = f.pair(rows, cols)
        tensors[f"{name}.lora_up.weight"], tensors[f"{name}.lora_down.weight"] = up, down
        tensors[f"{name}.alpha"] = torch.tensor(4.0)
    return tensors


def with_embeddings(tensors: dict, seed: int = 0, t5: bool = True) -> dict:
    out = dict(tensors)
    emb = embedding_tensors(seed)
    if not t5:
        del emb["dreamo_t5_embedding.weight"]
    out.update(emb)
    return out


def save(path, tensors: dict) -> str:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return str(path)


def apply_changes(weights: dict[str, torch.Tensor], changes, strength: float = 1.0) -> dict[str, torch.Tensor]:
    """float32 copies of `weights` (BFL names) with each change added (the reference result)."""
    out = {k: v.float().clone() for k, v in weights.items()}
    for c in changes:
        delta = (strength * c.scale) * torch.mm(c.up.float(), c.down.float())
        out[c.weight][c.start:c.start + c.rows] += delta
    return out
