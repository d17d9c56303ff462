"""DreamO Text Encode and DreamO Apply must mean the same picture by the same slot.

A prompt's `[ref#k]` is the reference in DreamO Apply's socket `ref_k`. DreamO Text Encode checks the prompt (and
adds the style instruction) against the references connected to *its* sockets; nothing tied those to Apply's, so
swapping two references on Apply alone went unnoticed. Text Encode now leaves a `PromptRecord` in its
conditioning (key `RECORD_KEY`, ignored by everything else): the slots the prompt names and, when references were
connected to it, each one's task and a fingerprint of its latent. DreamO Apply compares the references it adds with
it (`check_apply`), and the sampling run compares the final set (`check_final`), so:

- references connected to both nodes must agree slot by slot (the same DreamO Reference Encode output);
- references connected to DreamO Apply only are enough: the slots the prompt names are checked against Apply's.

Old workflows and API prompts stay valid: conditioning without a record (any other text encoder, an older pack) is
never checked, and agreeing references pass. Nothing here imports ComfyUI.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping, Optional

import torch

from .errors import input_error

RECORD_KEY = "dreamo_prompt"
TEXT_ENCODE = "DreamO Text Encode"
ONCE_IS_ENOUGH = ("connect each DreamO Reference Encode output to the same ref_k socket on DreamO Apply and DreamO "
                  "Text Encode, or disconnect the references from DreamO Text Encode (connected to DreamO Apply only "
                  "is enough)")


@dataclass(frozen=True)
class PromptRecord:
    """What DreamO Text Encode checked: `named` slots of the prompt's [ref#k]; `references` the (slot, task,
    fingerprint) it was given, or None when none was connected; whether the encoded prompt has the style
    instruction."""
    named: tuple[int, ...]
    references: Optional[tuple[tuple[int, str, str], ...]]
    style_instruction: bool

    def given(self) -> Optional[dict[int, tuple[str, str]]]:
        return None if self.references is None else {s: (t, f) for s, t, f in self.references}


def fingerprint(latent: torch.Tensor) -> str:
    """A short digest of a reference latent: equal for the same DreamO Reference Encode output."""
    t = latent.detach().to("cpu", torch.float32).contiguous()
    h = hashlib.blake2b(digest_size=12)
    h.update(str(tuple(t.shape)).encode())
    h.update(t.numpy().tobytes())
    return h.hexdigest()


def make_record(named, references: Optional[Mapping[int, object]], style_instruction: bool) -> PromptRecord:
    """`references`: {slot: DreamOReference} connected to Text Encode (None when none was)."""
    given = None
    if references:
        given = tuple((slot, str(ref.task), fingerprint(ref.latent)) for slot, ref in sorted(references.items()))
    return PromptRecord(tuple(sorted({s for s in named if s is not None})), given, bool(style_instruction))


def _slots(slots) -> str:
    return ", ".join(f"ref_{s}" for s in sorted(slots)) or "none"


def check_apply(record: PromptRecord, provided: Mapping[int, tuple[str, str]]) -> None:
    """DreamO Apply's check of the slots it adds ({slot: (task, fingerprint)}) against Text Encode's references: a
    DreamOError on the Apply's input ref_k. Slots Text Encode has but this Apply does not add are left to
    `check_final` (a second Apply may add them)."""
    given = record.given()
    if given is None:
        return
    for slot in sorted(provided):
        if given.get(slot) == provided[slot]:
            continue
        if slot not in given:
            problem = (f"{TEXT_ENCODE} has no reference in ref_{slot} (it has {_slots(given)}), so its prompt check "
                       f"and style instruction did not count the one in ref_{slot} here.")
        else:
            elsewhere = [k for k, v in given.items() if v == provided[slot] and k != slot]
            where = (f" (it got this picture in ref_{elsewhere[0]}: are ref_{slot} and ref_{elsewhere[0]} swapped?)"
                     if elsewhere else "")
            problem = (f"the reference in ref_{slot} here is not the one {TEXT_ENCODE} got in ref_{slot}{where}; "
                       f"[ref#{slot}] in the prompt means this node's ref_{slot}.")
        raise input_error(f"ref_{slot}", problem, ONCE_IS_ENOUGH + ".")


def check_final(record: PromptRecord, final: Mapping[int, str]) -> None:
    """When sampling starts, with every DreamO Apply's references on the positive ({slot: fingerprint}): a DreamOError
    on DreamO Apply's input ref_k for a disagreement left (the caller names the node)."""
    given = record.given()
    if given is not None:
        missing = sorted(set(given) - set(final))
        if missing:
            k = missing[0]
            raise input_error(f"ref_{k}", f"{TEXT_ENCODE} was given a reference in ref_{k} but no DreamO Apply on its "
                              f"conditioning has one (they have {_slots(final)}).", f"{ONCE_IS_ENOUGH}.")
        return
    missing = sorted(set(record.named) - set(final))
    if missing:
        names = ", ".join(f"[ref#{s}]" for s in missing)
        raise input_error(f"ref_{missing[0]}", f"the prompt names {names} but there is no reference in "
                          f"{_slots(missing)} (references are connected to {_slots(final)}).",
                          f"connect the reference meant by {names} to {_slots(missing)} on DreamO Apply, or use the "
                          "placeholder of a connected slot.")


def style_note(record: PromptRecord, tasks: Mapping[int, str]) -> Optional[str]:
    """DreamO Apply's note when it adds a style reference that Text Encode never saw and the prompt lacks the style
    instruction (Text Encode adds it itself when the style reference is connected to it)."""
    styles = sorted(s for s, task in tasks.items() if task == "style")
    if not styles or record.style_instruction or record.references is not None:
        return None
    return (f"{_slots(styles)} is a style reference but the prompt lacks 'generate a same style image.': connect it "
            f"to {TEXT_ENCODE}'s {_slots(styles)} too (the instruction is then added) or write it in the prompt")
