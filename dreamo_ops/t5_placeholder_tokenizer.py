"""DreamO's T5 tokenization, rebuilt with the `tokenizers` library on T5's own tokenizer.json.

The official pipeline (transformers 4.45.2) adds `[ref#1]`…`[ref#9]` and `[res]` to FLUX's T5 tokenizer with
`add_tokens(..., special_tokens=False)`: ids 32100…32109, matched on the normalized text, not stripped of the
spaces around them. A space before a placeholder therefore becomes a lone `▁` token and the word after one
gets `▁` only if a space precedes it. Newer transformers releases split text around added tokens differently,
so the same setup is made here directly on a `tokenizers.Tokenizer` (tests compare every id with ids made by
transformers 4.45.2, tests/data/placeholder_token_ids.json).

`t5_tokens` turns a checked PromptPlan into ComfyUI's T5 token list: (id, weight) pairs, each placeholder
replaced by its learned vector (ComfyUI's tensor-token path, so T5's weights are never touched), then `</s>`
and padding. Nothing here imports ComfyUI.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

from .condition_embedding import PLACEHOLDERS
from .placeholders import PromptPlan, listed

T5_VOCAB = 32100  # T5's sentencepiece pieces plus <extra_id_*>; DreamO's placeholders come right after
DREAMO_T5_LENGTH = 512  # DreamO's max_sequence_length
COMFYUI_T5_LENGTH = 256  # stock ComfyUI pads Flux's T5 to at least this


class TokenizerSetupError(ValueError):
    """The tokenizer file cannot give DreamO's ids (wrong file, or `tokenizers` is missing)."""


class PlaceholderMismatch(ValueError):
    """T5 read placeholders somewhere the prompt checks did not (or missed one they found)."""


@dataclass(frozen=True)
class Token:
    id: int
    start: int  # character span in the encoded text
    end: int


class DreamOT5Tokenizer:
    """T5's tokenizer with DreamO's ten placeholders added as transformers 4.45.2 added them."""

    def __init__(self, tokenizer_json: str):
        try:
            from tokenizers import AddedToken, Tokenizer
        except ImportError as e:  # a dependency of transformers, so present wherever ComfyUI runs
            raise TokenizerSetupError("the 'tokenizers' package is missing (pip install tokenizers).") from e
        if not os.path.isfile(tokenizer_json):
            raise TokenizerSetupError(f"T5's tokenizer file '{tokenizer_json}' does not exist.")
        tok = Tokenizer.from_file(tokenizer_json)
        tok.no_padding()
        tok.no_truncation()
        size = tok.get_vocab_size(with_added_tokens=True)
        if size != T5_VOCAB:
            raise TokenizerSetupError(f"'{tokenizer_json}' has {size} tokens, T5's tokenizer has {T5_VOCAB}; "
                                      "DreamO's placeholder ids would not line up.")
        tok.add_tokens([AddedToken(p, single_word=False, lstrip=False, rstrip=False, normalized=True, special=False)
                        for p in PLACEHOLDERS])
        self.placeholder_ids = tuple(tok.token_to_id(p) for p in PLACEHOLDERS)
        if self.placeholder_ids != tuple(range(T5_VOCAB, T5_VOCAB + len(PLACEHOLDERS))):
            raise TokenizerSetupError(f"'{tokenizer_json}' gave placeholder ids {self.placeholder_ids}.")
        self.eos_id = tok.token_to_id("</s>")
        self.pad_id = tok.token_to_id("<pad>")
        self._tok = tok
        self.path = tokenizer_json

    def encode(self, text: str) -> list[Token]:
        """Tokens of `text` without `</s>`, with their character spans."""
        enc = self._tok.encode(text, add_special_tokens=False)
        return [Token(i, s, e) for i, (s, e) in zip(enc.ids, enc.offsets)]

    def ids(self, text: str) -> list[int]:
        """DreamO's ids for `text`, ending with `</s>`, unpadded and untruncated."""
        return [t.id for t in self.encode(text)] + [self.eos_id]

    def placeholder_index(self, token_id: int) -> Optional[int]:
        k = token_id - T5_VOCAB
        return k if 0 <= k < len(PLACEHOLDERS) else None


@functools.lru_cache(maxsize=4)
def load_tokenizer(tokenizer_json: str) -> DreamOT5Tokenizer:
    return DreamOT5Tokenizer(tokenizer_json)


def _token_weights(tokens: Sequence[Token], plan: PromptPlan, tokenizer: DreamOT5Tokenizer) -> list[float]:
    """Each token's weight: a placeholder's own (see PromptPlan), else that of its first visible character.

    A lone "▁" (a space) before a placeholder belongs to the placeholder, as DreamO trained them together.
    """
    by_start = {p.start: p.weight for p in plan.placeholders}
    is_placeholder = [tokenizer.placeholder_index(t.id) is not None for t in tokens]
    weights = []
    for i, tok in enumerate(tokens):
        if is_placeholder[i]:
            weights.append(by_start[tok.start])
            continue
        text = plan.plain[tok.start:tok.end]
        visible = next((tok.start + k for k, ch in enumerate(text) if not ch.isspace()), None)
        if visible is not None:
            weights.append(plan.char_weights[visible])
        elif i + 1 < len(tokens) and is_placeholder[i + 1]:
            weights.append(by_start[tokens[i + 1].start])
        elif plan.char_weights:
            weights.append(plan.char_weights[min(max(tok.start, 0), len(plan.char_weights) - 1)])
        else:
            weights.append(1.0)
    return weights


def t5_tokens(plan: PromptPlan, tokenizer: DreamOT5Tokenizer, vectors: Optional[torch.Tensor] = None,
              length: int = DREAMO_T5_LENGTH) -> list[tuple[Union[int, torch.Tensor], float]]:
    """ComfyUI's T5 token list for a prompt: (id or placeholder vector, weight), `</s>`, padding to `length`.

    With `vectors` (10, t5_dim) each placeholder is its learned vector; without, its id (for tests). Prompts
    longer than `length` are kept whole, as ComfyUI keeps them (DreamO would truncate at 512).
    """
    tokens = tokenizer.encode(plan.plain)
    found = [(t.start, tokenizer.placeholder_index(t.id)) for t in tokens
             if tokenizer.placeholder_index(t.id) is not None]
    expected = [(p.start, p.index) for p in plan.placeholders]
    if found != expected:
        seen = listed([f"{PLACEHOLDERS[k]} at character {s + 1}" for s, k in found]) or "none"
        raise PlaceholderMismatch(f"T5 reads placeholders in the prompt ({seen}) where the prompt checks found "
                                  f"{len(expected)}; some characters look like a placeholder to T5 only.")
    out: list[tuple[Union[int, torch.Tensor], float]] = []
    for tok, weight in zip(tokens, _token_weights(tokens, plan, tokenizer)):
        k = tokenizer.placeholder_index(tok.id)
        if k is not None and vectors is not None:
            out.append((vectors[k], weight))
        else:
            out.append((tok.id, weight))
    out.append((tokenizer.eos_id, 1.0))
    out.extend([(tokenizer.pad_id, 1.0)] * max(0, length - len(out)))
    return out
