"""DreamO prompt building: placeholders, their checks, the style instruction and ComfyUI's weighting syntax.

DreamO ties words to references with ten learned T5 tokens: `[ref#1]`…`[ref#9]` name the reference in that
input slot, `[res]` the result. They must be written exactly so (lower case, `#`, ASCII brackets); anything
close to them (`[REF#1]`, `[ref 1]`, `[ref#0]`, `[ref#10]`, `ref#2` without brackets, full-width brackets) is
reported instead of being read by T5 as ordinary words.

Weighting: ComfyUI's `(text:1.2)` syntax keeps working. T5 reads the prompt once, as a whole, with the
weighting syntax removed, so the tokens around a placeholder are exactly DreamO's; each token then carries the
weight of the text it came from. A placeholder keeps weight 1.0 even inside a weighted group — DreamO never
trained weighted placeholders — unless the user insists by weighting the placeholder alone: `([ref#1]:1.2)`.
Where two weighted pieces touch without a space (`a(red:1.2)dress`) a space is read between them, as stock
ComfyUI (which tokenizes each piece separately) does; never next to a placeholder.

Nothing here imports ComfyUI.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Mapping, Optional

from .condition_embedding import PLACEHOLDERS
from .errors import DreamOError
from .token_layout import MAX_SLOTS

STYLE_TASK = "style"
STYLE_INSTRUCTION = "generate a same style image."
_STYLE_RE = re.compile(r"generate\s+a\s+same\s+style\s+image", re.IGNORECASE)
_PLACEHOLDER_RE = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS))
# Near misses, looked for after the exact placeholders are blanked out and compatibility characters folded.
_NEAR_BRACKETED = re.compile(r"\[\s*(?:ref(?![a-z])|res(?![a-z]))[^\[\]\n]{0,16}\]?", re.IGNORECASE)
_NEAR_UNBRACKETED = re.compile(r"(?<![\[\w])ref\s*#\s*\d+\]?", re.IGNORECASE)
# ComfyUI's escapes for literal parentheses, kept out of the way while groups are parsed.
_ESCAPES = (("\\)", "\0\1"), ("\\(", "\0\2"))


@dataclass(frozen=True)
class Placeholder:
    name: str  # "[ref#2]" or "[res]"
    index: int  # row of DreamO's placeholder table (PLACEHOLDERS order)
    slot: Optional[int]  # reference slot for [ref#k], None for [res]
    start: int  # span in PromptPlan.plain
    end: int
    weight: float  # the weight its token gets


@dataclass(frozen=True)
class PromptPlan:
    text: str  # the final prompt (what CLIP-L reads), weighting syntax kept
    plain: str  # what T5 reads: weighting syntax removed
    char_weights: tuple[float, ...]  # the weight of every character of `plain`
    placeholders: tuple[Placeholder, ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class NearMiss:
    snippet: str
    position: int  # 0-based character position in the prompt
    suggestion: str


# --- ComfyUI's weighting syntax -------------------------------------------------------------------------------

def _escape(text: str) -> str:
    for literal, code in _ESCAPES:
        text = text.replace(literal, code)
    return text


def _unescape(text: str) -> str:
    for literal, code in _ESCAPES:
        text = text.replace(code, literal[-1])
    return text


def _top_level_items(text: str) -> list[str]:
    """Runs of text and `(...)` groups at nesting level 0, following ComfyUI's rules (unbalanced included)."""
    items: list[str] = []
    current = ""
    depth = 0
    for ch in text:
        if ch == "(" and depth == 0:
            if current:
                items.append(current)
            current = ch
            depth = 1
        elif ch == "(":
            current += ch
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                items.append(current + ch)
                current = ""
            else:
                current += ch
        else:
            current += ch
    if current:
        items.append(current)
    return items


def _weighted(text: str, weight: float) -> list[tuple[str, float]]:
    pieces: list[tuple[str, float]] = []
    for item in _top_level_items(text):
        if len(item) < 2 or item[0] != "(" or item[-1] != ")":
            pieces.append((item, weight))
            continue
        inner, inner_weight = item[1:-1], weight * 1.1
        colon = inner.rfind(":")
        if colon > 0:
            try:
                inner_weight = float(inner[colon + 1:])
                inner = inner[:colon]
            except ValueError:
                pass
        pieces.extend(_weighted(inner, inner_weight))
    return pieces


def parse_weights(text: str) -> list[tuple[str, float]]:
    """(piece, weight) pairs as ComfyUI's `(text:1.2)` syntax reads them; `\\(` and `\\)` are literal brackets."""
    return [(_unescape(piece), w) for piece, w in _weighted(_escape(text), 1.0)]


# --- placeholders -----------------------------------------------------------------------------------------------

def find_placeholders(text: str) -> list[tuple[str, int, int]]:
    """(placeholder, start, end) for every exact placeholder in `text`."""
    return [(m.group(0), m.start(), m.end()) for m in _PLACEHOLDER_RE.finditer(text)]


def _fold(text: str) -> str:
    """Compatibility characters folded to their plain form (`［` -> `[`, `＃` -> `#`), one character for one."""
    out = []
    for ch in text:
        folded = unicodedata.normalize("NFKC", ch)
        out.append(folded if len(folded) == 1 else ch)
    return "".join(out)


def _suggest(snippet: str) -> str:
    digits = re.findall(r"\d+", snippet)
    if not digits:
        if re.search(r"res", snippet, re.IGNORECASE) and not re.search(r"ref", snippet, re.IGNORECASE):
            return "[res]"
        return "one of [ref#1]…[ref#9] or [res]"
    slot = int(digits[0])
    if 1 <= slot <= MAX_SLOTS:
        return f"[ref#{slot}]"
    return f"[ref#1]…[ref#{MAX_SLOTS}] (there is no slot {slot})"


def find_near_misses(text: str) -> list[NearMiss]:
    """Text that looks like a placeholder but is not one, in the order it appears."""
    blanked = _PLACEHOLDER_RE.sub(lambda m: " " * len(m.group(0)), text)
    folded = _fold(blanked)
    found: dict[int, NearMiss] = {}
    for pattern in (_NEAR_BRACKETED, _NEAR_UNBRACKETED):
        for m in pattern.finditer(folded):
            if any(m.start() < nm.position + len(nm.snippet) and nm.position < m.end() for nm in found.values()):
                continue
            snippet = text[m.start():m.end()].strip()
            found[m.start()] = NearMiss(snippet, m.start(), _suggest(folded[m.start():m.end()]))
    return [found[k] for k in sorted(found)]


def describe_near_miss(nm: NearMiss) -> str:
    """How a near miss is named in DreamOTextEncode's error (and, with the same words, in the editor)."""
    return f"'{nm.snippet}' at character {nm.position + 1} (did you mean {nm.suggestion}?)"


def has_style_instruction(text: str) -> bool:
    return _STYLE_RE.search(text) is not None


def with_style_instruction(text: str) -> str:
    """The prompt starting with DreamO's style instruction (unchanged if it already has it)."""
    if has_style_instruction("".join(piece for piece, _ in parse_weights(text))):
        return text
    return f"{STYLE_INSTRUCTION} {text.lstrip()}" if text.strip() else STYLE_INSTRUCTION


def _plain_text(pieces: list[tuple[str, float]]):
    """Join weighted pieces into the text T5 reads: characters, their weights and each piece's span."""
    chars: list[str] = []
    weights: list[float] = []
    spans: list[tuple[int, int, str, float]] = []
    for piece, weight in pieces:
        if not piece:
            continue
        if chars and not chars[-1].isspace() and not piece[0].isspace():
            left = "".join(chars[-8:])
            if not any(left.endswith(p) for p in PLACEHOLDERS) and not any(piece.startswith(p) for p in PLACEHOLDERS):
                chars.append(" ")  # a word break, as stock ComfyUI's piece-by-piece tokenization has
                weights.append(weights[-1])
        start = len(chars)
        chars.extend(piece)
        weights.extend([weight] * len(piece))
        spans.append((start, len(chars), piece, weight))
    return "".join(chars), tuple(weights), spans


def _placeholder_weight(start: int, end: int, name: str, spans) -> float:
    for s, e, piece, weight in spans:
        if s <= start and end <= e:
            return weight if piece.strip() == name else 1.0
    return 1.0


def _slot_of(name: str) -> Optional[int]:
    m = re.fullmatch(r"\[ref#(\d)\]", name)
    return int(m.group(1)) if m else None


def _slot_list(slots) -> str:
    return ", ".join(f"ref_{s}" for s in sorted(slots))


def _missing_slots(placeholders, references: Mapping[int, str]) -> Optional[tuple[str, str]]:
    """(problem, fix) when a placeholder names an empty slot, else None."""
    present = sorted(references)
    missing = sorted({p.slot for p in placeholders if p.slot is not None and p.slot not in references})
    if not missing:
        return None
    names = ", ".join(f"[ref#{s}]" for s in missing)
    if present:
        have = f"references are connected to {_slot_list(present)}"
        rename = f", or use the placeholder of a connected slot ({', '.join(f'[ref#{s}]' for s in present)})"
    else:
        have, rename = "no reference is connected", ""
    return (f"the prompt names {names} but there is no reference in {_slot_list(missing)}; {have}.",
            f"connect the reference meant by {names} to {_slot_list(missing)}{rename}.")


def _unnamed_note(placeholders, references: Mapping[int, str]) -> list[str]:
    unnamed = sorted(set(references) - {p.slot for p in placeholders})
    return [f"{_slot_list(unnamed)} is connected but not named in the prompt"] if placeholders and unnamed else []


def _near_miss_problem(near: list[NearMiss]) -> tuple[str, str]:
    listed = "; ".join(describe_near_miss(nm) for nm in near)
    return (f"the prompt has text that looks like a DreamO placeholder but is not one, so T5 would read it as "
            f"ordinary words: {listed}.",
            "write placeholders exactly as [ref#1]…[ref#9] or [res]: lower case, '#', no spaces, ASCII square "
            "brackets, slots 1 to 9.")


def prompt_error(node: str, input_name: str, problems: list[tuple[str, str]]) -> DreamOError:
    """One error naming every problem of a prompt (each with its fix), so fixing one does not reveal the next."""
    if len(problems) == 1:
        return DreamOError(node, input_name, *problems[0])
    problem = f"the prompt has {len(problems)} problems: " + " ".join(
        f"({i}) {p}" for i, (p, _) in enumerate(problems, start=1))
    fix = " ".join(f"({i}) {f}" for i, (_, f) in enumerate(problems, start=1))
    return DreamOError(node, input_name, problem, fix)


def _style(text: str, references: Mapping[int, str], add: bool) -> tuple[str, list[str]]:
    """The prompt with DreamO's style instruction when a style reference needs it, and a note saying so."""
    styles = sorted(s for s, task in references.items() if task == STYLE_TASK)
    if not styles or has_style_instruction("".join(piece for piece, _ in parse_weights(text))):
        return text, []
    if add:
        return with_style_instruction(text), [
            f"added '{STYLE_INSTRUCTION}' at the start because {_slot_list(styles)} is a style reference "
            "(turn off add_style_instruction to keep the prompt as written)"]
    return text, [f"{_slot_list(styles)} is a style reference but the prompt lacks '{STYLE_INSTRUCTION}', which "
                  "DreamO's style task was trained with"]


def build_prompt(text: str, references: Optional[Mapping[int, str]] = None, add_style_instruction: bool = True,
                 node: str = "DreamOTextEncode", input_name: str = "text") -> PromptPlan:
    """Check a prompt and plan how T5 reads it.

    `references` maps each connected slot to its task ("ip", "id", "style"); None means no reference was
    connected, so slots are not checked. Raises DreamOError naming the node, the placeholder and the fix.
    """
    if not isinstance(text, str):
        raise DreamOError(node, input_name, f"the prompt must be text, got {type(text).__name__}.",
                          "connect a STRING or type the prompt in the box.")
    problems = []
    near = find_near_misses(text)
    if near:
        problems.append(_near_miss_problem(near))
    text, notes = _style(text, references or {}, add_style_instruction)
    plain, char_weights, spans = _plain_text(parse_weights(text))
    placeholders = tuple(
        Placeholder(name=name, index=PLACEHOLDERS.index(name), slot=_slot_of(name), start=start, end=end,
                    weight=_placeholder_weight(start, end, name, spans))
        for name, start, end in find_placeholders(plain))
    if references is not None:
        missing = _missing_slots(placeholders, references)
        if missing:
            problems.append(missing)
        else:
            notes += _unnamed_note(placeholders, references)
    if problems:
        raise prompt_error(node, input_name, problems)
    return PromptPlan(text=text, plain=plain, char_weights=char_weights, placeholders=placeholders,
                      notes=tuple(notes))


def check_prompt(text: str, references: Optional[Mapping[int, str]] = None, add_style_instruction: bool = True,
                 node: str = "DreamOTextEncode", input_name: str = "text") -> dict:
    """What `build_prompt` would say about a prompt, as plain data for the editor (JSON-ready).

    `error` is the exact message `build_prompt` raises (None when the prompt is accepted), `notes` its notes;
    `marks` are spans of the prompt as written (0-based, end exclusive): every exact placeholder ("placeholder"),
    placeholders whose slot has no reference ("empty_slot") and near misses ("near_miss"), each with the words
    the error uses for it. Slots are only checked when `references` names at least one, as in the node.
    """
    refs = dict(references) if references else None
    marks = []
    for nm in find_near_misses(text):
        marks.append({"kind": "near_miss", "start": nm.position, "end": nm.position + len(nm.snippet),
                      "text": nm.snippet, "message": f"looks like a DreamO placeholder but is not one: "
                      f"{describe_near_miss(nm)}"})
    for name, start, end in find_placeholders(text):
        slot = _slot_of(name)
        if refs is not None and slot is not None and slot not in refs:
            marks.append({"kind": "empty_slot", "start": start, "end": end, "text": name, "slot": slot,
                          "message": f"the prompt names {name} but there is no reference in {_slot_list([slot])}"})
        else:
            marks.append({"kind": "placeholder", "start": start, "end": end, "text": name, "slot": slot})
    marks.sort(key=lambda m: m["start"])
    try:
        plan = build_prompt(text, refs, add_style_instruction, node=node, input_name=input_name)
    except DreamOError as e:
        return {"error": str(e), "notes": [], "marks": marks}
    return {"error": None, "notes": list(plan.notes), "marks": marks}
