"""Test setup: the repo imports as the package `comfyui_dreamo`; host tests get a real ComfyUI checkout.

Host tests (marker `host`) need `COMFYUI_PATH` pointing at a ComfyUI checkout; without it they are skipped
with that reason printed in the summary. ComfyUI is put in CPU mode before any of it is imported.
"""
import importlib.abc
import importlib.util
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "")
HOST_READY = bool(COMFYUI_PATH) and os.path.isfile(os.path.join(COMFYUI_PATH, "comfy", "model_patcher.py"))
HOST_SKIP_REASON = ("no ComfyUI checkout: set COMFYUI_PATH to one (README: the variables table)" if not COMFYUI_PATH
                    else f"COMFYUI_PATH={COMFYUI_PATH} is not a ComfyUI checkout")

class ComfyNodesFinder(importlib.abc.MetaPathFinder):
    """`import nodes` is ComfyUI's nodes.py, as inside ComfyUI, whatever sys.path holds and whatever ran before.

    The clone's root has a `nodes` package of its own (the pack's node classes, imported as comfyui_dreamo.nodes),
    and the root is on sys.path under `python -m pytest` and once tests/install_tree.py is imported: a plain
    search would find the pack's package first and fail on its relative imports."""

    def __init__(self, comfyui: str):
        self.path = os.path.join(comfyui, "nodes.py")

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "nodes" and path is None:
            return importlib.util.spec_from_file_location("nodes", self.path)
        return None


if HOST_READY:
    if COMFYUI_PATH not in sys.path:
        sys.path.insert(0, COMFYUI_PATH)
    sys.meta_path.insert(0, ComfyNodesFinder(COMFYUI_PATH))
    import comfy.cli_args  # noqa: E402

    comfy.cli_args.args.cpu = True  # before comfy.model_management picks a device


from pack_import import register_package  # noqa: E402

register_package()


# Every test server refuses and records connections that are not to loopback (tests/network_guard).
os.environ.setdefault("DREAMO_NETWORK_GUARD", "1")


def pytest_configure(config):
    if os.environ.get("DREAMO_REQUIRE_HOST") == "1" and not HOST_READY:
        pytest.exit(f"DREAMO_REQUIRE_HOST=1 but the ComfyUI tests would be skipped: {HOST_SKIP_REASON}", returncode=3)
    config.addinivalue_line("markers", "host: needs a real ComfyUI checkout (COMFYUI_PATH)")
    config.addinivalue_line("markers", "server: starts a real ComfyUI server on loopback")


def pytest_collection_modifyitems(config, items):
    if HOST_READY:
        return
    skip = pytest.mark.skip(reason=HOST_SKIP_REASON)
    for item in items:
        if "host" in item.keywords or "server" in item.keywords:
            item.add_marker(skip)


def pytest_sessionfinish(session, exitstatus):
    """Fail the run when any test server tried to reach the network (no user option asks for it in tests)."""
    runner = sys.modules.get("comfyui_runner")
    logs = [p for p in getattr(runner, "NETWORK_LOGS", []) if os.path.isfile(p) and os.path.getsize(p) > 0]
    if logs:
        print("\nA test ComfyUI server tried to reach the network:\n" + "\n".join(open(p).read()[:3000] for p in logs))
        session.exitstatus = 1
