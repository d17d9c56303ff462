"""Routing-constrained attention: keep each DreamO reference on its region, and capture where it went.

DreamO was trained with a *routing constraint*: the attention from reference k's tokens to the image is pulled
onto subject k's region. DreamO Routing's settings (`RoutingSpec`) ride in `transformer_options`; in each model
call with references or region prompts, DreamO's wrapper asks `routing_override` for that call's decision:
  * nothing to do (no region, no capture, or the step is outside the step range): None;
  * else a `RoutedAttention`, the `optimized_attention_override` of that call, with each area's token coverage
    (`areas.area_coverage`, cached per latent size in the spec) and the region prompts' routed text tokens.
`RoutedAttention` identifies each block, chains any override another pack set and passes through untouched (the
backend `func` called with the original arguments: bit-identical) on blocks and calls where nothing is constrained.
Constrained blocks get the routing bias as folded channels (`routing_bias`: one mask-free attention call) on the
active backend, or on SDPA where it cannot take them (`routing_backends`), and their routing maps are captured
(`routing_map`). No ComfyUI imports here: only the calling conventions of ComfyUI's attention override.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from .areas import area_coverage
from .errors import DreamOError, in_node
from .routing_backends import BACKENDS, BackendDispatch
from .routing_bias import TextRouting, fold_channels, routing_channels
from .routing_map import RoutingCapture, capture_reference_maps
from .token_layout import TokenLayout

MODES = ("hard", "soft")
BLOCKS = ("all", "double", "single")
OVERRIDE_KEY = "optimized_attention_override"
_OUTPUT_NAMES = ("mask", "attn_precision", "skip_reshape", "skip_output_reshape")


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
    node: str | None = None  # the id of the node that made these settings: named in errors during sampling
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


def run_eagerly(fn):
    """Run `fn` eagerly under torch.compile: DreamO's per-call decisions (layout, regions, backend) then never become
    constants of a compiled graph, whatever guards the compile keeps (ComfyUI 0.33's TorchCompileModel drops every
    guard on `transformer_options`, where these objects live)."""
    disable = getattr(getattr(torch, "compiler", None), "disable", None)
    return disable(fn) if disable is not None else fn


def routing_override(spec, layout: TokenLayout, latent_hw, flux, options: dict, patch_size: int, regions=None,
                     txt_len: int | None = None, references: bool = False):
    """The attention override of one model call, or None: for the model's DreamO Routing settings (`spec`, None
    without DreamO Routing) and the call's region prompts (`regions`, a `regional.RegionPrompts`, or None);
    `references` says whether the call carries DreamO references."""
    if regions is not None and not isinstance(spec, RoutingSpec):
        spec = RoutingSpec(node=regions.node)  # region prompts without DreamO Routing: hard, every block and step
    override = _routed(spec, layout, latent_hw, flux, options, patch_size, regions, txt_len) \
        if isinstance(spec, RoutingSpec) else None
    if override is None and references:
        # Every DreamO call carries an (eager) override, routing or not: under torch.compile the graphs of DreamO
        # calls then never depend on whether this step routes — ComfyUI 0.33's TorchCompileModel keeps no guard
        # on transformer_options, so a graph traced without the override would silently skip routing later.
        override = RoutedAttention(RoutingSpec(), layout, {}, len(getattr(flux, "double_blocks", ())), active=False,
                                   previous=options.get(OVERRIDE_KEY))
    return override


def _routed(spec: RoutingSpec, layout: TokenLayout, latent_hw, flux, options: dict, patch_size: int, regions,
            txt_len: int | None):
    """The routing override for `spec` and the call's region prompts, or None when it has nothing to do."""
    present = {r.slot for r in layout.refs}
    worded = regions.indices() if regions is not None else set()
    for slot in sorted(spec.regions):
        if slot not in present and slot not in worded:
            source = spec.sources.get(slot, f"region_{slot}")
            undo = (f"disconnect region_{slot}" if source == f"region_{slot}"
                    else f"clear slot {slot}'s box in the region editor ({source})")
            raise DreamOError(spec.node, source, f"slot {slot} has no DreamO reference in this "
                              f"sampling run (references are in slots {sorted(present)}).",
                              f"connect a reference to DreamO Apply's ref_{slot}, or {undo}.")
    if spec.worded and regions is None:
        raise DreamOError(spec.node, "positive", f"the boxes of slots {list(spec.worded)} have words, but the "
                          "conditioning being sampled carries no region prompts.",
                          "connect DreamO Routing's positive output on to the sampler (through DreamO Apply's "
                          "positive when you use it), or clear the boxes' words.")
    if not spec.constrains() and spec.capture is None and regions is None:
        return None
    sigma = options.get("sigmas")
    active = spec.active_at(sigma[0] if sigma is not None and len(sigma) else None)
    if not active:
        return None
    key = (tuple(latent_hw), patch_size)
    cache = spec.coverage_cache
    if key not in cache:
        with in_node(spec.node):
            cache[key] = {slot: area_coverage(m, latent_hw, patch_size) for slot, m in spec.regions.items()}
    coverage, text = cache[key], None
    if regions is not None:
        text, follow = regions.text_routing(txt_len, coverage, present, latent_hw, patch_size)
        coverage = {**coverage, **follow}
        if spec.capture is not None:
            spec.capture.labels.update(regions.labels())
    n_double = len(getattr(flux, "double_blocks", ()))
    return RoutedAttention(spec, layout, coverage, n_double, active=active,
                           previous=options.get(OVERRIDE_KEY), latent_hw=latent_hw, text=text)


def _as_bhlw(out: torch.Tensor, shape, heads: int) -> torch.Tensor:
    b, h, length, width = shape
    if out.ndim == 4 and tuple(out.shape) == (b, h, length, width):
        return out
    if out.ndim == 3 and tuple(out.shape) == (b, length, heads * width):
        return out.view(b, length, heads, width).transpose(1, 2)
    raise ValueError(f"it returned shape {tuple(out.shape)} for {tuple(shape)} inputs")


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
            raise DreamOError(
                self.spec.node, "model", f"attention sees {length} queries and {k.shape[2]} keys but DreamO's layout "
                f"has {self.layout.total_count} image + reference tokens: another patch changed the sequence.",
                "remove that patch (e.g. a KV cache or token-merging node) from this model while routing.")
        return txt_len

    def _channels_for(self, txt_len: int, q: torch.Tensor, scale: float | None = None):
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        key = (txt_len, q.dtype, q.device, q.shape[-1], scale)
        if self.text is not None and txt_len != self.text.txt_len:
            raise DreamOError(
                self.text.node, self.text.input_name, f"attention sees {txt_len} text tokens but the conditioning "
                f"with region prompts has {self.text.txt_len}: another patch changed the text.",
                "remove that patch while using region prompts.")
        if key not in self._channels:
            self._channels[key] = routing_channels(self.layout, txt_len, self.spec, self.coverage,
                                                   scale=scale, dtype=q.dtype, device=q.device, text=self.text)
        return self._channels[key]

    def _check_mask(self, mask: torch.Tensor, length: int) -> torch.Tensor:
        if mask.shape[-1] != length or (mask.ndim >= 2 and mask.shape[-2] not in (1, length)):
            raise DreamOError(
                self.spec.node, "model", f"the conditioning's attention mask covers {mask.shape[-1]} tokens but the "
                f"sequence with DreamO's references has {length}: it was made for the sequence without references.",
                "remove the node that sets the attention mask (e.g. StyleModelApply in attn_bias mode) or bypass "
                "this node.")
        if mask.ndim == 2:
            mask = mask.unsqueeze(0)
        if mask.ndim == 3:
            mask = mask.unsqueeze(1)
        return mask
