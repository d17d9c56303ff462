"""Routing-constrained attention: keep each DreamO reference on its region, and capture where it went.

DreamO was trained with a *routing constraint*: the attention from reference k's tokens to the image is pulled
onto subject k's region. At inference this module
  * turns a user's region mask (any size) into a token-grid coverage map (`region_to_tokens`, one rule for every
    size and aspect: exact area coverage of each token's cell),
  * builds the routing bias for one call's token layout `[txt | image | ref a | ref b …]` as a few extra
    query/key channels (`RoutingChannels`): the bias is low rank, so it folds into the dot product and the whole
    routed attention is ONE mask-free `scaled_dot_product_attention` call (no L×L mask; flash-class kernels stay
    usable),
  * captures routing maps: per reference, the attention probability from its tokens to each image token (the
    reference → image direction DreamO trained) as the routed layer applies it, averaged over its tokens and
    heads, computed a few heads and rows at a time (never L×L),
  * provides `RoutedAttention`, the `optimized_attention_override` installed per model call. It chains any
    override another pack set and passes through untouched (the backend `func` called with the original
    arguments: bit-identical) on blocks and calls where nothing is constrained.

Bias, for query token i and key token j (m_k = coverage of region k, 1 inside; r_k = "token of reference k"):
    hard: −β where (i in ref k and j an image token outside region k) or the reverse; β large enough that
          exp underflows to exactly 0 (image tokens count as outside when less than half covered),
    soft: −strength·(1 − m_k(j)) for i in ref k and j an image token, and the reverse,
    isolate: −β between tokens of different references (always a cut).
Region prompts (regional.py) add text tokens that follow an area the same way (region-prompt tokens ↔ image tokens
outside their area, both directions, hard or soft; a text token whose area equals a reference's shares that
reference's channels) and a cut between the tokens of different region prompts (`TextRouting`).
Every (i, j) pair receives at most one non-zero term, so the folded dot product adds exactly that one bias.
No ComfyUI imports here: only the calling conventions of ComfyUI's attention override.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .token_layout import TokenLayout

MODES = ("hard", "soft")
BLOCKS = ("all", "double", "single")
HARD_BIAS = 1.0e4
"""β for hard cuts in float32/bfloat16: exp(−1e4 + logit gap) is exactly 0 in float32."""
FP16_MAX_CHANNEL = 6.0e4
"""float16 channels must stay below 65504: β is lowered to 6e4·scale there (≈5.3e3 for 128-wide heads)."""
CHANNEL_MULTIPLE = 8
CAPTURE_CHUNK = 1 << 22
"""Elements of one capture score chunk (rows × heads × keys): 16 MiB in float32, whatever the sequence length."""
ROUTED_CHUNK_BYTES = 1 << 25
"""CPU: bytes of widened q/k/v copies per routed SDPA call (32 MiB: a few heads at FLUX.1's size)."""
INSIDE_THRESHOLD = 0.5
"""Hard mode: an image token is inside a region when at least half of its cell is covered."""


class RoutingError(RuntimeError):
    """Raised during sampling when routing cannot be applied to the call as it arrives."""


# --------------------------------------------------------------------------- region masks → token grid

def _cell_weights(src: int, dst: int, cell: float, extent: float) -> torch.Tensor:
    """(dst, src) matrix: fraction of destination cell d (covering [d·cell, (d+1)·cell) ∩ [0, extent)) that
    source pixel s covers when `src` pixels span [0, extent)."""
    edges_src = torch.arange(src + 1, dtype=torch.float64) * (extent / src)
    lo = torch.arange(dst, dtype=torch.float64) * cell
    hi = torch.clamp(lo + cell, max=extent)
    overlap = (torch.minimum(hi[:, None], edges_src[None, 1:]) - torch.maximum(lo[:, None], edges_src[None, :-1]))
    overlap = overlap.clamp(min=0)
    return overlap / (hi - lo).clamp(min=1e-12)[:, None]


def region_to_tokens(mask: torch.Tensor, latent_hw, patch_size: int = 2) -> torch.Tensor:
    """Coverage of each image token by `mask` ((H, W) or (1, H, W), 1 = inside), as (rows, cols) in [0, 1].

    The rule, the same for every size and aspect: the mask is stretched over the whole image (its corners on the
    image's corners), and each token gets the exact area-weighted mean of the mask over the part of its
    `patch_size`×`patch_size` latent cell that lies inside the image (Flux pads odd latents; padding is ignored).
    """
    if mask.ndim == 3:
        mask = mask[0]
    if mask.ndim != 2:
        raise ValueError(f"a region mask must be (H, W) or (1, H, W), got {tuple(mask.shape)}")
    h, w = int(latent_hw[0]), int(latent_hw[1])
    rows, cols = -(-h // patch_size), -(-w // patch_size)
    wr = _cell_weights(mask.shape[0], rows, patch_size, h)
    wc = _cell_weights(mask.shape[1], cols, patch_size, w)
    return (wr @ mask.detach().to("cpu", torch.float64).clamp(0, 1) @ wc.T).to(torch.float32)


# --------------------------------------------------------------------------- what the user asked for

@dataclass
class RoutingCapture:
    """Routing maps accumulated during one sampling run; shared by every copy of the model (a handle).

    `sums[slot]` is (B, N_img): Σ over captured events of the mean (over the reference's tokens and heads) of
    the attention probability from the reference's tokens to each image token. `events[slot]` counts them.
    """
    sums: dict = field(default_factory=dict)
    events: dict = field(default_factory=dict)
    grid: tuple | None = None
    latent_hw: tuple | None = None
    labels: dict = field(default_factory=dict)  # {key: legend text} of region prompts' maps (key ("region", k))

    def __deepcopy__(self, memo):
        return self  # ComfyUI deep-copies model_options on every clone; the handle must stay one object

    def reset(self) -> None:
        self.sums.clear()
        self.events.clear()
        self.labels.clear()
        self.grid = None
        self.latent_hw = None

    def add(self, slot: int, mean_probs: torch.Tensor, grid, latent_hw) -> None:
        mean_probs = mean_probs.detach().float()
        if self.grid is not None and tuple(grid) != self.grid:
            self.reset()  # a new image size (e.g. a second sampler): keep the latest run only
        self.grid, self.latent_hw = tuple(grid), tuple(latent_hw)
        prev = self.sums.get(slot)
        if prev is not None and prev.shape == mean_probs.shape:
            self.sums[slot] = prev + mean_probs.to(prev.device)
            self.events[slot] += 1
        else:
            self.sums[slot] = mean_probs.clone()
            self.events[slot] = 1

    def maps(self) -> dict[int, torch.Tensor]:
        """{slot: (B, rows, cols)} mean routing map on the token grid (float32, CPU); each sums to its mass.
        References first (by slot), then region prompts' words (keys ("region", k), by k)."""
        rows, cols = self.grid if self.grid else (0, 0)
        return {s: (self.sums[s] / self.events[s]).cpu().reshape(-1, rows, cols)
                for s in sorted(self.sums, key=map_order)}

    def mass(self) -> dict[int, torch.Tensor]:
        """{slot: (B,)} share of the reference's attention that went to image tokens (mean over events)."""
        return {s: m.sum(dim=(1, 2)) for s, m in self.maps().items()}


def map_order(key):
    """Sort key of routing-map keys: reference slots (ints) first, then region prompts (("region", k))."""
    return (0, key) if isinstance(key, int) else (1, key[1])


@dataclass
class RoutingSpec:
    """DreamORouting's settings, carried in `transformer_options`; the wrapper applies it per call."""
    regions: dict = field(default_factory=dict)  # {slot: (H, W) float mask}
    sources: dict = field(default_factory=dict)  # {slot: the input its region came from}; default region_<slot>
    mode: str = "hard"
    strength: float = 4.0
    isolate: bool = False
    start_percent: float = 0.0
    end_percent: float = 1.0
    blocks: str = "all"
    capture: RoutingCapture | None = None
    worded: tuple = ()  # slots whose drawn box has words: the sampled conditioning must carry region prompts
    sigma_range: tuple | None = None  # (start sigma, end sigma), set when sampling starts
    coverage_cache: dict = field(default_factory=dict, repr=False)  # {(latent hw, patch): {slot: coverage}}

    def __deepcopy__(self, memo):
        out = copy.copy(self)
        out.regions = dict(self.regions)
        out.sources = dict(self.sources)
        return out  # masks are read-only; the capture handle is shared

    def constrains(self) -> bool:
        return bool(self.regions) or self.isolate

    def active_at(self, sigma) -> bool:
        if self.sigma_range is None or sigma is None:
            return True
        s = float(sigma)
        start, end = self.sigma_range
        return end <= s <= start

    def block_selected(self, block_type: str) -> bool:
        return self.blocks == "all" or self.blocks == block_type


# --------------------------------------------------------------------------- the bias as folded channels

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


@dataclass
class RoutingChannels:
    """Extra query/key channels (B or 1, 1, L, E) whose dot product, times `scale`, is the routing bias."""
    q: torch.Tensor
    k: torch.Tensor


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _outside(cov: torch.Tensor, spec: RoutingSpec, beta: float):
    """(outside weights over the image tokens, bias weight) of an area's coverage under the spec's mode."""
    cov = cov.reshape(-1).to(torch.float64)
    if spec.mode == "hard":
        return (cov < INSIDE_THRESHOLD).to(torch.float64), beta
    return 1.0 - cov, float(spec.strength)


def routing_channels(layout: TokenLayout, txt_len: int, spec: RoutingSpec, coverage: dict, scale: float,
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


def _text_columns(text: TextRouting, spec: RoutingSpec, beta: float, scale: float, img: slice, total: int,
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
    """Attention (B, H, L, D) → (B, H, L, D) with the routing bias folded into extra channels: one SDPA call.

    v is zero-padded to the same width so every fused kernel (flash, memory-efficient, CPU flash) accepts it.
    `mask` (Flux's own additive/boolean attention mask over the full sequence) is honoured on top.
    On the CPU the widened copies of q, k and v are made a few heads at a time (at most `chunk_bytes`, default
    ROUTED_CHUNK_BYTES, per SDPA call), so routing adds little to a step's peak memory; heads are independent, so
    the result is the same.
    """
    b, h, length, d = q.shape
    scale = d ** -0.5 if scale is None else scale
    e = channels.q.shape[-1]
    if chunk_bytes is None and q.device.type == "cpu":
        chunk_bytes = ROUTED_CHUNK_BYTES
    per_head = 3 * b * length * (d + e) * q.element_size()
    step = h if chunk_bytes is None else max(1, min(h, chunk_bytes // per_head))
    out = None if step >= h else q.new_empty(b, h, length, d)
    for h0 in range(0, h, step):
        n = min(h, h0 + step) - h0
        heads = slice(h0, h0 + n)
        qx = channels.q.to(dtype=q.dtype).expand(b, n, length, e)
        kx = channels.k.to(dtype=k.dtype).expand(b, n, length, e)
        q2 = torch.cat((q[:, heads], qx), dim=-1)
        k2 = torch.cat((k[:, heads], kx), dim=-1)
        v2 = F.pad(v[:, heads], (0, e))
        m = mask[:, heads] if mask is not None and mask.ndim == 4 and mask.shape[1] == h and n < h else mask
        part = F.scaled_dot_product_attention(q2, k2, v2, attn_mask=m, scale=scale)
        if out is None:
            return part[..., :d]
        out[:, heads] = part[..., :d]
    return out


# --------------------------------------------------------------------------- routing maps

def capture_reference_maps(q: torch.Tensor, k: torch.Tensor, layout: TokenLayout, txt_len: int,
                           scale: float | None = None, channels: RoutingChannels | None = None,
                           mask: torch.Tensor | None = None, chunk: int = CAPTURE_CHUNK,
                           spans=()) -> dict:
    """{slot: (B, N_img)} mean over the reference's tokens and heads of the attention probability from each of its
    tokens to each image token, softmax over the whole sequence — with the routing bias `channels` (and Flux's
    `mask`) when given, i.e. the attention as the routed layer applies it. `spans` ((key, first token, count), …)
    adds the same map for other query rows (region prompts' words). Works on chunks of heads and rows of at
    most `chunk` scores, so memory does not grow with L²."""
    b, h, length, d = q.shape
    scale = d ** -0.5 if scale is None else scale
    n_img = layout.image_count
    img = slice(txt_len, txt_len + n_img)
    out, start, rows = {}, txt_len + n_img, []
    for ref in layout.refs:
        rows.append((ref.slot, start, ref.count))
        start += ref.count
    for key, start, count in list(rows) + list(spans):
        acc = torch.zeros(b, n_img, dtype=torch.float32, device=q.device)
        heads_per = max(1, min(h, chunk // max(1, count * length)))
        rows_per = max(1, min(count, chunk // max(1, heads_per * length)))
        for r0 in range(start, start + count, rows_per):
            r1 = min(start + count, r0 + rows_per)
            bias = None
            if channels is not None:  # the same for every head: (rows, L), added by broadcasting
                bias = (channels.q[0, 0, r0:r1].float() @ channels.k[0, 0].float().T) * scale
            if mask is not None:
                m = (mask[..., r0:r1, :] if mask.shape[-2] != 1 else mask).float()
                bias = m if bias is None else bias + m
            for h0 in range(0, h, heads_per):
                qc = (q[:, h0:h0 + heads_per, r0:r1].float() * scale).flatten(0, 1)
                kc = k[:, h0:h0 + heads_per].float().flatten(0, 1).transpose(1, 2)
                if bias is None:
                    s = torch.bmm(qc, kc)
                elif bias.ndim == 2:
                    s = torch.baddbmm(bias, qc, kc)
                else:  # Flux's own (B, 1, rows, L) mask
                    s = (torch.bmm(qc, kc).unflatten(0, (b, -1)) + bias).flatten(0, 1)
                s = torch.softmax(s, dim=-1).unflatten(0, (b, -1))
                acc += s.sum(dim=(1, 2))[:, img]
        out[key] = acc / (count * h)
    return out


# --------------------------------------------------------------------------- the attention override

def _to_bhld(x: torch.Tensor, heads: int, skip_reshape: bool) -> torch.Tensor:
    if skip_reshape:
        return x
    b, length, inner = x.shape
    return x.view(b, length, heads, inner // heads).transpose(1, 2)


class RoutedAttention:
    """`optimized_attention_override` for one Flux call with DreamO references.

    Called once per block as `override(func, q, k, v, heads, mask=…, skip_reshape=…, transformer_options=…)`.
    Identifies the block from `transformer_options` (`block_type`/`block_index`, newer ComfyUI) or by counting
    calls (`n_double` double blocks first). `previous` is another pack's override, kept in the chain: it is
    called with `func` (pass-through) or with the routed attention in place of `func` (constrained blocks).
    """

    def __init__(self, spec: RoutingSpec, layout: TokenLayout, coverage: dict, n_double: int,
                 active: bool = True, previous=None, latent_hw=None, text: TextRouting | None = None):
        self.spec = spec
        self.latent_hw = tuple(latent_hw) if latent_hw is not None else None
        self.layout = layout
        self.coverage = coverage
        self.n_double = n_double
        self.active = active
        self.previous = previous
        self.text = text
        self.calls = 0
        self._channels = {}

    def block(self, options) -> str:
        kind = options.get("block_type") if isinstance(options, dict) else None
        index = self.calls
        self.calls += 1
        if kind in ("double", "single"):
            return kind
        return "double" if index < self.n_double else "single"

    def _pass(self, func, args, kwargs):
        if self.previous is not None:
            return self.previous(func, *args, **kwargs)
        return func(*args, **kwargs)

    def __call__(self, func, *args, **kwargs):
        kind = self.block(kwargs.get("transformer_options"))
        if not (self.active and self.spec.block_selected(kind)):
            return self._pass(func, args, kwargs)
        q, k, v, heads = (list(args) + [kwargs.get(n) for n in ("q", "k", "v", "heads")][len(args):])[:4]
        skip_reshape = kwargs.get("skip_reshape", False)
        qh, kh = _to_bhld(q, heads, skip_reshape), _to_bhld(k, heads, skip_reshape)
        txt_len = self._txt_len(qh, kh)
        channels = self._channels_for(txt_len, qh)
        if self.spec.capture is not None:
            mask = kwargs.get("mask")
            mask = self._check_mask(mask, qh.shape[2]) if mask is not None else None
            grid = (self.layout.image_rows, self.layout.image_cols)
            maps = capture_reference_maps(qh, kh, self.layout, txt_len, channels=channels, mask=mask,
                                          spans=self.text.capture if self.text is not None else ())
            for slot, m in maps.items():
                self.spec.capture.add(slot, m, grid, self.latent_hw)
        if channels is None:
            return self._pass(func, args, kwargs)
        called = []

        def routed(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False, skip_output_reshape=False,
                   **_):
            called.append(True)
            b = q.shape[0]
            qh, kh, vh = (_to_bhld(t, heads, skip_reshape) for t in (q, k, v))
            if mask is not None:
                mask = self._check_mask(mask, qh.shape[2])
            out = routed_attention(qh, kh, vh, channels, mask=mask)
            if skip_output_reshape:
                return out
            return out.transpose(1, 2).reshape(b, -1, heads * out.shape[-1])

        if self.previous is None:
            return routed(*args, **kwargs)
        out = self.previous(routed, *args, **kwargs)
        if not called:
            raise RoutingError(
                "another pack's attention override computed attention itself without calling through, so DreamO "
                "routing could not be applied. Fix: disable that attention patch (e.g. a Sage/Flash attention "
                "node) while using DreamORouting, or bypass DreamORouting.")
        return out

    def _txt_len(self, q, k) -> int:
        length = q.shape[2]
        txt_len = length - self.layout.total_count
        if k.shape[2] != length or txt_len < 0:
            raise RoutingError(
                f"attention sees {length} queries and {k.shape[2]} keys but DreamO's layout has "
                f"{self.layout.total_count} image + reference tokens: another patch changed the sequence. Fix: "
                "remove that patch (e.g. a KV cache or token-merging node) while using DreamORouting.")
        return txt_len

    def _channels_for(self, txt_len: int, q: torch.Tensor):
        key = (txt_len, q.dtype, q.device, q.shape[-1])
        if self.text is not None and txt_len != self.text.txt_len:
            raise RoutingError(
                f"attention sees {txt_len} text tokens but the conditioning with region prompts has "
                f"{self.text.txt_len}: another patch changed the text. Fix: remove that patch while using region "
                "prompts.")
        if key not in self._channels:
            self._channels[key] = routing_channels(self.layout, txt_len, self.spec, self.coverage,
                                                   scale=q.shape[-1] ** -0.5, dtype=q.dtype, device=q.device,
                                                   text=self.text)
        return self._channels[key]

    @staticmethod
    def _check_mask(mask: torch.Tensor, length: int) -> torch.Tensor:
        if mask.shape[-1] != length or (mask.ndim >= 2 and mask.shape[-2] not in (1, length)):
            raise RoutingError(
                f"the conditioning's attention mask covers {mask.shape[-1]} tokens but the sequence with DreamO's "
                f"references has {length}: it was made for the sequence without references. Fix: remove the node "
                "that sets the attention mask (e.g. StyleModelApply in attn_bias mode) or bypass DreamORouting.")
        if mask.ndim == 2:
            mask = mask.unsqueeze(0)
        if mask.ndim == 3:
            mask = mask.unsqueeze(1)
        return mask
