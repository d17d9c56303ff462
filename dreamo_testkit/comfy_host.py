"""A ComfyUI checkout in this process, as the host tests and the in-process benchmarks need it.

`setup()` puts the checkout (`COMFYUI_PATH`) first on the import path in CPU mode, before anything imports
comfy.model_management, makes `import nodes` ComfyUI's nodes.py whatever else is on the path, and registers the
clone as the package `comfyui_dreamo` (its name inside ComfyUI). tests/conftest.py calls it once per session;
bench/ calls it too.
"""
import contextlib
import importlib.abc
import importlib.util
import os
import sys

COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "")
READY = bool(COMFYUI_PATH) and os.path.isfile(os.path.join(COMFYUI_PATH, "comfy", "model_patcher.py"))
SKIP_REASON = ("no ComfyUI checkout: set COMFYUI_PATH to one (README: the variables table)" if not COMFYUI_PATH
               else f"COMFYUI_PATH={COMFYUI_PATH} is not a ComfyUI checkout")


class ComfyNodesFinder(importlib.abc.MetaPathFinder):
    """`import nodes` is ComfyUI's nodes.py, as inside ComfyUI, whatever sys.path holds and whatever ran before.

    The clone's root has a `nodes` package of its own (the pack's node classes, imported as comfyui_dreamo.nodes),
    and the root is on sys.path (pyproject's pytest `pythonpath`, for the test kit `dreamo_testkit`): a plain
    search would find the pack's package first and fail on its relative imports."""

    def __init__(self, comfyui: str):
        self.path = os.path.join(comfyui, "nodes.py")

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "nodes" and path is None:
            return importlib.util.spec_from_file_location("nodes", self.path)
        return None


def setup() -> bool:
    """The checkout on the path in CPU mode (when there is one) and the pack registered; returns READY."""
    if READY and not any(isinstance(f, ComfyNodesFinder) for f in sys.meta_path):
        if COMFYUI_PATH not in sys.path:
            sys.path.insert(0, COMFYUI_PATH)
        sys.meta_path.insert(0, ComfyNodesFinder(COMFYUI_PATH))
        import comfy.cli_args

        comfy.cli_args.args.cpu = True  # before comfy.model_management picks a device
    from .pack_import import register_package

    register_package()
    return READY


@contextlib.contextmanager
def model_folders(root, names=("dreamo", "loras"), extensions=(".safetensors",), also=None):
    """ComfyUI's model folders `names` made empty under `root` (a pathlib.Path) and registered in folder_paths,
    plus `also` ({key: (folder, extensions)}) as given; yields {name: path}. folder_paths is restored afterwards."""
    import folder_paths

    saved = {k: (list(v[0]), set(v[1])) for k, v in folder_paths.folder_names_and_paths.items()}
    paths = {}
    try:
        for name in names:
            paths[name] = root / name
            paths[name].mkdir()
            folder_paths.folder_names_and_paths[name] = ([str(paths[name])], set(extensions))
        for key, (folder, exts) in (also or {}).items():
            folder_paths.folder_names_and_paths[key] = ([folder], set(exts))
        folder_paths.filename_list_cache.clear()
        yield paths
    finally:
        folder_paths.folder_names_and_paths.clear()
        folder_paths.folder_names_and_paths.update(saved)
        folder_paths.filename_list_cache.clear()
