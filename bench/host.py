"""Finding ComfyUI and importing the pack for the benchmarks, without the tests' helpers.

ComfyUI is not an installable package: its checkout folder goes on the import path, as its own main.py has it.
The pack is imported as the package `comfyui_dreamo` (its name inside ComfyUI), whatever the clone folder is called.
"""
from __future__ import annotations

import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "comfyui_dreamo"


def is_comfyui(path: str | None) -> bool:
    return bool(path) and os.path.isfile(os.path.join(path, "comfy", "model_patcher.py"))


def find_comfyui(explicit: str | None = None) -> str | None:
    """`explicit`, else $COMFYUI_PATH, else the ComfyUI this pack is installed in (ComfyUI/custom_nodes/<pack>)."""
    for path in (explicit, os.environ.get("COMFYUI_PATH"), os.path.dirname(os.path.dirname(REPO))):
        if path and is_comfyui(os.path.abspath(os.path.expanduser(path))):
            return os.path.abspath(os.path.expanduser(path))
    return None


def start_comfyui(path: str, cpu: bool = False) -> str:
    """Put the checkout on the path and set ComfyUI's options before its model management starts. Returns its
    version."""
    if path not in sys.path:
        sys.path.insert(0, path)
    import comfy.cli_args

    if cpu:
        comfy.cli_args.args.cpu = True
    try:
        import comfyui_version

        return str(comfyui_version.__version__)
    except Exception:
        return "unknown"


def import_pack():
    """The pack as the package `comfyui_dreamo` (nodes included: ComfyUI must be importable)."""
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    spec = importlib.util.spec_from_file_location(PACKAGE, os.path.join(REPO, "__init__.py"),
                                                  submodule_search_locations=[REPO])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    spec.loader.exec_module(module)
    return module


def pack_commit() -> str:
    head = os.path.join(REPO, ".git")
    try:
        import subprocess

        out = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or "unknown"
    except Exception:
        return "unknown" if not os.path.exists(head) else "?"
