"""An independent reference of the official DreamO forward, for parity tests.

Written from DreamO's description (DESIGN.md section 1), not from the pack: the official pipeline runs
diffusers' FluxTransformer2DModel on [image tokens | reference tokens], adds `task[1]` to image tokens and
`task[0] + idx[k]` to reference k right after `x_embedder`, places reference k diagonally after the image and
the earlier references, and keeps only the image tokens' prediction. The weights are the tiny ComfyUI Flux's,
converted with ComfyUI's own diffusers key map.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import FluxTransformer2DModel

SHIFT, SCALE = 0.1159, 0.3611  # FLUX VAE latent shift/scale (diffusers vae.config)


def diffusers_flux_from_comfy(comfy_flux, config: dict) -> FluxTransformer2DModel:
    import comfy.utils

    heads = config["num_heads"]
    model = FluxTransformer2DModel(
        patch_size=1, in_channels=config["in_channels"] * 4, out_channels=None, num_layers=config["depth"],
        num_single_layers=config["depth_single_blocks"], attention_head_dim=config["hidden_size"] // heads,
        num_attention_heads=heads, joint_attention_dim=config["context_in_dim"],
        pooled_projection_dim=config["vec_in_dim"], guidance_embeds=config["guidance_embed"],
        axes_dims_rope=tuple(config["axes_dim"]))
    source = comfy_flux.state_dict()
    key_map = comfy.utils.flux_to_diffusers(config)
    target = {}
    for key in model.state_dict():
        entry = key_map[key]
        if isinstance(entry, str):
            target[key] = source[entry]
        elif entry[1] is None:
            target[key] = entry[2](source[entry[0]])
        else:
            dim, offset, size = entry[1]
            target[key] = source[entry[0]].narrow(dim, offset, size)
    model.load_state_dict(target, strict=True)
    return model.float().eval()


def pack(latent: torch.Tensor) -> torch.Tensor:
    b, c, h, w = latent.shape
    x = latent.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, _, d = tokens.shape
    c = d // 4
    x = tokens.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, h, w)


def grid_ids(rows: int, cols: int, start_row: int = 0, start_col: int = 0) -> torch.Tensor:
    ids = torch.zeros(rows, cols, 3)
    ids[..., 1] += torch.arange(rows)[:, None] + start_row
    ids[..., 2] += torch.arange(cols)[None, :] + start_col
    return ids.reshape(rows * cols, 3)


@torch.no_grad()
def dreamo_forward(model: FluxTransformer2DModel, x, sigma, context, pooled, guidance, refs=(), task=None,
                   idx=None, control=None, txt_offset=None):
    """Velocity for latent `x` (B, 16, H, W). `refs`: (raw VAE latent, slot) pairs; empty = plain Flux.

    `control`: {"input": [...], "output": [...]} residuals added to the image tokens after each block, as a
    ControlNet does. `txt_offset`: a tensor added to the text stream after `context_embedder` (another
    pack's post-input patch in the tests).
    """
    b, _, h0, w0 = x.shape
    pad_h, pad_w = (-h0) % 2, (-w0) % 2
    if pad_h or pad_w:  # the host pads odd latents to the patch size (circularly) before packing
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="circular")
    h, w = x.shape[-2:]
    tokens = [pack(x)]
    ids = [grid_ids(h // 2, w // 2)]
    emb = [task[1].expand(b, (h // 2) * (w // 2), -1)] if refs else []
    start_row, start_col = h // 2, w // 2
    for latent, slot in refs:
        latent = ((latent - SHIFT) * SCALE).expand(b, -1, -1, -1)
        rows, cols = latent.shape[2] // 2, latent.shape[3] // 2
        tokens.append(pack(latent))
        ids.append(grid_ids(rows, cols, start_row, start_col))
        emb.append((task[0] + idx[slot]).expand(b, rows * cols, -1))
        start_row += rows
        start_col += cols
    n_img = tokens[0].shape[1]
    hooks = []
    if refs:
        embeddings = torch.cat(emb, dim=1)
        hooks.append(model.x_embedder.register_forward_hook(lambda m, i, out: out + embeddings))
    if txt_offset is not None:
        hooks.append(model.context_embedder.register_forward_hook(lambda m, i, out: out + txt_offset))
    if control is not None:
        def residual(add):
            def hook(m, i, out):
                enc, hid = out
                hid = hid.clone()
                hid[:, :add.shape[1]] += add
                return enc, hid
            return hook
        for block, add in zip(model.transformer_blocks, control.get("input", [])):
            hooks.append(block.register_forward_hook(residual(add)))
        for block, add in zip(model.single_transformer_blocks, control.get("output", [])):
            hooks.append(block.register_forward_hook(residual(add)))
    try:
        out = model(hidden_states=torch.cat(tokens, dim=1), encoder_hidden_states=context,
                    pooled_projections=pooled, timestep=sigma.expand(b),
                    img_ids=torch.cat(ids, dim=0), txt_ids=torch.zeros(context.shape[1], 3),
                    guidance=torch.full((b,), float(guidance)), return_dict=False)[0]
    finally:
        for hook in hooks:
            hook.remove()
    return unpack(out[:, :n_img], h, w)[:, :, :h0, :w0]


def check_call(call, reference, positive, refs, dreamo, with_dreamo=True):
    """Relative error of one recorded model call (host_sampling.Recorder) against the official forward on the same
    inputs: the references in slot order with DreamO's embeddings (or none: plain Flux)."""
    from . import rel_err

    context, cond = positive[0][0], positive[0][1]
    pairs = [(r.latent, slot) for slot, r in sorted(refs.items())] if with_dreamo else []
    expected = dreamo_forward(reference, call["x"], call["t"][:1], context.expand(call["x"].shape[0], -1, -1),
                              cond["pooled_output"].expand(call["x"].shape[0], -1), cond["guidance"],
                              refs=pairs, task=dreamo.task, idx=dreamo.index)
    return rel_err(call["out"], expected)
