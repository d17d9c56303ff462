"""Routing-constrained attention: keep each DreamO reference on its region, and capture where it went.

DreamO was trained with a *routing constraint*: the attention from reference k's tokens to the image is pulled
onto subject k's region. At inference this module
  * turns a user's region mask (any size) into a token-grid coverage map (`region_to_tokens`, one rule for every
    size and aspect: exact area coverage of each token's cell); a drawn rectangle (`Rectangle`) gets the same
    coverage from its geometry (`rectangle_to_tokens`), without a pixel mask,
  * builds the routing bias for one call's token layout `[txt | image | ref a | ref b …]` as a few extra
    query/key channels (`RoutingChannels`): the bias is low rank, so it folds into the dot product and the whole
    routed attention is ONE mask-free `scaled_dot_product_attention` call (no L×L mask; flash-class kernels stay
    usable),
  * captures routing maps: per reference, the attention probability from its tokens to each image token (the
    reference → image direction DreamO trained) as the routed layer applies it, averaged over its tokens and
    heads, computed a few heads and rows at a time (never L×L),
  * provides `RoutedAttention`, the `optimized_attention_override` installed per model call. It chains any
    override another pack set and passes through untouched (the backend `func` called with the original
    arguments: bit-identical) on blocks and calls where nothing is constrained. Constrained blocks run the folded
    call (`fold_channels`: scaled for the backend's default W^-0.5) on the active backend — another pack's
    override or ComfyUI's choice — or, where that backend cannot take it, on SDPA (`BackendDispatch`, one log
    line per backend).

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
import logging
import threading
import weakref
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
COVERAGE_CHUNK = 1 << 22
"""Mask pixels converted to float64 at a time when a large mask's coverage is computed (32 MiB)."""


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


@dataclass(frozen=True)
class Rectangle:
    """A region given by its geometry: 1 on pixel rows y0..y1-1 and columns x0..x1-1 of a width × height
    picture, 0 elsewhere, stretched over the image like any region mask. Its token coverage comes from the
    geometry (`rectangle_to_tokens`), so no pixel mask is built, whatever the picture's size."""
    width: int
    height: int
    box: tuple  # (x0, y0, x1, y1), whole pixels, 0 <= x0 < x1 <= width, 0 <= y0 < y1 <= height

    @property
    def shape(self) -> tuple:
        return (self.height, self.width)

    def mask(self) -> torch.Tensor:
        """The (height, width) float32 pixel mask (height × width × 4 bytes: for pictures and tests, not routing)."""
        x0, y0, x1, y1 = self.box
        out = torch.zeros(self.height, self.width, dtype=torch.float32)
        out[y0:y1, x0:x1] = 1.0
        return out


def _span_coverage(lo: int, hi: int, src: int, dst: int, cell: int, extent: int) -> torch.Tensor:
    """(dst,) float64: the fraction of destination cell d ([d·cell, (d+1)·cell) ∩ [0, extent)) covered by source
    pixels lo..hi-1 when `src` pixels span [0, extent). Exact: lengths are counted in units of 1/src, as integers,
    and each fraction is one correctly rounded division (the row or column factor of `_cell_weights`' route)."""
    d = torch.arange(dst, dtype=torch.int64)
    c0 = d * (cell * src)
    c1 = torch.clamp((d + 1) * cell, max=extent) * src
    overlap = (torch.clamp(c1, max=hi * extent) - torch.clamp(c0, min=lo * extent)).clamp(min=0)
    return overlap.double() / (c1 - c0).clamp(min=1).double()


def rectangle_to_tokens(box, size_hw, latent_hw, patch_size: int = 2) -> torch.Tensor:
    """Coverage of each image token by the rectangle `box` = (x0, y0, x1, y1) (whole pixels) of a picture of
    `size_hw` = (height, width) pixels: (rows, cols) float32 in [0, 1], what `region_to_tokens` gives for the
    rectangle's pixel mask (the same rule: exact area coverage), computed from the geometry in O(rows · cols)
    time and memory, whatever the picture's size."""
    x0, y0, x1, y1 = (int(v) for v in box)
    height, width = int(size_hw[0]), int(size_hw[1])
    h, w = int(latent_hw[0]), int(latent_hw[1])
    rows, cols = -(-h // patch_size), -(-w // patch_size)
    down = _span_coverage(y0, y1, height, rows, patch_size, h)
    across = _span_coverage(x0, x1, width, cols, patch_size, w)
    return torch.outer(down, across).to(torch.float32)


def region_to_tokens(mask, latent_hw, patch_size: int = 2) -> torch.Tensor:
    """Coverage of each image token by `mask` ((H, W) or (1, H, W), 1 = inside; or a `Rectangle`), as (rows, cols)
    in [0, 1].

    The rule, the same for every size and aspect: the mask is stretched over the whole image (its corners on the
    image's corners), and each token gets the exact area-weighted mean of the mask over the part of its
    `patch_size`×`patch_size` latent cell that lies inside the image (Flux pads odd latents; padding is ignored).
    A mask larger than COVERAGE_CHUNK pixels is read a band of rows at a time (bounded extra memory).
    """
    if isinstance(mask, Rectangle):
        return rectangle_to_tokens(mask.box, mask.shape, latent_hw, patch_size)
    if mask.ndim == 3:
        mask = mask[0]
    if mask.ndim != 2:
        raise ValueError(f"a region mask must be (H, W) or (1, H, W), got {tuple(mask.shape)}")
    h, w = int(latent_hw[0]), int(latent_hw[1])
    rows, cols = -(-h // patch_size), -(-w // patch_size)
    wr = _cell_weights(mask.shape[0], rows, patch_size, h)
    wc = _cell_weights(mask.shape[1], cols, patch_size, w)
    mask = mask.detach()
    if mask.numel() <= COVERAGE_CHUNK:
        return (wr @ mask.to("cpu", torch.float64).clamp(0, 1) @ wc.T).to(torch.float32)
    band = max(1, COVERAGE_CHUNK // mask.shape[1])
    down = torch.zeros(rows, mask.shape[1], dtype=torch.float64)
    for r0 in range(0, mask.shape[0], band):
        down += wr[:, r0:r0 + band] @ mask[r0:r0 + band].to("cpu", torch.float64).clamp(0, 1)
    return (down @ wc.T).to(torch.float32)


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
    regions: dict = field(default_factory=dict)  # {slot: (H, W) float mask, or a Rectangle}
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


# --------------------------------------------------------------------------- the backend of routed blocks

VERIFY_TOLERANCE = 0.1
"""A backend's first routed call (per head width, dtype and device) is compared with PyTorch SDPA on the same folded
tensors; a relative difference above 10 % — far beyond any low-precision kernel's rounding, far below what a dropped
or misread channel does — refuses it."""
_OUTPUT_NAMES = ("mask", "attn_precision", "skip_reshape", "skip_output_reshape")

log = logging.getLogger(__name__)


def run_eagerly(fn):
    """Run `fn` eagerly under torch.compile: DreamO's per-call decisions (layout, regions, backend) then never become
    constants of a compiled graph, whatever guards the compile keeps (ComfyUI 0.33's TorchCompileModel drops every
    guard on `transformer_options`, where these objects live)."""
    disable = getattr(getattr(torch, "compiler", None), "disable", None)
    return disable(fn) if disable is not None else fn


def backend_name(backend) -> str:
    fn = getattr(backend, "__wrapped__", backend)
    module = getattr(fn, "__module__", None) or type(fn).__module__
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{name}"


@dataclass
class BackendVerdict:
    usable: bool
    reason: str = ""


class _WarningsOfThisThread(logging.Handler):
    """Collects WARNING-and-above records logged by the current thread while installed on the root logger."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.messages = []

    def emit(self, record):
        if record.thread == self.thread:
            self.messages.append(record.getMessage())

    def __enter__(self):
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger().removeHandler(self)


def _first_line(text: str, limit: int = 200) -> str:
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= limit else line[:limit] + "…"


class BackendDispatch:
    """Runs routed blocks on the active attention backend where it can take the folded call, else on PyTorch SDPA.

    The active backend is another pack's override when one is chained (SageAttention / KJNodes patches compute
    attention themselves), else the function ComfyUI chose (`func`: sub-quadratic on CPU, SDPA, flash, xformers,
    sage …). It receives the folded (B, H, L, W) tensors with `skip_reshape=True` and no `scale`: `fold_channels`
    scales them for the default W^-0.5. Its first call per (width, dtype, device) is checked against SDPA: a
    backend that raises, returns another shape or other numbers, or logs a warning (it fell back by itself, and
    would on every call) is refused for that key, and one line is logged per backend. Verdicts are kept per
    backend object (weakly: a model's override goes away with the model)."""

    def __init__(self):
        self._weak = weakref.WeakKeyDictionary()
        self._strong = {}  # id → (backend, record) for callables that cannot be weakly referenced

    def record(self, backend) -> dict:
        try:
            rec = self._weak.get(backend)
            if rec is None:
                rec = self._weak[backend] = {"name": backend_name(backend), "verdicts": {}, "logged": False}
            return rec
        except TypeError:
            entry = self._strong.get(id(backend))
            if entry is None or entry[0] is not backend:
                entry = self._strong[id(backend)] = (backend, {"name": backend_name(backend), "verdicts": {},
                                                               "logged": False})
            return entry[1]

    def report(self) -> list[dict]:
        """Every verdict so far: [{backend, width, dtype, device, usable, reason}] (for benchmarks and doctor)."""
        records = list(self._weak.values()) + [r for _, r in self._strong.values()]
        return [{"backend": r["name"], "width": w, "dtype": str(dt).replace("torch.", ""), "device": dev,
                 "usable": v.usable, "reason": v.reason}
                for r in records for (w, dt, dev), v in r["verdicts"].items()]

    def run(self, backend, call, q2, k2, v2, mask, head_dim: int) -> torch.Tensor:
        """(B, H, L, W) attention of the folded tensors: `call(q2, k2, v2)` (the backend) or SDPA."""
        rec = self.record(backend)
        key = (q2.shape[-1], q2.dtype, q2.device.type)
        verdict = rec["verdicts"].get(key)
        if verdict is not None and not verdict.usable:
            return _sdpa(q2, k2, v2, mask)
        out, problem = None, None
        with _WarningsOfThisThread() as warnings:
            try:
                out = call(q2, k2, v2)
            except _OutOfMemory:
                raise
            except Exception as e:  # a backend that cannot take this call: never a crash, never unrouted
                problem = f"it raised {type(e).__name__}: {_first_line(e)}"
        if verdict is None:
            reference = _sdpa(q2, k2, v2, mask)
            if problem is None:
                err = ((out.float() - reference.float()).norm() / reference.float().norm().clamp(min=1e-30)).item()
                if not err <= VERIFY_TOLERANCE:
                    problem = f"its result differs from PyTorch SDPA's by {err:.1%}"
                elif warnings.messages:
                    problem = f"it logged '{_first_line(warnings.messages[0])}' (it falls back by itself)"
            rec["verdicts"][key] = BackendVerdict(problem is None, problem or "")
            if problem is not None:
                self._log(rec, key, head_dim, problem)
                return reference
            return out
        if problem is not None:  # usable so far, but not for this call (another sequence length, say)
            rec["verdicts"][key] = BackendVerdict(False, problem)
            self._log(rec, key, head_dim, problem)
            return _sdpa(q2, k2, v2, mask)
        return out

    @staticmethod
    def _log(rec, key, head_dim, problem):
        if rec["logged"]:
            return
        rec["logged"] = True
        width, dtype, device = key
        log.warning("DreamO routing: the attention backend %s cannot run the routed blocks (%d-wide heads: %d + %d "
                    "routing channels, %s on %s): %s. Those blocks use PyTorch SDPA with the routing folded in; the "
                    "other blocks keep %s. (Logged once.)", rec["name"], width, head_dim, width - head_dim,
                    str(dtype).replace("torch.", ""), device, problem, rec["name"])


_OutOfMemory = getattr(torch, "OutOfMemoryError", getattr(torch.cuda, "OutOfMemoryError", MemoryError))
BACKENDS = BackendDispatch()
"""The process-wide verdicts (one per backend object, width, dtype and device)."""


def _sdpa(q2, k2, v2, mask):
    return F.scaled_dot_product_attention(q2, k2, v2, attn_mask=mask)


def _as_bhlw(out: torch.Tensor, shape, heads: int) -> torch.Tensor:
    b, h, length, width = shape
    if out.ndim == 4 and tuple(out.shape) == (b, h, length, width):
        return out
    if out.ndim == 3 and tuple(out.shape) == (b, length, heads * width):
        return out.view(b, length, heads, width).transpose(1, 2)
    raise ValueError(f"it returned shape {tuple(out.shape)} for {tuple(shape)} inputs")


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
    calls (`n_double` double blocks first). `previous` is another pack's override, kept in the chain: unrouted
    blocks call it (or `func`) with the original arguments, untouched; routed blocks call it (or `func`) with the
    folded tensors (`fold_channels`) through `BACKENDS`, which falls back to SDPA where it cannot take them.
    Runs eagerly under torch.compile (see `run_eagerly`).
    """

    def __init__(self, spec: RoutingSpec, layout: TokenLayout, coverage: dict, n_double: int,
                 active: bool = True, previous=None, latent_hw=None, dispatch: BackendDispatch | None = None,
                 text: TextRouting | None = None):
        self.spec = spec
        self.latent_hw = tuple(latent_hw) if latent_hw is not None else None
        self.layout = layout
        self.coverage = coverage
        self.n_double = n_double
        self.active = active
        self.previous = previous
        self.dispatch = dispatch if dispatch is not None else BACKENDS
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

    @run_eagerly
    def __call__(self, func, *args, **kwargs):
        kind = self.block(kwargs.get("transformer_options"))
        if not (self.active and self.spec.block_selected(kind)):
            return self._pass(func, args, kwargs)
        q, k, v, heads = (list(args) + [kwargs.get(n) for n in ("q", "k", "v", "heads")][len(args):])[:4]
        extra = {**dict(zip(_OUTPUT_NAMES, args[4:])), **{n: x for n, x in kwargs.items()
                                                           if n not in ("q", "k", "v", "heads")}}
        skip_reshape = extra.get("skip_reshape", False)
        qh, kh = _to_bhld(q, heads, skip_reshape), _to_bhld(k, heads, skip_reshape)
        txt_len = self._txt_len(qh, kh)
        scale = extra.get("scale") or qh.shape[-1] ** -0.5
        channels = self._channels_for(txt_len, qh, scale)
        mask = extra.get("mask")
        mask = self._check_mask(mask, qh.shape[2]) if mask is not None else None
        if self.spec.capture is not None:
            grid = (self.layout.image_rows, self.layout.image_cols)
            maps = capture_reference_maps(qh, kh, self.layout, txt_len, scale=scale, channels=channels, mask=mask,
                                          spans=self.text.capture if self.text is not None else ())
            for slot, m in maps.items():
                self.spec.capture.add(slot, m, grid, self.latent_hw)
        if channels is None:
            return self._pass(func, args, kwargs)
        vh = _to_bhld(v, heads, skip_reshape)
        out = self._routed(func, qh, kh, vh, heads, channels, mask, scale, extra)
        if extra.get("skip_output_reshape", False):
            return out
        return out.transpose(1, 2).reshape(out.shape[0], -1, heads * out.shape[-1])

    def _routed(self, func, q, k, v, heads, channels, mask, scale, extra) -> torch.Tensor:
        """(B, H, L, D) routed attention on the active backend (or SDPA, see `BackendDispatch`)."""
        d = q.shape[-1]
        q2, k2, v2 = fold_channels(q, k, v, channels, scale=scale)
        backend = self.previous if self.previous is not None else func
        kw = {n: x for n, x in extra.items() if n != "scale"}
        kw.update(mask=mask, skip_reshape=True, skip_output_reshape=False)

        def call(q2, k2, v2):
            out = (self.previous(func, q2, k2, v2, heads, **kw) if self.previous is not None
                   else func(q2, k2, v2, heads, **kw))
            return _as_bhlw(out, q2.shape, heads)

        return self.dispatch.run(backend, call, q2, k2, v2, mask, d)[..., :d]

    def _txt_len(self, q, k) -> int:
        length = q.shape[2]
        txt_len = length - self.layout.total_count
        if k.shape[2] != length or txt_len < 0:
            raise RoutingError(
                f"attention sees {length} queries and {k.shape[2]} keys but DreamO's layout has "
                f"{self.layout.total_count} image + reference tokens: another patch changed the sequence. Fix: "
                "remove that patch (e.g. a KV cache or token-merging node) while using DreamORouting.")
        return txt_len

    def _channels_for(self, txt_len: int, q: torch.Tensor, scale: float | None = None):
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        key = (txt_len, q.dtype, q.device, q.shape[-1], scale)
        if self.text is not None and txt_len != self.text.txt_len:
            raise RoutingError(
                f"attention sees {txt_len} text tokens but the conditioning with region prompts has "
                f"{self.text.txt_len}: another patch changed the text. Fix: remove that patch while using region "
                "prompts.")
        if key not in self._channels:
            self._channels[key] = routing_channels(self.layout, txt_len, self.spec, self.coverage,
                                                   scale=scale, dtype=q.dtype, device=q.device, text=self.text)
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
