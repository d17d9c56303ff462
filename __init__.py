"""DreamO for ComfyUI: entry point read by ComfyUI when the folder sits in custom_nodes.

Only `nodes` needs ComfyUI; `dreamo_ops` imports anywhere. Outside ComfyUI (no `comfy` module) the package
still imports, with no nodes, so its ops and tests run without the host.
"""
import importlib.util

WEB_DIRECTORY = "./web"

# `__package__` is empty when a tool imports this file as a plain module (pytest does so for a clone folder
# whose name is no Python identifier, e.g. "comfyui-dreamo"): the nodes are only registered as a package.
if __package__ and importlib.util.find_spec("comfy") is not None and importlib.util.find_spec("folder_paths") is not None:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    NODE_CLASS_MAPPINGS = {}
    NODE_DISPLAY_NAME_MAPPINGS = {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
