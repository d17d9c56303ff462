"""The test kit: tiny random models, tiny workflows, test-only ComfyUI nodes, fixtures and test servers.

Used by tests/, scripts/ (the main job's install check runs on its tiny models) and bench/ alike, imported as the
package `dreamo_testkit` with the clone's root on the import path (pytest: pyproject's `pythonpath`; scripts and
benchmarks: their own folder's parent). Not part of the pack ComfyUI loads, nor of the wheel. Importing this
package imports nothing heavy; each module says what it needs (most need a ComfyUI checkout, `COMFYUI_PATH`).
"""
import os

KIT = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(KIT)  # the clone's root: the pack ComfyUI loads (custom_nodes/<clone>)
WORKFLOWS = os.path.join(KIT, "workflows")  # test-only API workflows (tiny models through the helper nodes)
HELPER_NODES = os.path.join(KIT, "helper_nodes")  # the test-only custom-node folder (tiny-model nodes)
NETWORK_GUARD = os.path.join(KIT, "network_guard")  # put first on a test server's PYTHONPATH (sitecustomize.py)


def kit_workflow(name: str) -> str:
    """The path of one of the kit's test-only API workflows (`dreamo_install_check_api.json`, ...)."""
    return os.path.join(WORKFLOWS, name)


def rel_err(a, b) -> float:
    """‖a − b‖ / ‖b‖ (Frobenius) of two tensors, in float64: the measure of the suite's numerical claims."""
    return ((a.double() - b.double()).norm() / b.double().norm()).item()
