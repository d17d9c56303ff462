"""DreamO's nodes wired by hand on the tiny Flux in a real ComfyUI (host tests): references, DreamO Apply, DreamO
Routing, stripe masks, a probe of the routed attention, and ComfyUI's own sampler over a few steps."""
from __future__ import annotations

import torch

N_BLOCKS = 4  # tiny Flux: 2 double + 2 single


def make_ref(h, w, seed, batch=1):
    """A random ip reference of latent size h×w (seeded)."""
    from comfyui_dreamo.dreamo_ops.reference import DreamOReference

    latent = torch.randn(batch, 16, h, w, generator=torch.Generator().manual_seed(seed))
    return DreamOReference(latent=latent, task="ip", pixels=torch.zeros(batch, h * 8, w * 8, 3))


def apply(model, dreamo, refs, positive=None):
    """DreamO Apply with references {slot: DreamOReference}; the positive defaults to the tiny conditioning (seed 3)."""
    from comfyui_dreamo.nodes.apply import DreamOApply

    if positive is None:
        from . import tiny_models

        positive = tiny_models.conditioning(seed=3)
    return DreamOApply().apply(model, positive, dreamo, **{f"ref_{s}": r for s, r in refs.items()})["result"]


def route(model, regions=None, **kw):
    """DreamO Routing on `model` with regions {slot: mask}: hard, strength 4, all blocks, maps captured, unless told."""
    from comfyui_dreamo.nodes.routing import DreamORouting

    args = dict(mode="hard", strength=4.0, isolate_references=False, start_percent=0.0, end_percent=1.0,
                blocks="all", capture_maps=True)
    args.update(kw)
    return DreamORouting().route(model, **args, **{f"region_{s}": m for s, m in (regions or {}).items()})[0]


def stripes(n, H=32, W=32, vertical=True):
    """n masks splitting the picture into n stripes."""
    out = []
    for i in range(n):
        m = torch.zeros(1, H, W)
        if vertical:
            m[:, :, i * W // n:(i + 1) * W // n] = 1
        else:
            m[:, i * H // n:(i + 1) * H // n, :] = 1
        out.append(m)
    return out


class Spy:
    """Wraps dreamo_ops.routing.fold_channels: records the attention probabilities of each routed call, computed from
    the very folded q/k the attention backend receives, at the backend's default scale (width^-0.5)."""

    def __init__(self, monkeypatch):
        from comfyui_dreamo.dreamo_ops import routing

        self.real = routing.fold_channels
        self.calls = []
        monkeypatch.setattr(routing, "fold_channels", self)

    def __call__(self, q, k, v, channels, scale=None):
        q2, k2, v2 = self.real(q, k, v, channels, scale)
        s = q2 @ k2.transpose(-1, -2) * q2.shape[-1] ** -0.5
        self.calls.append(torch.softmax(s, dim=-1))
        return q2, k2, v2


def multi_step(sigmas_seen):
    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
        for i in range(len(sigmas) - 1):
            s = sigmas[i] * x.new_ones((x.shape[0],))
            sigmas_seen.append(float(sigmas[i]))
            den = model(x, s, **(extra_args or {}))
            x = den + (x - den) * (sigmas[i + 1] / sigmas[i])
        return x
    return sample


def sample(model, latent, positive, negative, cfg=1.0, sigmas=(0.9, 0.6, 0.3, 0.0), seed=0, seen=None):
    import comfy.samplers

    seen = [] if seen is None else seen
    sampler = comfy.samplers.KSAMPLER(multi_step(seen))
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    return comfy.samplers.sample(model, noise, positive, negative, cfg, torch.device("cpu"), sampler,
                                 torch.tensor(sigmas), latent_image=latent, seed=seed)
