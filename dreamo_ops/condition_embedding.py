"""DreamO's learned embeddings and the per-token condition embedding added after Flux's `img_in`.

Every image token gets `task[1]`; every token of the reference in slot k gets `task[0] + index[k]`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from .placeholders import PLACEHOLDERS  # noqa: F401  (defined with the prompt checks, which need no torch)
from .token_layout import TokenLayout


@dataclass(frozen=True)
class DreamOEmbeddings:
    """The DREAMO value passed between nodes: learned tensors plus where they came from."""

    task: torch.Tensor  # (2, hidden): row 1 = image tokens, row 0 = reference tokens
    index: torch.Tensor  # (10, hidden): row k = reference slot k (row 0 unused)
    placeholders: Optional[torch.Tensor]  # (10, t5_dim) vectors of PLACEHOLDERS, or None
    source: str = ""

    @property
    def hidden_size(self) -> int:
        return self.task.shape[1]

    def to(self, device=None, dtype=None) -> "DreamOEmbeddings":
        def move(t):
            return None if t is None else t.to(device=device, dtype=dtype)

        return replace(self, task=move(self.task), index=move(self.index), placeholders=move(self.placeholders))


def condition_embedding(emb: DreamOEmbeddings, layout: TokenLayout, dtype=None, device=None) -> torch.Tensor:
    """(tokens, hidden) tensor to add to the image stream, in sequence order."""
    task = emb.task.to(device=device)
    index = emb.index.to(device=device)
    parts = [task[1].expand(layout.image_count, -1)]
    for ref in layout.refs:
        parts.append((task[0] + index[ref.slot]).expand(ref.count, -1))
    out = torch.cat(parts, dim=0)
    return out if dtype is None else out.to(dtype)
