"""FLUX.1 LoRA files in the formats DreamO's stages ship in, mapped onto Flux's own (BFL/ComfyUI) weights.

Each tensor name is read on its own, so one reader covers every format DreamO's files and the turbo LoRA use:
  * XLabs "processor": ``double_blocks.N.processor.qkv_lora1.down.weight`` (also ``double_blocks_N``);
    qkv_lora1/2 -> img/txt_attn.qkv, proj_lora1/2 -> img/txt_attn.proj, single qkv_lora -> the first
    3*hidden rows of linear1, single proj_lora -> linear2. XLabs files carry no alpha (scale 1).
  * diffusers/PEFT: ``transformer.transformer_blocks.N.attn.to_q.lora_A.weight``; to_q/to_k/to_v (and the
    add_*_proj of the text stream) become row slices of the fused qkv, a single block's proj_mlp the rows of
    linear1 after qkv, norm_out.linear the final modulation with its (scale, shift) halves swapped.
  * ComfyUI/BFL-native: ``diffusion_model.double_blocks.N.img_attn.qkv.lora_up.weight`` (or lora_B/lora_A,
    with or without the ``diffusion_model.`` prefix; ``single_blocks.N.linear1_qkv`` is linear1's qkv rows).
  * kohya: ``lora_unet_double_blocks_N_img_attn_qkv.lora_up.weight`` with ``.alpha``.

A `LoraTarget` says: add ``scale * up @ down`` to the rows ``offset`` = (dim, start, size) of Flux weight
``module`` (all rows when offset is None), with ``scale = alpha / rank`` (1 without alpha). Learned DreamO
embeddings (``dreamo_*_embedding.weight``) are set aside, never read as LoRA. Any other key that maps to no
Flux weight is an error naming the key and the file: a LoRA that silently half-applies is worse than none.
Only safetensors are read (see `weights.open_safetensors`); nothing is unpickled. No ComfyUI imports here.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import torch

from .weights import UnreadableFileError, WeightFileError, as_sentence, open_safetensors

DOUBLE_MODULES = ("img_mod.lin", "img_attn.qkv", "img_attn.proj", "img_mlp.0", "img_mlp.2",
                  "txt_mod.lin", "txt_attn.qkv", "txt_attn.proj", "txt_mlp.0", "txt_mlp.2")
SINGLE_MODULES = ("linear1", "linear2", "modulation.lin")
GLOBAL_MODULES = ("img_in", "txt_in", "time_in.in_layer", "time_in.out_layer", "vector_in.in_layer",
                  "vector_in.out_layer", "guidance_in.in_layer", "guidance_in.out_layer", "final_layer.linear",
                  "final_layer.adaLN_modulation.1")

# Tensor-name endings and the factor they hold, longest first (".lora.up.weight" before ".up.weight").
_ROLE_SUFFIXES = (
    (".lora_up.weight", "up"), (".lora_down.weight", "down"),
    (".lora_B.weight", "up"), (".lora_A.weight", "down"),
    (".lora.up.weight", "up"), (".lora.down.weight", "down"),
    (".up.weight", "up"), (".down.weight", "down"),
    (".alpha", "alpha"),
)
_EMBEDDING_KEY = re.compile(r"^dreamo_\w+_embedding\.weight$")
_TEXT_ENCODER_KEY = re.compile(r"^(lora_te\d*_|text_encoder(_\d)?\.|lora_clip|lora_t5)")

# Parts of a fused weight a LoRA may target: q/k/v are thirds of qkv, "mlp" follows qkv in linear1,
# "swap" means diffusers' (scale, shift) order for the final modulation, i.e. BFL's rows halves swapped.
_XLABS = re.compile(r"^(?:diffusion_model\.)?(double|single)_blocks[._](\d+)\.processor\.(\w+)$")
_XLABS_DOUBLE = {"qkv_lora1": ("img_attn.qkv", None), "qkv_lora2": ("txt_attn.qkv", None),
                 "proj_lora1": ("img_attn.proj", None), "proj_lora2": ("txt_attn.proj", None)}
_XLABS_SINGLE = {"qkv_lora": ("linear1", "qkv"), "proj_lora": ("linear2", None)}

_DIFFUSERS_BLOCK = re.compile(r"^(?:transformer\.)?(transformer_blocks|single_transformer_blocks)\.(\d+)\.(.+)$")
_DIFFUSERS_DOUBLE = {
    "attn.to_q": ("img_attn.qkv", "q"), "attn.to_k": ("img_attn.qkv", "k"), "attn.to_v": ("img_attn.qkv", "v"),
    "attn.add_q_proj": ("txt_attn.qkv", "q"), "attn.add_k_proj": ("txt_attn.qkv", "k"),
    "attn.add_v_proj": ("txt_attn.qkv", "v"),
    "attn.to_out.0": ("img_attn.proj", None), "attn.to_add_out": ("txt_attn.proj", None),
    "ff.net.0.proj": ("img_mlp.0", None), "ff.net.2": ("img_mlp.2", None),
    "ff_context.net.0.proj": ("txt_mlp.0", None), "ff_context.net.2": ("txt_mlp.2", None),
    "norm1.linear": ("img_mod.lin", None), "norm1_context.linear": ("txt_mod.lin", None),
}
_DIFFUSERS_SINGLE = {
    "attn.to_q": ("linear1", "q"), "attn.to_k": ("linear1", "k"), "attn.to_v": ("linear1", "v"),
    "proj_mlp": ("linear1", "mlp"), "proj_out": ("linear2", None), "norm.linear": ("modulation.lin", None),
}
_DIFFUSERS_GLOBAL = {
    "x_embedder": ("img_in", None), "context_embedder": ("txt_in", None),
    "time_text_embed.timestep_embedder.linear_1": ("time_in.in_layer", None),
    "time_text_embed.timestep_embedder.linear_2": ("time_in.out_layer", None),
    "time_text_embed.text_embedder.linear_1": ("vector_in.in_layer", None),
    "time_text_embed.text_embedder.linear_2": ("vector_in.out_layer", None),
    "time_text_embed.guidance_embedder.linear_1": ("guidance_in.in_layer", None),
    "time_text_embed.guidance_embedder.linear_2": ("guidance_in.out_layer", None),
    "norm_out.linear": ("final_layer.adaLN_modulation.1", "swap"), "proj_out": ("final_layer.linear", None),
}

_BFL = re.compile(r"^(?:model\.)?(?:diffusion_model\.)?(?:(double_blocks|single_blocks)\.(\d+)\.)?(.+)$")
_KOHYA = re.compile(r"^lora_unet_(?:(double_blocks|single_blocks)_(\d+)_)?(.+)$")
_UNDERSCORED = {m.replace(".", "_"): m for m in DOUBLE_MODULES + SINGLE_MODULES + GLOBAL_MODULES}


class LoraFormatError(WeightFileError):
    """A LoRA file that cannot be applied to this Flux; the message names the file and the key."""


@dataclass(frozen=True)
class LoraTarget:
    """``weight[offset] += scale * up @ down`` on the Flux weight of ``module`` (BFL/ComfyUI naming)."""

    module: str  # e.g. "double_blocks.0.img_attn.qkv"; the weight is f"{module}.weight"
    offset: Optional[tuple[int, int, int]]  # (dim, start, size) of a fused weight, or None for all of it
    up: torch.Tensor  # (rows, rank)
    down: torch.Tensor  # (rank, in_features)
    alpha: Optional[float]  # as stored in the file; None means scale 1
    keys: tuple[str, ...]  # the file's tensor names this target came from
    format: str  # "xlabs", "diffusers", "bfl" or "kohya"

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.rank

    @property
    def nbytes(self) -> int:
        return self.up.numel() * self.up.element_size() + self.down.numel() * self.down.element_size()


@dataclass(frozen=True)
class ParsedLora:
    source: str  # file name shown in messages
    targets: tuple[LoraTarget, ...]
    embedding_keys: tuple[str, ...]  # DreamO embeddings found in the same file (not LoRA)

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(sorted({t.format for t in self.targets}))

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.targets)


def is_embedding_key(key: str) -> bool:
    return bool(_EMBEDDING_KEY.match(key))


def split_role(key: str) -> tuple[str, str] | None:
    """('base name', 'up' | 'down' | 'alpha') for a LoRA tensor name, or None."""
    for suffix, role in _ROLE_SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)], role
    return None


def map_base(base: str) -> tuple[str, Optional[str], str] | None:
    """(Flux module, part of a fused weight or None, format) for a LoRA base name, or None."""
    m = _XLABS.match(base)
    if m:
        kind, block, proc = m.groups()
        table = _XLABS_DOUBLE if kind == "double" else _XLABS_SINGLE
        if proc not in table:
            return None
        module, part = table[proc]
        return f"{kind}_blocks.{block}.{module}", part, "xlabs"
    m = _KOHYA.match(base)
    if m:
        kind, block, rest = m.groups()
        module = _UNDERSCORED.get(rest)
        allowed = {"double_blocks": DOUBLE_MODULES, "single_blocks": SINGLE_MODULES, None: GLOBAL_MODULES}[kind]
        if module not in allowed:
            return None
        return (module if kind is None else f"{kind}.{block}.{module}"), None, "kohya"
    m = _DIFFUSERS_BLOCK.match(base)
    if m:
        kind, block, rest = m.groups()
        table, flux_kind = ((_DIFFUSERS_DOUBLE, "double_blocks") if kind == "transformer_blocks"
                            else (_DIFFUSERS_SINGLE, "single_blocks"))
        if rest not in table:
            return None
        module, part = table[rest]
        return f"{flux_kind}.{block}.{module}", part, "diffusers"
    plain = base[len("transformer."):] if base.startswith("transformer.") else base
    if plain in _DIFFUSERS_GLOBAL:
        module, part = _DIFFUSERS_GLOBAL[plain]
        return module, part, "diffusers"
    m = _BFL.match(base)
    if m:
        kind, block, rest = m.groups()
        if kind == "double_blocks" and rest in DOUBLE_MODULES:
            return f"{kind}.{block}.{rest}", None, "bfl"
        if kind == "single_blocks" and rest in SINGLE_MODULES:
            return f"{kind}.{block}.{rest}", None, "bfl"
        if kind == "single_blocks" and rest == "linear1_qkv":  # ComfyUI's name for linear1's qkv rows
            return f"{kind}.{block}.linear1", "qkv", "bfl"
        if kind is None and rest in GLOBAL_MODULES:
            return rest, None, "bfl"
    return None


def part_offset(part: Optional[str], hidden: int, mlp_hidden: int) -> Optional[tuple[int, int, int]]:
    """(dim, start, size) of a fused weight part: q/k/v thirds of qkv, qkv = linear1's first rows, mlp = the rest."""
    if part is None or part == "swap":
        return None
    return {"q": (0, 0, hidden), "k": (0, hidden, hidden), "v": (0, 2 * hidden, hidden),
            "qkv": (0, 0, 3 * hidden), "mlp": (0, 3 * hidden, mlp_hidden)}[part]


def _sample(keys: Sequence[str], n: int = 3) -> str:
    shown = ", ".join(f"'{k}'" for k in keys[:n])
    return shown + (f" and {len(keys) - n} more" if len(keys) > n else "")


def parse_lora(tensors: Mapping[str, torch.Tensor], source: str, hidden_size: int,
               mlp_hidden: Optional[int] = None, embedding_keys: Sequence[str] = ()) -> ParsedLora:
    """Targets of a FLUX.1 LoRA given as {tensor name: tensor}. `hidden_size`/`mlp_hidden` place slices."""
    mlp_hidden = 4 * hidden_size if mlp_hidden is None else mlp_hidden
    embeddings = list(embedding_keys)
    groups: dict[str, dict[str, str]] = {}
    unknown: list[str] = []
    for key in tensors:
        if is_embedding_key(key):
            embeddings.append(key)
            continue
        split = split_role(key)
        if split is None:
            unknown.append(key)
            continue
        base, role = split
        groups.setdefault(base, {})[role] = key
    mapped = {}
    for base in groups:
        hit = map_base(base)
        if hit is None:
            unknown.extend(sorted(groups[base].values()))
        else:
            mapped[base] = hit
    if unknown:
        raise LoraFormatError(_unknown_message(source, sorted(unknown), bool(mapped)))
    if not mapped:
        raise LoraFormatError(f"'{source}' holds no LoRA weights"
                              + (f" (only DreamO embeddings: {_sample(embeddings)})." if embeddings else "."))

    targets = []
    seen: dict[tuple, str] = {}
    for base in sorted(mapped):
        module, part, fmt = mapped[base]
        roles = groups[base]
        for needed in ("up", "down"):
            if needed not in roles:
                present = _sample(sorted(roles.values()))
                raise LoraFormatError(f"'{source}': {present} has no matching {needed} weight "
                                      "(the file is incomplete or not a LoRA).")
        up, down = tensors[roles["up"]], tensors[roles["down"]]
        if up.ndim != 2 or down.ndim != 2:
            raise LoraFormatError(f"'{source}': '{roles['up']}' {tuple(up.shape)} / '{roles['down']}' "
                                  f"{tuple(down.shape)} are not 2-D linear LoRA factors.")
        if up.shape[1] != down.shape[0]:
            raise LoraFormatError(f"'{source}': rank mismatch, '{roles['up']}' has shape {tuple(up.shape)} but "
                                  f"'{roles['down']}' has shape {tuple(down.shape)} (up is (out, rank), down is "
                                  "(rank, in)).")
        alpha = None
        if "alpha" in roles:
            a = tensors[roles["alpha"]]
            if a.numel() != 1:
                raise LoraFormatError(f"'{source}': '{roles['alpha']}' should hold one number, it has shape "
                                      f"{tuple(a.shape)}.")
            alpha = float(a.reshape(()).item())
        if part == "swap":
            half = up.shape[0] // 2
            up = torch.cat([up[half:], up[:half]], dim=0)
        offset = part_offset(part, hidden_size, mlp_hidden)
        where = (module, offset)
        keys = tuple(sorted(roles.values()))
        if where in seen:
            raise LoraFormatError(f"'{source}': '{keys[0]}' and '{seen[where]}' both target {module}"
                                  f"{'' if offset is None else f' rows {offset[1]}..{offset[1] + offset[2]}'} "
                                  "(a block written twice, e.g. as both double_blocks.N and double_blocks_N).")
        seen[where] = keys[0]
        targets.append(LoraTarget(module, offset, up, down, alpha, keys, fmt))
    return ParsedLora(source, tuple(targets), tuple(embeddings))


def _unknown_message(source: str, unknown: list[str], some_mapped: bool) -> str:
    if not some_mapped:
        hint = "none of its keys belongs to a FLUX.1 LoRA: it is made for another model (SD1.5/SDXL/SD3/...)."
    elif any(_TEXT_ENCODER_KEY.match(k) for k in unknown):
        hint = ("it also has text-encoder LoRA keys; DreamO's stages patch only the Flux diffusion model (load "
                "this LoRA with ComfyUI's LoraLoader instead).")
    else:
        hint = "these keys match no FLUX.1 weight, so the LoRA would only partly apply."
    return f"'{source}': {len(unknown)} key(s) map to no FLUX.1 weight: {_sample(unknown)}; {hint}"


def check_against_model(lora: ParsedLora, shapes: Mapping[str, Sequence[int]]) -> None:
    """Raise LoraFormatError unless every target fits the model's weight shapes {module: (out, in)}."""
    problems = []
    for t in lora.targets:
        shape = shapes.get(t.module)
        if shape is None:
            problems.append(f"'{t.keys[0]}' targets {t.module}, which this model does not have")
            continue
        if len(shape) != 2:
            problems.append(f"'{t.keys[0]}' targets {t.module}, which is not a linear weight")
            continue
        out, inp = shape
        rows = out if t.offset is None else t.offset[2]
        where = "" if t.offset is None else f" rows {t.offset[1]}..{t.offset[1] + t.offset[2]} of"
        if (t.offset is not None and t.offset[1] + t.offset[2] > out) or t.up.shape[0] != rows \
                or t.down.shape[1] != inp:
            problems.append(f"'{t.keys[0]}' has up {tuple(t.up.shape)} and down {tuple(t.down.shape)}, which do not "
                            f"fit{where} {t.module} ({out}x{inp}: needs up ({rows}, rank) and down (rank, {inp}))")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise LoraFormatError(f"'{lora.source}' does not fit this model: {problems[0]}{more}. It was made for "
                              "a different model or model size.")


def read_lora_file(path: str, hidden_size: int, mlp_hidden: Optional[int] = None) -> ParsedLora:
    """Parse a safetensors LoRA file, leaving DreamO's embedding tensors unread."""
    name = os.path.basename(path)
    with open_safetensors(path) as f:
        keys = list(f.keys())
        embeddings = [k for k in keys if is_embedding_key(k)]
        try:
            tensors = {k: f.get_tensor(k) for k in keys if not is_embedding_key(k)}
        except Exception as e:
            raise UnreadableFileError(f"'{name}' could not be read (truncated or corrupted?): {as_sentence(e)}") from e
    return parse_lora(tensors, name, hidden_size, mlp_hidden, embedding_keys=embeddings)


def file_keys(path: str) -> list[str]:
    """Tensor names of a safetensors file (header only)."""
    with open_safetensors(path) as f:
        return list(f.keys())
