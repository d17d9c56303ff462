"""Test setup: the repo imports as the package `comfyui_dreamo`; host tests get a real ComfyUI checkout.

Host tests (marker `host`) need `COMFYUI_PATH` pointing at a ComfyUI checkout; without it they are skipped
with that reason printed in the summary. ComfyUI is put in CPU mode before any of it is imported.
"""
import os
import sys

import pytest

from dreamo_testkit import comfy_host  # noqa: E402

HOST_READY, HOST_SKIP_REASON = comfy_host.setup(), comfy_host.SKIP_REASON


# Every test server refuses and records connections that are not to loopback (dreamo_testkit/network_guard).
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
    runner = sys.modules.get("dreamo_testkit.comfyui_runner")
    logs = [p for p in getattr(runner, "NETWORK_LOGS", []) if os.path.isfile(p) and os.path.getsize(p) > 0]
    if logs:
        print("\nA test ComfyUI server tried to reach the network:\n" + "\n".join(open(p).read()[:3000] for p in logs))
        session.exitstatus = 1
