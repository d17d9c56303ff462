"""On a ComfyUI older than the pack supports, the nodes still load (workflows open) but refuse to run.

Registering nothing would turn every DreamO workflow into a "missing nodes" dialog with no reason given;
running anyway would silently produce non-DreamO images (the extension points differ). So each node's
function is replaced, on a subclass, by one that raises the reason and the fix.
"""
from __future__ import annotations

import logging

from ..dreamo_ops.errors import DreamOError
from ..dreamo_ops.host_version import MIN_COMFYUI, unsupported_reason

INPUT = "ComfyUI version"
FIX = f"update ComfyUI to {MIN_COMFYUI} or newer (git pull, or ComfyUI-Manager's 'Update ComfyUI'), then restart."


def running_comfyui_version() -> str | None:
    try:
        import comfyui_version
    except ImportError:
        return None
    return getattr(comfyui_version, "__version__", None)


def refusing(node_cls, reason: str):
    """A subclass of `node_cls` (same id, inputs, outputs) whose function raises `reason` with the fix."""
    def refuse(self, *args, **kwargs):
        raise DreamOError(node_cls.NODE_ID, INPUT, reason + ".", FIX)

    return type(node_cls.__name__, (node_cls,), {node_cls.FUNCTION: refuse,
                                                 "DESCRIPTION": f"UNAVAILABLE: {reason}. " + node_cls.DESCRIPTION})


def guard(nodes, running: str | None):
    """The node classes to register on ComfyUI `running`: as they are, or refusing ones with a logged reason."""
    reason = unsupported_reason(running)
    if reason is None:
        return tuple(nodes)
    logging.error("DreamO: %s. The DreamO nodes are loaded but will refuse to run. Fix: %s", reason, FIX)
    return tuple(refusing(n, reason) for n in nodes)
