"""Which ComfyUI releases the pack supports, and the comparison of release strings.

`MIN_COMFYUI` is the oldest release the pack is tested on (the test suite runs on it and on the newest); it
must equal `requires-comfyui` in pyproject.toml (a test checks). Older releases lack or change extension
points DreamO relies on (Flux "uxo" reference positions and `post_input` from 0.3.57, the attention override
that reaches Flux's blocks from 0.3.60), and on 0.3.56 DreamO would be silently not applied.
"""
from __future__ import annotations

import re

MIN_COMFYUI = "0.3.64"


def parse_version(text: str) -> tuple[int, ...] | None:
    """(major, minor, patch) of a release string such as '0.3.64' or 'v0.33.0-rc1'; None if unreadable."""
    m = re.match(r"\s*v?(\d+)\.(\d+)(?:\.(\d+))?", str(text or ""))
    if not m:
        return None
    return tuple(int(g or 0) for g in m.groups())


def unsupported_reason(running: str | None, minimum: str = MIN_COMFYUI) -> str | None:
    """Why a ComfyUI release cannot run the pack, or None when it can."""
    parsed = parse_version(running) if running else None
    if parsed is None:
        return (f"this ComfyUI does not report its version (no comfyui_version.py, which every release since "
                f"early 2025 has); DreamO needs ComfyUI {minimum} or newer")
    if parsed < parse_version(minimum):
        return f"this is ComfyUI {running}; DreamO needs ComfyUI {minimum} or newer"
    return None
