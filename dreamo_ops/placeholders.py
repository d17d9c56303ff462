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

Bounded work: the checks run while the user types (the editor's route) and in the node, so every step here is
linear in the prompt's length (no quadratic scans, no recursion): prompts longer than `MAX_PROMPT_CHARS` and
weighting groups nested deeper than `MAX_NESTING` are refused, and an error names at most `MAX_LISTED` problems
and counts the rest.

Nothing here imports ComfyUI.
"""
from __future__ import annotations

import bisect
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Mapping, Optional

from .errors import DreamOError

PLACEHOLDERS = tuple(f"[ref#{i}]" for i in range(1, 10)) + ("[res]",)
"""DreamO's learned T5 tokens, in the order of its placeholder table."""
MAX_SLOTS = len(PLACEHOLDERS) - 1
"""Reference slots [ref#1]…[ref#9] (token_layout.MAX_SLOTS; this module stays free of torch for the route's
worker process)."""

MAX_PROMPT_CHARS = 100_000
"""The longest prompt DreamO checks and encodes (about 25,000 T5 tokens; DreamO reads 512)."""
MAX_NESTING = 32
"""The deepest weighting group, `((…))`, a prompt may nest: ComfyUI's own tokenizer re-reads the text once per
level (recursively), so deeper nesting would cost it time and stack; no prompt needs more."""
MAX_LISTED = 5
"""Problems an error names one by one; the others are counted."""
MAX_MARKS = 200
"""Marks the editor's check returns (the first ones in the prompt); the others are counted in `marks_left_off`."""
_SNIPPET_SHOWN = 40
"""Characters of a near miss quoted in a message."""

STYLE_TASK = "style"
STYLE_INSTRUCTION = "generate a same style image."
_STYLE_RE = re.compile(r"generate\s+a\s+same\s+style\s+image", re.IGNORECASE)
_PLACEHOLDER_RE = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS))
# Near misses, looked for after the exact placeholders are blanked out and compatibility characters folded.
_NEAR_BRACKETED = re.compile(r"\[\s*(?:ref(?![a-z])|res(?![a-z]))[^\[\]\n]{0,16}\]?", re.IGNORECASE)
_NEAR_UNBRACKETED = re.compile(r"(?<![\[\w])ref\s*#\s*\d+\]?", re.IGNORECASE)
_PARENS = re.compile(r"[()]")
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


class PromptTooComplex(ValueError):
    """The weighting syntax asks for more than DreamO reads: too deep a nesting, or a weight that is no number."""


def _weighted(text: str, weight: float) -> list[tuple[str, float]]:
    """ComfyUI's recursive `token_weights(text, weight)` (pieces in the same order, same weights) without
    recursion and in O(n log n): brackets are found once, and each level jumps from group to group.

    ComfyUI's rules: a running count of brackets (never clamped, so a stray ")" makes the next "(" only bring it
    back to 0); a group opens at "(" when the count is 0 and closes at the ")" that brings it back to 0; an
    unclosed last group counts as a group only when it ends with ")". Its inside is read again the same way with a
    fresh count, which here is the count at that point of the whole text, so one table serves every level.
    """
    pos = [m.start() for m in _PARENS.finditer(text)]
    opens_at: dict[int, list[int]] = {}  # count before it → indices (into pos) of "(" seen at that count
    closes_at: dict[int, list[int]] = {}  # count after it → indices of ")" that leave that count
    count = 0
    for j, p in enumerate(pos):
        if text[p] == "(":
            opens_at.setdefault(count, []).append(j)
            count += 1
        else:
            count -= 1
            closes_at.setdefault(count, []).append(j)

    def first(table: list[int], lo: int, hi: int):
        k = bisect.bisect_left(table, lo)
        return table[k] if k < len(table) and table[k] < hi else None

    def group(ga: int, gb: int, gja: int, gjb: int, base: int, w: float, depth: int):
        """The stack entry of the inside of the group text[ga:gb] (brackets gja..gjb-1 inside it)."""
        if depth >= MAX_NESTING:
            raise PromptTooComplex(f"weighting brackets are nested more than {MAX_NESTING} levels deep")
        ia, ib, inner_weight = ga + 1, gb - 1, w * 1.1
        colon = text.rfind(":", ia, ib)
        if colon > ia:
            try:
                inner_weight = float(text[colon + 1:ib])
                ib = colon  # a weight is a number: no bracket after the colon
            except ValueError:
                pass
        if not math.isfinite(inner_weight):
            raise PromptTooComplex(f"the weight of '{_shorten(_unescape(text[ga:gb]))}' is {inner_weight}, not a "
                                   "finite number")
        return ia, ib, gja, gjb, base + 1, inner_weight, depth + 1, True

    pieces: list[tuple[str, float]] = []
    # (start, end, first bracket, end bracket, count at start, weight, depth, is a group's inside)
    stack = [(0, len(text), 0, len(pos), 0, weight, 0, True)]
    while stack:
        a, b, ja, jb, base, w, depth, inside = stack.pop()
        if not inside:
            pieces.append((text[a:b], w))
            continue
        items = []
        cur, j = a, ja
        opens, closes = opens_at.get(base, []), closes_at.get(base, [])
        while cur < b:
            jo = first(opens, j, jb)
            if jo is None:
                break
            if pos[jo] > cur:
                items.append((cur, pos[jo], 0, 0, base, w, depth, False))
            jc = first(closes, jo + 1, jb)
            if jc is None:  # unclosed: runs to the end; a group only if it ends with ")"
                if b - pos[jo] >= 2 and text[b - 1] == ")":
                    items.append(group(pos[jo], b, jo + 1, jb - 1, base, w, depth))
                else:
                    items.append((pos[jo], b, 0, 0, base, w, depth, False))
                cur = b
                break
            items.append(group(pos[jo], pos[jc] + 1, jo + 1, jc, base, w, depth))
            cur, j = pos[jc] + 1, jc + 1
        if cur < b:
            items.append((cur, b, 0, 0, base, w, depth, False))
        stack.extend(reversed(items))
    return pieces


def parse_weights(text: str) -> list[tuple[str, float]]:
    """(piece, weight) pairs as ComfyUI's `(text:1.2)` syntax reads them; `\\(` and `\\)` are literal brackets.

    Raises PromptTooComplex for groups nested deeper than MAX_NESTING or a weight that is not a finite number."""
    return [(_unescape(piece), w) for piece, w in _weighted(_escape(text), 1.0)]


# --- placeholders -----------------------------------------------------------------------------------------------

def find_placeholders(text: str) -> list[tuple[str, int, int]]:
    """(placeholder, start, end) for every exact placeholder in `text`."""
    return [(m.group(0), m.start(), m.end()) for m in _PLACEHOLDER_RE.finditer(text)]


def _fold(text: str) -> str:
    """Compatibility characters folded to their plain form (`［` -> `[`, `＃` -> `#`), one character for one."""
    if text.isascii():
        return text
    table = {}
    for ch in set(text):
        if not ch.isascii():
            folded = unicodedata.normalize("NFKC", ch)
            if len(folded) == 1 and folded != ch:
                table[ord(ch)] = folded
    return text.translate(table)


def _suggest(snippet: str) -> str:
    digits = re.findall(r"\d+", snippet)
    if not digits:
        if re.search(r"res", snippet, re.IGNORECASE) and not re.search(r"ref", snippet, re.IGNORECASE):
            return "[res]"
        return "one of [ref#1]…[ref#9] or [res]"
    number = digits[0].lstrip("0") or "0"
    if len(number) == 1 and 1 <= int(number) <= MAX_SLOTS:
        return f"[ref#{number}]"
    return f"[ref#1]…[ref#{MAX_SLOTS}] (there is no slot {_shorten(number, 12)})"


def find_near_misses(text: str) -> list[NearMiss]:
    """Text that looks like a placeholder but is not one, in the order it appears (linear in the text's length)."""
    blanked = _PLACEHOLDER_RE.sub(lambda m: " " * len(m.group(0)), text)
    folded = _fold(blanked)
    found = [(m.start(), m.end()) for m in _NEAR_BRACKETED.finditer(folded)]  # never overlap each other
    starts = [s for s, _ in found]
    for m in _NEAR_UNBRACKETED.finditer(folded):  # kept unless it overlaps a bracketed one
        k = bisect.bisect_left(starts, m.end())  # bracketed near misses starting before this one ends
        if k and found[k - 1][1] > m.start() and starts[k - 1] < m.end():
            continue
        found.append((m.start(), m.end()))
    found.sort()
    return [NearMiss(text[s:e].strip(), s, _suggest(folded[s:e])) for s, e in found]


def _shorten(text: str, limit: int = _SNIPPET_SHOWN) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def describe_near_miss(nm: NearMiss) -> str:
    """How a near miss is named in DreamOTextEncode's error (and, with the same words, in the editor)."""
    return f"'{_shorten(nm.snippet)}' at character {nm.position + 1} (did you mean {nm.suggestion}?)"


def listed(items: list[str], limit: int = MAX_LISTED) -> str:
    """The first `limit` of `items` joined with "; ", and how many more there are."""
    shown = "; ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown}; and {len(items) - limit:,} more"


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


def _placeholder_weight(start: int, end: int, name: str, spans, span_starts) -> float:
    """The weight of the placeholder at plain[start:end]: its piece's if the piece is the placeholder alone, else
    1.0 (`spans` are in order and do not overlap; `span_starts` are their starts, for a binary search)."""
    k = bisect.bisect_right(span_starts, start) - 1
    if k >= 0:
        s, e, piece, weight = spans[k]
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
    return (f"the prompt has text that looks like a DreamO placeholder but is not one, so T5 would read it as "
            f"ordinary words: {listed([describe_near_miss(nm) for nm in near])}.",
            "write placeholders exactly as [ref#1]…[ref#9] or [res]: lower case, '#', no spaces, ASCII square "
            "brackets, slots 1 to 9.")


def prompt_error(node: str | None, input_name: str, problems: list[tuple[str, str]]) -> DreamOError:
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


def _too_long(text: str, node: str, input_name: str) -> Optional[DreamOError]:
    if len(text) <= MAX_PROMPT_CHARS:
        return None
    return DreamOError(node, input_name, f"the prompt is {len(text):,} characters long; DreamO reads prompts of at "
                       f"most {MAX_PROMPT_CHARS:,} characters.", "shorten the prompt (T5 reads the first 512 tokens "
                       "as DreamO was trained, about 2,000 characters of English).")


def build_prompt(text: str, references: Optional[Mapping[int, str]] = None, add_style_instruction: bool = True,
                 node: str | None = None, input_name: str = "text") -> PromptPlan:
    """Check a prompt and plan how T5 reads it.

    `references` maps each connected slot to its task ("ip", "id", "style"); None means no reference was
    connected, so slots are not checked. Raises DreamOError naming `node` (the caller's id; None: the caller names
    itself), the input, the placeholder and the fix.
    """
    if not isinstance(text, str):
        raise DreamOError(node, input_name, f"the prompt must be text, got {type(text).__name__}.",
                          "connect a STRING or type the prompt in the box.")
    too_long = _too_long(text, node, input_name)
    if too_long:
        raise too_long
    return _build(text, references, add_style_instruction, node, input_name, find_near_misses(text))


def _build(text: str, references, add_style_instruction: bool, node: str, input_name: str,
           near: list[NearMiss]) -> PromptPlan:
    """build_prompt once the length is checked and the near misses are found: one error names every problem."""
    problems = []
    if near:
        problems.append(_near_miss_problem(near))
    try:
        text, notes = _style(text, references or {}, add_style_instruction)
        pieces = parse_weights(text)
    except PromptTooComplex as e:
        problems.append((f"{e}.", f"use at most {MAX_NESTING} levels of (…) and numbers as weights, like "
                         "(red dress:1.2)."))
        raise prompt_error(node, input_name, problems) from None
    plain, char_weights, spans = _plain_text(pieces)
    span_starts = [sp[0] for sp in spans]
    placeholders = tuple(
        Placeholder(name=name, index=PLACEHOLDERS.index(name), slot=_slot_of(name), start=start, end=end,
                    weight=_placeholder_weight(start, end, name, spans, span_starts))
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
                 node: str | None = None, input_name: str = "text") -> dict:
    """What `build_prompt` would say about a prompt, as plain data for the editor (JSON-ready).

    `error` is the exact message `build_prompt` raises (None when the prompt is accepted), `notes` its notes;
    `marks` are spans of the prompt as written (0-based, end exclusive): every exact placeholder ("placeholder"),
    placeholders whose slot has no reference ("empty_slot") and near misses ("near_miss"), each with the words
    the error uses for it; the first MAX_MARKS of them, the others counted in `marks_left_off`. Slots are only
    checked when `references` names at least one, as in the node. A prompt over MAX_PROMPT_CHARS gets the node's
    error and no marks, without being read.
    """
    refs = dict(references) if references else None
    if not isinstance(text, str) or len(text) > MAX_PROMPT_CHARS:
        try:
            build_prompt(text, refs, add_style_instruction, node=node, input_name=input_name)
        except DreamOError as e:  # always: not text, or too long (refused before it is read)
            return {"error": str(e), "notes": [], "marks": [], "marks_left_off": 0}
    near = find_near_misses(text)
    marks = []
    for nm in near:
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
    left_off = max(0, len(marks) - MAX_MARKS)
    marks = marks[:MAX_MARKS]
    try:
        plan = _build(text, refs, add_style_instruction, node, input_name, near)
    except DreamOError as e:
        return {"error": str(e), "notes": [], "marks": marks, "marks_left_off": left_off}
    return {"error": None, "notes": list(plan.notes), "marks": marks, "marks_left_off": left_off}
