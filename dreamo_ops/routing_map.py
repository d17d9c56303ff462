"""Routing maps: where each reference's (and each region prompt's) attention went, captured while sampling
(`RoutingCapture`, filled by `capture_reference_maps`) and drawn as pictures (`draw_maps`: token-grid maps → image-sized
masks and a coloured heat-map overlay with a legend)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .areas import VAE_SCALE
from .errors import input_error
from .routing_bias import RoutingChannels
from .token_layout import TokenLayout

CAPTURE_CHUNK = 1 << 22
"""Elements of one capture score chunk (rows × heads × keys): 16 MiB in float32, whatever the sequence length."""

SLOT_COLOURS = {1: (230, 25, 75), 2: (60, 180, 75), 3: (0, 130, 200), 4: (245, 130, 48), 5: (145, 30, 180),
                6: (70, 240, 240), 7: (240, 50, 230), 8: (210, 245, 60), 9: (250, 190, 212)}
"""One colour per reference slot (distinct on light and dark pictures)."""
WORDS_TINT = 0.45
"""Region k's words (map key ("region", k)) are drawn in slot k's colour mixed this much with white."""


# --------------------------------------------------------------------------- captured while sampling

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


# --------------------------------------------------------------------------- drawn as pictures


def colour_of(key) -> tuple:
    """The RGB colour of a routing-map key: a reference slot k, or ("region", k) for region k's words."""
    if isinstance(key, int):
        return SLOT_COLOURS[key]
    return tuple(round(c + (255 - c) * WORDS_TINT) for c in SLOT_COLOURS[key[1]])


def upsample_map(grid_map: torch.Tensor, latent_hw, size_hw, patch_size: int = 2, vae_scale: int = VAE_SCALE):
    """(B, rows, cols) token-grid map → (B, H, W): each token's value over its pixel cell (nearest), cropped to the
    latent's pixel size (Flux pads odd latents), then resized bilinearly to `size_hw` if that differs."""
    cell = patch_size * vae_scale
    up = grid_map.repeat_interleave(cell, dim=1).repeat_interleave(cell, dim=2)
    h, w = int(latent_hw[0]) * vae_scale, int(latent_hw[1]) * vae_scale
    up = up[:, :h, :w]
    if (h, w) != tuple(size_hw):
        up = F.interpolate(up[:, None], size=tuple(size_hw), mode="bilinear", align_corners=False)[:, 0]
    return up


def normalise(maps: torch.Tensor) -> torch.Tensor:
    """Each map divided by its own maximum (a map of zeros stays zero)."""
    peak = maps.flatten(1).amax(dim=1).clamp(min=1e-12)
    return maps / peak[:, None, None]


def overlay(image: torch.Tensor, heat: dict, opacity: float = 0.65) -> torch.Tensor:
    """Heat maps {slot: (B, H, W) in [0, 1]} over `image` (B, H, W, 3) in [0, 1], one colour per slot."""
    out = image.clone()
    for slot, h in heat.items():
        colour = torch.tensor(colour_of(slot), dtype=image.dtype) / 255.0
        a = (h.clamp(0, 1) * opacity)[..., None].to(image.dtype)
        out = out * (1 - a) + colour * a
    return out


def draw_legend(image: torch.Tensor, labels: dict) -> torch.Tensor:
    """A legend (a colour square and a label per slot) in the top-left corner of each image."""
    from PIL import Image, ImageDraw

    arr = (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    out = []
    for a in arr:
        pil = Image.fromarray(a)
        draw = ImageDraw.Draw(pil)
        box = max(6, min(pil.size) // 32)
        y = 2
        for slot, text in labels.items():
            draw.rectangle([2, y, 2 + box, y + box], fill=colour_of(slot), outline=(0, 0, 0))
            draw.text((6 + box, y), text, fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))
            y += box + 4
        out.append(np.asarray(pil))
    return torch.from_numpy(np.stack(out)).float() / 255.0


def map_name(key, labels: dict) -> str:
    """Legend name of a routing map: "ref k", or the region's label ("region k: its words")."""
    return f"ref {key}" if isinstance(key, int) else labels.get(key, f"region {key[1]}")


def draw_maps(capture: RoutingCapture, image: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(masks, overlay) of a capture that holds maps: one mask per map (references by slot, then region words), each
    scaled to a peak of 1, at the size of `image` (B, H, W, 3) or of the generated image; and the maps as a heat
    map over `image` (or black) with a legend naming each map and its mass. One image is drawn under every batch
    entry's maps, and one batch entry's maps over every image."""
    maps = capture.maps()
    latent_hw = capture.latent_hw
    size = tuple(image.shape[1:3]) if image is not None else (latent_hw[0] * VAE_SCALE, latent_hw[1] * VAE_SCALE)
    heat = {key: normalise(upsample_map(m, latent_hw, size)) for key, m in maps.items()}
    batch = next(iter(heat.values())).shape[0]
    if image is None:
        base = torch.zeros(batch, size[0], size[1], 3)
    else:
        base = image.float().cpu()
        if base.shape[0] != batch:
            if base.shape[0] != 1 and batch != 1:
                raise input_error("image", f"{base.shape[0]} images for {batch} routing maps.",
                                  "connect the images decoded from the same sampler output.")
            n = max(batch, base.shape[0])
            base = base.expand(n, -1, -1, -1)
            heat = {key: h.expand(n, -1, -1) for key, h in heat.items()}
    masses = capture.mass()
    labels = {key: f"{map_name(key, capture.labels)}  mass {masses[key].mean().item():.2f}" for key in heat}
    picture = draw_legend(overlay(base, heat), labels)
    masks = torch.cat([heat[key] for key in heat], dim=0)
    return masks, picture
