"""Which widgets the frontend shows, declared with the inputs (read by web/widget_rules.js).

An input whose options carry `SHOWN_IF` is shown while any of its conditions holds: `[widget, "in", values]` or
`[widget, "not_in", values]`; one with `FOLLOWS` while that widget is shown and its value is not 'none'. Hidden
widgets keep their values: saved workflows and API prompts carry every input exactly as before. `advanced: True`
(ComfyUI's own option) folds an input away on frontends that fold advanced inputs.
"""
from __future__ import annotations

SHOWN_IF = "dreamo_shown_if"
FOLLOWS = "dreamo_follows"


def shown_if(*conditions) -> dict:
    return {SHOWN_IF: [list(c) for c in conditions]}


def follows(widget: str) -> dict:
    return {FOLLOWS: widget}
