"""DreamO for ComfyUI: entry point read by ComfyUI when the folder sits in custom_nodes.

Only `nodes` needs ComfyUI; `dreamo_ops` imports anywhere. Outside ComfyUI (no `comfy` module) the package
still imports, with no nodes, so its ops and tests run without the host.
"""
import importlib.util

WEB_DIRECTORY = "./web"

if importlib.util.find_spec("comfy") is not None and importlib.util.find_spec("folder_paths") is not None:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    NODE_CLASS_MAPPINGS = {}
    NODE_DISPLAY_NAME_MAPPINGS = {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
