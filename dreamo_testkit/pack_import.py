"""Import the repo as the package `comfyui_dreamo` (its name inside ComfyUI), whatever the clone folder is called.

Used by tests/conftest.py and by scripts that reuse test helpers outside pytest (the main job's install check).
"""
import importlib.util
import os
import sys

from . import REPO
PACKAGE = "comfyui_dreamo"


def register_package() -> None:
    if PACKAGE in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(PACKAGE, os.path.join(REPO, "__init__.py"),
                                                  submodule_search_locations=[REPO])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    spec.loader.exec_module(module)
