"""What a model file really holds, read from its header: the content checks of the pack and of `dreamo-doctor`.

Each check takes a path and returns a one-line description of what the file is ("FLUX.1-dev, bf16, 19 double +
38 single blocks"), or raises `WeightFileError` saying, by file name, what is wrong ("'flux1-dev.safetensors' is
an SDXL UNet, not a FLUX.1 diffusion model"). Only headers are read for the big files (safetensors headers,
GGUF tensor tables), so checking a 24 GB model takes milliseconds. Nothing here unpickles: facexlib's `.pth`
files are read with torch's restricted `weights_only` loader by `face_preprocess.check_weight_file`.

DreamO's LoRAs are checked with the same key mapping and shape check the stage loader applies
(`lora_formats.parse_lora` + `check_against_model`), run on shape-only (meta) tensors against FLUX.1-dev's
weight shapes. No ComfyUI imports here.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping, Optional

import torch

from .lora_formats import LoraFormatError, check_against_model, is_embedding_key, parse_lora
from .weights import (INDEX_KEY, PLACEHOLDER_COUNT, T5_KEY, TASK_KEY, WeightFileError,
                      open_safetensors, read_embeddings)

GGUF_EXTENSION = ".gguf"
PICKLE_EXTENSIONS = (".ckpt", ".pt", ".pth", ".bin", ".pkl")


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype name ("BF16", "F8_E4M3", ...) or the GGUF quantization ("Q8_0", ...)


@dataclass(frozen=True)
class FluxDims:
    """The weight sizes that identify a FLUX.1 model (defaults: FLUX.1-dev as released)."""

    hidden: int = 3072
    mlp_hidden: int = 12288
    double_blocks: int = 19
    single_blocks: int = 38
    in_channels: int = 64
    context: int = 4096  # T5-XXL width
    vec: int = 768  # CLIP-L pooled width
    time: int = 256

    def module_shapes(self) -> dict[str, tuple[int, int]]:
        """{Flux module: (out, in)} of every linear weight, in ComfyUI/BFL naming (what LoRAs target)."""
        h, m = self.hidden, self.mlp_hidden
        shapes = {"img_in": (h, self.in_channels), "txt_in": (h, self.context), "time_in.in_layer": (h, self.time),
                  "time_in.out_layer": (h, h), "vector_in.in_layer": (h, self.vec), "vector_in.out_layer": (h, h),
                  "guidance_in.in_layer": (h, self.time), "guidance_in.out_layer": (h, h),
                  "final_layer.linear": (self.in_channels, h), "final_layer.adaLN_modulation.1": (2 * h, h)}
        for i in range(self.double_blocks):
            for stream in ("img", "txt"):
                shapes.update({f"double_blocks.{i}.{stream}_mod.lin": (6 * h, h),
                               f"double_blocks.{i}.{stream}_attn.qkv": (3 * h, h),
                               f"double_blocks.{i}.{stream}_attn.proj": (h, h),
                               f"double_blocks.{i}.{stream}_mlp.0": (m, h),
                               f"double_blocks.{i}.{stream}_mlp.2": (h, m)})
        for i in range(self.single_blocks):
            shapes.update({f"single_blocks.{i}.linear1": (3 * h + m, h), f"single_blocks.{i}.linear2": (h, h + m),
                           f"single_blocks.{i}.modulation.lin": (3 * h, h)})
        return shapes


FLUX1_DEV = FluxDims()
T5XXL_WIDTH, T5XXL_BLOCKS, T5_VOCAB = 4096, 24, 32128
CLIP_L_WIDTH, CLIP_L_LAYERS = 768, 12
FLUX_VAE_CHANNELS = 16


def _name(path: str) -> str:
    return os.path.basename(path)


def read_tensor_infos(path: str) -> dict[str, TensorInfo]:
    """{tensor name: shape and dtype} from a safetensors or GGUF header; nothing else of the file is read."""
    ext = os.path.splitext(path)[1].lower()
    if ext == GGUF_EXTENSION:
        return _gguf_infos(path)
    if ext in PICKLE_EXTENSIONS:
        raise WeightFileError(f"'{_name(path)}' is a pickle-based file ({ext}); it is not opened here because "
                              "unpickling can run code. Use the .safetensors (or .gguf) release of this model.")
    with open_safetensors(path) as f:
        infos = {}
        for key in f.keys():
            sl = f.get_slice(key)
            infos[key] = TensorInfo(tuple(int(d) for d in sl.get_shape()), str(sl.get_dtype()))
    return infos


def _gguf_infos(path: str) -> dict[str, TensorInfo]:
    if not os.path.isfile(path):
        raise WeightFileError(f"'{path}' does not exist.")
    try:
        from gguf import GGUFReader
    except ImportError as e:
        raise WeightFileError(f"'{_name(path)}' is a GGUF file and the gguf package is not installed "
                              "(pip install gguf, as ComfyUI-GGUF needs).") from e
    try:
        reader = GGUFReader(path)
    except Exception as e:  # noqa: BLE001 - the reader raises ValueError/IndexError/... on a bad file
        raise WeightFileError(f"'{_name(path)}' is not a readable GGUF file (truncated or corrupted?): {e}") from e
    # GGUF stores dimensions innermost first; reversed they are torch's (out, in) order.
    return {t.name: TensorInfo(tuple(int(d) for d in reversed(list(t.shape))), t.tensor_type.name)
            for t in reader.tensors}


def _strip_prefix(infos: Mapping[str, TensorInfo], marker: str) -> tuple[dict[str, TensorInfo], str]:
    """The tensors under the prefix in front of `marker` (e.g. 'model.diffusion_model.'), keys without it."""
    for key in infos:
        i = key.find(marker)
        if i >= 0 and (i == 0 or key[i - 1] == "."):
            prefix = key[:i]
            return {k[len(prefix):]: v for k, v in infos.items() if k.startswith(prefix)}, prefix
    return dict(infos), ""


def _count(infos: Mapping[str, TensorInfo], pattern: str) -> int:
    found = {int(m.group(1)) for k in infos if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def _dtypes(infos: Mapping[str, TensorInfo]) -> str:
    counts: dict[str, int] = {}
    for info in infos.values():
        if len(info.shape) >= 2:
            counts[info.dtype] = counts.get(info.dtype, 0) + 1
    names = {"BF16": "bf16", "F16": "fp16", "F32": "fp32", "F8_E4M3": "fp8_e4m3fn", "F8_E5M2": "fp8_e5m2"}
    ordered = sorted(counts, key=lambda d: -counts[d])
    return "/".join(names.get(d, d) for d in ordered[:2]) or "no weights"


def describe_other(infos: Mapping[str, TensorInfo]) -> str:
    """A guess of what a file that failed a check is, for the error message."""
    keys = list(infos)

    def has(fragment):
        return any(fragment in k for k in keys)
    if has("double_blocks.") or has("transformer_blocks."):
        return "a FLUX-like diffusion model"
    if has("input_blocks.") and has("middle_block."):
        return "an SD1.x/SDXL UNet"
    if has("joint_blocks."):
        return "an SD3 diffusion model"
    if (has("encoder.block.") and has("SelfAttention")) or has("enc.blk."):
        return "a T5 text encoder"
    if has("text_model.encoder.layers.") or has("transformer.resblocks."):
        return "a CLIP text encoder"
    if has("decoder.conv_in.") or has("decoder.up_blocks.") or has("decoder.up."):
        return "a VAE"
    if any(k.endswith((".lora_up.weight", ".lora_B.weight", ".up.weight")) for k in keys):
        return "a LoRA"
    if any(is_embedding_key(k) for k in keys):
        return "DreamO's embeddings"
    return f"a file of {len(keys)} tensors (e.g. {', '.join(keys[:2]) or 'none'})"


def check_flux(path: str, dims: FluxDims = FLUX1_DEV) -> str:
    """A FLUX.1-dev diffusion model (or a checkpoint holding one): BFL/ComfyUI or diffusers layout, any dtype."""
    name = _name(path)
    infos = read_tensor_infos(path)
    bfl, _ = _strip_prefix(infos, "double_blocks.0.img_attn.qkv.weight")
    if "double_blocks.0.img_attn.qkv.weight" in bfl:
        hidden = bfl["double_blocks.0.img_attn.qkv.weight"].shape[-1]
        n_double = _count(bfl, r"double_blocks\.(\d+)\.")
        n_single = _count(bfl, r"single_blocks\.(\d+)\.")
        guidance = any(k.startswith("guidance_in.") for k in bfl)
        context = bfl["txt_in.weight"].shape[-1] if "txt_in.weight" in bfl else None
        layout = "BFL/ComfyUI layout"
    else:
        dif, _ = _strip_prefix(infos, "transformer_blocks.0.attn.to_q.weight")
        if "transformer_blocks.0.attn.to_q.weight" not in dif:
            raise WeightFileError(f"'{name}' is {describe_other(infos)}, not a FLUX.1 diffusion model.")
        hidden = dif["transformer_blocks.0.attn.to_q.weight"].shape[-1]
        n_double = _count(dif, r"transformer_blocks\.(\d+)\.")
        n_single = _count(dif, r"single_transformer_blocks\.(\d+)\.")
        guidance = any("guidance_embedder" in k for k in dif)
        context = dif["context_embedder.weight"].shape[-1] if "context_embedder.weight" in dif else None
        layout = "diffusers layout"
        bfl = dif
    found = (f"hidden size {hidden}, {n_double} double + {n_single} single blocks"
             + ("" if context is None else f", text width {context}"))
    if (hidden, n_double, n_single) != (dims.hidden, dims.double_blocks, dims.single_blocks) or \
            context not in (None, dims.context):
        raise WeightFileError(f"'{name}' is a FLUX-like model of another size ({found}); DreamO needs FLUX.1-dev "
                              f"(hidden size {dims.hidden}, {dims.double_blocks} double + {dims.single_blocks} "
                              "single blocks).")
    if not guidance:
        raise WeightFileError(f"'{name}' has no guidance embedding: it is FLUX.1-schnell (or another distilled "
                              "variant), not FLUX.1-dev, which DreamO's LoRAs were trained on.")
    if path.lower().endswith(GGUF_EXTENSION):
        layout = "GGUF"
    return f"FLUX.1-dev, {_dtypes(bfl)}, {n_double} double + {n_single} single blocks ({layout})"


def check_text_encoder(path: str) -> str:
    """T5-XXL (fp16/fp8/GGUF) or CLIP-L; returns 'T5-XXL …' or 'CLIP-L …'."""
    name = _name(path)
    infos = read_tensor_infos(path)
    t5, _ = _strip_prefix(infos, "encoder.block.0.layer.0.SelfAttention.q.weight")
    if "encoder.block.0.layer.0.SelfAttention.q.weight" in t5:
        width = t5["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[-1]
        blocks = _count(t5, r"encoder\.block\.(\d+)\.")
        vocab = t5["shared.weight"].shape[0] if "shared.weight" in t5 else None
    elif "enc.blk.0.attn_q.weight" in infos:  # llama.cpp naming (city96's T5 GGUF files)
        t5 = infos
        width = infos["enc.blk.0.attn_q.weight"].shape[-1]
        blocks = _count(infos, r"enc\.blk\.(\d+)\.")
        vocab = infos["token_embd.weight"].shape[0] if "token_embd.weight" in infos else None
    else:
        clip, _ = _strip_prefix(infos, "text_model.encoder.layers.0.self_attn.q_proj.weight")
        q = clip.get("text_model.encoder.layers.0.self_attn.q_proj.weight")
        if q is None:
            raise WeightFileError(f"'{name}' is {describe_other(infos)}, not a T5-XXL or CLIP-L text encoder.")
        layers = _count(clip, r"text_model\.encoder\.layers\.(\d+)\.")
        if q.shape[-1] != CLIP_L_WIDTH or layers != CLIP_L_LAYERS:
            kind = "CLIP-G (SDXL/SD3's)" if q.shape[-1] == 1280 else f"a CLIP of width {q.shape[-1]}"
            raise WeightFileError(f"'{name}' is {kind} with {layers} layers; FLUX.1 needs CLIP-L (width 768, 12 "
                                  "layers): clip_l.safetensors.")
        return f"CLIP-L, {_dtypes(clip)}, {layers} layers"
    if width != T5XXL_WIDTH or blocks != T5XXL_BLOCKS:
        raise WeightFileError(f"'{name}' is a T5 of width {width} with {blocks} blocks; FLUX.1 needs T5-XXL "
                              f"(width {T5XXL_WIDTH}, {T5XXL_BLOCKS} blocks), e.g. t5xxl_fp16.safetensors.")
    if vocab is not None and vocab != T5_VOCAB:
        raise WeightFileError(f"'{name}' is a T5-XXL-sized encoder with a {vocab}-token vocabulary (UMT5, as Wan "
                              f"uses?); FLUX.1 needs T5-XXL v1.1 ({T5_VOCAB} tokens), e.g. t5xxl_fp16.safetensors.")
    return f"T5-XXL, {_dtypes(t5)}, {blocks} blocks"


def check_flux_vae(path: str) -> str:
    name = _name(path)
    infos = read_tensor_infos(path)
    vae, _ = _strip_prefix(infos, "decoder.conv_in.weight")
    conv = vae.get("decoder.conv_in.weight")
    if conv is None or len(conv.shape) != 4:
        raise WeightFileError(f"'{name}' is {describe_other(infos)}, not a VAE.")
    channels = conv.shape[1]
    if channels != FLUX_VAE_CHANNELS:
        kind = "an SD1.x/SDXL VAE" if channels == 4 else f"a VAE with {channels} latent channels"
        raise WeightFileError(f"'{name}' is {kind}; FLUX.1 needs its own 16-channel VAE (ae.safetensors).")
    return f"16-channel VAE (FLUX.1 ae), {_dtypes(vae)}"


def _meta_tensors(infos: Mapping[str, TensorInfo], path: str) -> dict[str, torch.Tensor]:
    """Shape-only stand-ins for a LoRA's factors, with the (one-number) alphas read for real."""
    tensors = {}
    alphas = [k for k, v in infos.items() if k.endswith(".alpha")]
    if alphas:
        with open_safetensors(path) as f:
            for k in alphas:
                tensors[k] = f.get_tensor(k).float()
    for k, v in infos.items():
        if k not in tensors and not is_embedding_key(k):
            tensors[k] = torch.empty(v.shape, device="meta")
    return tensors


def check_lora(path: str, dims: FluxDims = FLUX1_DEV) -> str:
    """A FLUX.1 LoRA every key of which the stage loader maps onto a FLUX.1-dev weight of the right shape."""
    name = _name(path)
    infos = read_tensor_infos(path)
    embeddings = [k for k in infos if is_embedding_key(k)]
    try:
        lora = parse_lora(_meta_tensors(infos, path), name, dims.hidden, dims.mlp_hidden, embedding_keys=embeddings)
        check_against_model(lora, dims.module_shapes())
    except LoraFormatError as e:
        raise WeightFileError(str(e)) from e
    ranks = sorted({t.rank for t in lora.targets})
    rank = str(ranks[0]) if len(ranks) == 1 else f"{ranks[0]}-{ranks[-1]}"
    return f"FLUX.1 LoRA ({'/'.join(lora.formats)}), {len(lora.targets)} weights, rank {rank}"


def check_embeddings(path: str, dims: FluxDims = FLUX1_DEV, need_placeholders: bool = False) -> str:
    """DreamO's task (2 x hidden) and index (10 x hidden) embeddings and, when present, the T5 table whose last
    10 rows are the placeholder tokens — the same reader DreamOLoader uses, plus FLUX.1-dev's widths."""
    name = _name(path)
    emb = read_embeddings(path)
    if emb.hidden_size != dims.hidden:
        raise WeightFileError(f"'{name}': the embeddings are {emb.hidden_size} wide, FLUX.1-dev needs {dims.hidden} "
                              "(a file for another model?).")
    if emb.placeholders is None:
        if need_placeholders:
            raise WeightFileError(f"'{name}' has no placeholder table ({T5_KEY}); [ref#k] placeholders need "
                                  "dreamo.safetensors.")
        return "DreamO task + index embeddings (no placeholder table)"
    if emb.placeholders.shape[1] != T5XXL_WIDTH:
        raise WeightFileError(f"'{name}': the placeholder vectors are {emb.placeholders.shape[1]} wide, T5-XXL needs "
                              f"{T5XXL_WIDTH}.")
    return f"DreamO task + index embeddings and {PLACEHOLDER_COUNT} placeholder vectors"


def check_dreamo_main(path: str, dims: FluxDims = FLUX1_DEV) -> str:
    """dreamo.safetensors: the main LoRA plus DreamO's embeddings (a '_comfyui' copy holds the LoRA only)."""
    lora = check_lora(path, dims)
    infos = read_tensor_infos(path)
    if TASK_KEY in infos or INDEX_KEY in infos:
        return f"{lora}; {check_embeddings(path, dims)}"
    return f"{lora}; no embeddings (a LoRA-only copy: needs embedding.safetensors)"


def file_size(path: str) -> Optional[int]:
    try:
        return os.path.getsize(path)
    except OSError:
        return None
