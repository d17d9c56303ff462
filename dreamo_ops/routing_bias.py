"""The routing bias of one model call as a few extra query/key channels, folded into one attention call.

Bias, for query token i and key token j (m_k = coverage of region k, 1 inside; r_k = "token of reference k"):
    hard: −β where (i in ref k and j an image token outside region k) or the reverse; β large enough that
          exp underflows to exactly 0 (image tokens count as outside when less than half covered),
    soft: −strength·(1 − m_k(j)) for i in ref k and j an image token, and the reverse,
    isolate: −β between tokens of different references (always a cut).
Region prompts (regional.py) add text tokens that follow an area the same way (region-prompt tokens ↔ image tokens
outside their area, both directions, hard or soft; a text token whose area equals a reference's shares that
reference's channels) and a cut between the tokens of different region prompts (`TextRouting`).
Every (i, j) pair receives at most one non-zero term, so the folded dot product adds exactly that one bias. The bias
is low rank: `routing_channels` builds it as extra q/k channels and `fold_channels` appends them, so the routed
attention is ONE mask-free `scaled_dot_product_attention` call (no L×L mask; flash-class kernels stay usable).
`spec` below is DreamO Routing's settings (`routing.RoutingSpec`: mode, strength, isolate).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .token_layout import TokenLayout

HARD_BIAS = 1.0e4
"""β for hard cuts in float32/bfloat16: exp(−1e4 + logit gap) is exactly 0 in float32."""
FP16_MAX_CHANNEL = 6.0e4
"""float16 channels must stay below 65504: β is lowered to 6e4·scale there (≈5.3e3 for 128-wide heads)."""
CHANNEL_MULTIPLE = 8
ROUTED_CHUNK_BYTES = 1 << 25
"""CPU: bytes of widened q/k/v copies per routed SDPA call (32 MiB: a few heads at FLUX.1's size)."""
INSIDE_THRESHOLD = 0.5
"""Hard mode: an image token is inside a region when at least half of its cell is covered."""


def hard_bias_value(dtype: torch.dtype, scale: float) -> float:
    if dtype == torch.float16:
        return min(HARD_BIAS, FP16_MAX_CHANNEL * scale)
    return HARD_BIAS


@dataclass
class TextRouting:
    """Text tokens routed in one call (region prompts, see regional.py), indices into the text `[0, txt_len)`."""
    txt_len: int
    items: list  # [(LongTensor token indices, (rows, cols) coverage)]: tokens that follow an area
    exclusive: list  # [LongTensor]: each region prompt's tokens, cut from every other region prompt's
    capture: tuple = ()  # ((map key, first token, count), ...) whose routing maps are captured
    node: str | None = None  # the node that appended the region prompts, and its input (named in errors)
    input_name: str = "positive"


@dataclass
class RoutingChannels:
    """Extra query/key channels (B or 1, 1, L, E) whose dot product, times `scale`, is the routing bias."""
    q: torch.Tensor
    k: torch.Tensor


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _outside(cov: torch.Tensor, spec, beta: float):
    """(outside weights over the image tokens, bias weight) of an area's coverage under the spec's mode."""
    cov = cov.reshape(-1).to(torch.float64)
    if spec.mode == "hard":
        return (cov < INSIDE_THRESHOLD).to(torch.float64), beta
    return 1.0 - cov, float(spec.strength)


def routing_channels(layout: TokenLayout, txt_len: int, spec, coverage: dict, scale: float,
                     dtype=torch.float32, device=None, batch: int = 1,
                     text: TextRouting | None = None) -> RoutingChannels | None:
    """The routing bias of one call as folded channels, or None when it is zero everywhere (pass through).

    `coverage` is {slot: (rows, cols) region coverage} for the slots that have a region; `text` the call's routed
    text tokens (region prompts), if any.
    """
    n_img = layout.image_count
    total = txt_len + layout.total_count
    img = slice(txt_len, txt_len + n_img)
    beta = hard_bias_value(dtype, scale)
    ref_spans, start = [], txt_len + n_img
    for ref in layout.refs:
        ref_spans.append((ref.slot, slice(start, start + ref.count)))
        start += ref.count

    qcols, kcols, groups = [], [], []
    for slot, span in ref_spans:
        cov = coverage.get(slot)
        if cov is None:
            continue
        outside, weight = _outside(cov, spec, beta)
        if weight == 0 or not bool((outside != 0).any()):
            continue
        groups.append((outside, weight, len(qcols)))
        # reference k queries → image keys outside k
        qc, kc = torch.zeros(total, dtype=torch.float64), torch.zeros(total, dtype=torch.float64)
        qc[span] = -weight / scale
        kc[img] = outside
        qcols.append(qc), kcols.append(kc)
        # image queries outside k → reference k keys
        qc, kc = torch.zeros(total, dtype=torch.float64), torch.zeros(total, dtype=torch.float64)
        qc[img] = outside
        kc[span] = -weight / scale
        qcols.append(qc), kcols.append(kc)
    if spec.isolate and len(ref_spans) > 1:
        for slot, span in ref_spans:
            qc, kc = torch.zeros(total, dtype=torch.float64), torch.zeros(total, dtype=torch.float64)
            qc[span] = -beta / scale
            for other, other_span in ref_spans:
                if other != slot:
                    kc[other_span] = 1.0
            qcols.append(qc), kcols.append(kc)
    if text is not None:
        _text_columns(text, spec, beta, scale, img, total, qcols, kcols, groups)
    if not qcols:
        return None
    n = len(qcols)
    e = _round_up(n, CHANNEL_MULTIPLE)
    qx = torch.zeros(total, e, dtype=torch.float64)
    kx = torch.zeros(total, e, dtype=torch.float64)
    qx[:, :n] = torch.stack(qcols, dim=1)
    kx[:, :n] = torch.stack(kcols, dim=1)
    shape = (1, 1, total, e)
    return RoutingChannels(q=qx.reshape(shape).to(device=device, dtype=dtype),
                           k=kx.reshape(shape).to(device=device, dtype=dtype))


def fold_channels(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, channels: RoutingChannels,
                  scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q, k, v) (B, H, L, D) → the routed call's (B, H, L, W) tensors, W = D + E, such that plain attention at
    the *default* scale W^-0.5 — what every ComfyUI attention function and SDPA use for the tensors they get —
    equals attention at `scale` (D^-0.5 if None) plus the routing bias.

    With c = scale·√W: the model channels of q are multiplied by c, the routing channels of q and k by √c each (the
    factor is split so float16's largest hard-cut channel stays finite; values beyond the dtype's range are
    clamped, which keeps a hard cut a cut). v is zero-padded to W, so every kernel sees one head width; the first
    D channels of the output are the attention output."""
    d = q.shape[-1]
    scale = d ** -0.5 if scale is None else scale
    e = channels.q.shape[-1]
    width = d + e
    c = scale * width ** 0.5
    b, h, length, _ = q.shape
    big = torch.finfo(q.dtype).max if q.dtype.is_floating_point else None
    qx = channels.q.float() * c ** 0.5
    kx = channels.k.float() * c ** 0.5
    if big is not None:
        qx, kx = qx.clamp(-big, big), kx.clamp(-big, big)
    qx = qx.to(dtype=q.dtype, device=q.device).expand(b, h, length, e)
    kx = kx.to(dtype=k.dtype, device=k.device).expand(b, h, length, e)
    q2 = torch.cat((q * c if c != 1.0 else q, qx), dim=-1)
    k2 = torch.cat((k, kx), dim=-1)
    v2 = F.pad(v, (0, e))
    return q2, k2, v2


def _text_columns(text: TextRouting, spec, beta: float, scale: float, img: slice, total: int,
                  qcols: list, kcols: list, groups: list) -> None:
    """Add the region prompts' columns: tokens following an area share the column pair of a reference (or earlier
    text) with the same outside weights, else get their own pair; then one cut column per region prompt."""
    for indices, cov in text.items:
        outside, weight = _outside(cov, spec, beta)
        if weight == 0 or not bool((outside != 0).any()):
            continue
        col = next((c for o, w, c in groups if w == weight and torch.equal(o, outside)), None)
        if col is None:
            col = len(qcols)
            for _ in range(2):
                qcols.append(torch.zeros(total, dtype=torch.float64))
                kcols.append(torch.zeros(total, dtype=torch.float64))
            kcols[col][img] = outside  # text queries → image keys outside the area
            qcols[col + 1][img] = outside  # image queries outside the area → text keys
            groups.append((outside, weight, col))
        qcols[col][indices] = -weight / scale
        kcols[col + 1][indices] = -weight / scale
    if len(text.exclusive) > 1:
        for n, span in enumerate(text.exclusive):
            qc, kc = torch.zeros(total, dtype=torch.float64), torch.zeros(total, dtype=torch.float64)
            qc[span] = -beta / scale
            for m, other in enumerate(text.exclusive):
                if m != n:
                    kc[other] = 1.0
            qcols.append(qc), kcols.append(kc)


def routed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, channels: RoutingChannels,
                     scale: float | None = None, mask: torch.Tensor | None = None,
                     chunk_bytes: int | None = None) -> torch.Tensor:
    """Attention (B, H, L, D) → (B, H, L, D) with the routing bias folded into extra channels (`fold_channels`):
    mask-free SDPA. `mask` (Flux's own additive/boolean attention mask over the full sequence) is honoured on top.
    This is also the fallback of routed blocks whose attention backend cannot take the folded width.

    On the CPU the widened copies of q, k and v are made a few heads at a time (at most `chunk_bytes`, default
    ROUTED_CHUNK_BYTES, per SDPA call), so routing adds little to a step's peak memory; heads are independent, so
    the result is the same."""
    b, h, length, d = q.shape
    e = channels.q.shape[-1]
    if chunk_bytes is None and q.device.type == "cpu":
        chunk_bytes = ROUTED_CHUNK_BYTES
    per_head = 3 * b * length * (d + e) * q.element_size()
    step = h if chunk_bytes is None else max(1, min(h, chunk_bytes // per_head))
    if step >= h:
        q2, k2, v2 = fold_channels(q, k, v, channels, scale)
        return F.scaled_dot_product_attention(q2, k2, v2, attn_mask=mask)[..., :d]
    out = q.new_empty(b, h, length, d)
    for h0 in range(0, h, step):
        heads = slice(h0, min(h, h0 + step))
        q2, k2, v2 = fold_channels(q[:, heads], k[:, heads], v[:, heads], channels, scale)
        m = mask[:, heads] if mask is not None and mask.ndim == 4 and mask.shape[1] == h else mask
        out[:, heads] = F.scaled_dot_product_attention(q2, k2, v2, attn_mask=m)[..., :d]
    return out
