"""The per-call hook that turns Flux's reference tokens into DreamO's.

ComfyUI already appends reference latents to the image stream ("uxo" method: diagonal positions, index 0).
DreamO adds one thing: learned condition/index embeddings right after `img_in`. This module provides
  * `DreamOFluxWrapper`: a DIFFUSION_MODEL wrapper (ComfyUI's `WrappersMP.DIFFUSION_MODEL` calling
    convention) that, only in calls carrying DreamO references, installs
  * `ConditionEmbeddingPatch`: a `post_input` patch adding the embeddings for that call's token layout.
When the model also carries DreamORouting's settings (`transformer_options[ROUTING_KEY]`), the same calls get a
  * `RoutedAttention` override (`optimized_attention_override`, chained with any other pack's override) that
    routes each reference onto its region and/or captures routing maps (see `routing.py`).
It uses only the calling conventions of those extension points, not ComfyUI imports.
"""
from __future__ import annotations

import torch

from .condition_embedding import DreamOEmbeddings, condition_embedding
from .errors import DreamOError
from .routing import RoutedAttention, RoutingSpec, region_to_tokens
from .slot_agreement import RECORD_KEY, check_final, fingerprint
from .token_layout import TokenLayout, position_ids, reference_layout

SLOTS_KWARG = "dreamo_ref_slots"
"""Model-cond name carrying, per call, the DreamO slot of every reference latent (a tuple of ints)."""
WRAPPER_KEY = "dreamo"
REQUIRED_METHOD = "uxo"
ROUTING_KEY = "dreamo_routing"
APPLY_SLOTS_KEY = "dreamo_apply_slots"  # model_options: the slots DreamOApply gave the model references in
"""`transformer_options` key carrying DreamORouting's `RoutingSpec`."""
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
        if slots is not None and ref_latents:
            transformer_options = self._with_patch(executor, x, ref_latents, slots, transformer_options, kwargs)
        return executor(x, timestep, context, y, guidance, ref_latents, control, transformer_options, **kwargs)

    def _with_patch(self, executor, x, ref_latents, slots, transformer_options, kwargs):
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
        patch_size = getattr(executor.class_obj, "patch_size", 2)
        layout = reference_layout(x.shape[-2:], [r.shape[-2:] for r in ref_latents], slots, patch_size)
        options = dict(transformer_options)
        patches = dict(options.get("patches", {}))
        patch = ConditionEmbeddingPatch(self.embeddings, layout, self.verified_layouts)
        patches["post_input"] = list(patches.get("post_input", [])) + [patch]
        options["patches"] = patches
        spec = options.get(ROUTING_KEY)
        if isinstance(spec, RoutingSpec):
            override = routing_override(spec, layout, x.shape[-2:], executor.class_obj, options, patch_size)
            if override is not None:
                options[OVERRIDE_KEY] = override
        return options


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


def routing_override(spec: RoutingSpec, layout, latent_hw, flux, options: dict, patch_size: int):
    """The per-call attention override for DreamORouting's `spec`, or None when it has nothing to do."""
    present = {r.slot for r in layout.refs}
    for slot in sorted(spec.regions):
        if slot not in present:
            source = spec.sources.get(slot, f"region_{slot}")
            undo = (f"disconnect region_{slot}" if source == f"region_{slot}"
                    else f"clear slot {slot}'s box in the region editor ({source})")
            raise DreamOError(ROUTING_NODE, source, f"slot {slot} has no DreamO reference in this "
                              f"sampling run (references are in slots {sorted(present)}).",
                              f"connect a reference to DreamOApply's ref_{slot}, or {undo}.")
    if not spec.constrains() and spec.capture is None:
        return None
    sigma = options.get("sigmas")
    active = spec.active_at(sigma[0] if sigma is not None and len(sigma) else None)
    if not active:
        return None
    key = (tuple(latent_hw), patch_size)
    cache = spec.coverage_cache
    if key not in cache:
        cache[key] = {slot: region_to_tokens(m, latent_hw, patch_size) for slot, m in spec.regions.items()}
    n_double = len(getattr(flux, "double_blocks", ()))
    return RoutedAttention(spec, layout, cache[key], n_double, active=active,
                           previous=options.get(OVERRIDE_KEY), latent_hw=latent_hw)
