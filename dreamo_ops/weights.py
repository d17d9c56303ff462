"""Read DreamO's learned embeddings out of its released safetensors files.

`dreamo.safetensors` holds the main LoRA plus three embedding tensors; the ComfyUI `embedding.safetensors`
holds only the task and index embeddings. Only safetensors is read: nothing is ever unpickled.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and safetensors are imported where they are used: `dreamo-doctor` lists files without them
    from .condition_embedding import DreamOEmbeddings

TASK_KEY = "dreamo_task_embedding.weight"
INDEX_KEY = "dreamo_idx_embedding.weight"
T5_KEY = "dreamo_t5_embedding.weight"
EMBEDDING_KEYS = (TASK_KEY, INDEX_KEY, T5_KEY)
PLACEHOLDER_COUNT = 10
SAFETENSORS_EXTENSIONS = (".safetensors", ".sft")


class WeightFileError(ValueError):
    """A weights file that cannot be used; the message names the file and what is wrong."""


class UnreadableFileError(WeightFileError):
    """A file that is not readable as what its name says (truncated, corrupted, another format): get it again."""


def open_safetensors(path: str):
    name = os.path.basename(path)
    if not path.lower().endswith(SAFETENSORS_EXTENSIONS):
        raise WeightFileError(
            f"'{name}' is not a .safetensors file; DreamO files are read only as safetensors "
            "(pickle-based .ckpt/.pt/.bin files are refused because loading them can run code)."
        )
    if not os.path.isfile(path):
        raise WeightFileError(f"'{path}' does not exist.")
    from safetensors import safe_open

    try:
        return safe_open(path, framework="pt", device="cpu")
    except Exception as e:  # safetensors raises its own error types for bad headers
        what = what_else(path)
        problem = f": {what}" if what else f" (truncated or corrupted?): {as_sentence(e)}"
        raise UnreadableFileError(f"'{name}' is not a readable safetensors file{problem}") from e


def as_sentence(e: Exception) -> str:
    """A library's error text as the end of a sentence (the node's message goes on with 'Fix: ...')."""
    text = str(e).strip() or type(e).__name__
    return text if text.endswith((".", "!", "?")) else text + "."


# Leading bytes of formats a file with a .safetensors name turns out to be, most often by renaming.
_SIGNATURES = (
    (b"\x89PNG", "it is a PNG picture, not model weights."),
    (b"\xff\xd8\xff", "it is a JPEG picture, not model weights."),
    (b"PK\x03\x04", "it is a zip archive (a PyTorch .pt/.ckpt checkpoint renamed?); it was not opened, because "
                    "unpickling a checkpoint can run code."),
    (b"GGUF", "it is a GGUF file (a renamed .gguf; load GGUF models with ComfyUI-GGUF's loaders)."),
)


def what_else(path: str) -> str | None:
    """What a file that is not valid safetensors is instead, from its first bytes (empty, a picture, a pickle,
    a zip checkpoint, GGUF, a web page), or None when it looks like nothing known (a cut or damaged file)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    if not head:
        return "it is empty (0 bytes: an interrupted download or copy?)."
    for magic, what in _SIGNATURES:
        if head.startswith(magic):
            return what
    if head[0] == 0x80 and 2 <= head[1] <= 5:  # the PROTO opcode that starts every modern pickle
        return ("it is a Python pickle (a .ckpt/.pt/.bin file renamed?); it was not unpickled, because that can "
                "run code.")
    if head.lstrip()[:1] == b"<":
        return "it is a web page or other text, not model weights (a failed download?)."
    return None


def _last_rows(f, key: str, count: int):
    """The last `count` rows of a 2-D tensor, read without loading the whole (vocab-sized) table."""
    sl = f.get_slice(key)
    shape = sl.get_shape()
    if len(shape) != 2 or shape[0] < count:
        return f.get_tensor(key)  # wrong shape: let the caller's shape check report it
    return sl[shape[0] - count:shape[0]]


def read_embeddings(path: str) -> DreamOEmbeddings:
    """Task, index and (when present) placeholder embeddings from a DreamO weights file."""
    from .condition_embedding import DreamOEmbeddings

    name = os.path.basename(path)
    with open_safetensors(path) as f:
        keys = set(f.keys())
        missing = [k for k in (TASK_KEY, INDEX_KEY) if k not in keys]
        if missing:
            raise WeightFileError(
                f"'{name}' has no DreamO embeddings (missing {', '.join(missing)}). Pick dreamo.safetensors "
                "from ByteDance/DreamO, or the ComfyUI embedding.safetensors."
            )
        try:
            task = f.get_tensor(TASK_KEY)
            index = f.get_tensor(INDEX_KEY)
            t5 = _last_rows(f, T5_KEY, PLACEHOLDER_COUNT) if T5_KEY in keys else None
        except Exception as e:
            raise UnreadableFileError(f"'{name}' could not be read (truncated or corrupted?): {as_sentence(e)}") from e
    if task.ndim != 2 or task.shape[0] != 2:
        raise WeightFileError(f"'{name}': {TASK_KEY} has shape {tuple(task.shape)}, expected (2, hidden).")
    if index.ndim != 2 or index.shape[0] != 10 or index.shape[1] != task.shape[1]:
        raise WeightFileError(
            f"'{name}': {INDEX_KEY} has shape {tuple(index.shape)}, expected (10, {task.shape[1]})."
        )
    placeholders = None
    if t5 is not None:
        if t5.ndim != 2 or t5.shape[0] != PLACEHOLDER_COUNT:
            raise WeightFileError(
                f"'{name}': {T5_KEY} has too few rows or dimensions, expected (vocab + 10, t5_dim)."
            )
        placeholders = t5
    return DreamOEmbeddings(task=task.float(), index=index.float(), placeholders=
                            None if placeholders is None else placeholders.float(), source=name)
