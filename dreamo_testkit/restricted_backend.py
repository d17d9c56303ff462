"""Stand-in attention backends for the routing-fallback tests (need the host for `wrap_attn`).

`RestrictedKernel` behaves like SageAttention's `sageattn` as far as routing is concerned: it takes (B, H, L, D)
("HND") or (B, L, H, D) ("NHD") tensors and only head widths 64, 96 and 128, and raises for any other width. It
computes exact float attention (SDPA) so results can be compared with a dense reference. It is installed the two ways
users install Sage: as another pack's `optimized_attention_override` that ignores `func` and calls its own kernel
(KJNodes' "Patch Sage Attention KJ"), and as the function ComfyUI chose (`--use-sage-attention`).
"""
from __future__ import annotations

import logging

import torch.nn.functional as F


SAGE_WIDTHS = (64, 96, 128)


class RestrictedKernel:
    """Records the head widths it computed and the ones it refused. `mode`:
    "raise" (like sageattn: an error for other widths), "wrong" (silently uses only the first 64 channels of q and k
    for other widths: a broken kernel the dispatcher must catch), or "permissive" (takes every width)."""

    def __init__(self, widths=SAGE_WIDTHS, mode: str = "raise"):
        self.widths = tuple(widths)
        self.mode = mode
        self.computed: list[int] = []
        self.refused: list[int] = []

    def __call__(self, q, k, v, tensor_layout="HND", is_causal=False, attn_mask=None, sm_scale=None):
        d = q.shape[-1]
        if tensor_layout == "NHD":
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if d not in self.widths and self.mode != "permissive":
            if self.mode == "raise":
                self.refused.append(d)
                raise ValueError(f"head_dim should be in {list(self.widths)}, got {d}")
            q, k = q[..., :64], k[..., :64]  # "wrong": drops the extra channels, keeps the scale of its width
            sm_scale = d ** -0.5 if sm_scale is None else sm_scale
        self.computed.append(d)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=sm_scale)
        return out.transpose(1, 2) if tensor_layout == "NHD" else out


def attention_function(kernel: RestrictedKernel, falls_back_itself: bool = False):
    """A ComfyUI attention function (wrapped with ComfyUI's `wrap_attn`) running `kernel`, shaped like ComfyUI's
    and KJNodes' sage functions. `falls_back_itself`: like ComfyUI's own `attention_sage`, an error of the kernel
    is logged and the call is computed with PyTorch instead (on every call)."""
    from comfy.ldm.modules.attention import wrap_attn

    @wrap_attn
    def attention_restricted(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
                             skip_output_reshape=False, **kwargs):
        if skip_reshape:
            b, _, _, dim_head = q.shape
            layout = "HND"
        else:
            b, _, dim_head = q.shape
            dim_head //= heads
            q, k, v = (t.view(b, -1, heads, dim_head) for t in (q, k, v))
            layout = "NHD"
        if mask is not None:
            if mask.ndim == 2:
                mask = mask.unsqueeze(0)
            if mask.ndim == 3:
                mask = mask.unsqueeze(1)
        try:
            out = kernel(q, k, v, tensor_layout=layout, attn_mask=mask)
        except Exception as e:
            if not falls_back_itself:
                raise
            logging.error("Error running restricted attention: %s, using pytorch attention instead.", e)
            if layout == "NHD":
                q, k, v = (t.transpose(1, 2) for t in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            layout = "HND"
        if layout == "HND":
            return out if skip_output_reshape else out.transpose(1, 2).reshape(b, -1, heads * dim_head)
        return out.transpose(1, 2) if skip_output_reshape else out.reshape(b, -1, heads * dim_head)

    return attention_restricted


def override_like_kjnodes(attention):
    """Another pack's override as KJNodes installs Sage: ignores ComfyUI's `func` and computes attention itself."""

    def attention_override_restricted(func, *args, **kwargs):
        return attention.__wrapped__(*args, **kwargs)

    return attention_override_restricted


def install_override(model, override):
    """A clone of `model` with `override` as its attention override (what the other pack's node returns)."""
    m = model.clone()
    m.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = override
    return m


def sdpa_function():
    """A plain ComfyUI-shaped SDPA attention function (no restriction), for reference runs."""
    from comfy.ldm.modules.attention import wrap_attn

    @wrap_attn
    def attention_sdpa(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
                       skip_output_reshape=False, **kwargs):
        b = q.shape[0]
        if not skip_reshape:
            q, k, v = (t.view(b, -1, heads, t.shape[-1] // heads).transpose(1, 2) for t in (q, k, v))
        if mask is not None and mask.ndim == 3:
            mask = mask.unsqueeze(1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return out if skip_output_reshape else out.transpose(1, 2).reshape(b, -1, heads * out.shape[-1])

    return attention_sdpa


