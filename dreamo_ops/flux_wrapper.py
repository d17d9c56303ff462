"""The per-call hook that turns Flux's reference tokens into DreamO's.

ComfyUI already appends reference latents to the image stream ("uxo" method: diagonal positions, index 0).
DreamO adds one thing: learned condition/index embeddings right after `img_in`. This module provides
  * `DreamOFluxWrapper`: a DIFFUSION_MODEL wrapper (ComfyUI's `WrappersMP.DIFFUSION_MODEL` calling
    convention) that, only in calls carrying DreamO references, installs
  * `ConditionEmbeddingPatch`: a `post_input` patch adding the embeddings for that call's token layout.
When the model also carries DreamORouting's settings (`transformer_options[ROUTING_KEY]`), the same calls get a
  * `RoutedAttention` override (`optimized_attention_override`, chained with any other pack's override) that
    routes each reference onto its region and/or captures routing maps (see `routing.py`).
Calls whose conditioning carries region prompts (`regional.REGIONS_KWARG`, with or without references) get the
same override, routing the region prompts' words too (hard routing when the model has no DreamORouting).
It uses only the calling conventions of those extension points, not ComfyUI imports.
"""
from __future__ import annotations

import torch

from .condition_embedding import DreamOEmbeddings, condition_embedding
from .errors import DreamOError
from .regional import REGIONS_KWARG, area_coverage
from .routing import RoutedAttention, RoutingSpec, run_eagerly
from .slot_agreement import RECORD_KEY, check_final, fingerprint
from .token_layout import TokenLayout, position_ids, reference_layout

SLOTS_KWARG = "dreamo_ref_slots"
"""Model-cond name carrying, per call, the DreamO slot of every reference latent (a tuple of ints)."""
WRAPPER_KEY = "dreamo"
REQUIRED_METHOD = "uxo"
ROUTING_KEY = "dreamo_routing"
"""`transformer_options` key carrying DreamORouting's `RoutingSpec`."""
APPLY_SLOTS_KEY = "dreamo_apply_slots"
"""`model_options` key: the slots DreamOApply gave the model references in (DreamORouting checks its regions)."""
OVERRIDE_KEY = "optimized_attention_override"
ROUTING_NODE = "DreamORouting"


class DreamOSamplingError(RuntimeError):
    """Raised during sampling when the graph feeds DreamO references in a way it cannot honour."""


class ConditionEmbeddingPatch:
    """`post_input` patch: adds DreamO's condition embedding to the image stream of one call."""

    def __init__(self, embeddings: DreamOEmbeddings, layout: TokenLayout, verified: set | None = None):
        self.embeddings = embeddings
        self.layout = layout
        # Layouts whose positions were already checked in this sampling run: the check compares on the
        # device (a sync), so it runs once per layout rather than on every step.
        self.verified = verified if verified is not None else set()

    @run_eagerly
    def __call__(self, args: dict) -> dict:
        img, img_ids = args["img"], args["img_ids"]
        if img.shape[1] != self.layout.total_count:
            raise DreamOSamplingError(
                f"DreamO expected {self.layout.total_count} image-stream tokens (image + references) but the model "
                f"has {img.shape[1]}: another patch changed the token sequence before DreamO's embeddings. "
                "Fix: apply DreamO without that patch, or place it after sampling-time token changes."
            )
        if img_ids is not None and self.layout not in self.verified:
            self.check_positions(img_ids)
            self.verified.add(self.layout)
        emb = condition_embedding(self.embeddings, self.layout, dtype=img.dtype, device=img.device)
        out = dict(args)
        out["img"] = img + emb
        return out


    def check_positions(self, img_ids: torch.Tensor) -> None:
        expected = position_ids(self.layout).to(device=img_ids.device, dtype=img_ids.dtype)
        if not torch.equal(img_ids[0], expected):
            raise DreamOSamplingError(
                "DreamO reference tokens are not at DreamO's diagonal positions: a node after DreamOApply "
                "changed how reference latents are positioned. Fix: remove that node (for example "
                "FluxKontextMultiReferenceLatentMethod) or put it before DreamOApply."
            )


class DreamOFluxWrapper:
    """DIFFUSION_MODEL wrapper holding DreamO's embeddings; a no-op for calls without DreamO references."""

    def __init__(self, embeddings: DreamOEmbeddings):
        self.embeddings = embeddings
        self.verified_layouts: set = set()  # per wrapper copy, i.e. per sampling run (see `to`)

    def to(self, device_or_dtype):
        """ComfyUI calls this before sampling with the load device and the model dtype. A moved copy is
        returned (the model's own wrapper is left as it is); the embeddings stay float32 and are cast to the
        activations' dtype when added."""
        if isinstance(device_or_dtype, torch.dtype):
            return self
        return DreamOFluxWrapper(self.embeddings.to(device=device_or_dtype))

    def __call__(self, executor, x, timestep, context, y=None, guidance=None, ref_latents=None, control=None,
                 transformer_options={}, **kwargs):
        slots = kwargs.pop(SLOTS_KWARG, None)
        regions = kwargs.pop(REGIONS_KWARG, None)
        with_refs = slots is not None and bool(ref_latents)
        if with_refs or regions is not None:
            transformer_options = self._with_patch(executor, x, ref_latents if with_refs else None, slots,
                                                   transformer_options, kwargs, regions, context)
        return executor(x, timestep, context, y, guidance, ref_latents, control, transformer_options, **kwargs)

    @run_eagerly
    def _with_patch(self, executor, x, ref_latents, slots, transformer_options, kwargs, regions=None, context=None):
        patch_size = getattr(executor.class_obj, "patch_size", 2)
        options = dict(transformer_options)
        if ref_latents:
            layout = self._reference_patch(x, ref_latents, slots, kwargs, options, patch_size)
        else:  # region prompts without references in this call
            layout = reference_layout(x.shape[-2:], [], (), patch_size)
        spec = options.get(ROUTING_KEY)
        if regions is not None and not isinstance(spec, RoutingSpec):
            spec = RoutingSpec()  # region prompts on a model without DreamORouting: hard routing, every block/step
        if isinstance(spec, RoutingSpec):
            override = routing_override(spec, layout, x.shape[-2:], executor.class_obj, options, patch_size,
                                        regions, None if context is None else context.shape[1])
            if override is not None:
                options[OVERRIDE_KEY] = override
                return options
        if ref_latents:
            # Every DreamO call carries an (eager) override, routing or not: under torch.compile the graphs of DreamO
            # calls then never depend on whether this step routes — ComfyUI 0.33's TorchCompileModel keeps no guard
            # on transformer_options, so a graph traced without the override would silently skip routing later.
            options[OVERRIDE_KEY] = RoutedAttention(RoutingSpec(), layout, {},
                                                    len(getattr(executor.class_obj, "double_blocks", ())),
                                                    active=False, previous=options.get(OVERRIDE_KEY))
        return options

    def _reference_patch(self, x, ref_latents, slots, kwargs, options, patch_size):
        """Check the call's references, add the embedding patch to `options`; the layout."""
        if len(slots) != len(ref_latents):
            raise DreamOSamplingError(
                f"the conditioning carries {len(ref_latents)} reference latents but DreamO slots for {len(slots)}: "
                "another node added or removed reference latents after DreamOApply. Fix: connect DreamOApply's "
                "'positive' output straight to the sampler (or only through conditioning nodes that keep references)."
            )
        method = kwargs.get("ref_latents_method")
        if method != REQUIRED_METHOD:
            raise DreamOSamplingError(
                f"reference latents reach the model with method '{method}', DreamO needs '{REQUIRED_METHOD}'. "
                "Fix: remove the node that changes reference_latents_method after DreamOApply."
            )
        refuse_reference_kv_cache(options)
        layout = reference_layout(x.shape[-2:], [r.shape[-2:] for r in ref_latents], slots, patch_size)
        patches = dict(options.get("patches", {}))
        patch = ConditionEmbeddingPatch(self.embeddings, layout, self.verified_layouts)
        patches["post_input"] = list(patches.get("post_input", [])) + [patch]
        options["patches"] = patches
        return layout


KV_CACHE_PATCHES = ("KV_Attn_Input",)
"""Class names of attention patches that reuse the reference tokens' keys/values across steps (core FluxKVCache)."""


def refuse_reference_kv_cache(transformer_options: dict) -> None:
    """Core's FluxKVCache (ComfyUI 0.33+) computes the reference tokens once, on the first step, then drops them and
    attends to their cached keys/values. That is exact only where references do not depend on the step (FLUX.2 /
    Kontext with `index_timestep_zero`). DreamO's references get each step's timestep and attend to the image in
    every block, so from the second step on the cache would not be DreamO's: refused by name, before any step."""
    patches = (transformer_options.get("patches") or {}).get("attn1_patch") or ()
    for patch in patches:
        if type(patch).__name__ in KV_CACHE_PATCHES:
            raise DreamOError(
                "DreamOApply", "model", "the model carries Flux KV Cache (FluxKVCache), which reuses the references' "
                "keys and values from the first step. DreamO's references change at every step (they get the step's "
                "timestep and attend to the image), so later steps would not be DreamO's.",
                "remove the Flux KV Cache node from this model's chain when using DreamO references (it is exact "
                "only for models with timestep-zero references, such as FLUX.2).")


class ReferenceBatchCheck:
    """OUTER_SAMPLE wrapper: before sampling, a DreamO reference batch larger than the latent batch is an error.

    ComfyUI fits every reference latent to the batch being sampled (`repeat_to_batch_size`), so reference
    images beyond the latent batch would be dropped silently. Smaller batches repeat in turn (documented)."""

    def __call__(self, executor, noise, latent_image, *args, **kwargs):
        batch = noise.shape[0]
        for kind, conds in (getattr(executor.class_obj, "conds", None) or {}).items():
            for cond in conds:
                slots = getattr(cond.get("model_conds", {}).get(SLOTS_KWARG), "cond", ())
                latents = list(cond.get("reference_latents") or [])
                record = cond.get(RECORD_KEY)
                if record is not None and kind == "positive":  # DreamO Text Encode's slots against Apply's
                    dreamo_latents = latents[len(latents) - len(slots):] if slots else []
                    problem = check_final(record, {s: fingerprint(l) for s, l in zip(slots, dreamo_latents)})
                    if problem:
                        raise DreamOSamplingError(problem)
                for slot, latent in zip(slots, latents[len(latents) - len(slots):]):  # DreamO's come last
                    if latent.shape[0] > batch:
                        raise DreamOSamplingError(
                            f"DreamOApply (input 'ref_{slot}'): the reference in slot {slot} is a batch of "
                            f"{latent.shape[0]} images but the latent batch is {batch}, so images "
                            f"{batch + 1}..{latent.shape[0]} would never be used. Fix: give as many reference "
                            "images as latents (or one), or raise the latent's batch_size.")
        return executor(noise, latent_image, *args, **kwargs)


def routing_override(spec: RoutingSpec, layout, latent_hw, flux, options: dict, patch_size: int, regions=None,
                     txt_len: int | None = None):
    """The per-call attention override for DreamORouting's `spec` and the call's region prompts (`regions`, a
    `regional.RegionPrompts`), or None when it has nothing to do."""
    present = {r.slot for r in layout.refs}
    worded = regions.indices() if regions is not None else set()
    for slot in sorted(spec.regions):
        if slot not in present and slot not in worded:
            source = spec.sources.get(slot, f"region_{slot}")
            undo = (f"disconnect region_{slot}" if source == f"region_{slot}"
                    else f"clear slot {slot}'s box in the region editor ({source})")
            raise DreamOError(ROUTING_NODE, source, f"slot {slot} has no DreamO reference in this "
                              f"sampling run (references are in slots {sorted(present)}).",
                              f"connect a reference to DreamOApply's ref_{slot}, or {undo}.")
    if spec.worded and regions is None:
        raise DreamOError(ROUTING_NODE, "positive", f"the boxes of slots {list(spec.worded)} have words, but the "
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
