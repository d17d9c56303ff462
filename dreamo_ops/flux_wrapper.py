"""The per-call hook that turns Flux's reference tokens into DreamO's.

ComfyUI already appends reference latents to the image stream ("uxo" method: diagonal positions, index 0).
DreamO adds one thing: learned condition/index embeddings right after `img_in`. This module provides
  * `DreamOFluxWrapper`: a DIFFUSION_MODEL wrapper (ComfyUI's `WrappersMP.DIFFUSION_MODEL` calling
    convention) that, only in calls carrying DreamO references, installs
  * `ConditionEmbeddingPatch`: a `post_input` patch adding the embeddings for that call's token layout.
The same calls, and calls whose conditioning carries region prompts (`regional.REGIONS_KWARG`, with or without
references), get the attention override that `routing.routing_override` decides for that call from DreamORouting's
settings (`transformer_options[ROUTING_KEY]`) and the region prompts: it routes each reference and each region's
words onto its region and/or captures routing maps.
What the graph got wrong is a DreamOError naming the node that attached the wrapper (`node`, handed over by DreamO
Apply). It uses only the calling conventions of those extension points, not ComfyUI imports.
"""
from __future__ import annotations

import torch

from .condition_embedding import DreamOEmbeddings, condition_embedding
from .errors import DreamOError, in_node
from .regional import REGIONS_KWARG
from .routing import OVERRIDE_KEY, routing_override, run_eagerly
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


class ConditionEmbeddingPatch:
    """`post_input` patch: adds DreamO's condition embedding to the image stream of one call."""

    def __init__(self, embeddings: DreamOEmbeddings, layout: TokenLayout, verified: set | None = None,
                 node: str | None = None):
        self.embeddings = embeddings
        self.layout = layout
        self.node = node
        # Layouts whose positions were already checked in this sampling run: the check compares on the
        # device (a sync), so it runs once per layout rather than on every step.
        self.verified = verified if verified is not None else set()

    @run_eagerly
    def __call__(self, args: dict) -> dict:
        img, img_ids = args["img"], args["img_ids"]
        if img.shape[1] != self.layout.total_count:
            raise DreamOError(
                self.node, "model", f"DreamO expected {self.layout.total_count} image-stream tokens (image + "
                f"references) but the model has {img.shape[1]}: another patch changed the token sequence before "
                "DreamO's embeddings.", "apply DreamO without that patch, or place it after sampling-time token "
                "changes.")
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
            raise DreamOError(
                self.node, "positive", "DreamO reference tokens are not at DreamO's diagonal positions: a node "
                "after this one changed how reference latents are positioned.", "remove that node (for example "
                "FluxKontextMultiReferenceLatentMethod) or put it before this one.")


class DreamOFluxWrapper:
    """DIFFUSION_MODEL wrapper holding DreamO's embeddings; a no-op for calls without DreamO references."""

    def __init__(self, embeddings: DreamOEmbeddings, node: str | None = None):
        self.embeddings = embeddings
        self.node = node  # the id of the node that attached the wrapper, named in errors
        self.verified_layouts: set = set()  # per wrapper copy, i.e. per sampling run (see `to`)

    def to(self, device_or_dtype):
        """ComfyUI calls this before sampling with the load device and the model dtype. A moved copy is
        returned (the model's own wrapper is left as it is); the embeddings stay float32 and are cast to the
        activations' dtype when added."""
        if isinstance(device_or_dtype, torch.dtype):
            return self
        return DreamOFluxWrapper(self.embeddings.to(device=device_or_dtype), self.node)

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
        override = routing_override(options.get(ROUTING_KEY), layout, x.shape[-2:], executor.class_obj, options,
                                    patch_size, regions, None if context is None else context.shape[1],
                                    references=bool(ref_latents))
        if override is not None:
            options[OVERRIDE_KEY] = override
        return options

    def _reference_patch(self, x, ref_latents, slots, kwargs, options, patch_size):
        """Check the call's references, add the embedding patch to `options`; the layout."""
        if len(slots) != len(ref_latents):
            raise DreamOError(
                self.node, "positive", f"the conditioning carries {len(ref_latents)} reference latents but DreamO "
                f"slots for {len(slots)}: another node added or removed reference latents after this one.",
                "connect this node's 'positive' output straight to the sampler (or only through conditioning nodes "
                "that keep references).")
        method = kwargs.get("ref_latents_method")
        if method != REQUIRED_METHOD:
            raise DreamOError(
                self.node, "positive", f"reference latents reach the model with method '{method}', DreamO needs "
                f"'{REQUIRED_METHOD}'.", "remove the node that changes reference_latents_method after this one.")
        refuse_reference_kv_cache(options, self.node)
        layout = reference_layout(x.shape[-2:], [r.shape[-2:] for r in ref_latents], slots, patch_size)
        patches = dict(options.get("patches", {}))
        patch = ConditionEmbeddingPatch(self.embeddings, layout, self.verified_layouts, self.node)
        patches["post_input"] = list(patches.get("post_input", [])) + [patch]
        options["patches"] = patches
        return layout


KV_CACHE_PATCHES = ("KV_Attn_Input",)
"""Class names of attention patches that reuse the reference tokens' keys/values across steps (core FluxKVCache)."""


def refuse_reference_kv_cache(transformer_options: dict, node: str | None = None) -> None:
    """Core's FluxKVCache (ComfyUI 0.33+) computes the reference tokens once, on the first step, then drops them and
    attends to their cached keys/values. That is exact only where references do not depend on the step (FLUX.2 /
    Kontext with `index_timestep_zero`). DreamO's references get each step's timestep and attend to the image in
    every block, so from the second step on the cache would not be DreamO's: refused by name, before any step."""
    patches = (transformer_options.get("patches") or {}).get("attn1_patch") or ()
    for patch in patches:
        if type(patch).__name__ in KV_CACHE_PATCHES:
            raise DreamOError(
                node, "model", "the model carries Flux KV Cache (FluxKVCache), which reuses the references' "
                "keys and values from the first step. DreamO's references change at every step (they get the step's "
                "timestep and attend to the image), so later steps would not be DreamO's.",
                "remove the Flux KV Cache node from this model's chain when using DreamO references (it is exact "
                "only for models with timestep-zero references, such as FLUX.2).")


class ReferenceBatchCheck:
    """OUTER_SAMPLE wrapper: before sampling, a DreamO reference batch larger than the latent batch is an error.

    ComfyUI fits every reference latent to the batch being sampled (`repeat_to_batch_size`), so reference
    images beyond the latent batch would be dropped silently. Smaller batches repeat in turn (documented). Errors
    name `node`, the node that attached the check (DreamO Apply)."""

    def __init__(self, node: str | None = None):
        self.node = node

    def __call__(self, executor, noise, latent_image, *args, **kwargs):
        batch = noise.shape[0]
        for kind, conds in (getattr(executor.class_obj, "conds", None) or {}).items():
            for cond in conds:
                slots = getattr(cond.get("model_conds", {}).get(SLOTS_KWARG), "cond", ())
                latents = list(cond.get("reference_latents") or [])
                record = cond.get(RECORD_KEY)
                if record is not None and kind == "positive":  # DreamO Text Encode's slots against Apply's
                    dreamo_latents = latents[len(latents) - len(slots):] if slots else []
                    with in_node(self.node):
                        check_final(record, {s: fingerprint(l) for s, l in zip(slots, dreamo_latents)})
                for slot, latent in zip(slots, latents[len(latents) - len(slots):]):  # DreamO's come last
                    if latent.shape[0] > batch:
                        raise DreamOError(
                            self.node, f"ref_{slot}", f"the reference in slot {slot} is a batch of "
                            f"{latent.shape[0]} images but the latent batch is {batch}, so images "
                            f"{batch + 1}..{latent.shape[0]} would never be used.", "give as many reference "
                            "images as latents (or one), or raise the latent's batch_size.")
        return executor(noise, latent_image, *args, **kwargs)
