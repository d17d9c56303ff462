"""Setup shared by the Ray tests and bench/bench_ray.py: `dreamo_cli` under its own name (Ray ships it to the
workers by that name), a local Ray without a GPU, and workers that start real ComfyUI servers in sandboxes with
the pack and the tiny test models (dreamo_testkit/tiny_server.py)."""
from __future__ import annotations

import importlib.util
import json
import os
import sys

from PIL import Image

from . import NETWORK_GUARD, REPO, kit_workflow

TINY = kit_workflow("dreamo_client_tiny_api.json")
MISSING = ("Ray or pyarrow is not installed: pip install \"comfyui-dreamo[ray]\" (the test extra pins both; CI "
           "installs them and fails without them)")


def require_ray() -> None:
    """Skip (outside CI) or fail (in CI) when Ray or pyarrow is missing."""
    import pytest

    try:
        import pyarrow  # noqa: F401
        import ray  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true" or os.environ.get("DREAMO_REQUIRE_HOST") == "1":
            raise
        pytest.skip(MISSING, allow_module_level=True)


def import_cli():
    """The repo's dreamo_cli as the top-level package `dreamo_cli` (an installed pack's name)."""
    if "dreamo_cli" not in sys.modules:
        folder = os.path.join(REPO, "dreamo_cli")
        spec = importlib.util.spec_from_file_location("dreamo_cli", os.path.join(folder, "__init__.py"),
                                                      submodule_search_locations=[folder])
        module = importlib.util.module_from_spec(spec)
        sys.modules["dreamo_cli"] = module
        spec.loader.exec_module(module)
    return sys.modules["dreamo_cli"]


def start_ray(num_cpus: int = 2) -> None:
    import ray

    import_cli()
    from dreamo_cli.ray_batch import runtime_env

    ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env(), logging_level="WARNING")


def worker_config(root: str, count: int):
    """Sandboxes root/w0 … root/w{count-1} (tiny models, the pack, the test-only nodes) and the WorkerConfig whose
    workers start their ComfyUI in sandbox w<worker number>, on the CPU, with the tests' network guard."""
    from . import comfyui_runner, tiny_server

    import_cli()
    from dreamo_cli.ray_worker import WorkerConfig

    boxes = [tiny_server.sandbox(os.path.join(root, f"w{i}")) for i in range(count)]
    own = {"--cpu": 0, "--disable-auto-launch": 0, "--listen": 1, "--port": 1}  # the worker sets these itself
    args, skip = [], 0
    for arg in boxes[0].server_args(0):
        if skip:
            skip -= 1
        elif arg in own:
            skip = own[arg]
        else:
            args.append(arg.replace(os.path.join(root, "w0"), os.path.join(root, "w{worker}")))
    env = {}
    if os.environ.get("DREAMO_NETWORK_GUARD") == "1":
        env = {"PYTHONPATH": NETWORK_GUARD,
               "DREAMO_NETWORK_LOG": os.path.join(root, "w{worker}", "network_attempts.log")}
        comfyui_runner.NETWORK_LOGS.extend(os.path.join(root, f"w{i}", "network_attempts.log") for i in range(count))
    return WorkerConfig(comfyui=comfyui_runner.comfyui_path(), python=sys.executable, comfy_args=tuple(args),
                        env=env, cpu=True, start_timeout=300), boxes


def pictures(folder: str) -> list[str]:
    """Two drawn reference pictures (the tiny models need no photo)."""
    paths = []
    for i, colour in enumerate([(200, 40, 40), (40, 90, 220)]):
        img = Image.new("RGB", (160, 128), colour)
        img.paste((250, 250, 250), (30 + 20 * i, 30, 90 + 20 * i, 100))
        paths.append(os.path.join(folder, f"ref{i}.png"))
        img.save(paths[-1])
    return paths


def write_jobs(path: str, pics: list[str], prefix: str, n: int = 12, **extra) -> list[str]:
    """Jobs that differ by seed: each server encodes the references once and samples per job (fast)."""
    rows = [{"id": f"{prefix}{i:02d}", "ref_1": os.path.basename(pics[0]), "ref_2": os.path.basename(pics[1]),
             "seed": 100 + i, "prompt": "the thing [ref#1] in the style of [ref#2]", **extra} for i in range(n)]
    with open(path, "w") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n")
    return [r["id"] for r in rows]


def saved_on_servers(boxes, job: str) -> list[str]:
    """The images the servers themselves saved for a job (the client asks for prefix dreamo_client/<job>)."""
    import glob

    return [p for box in boxes for p in glob.glob(os.path.join(box.output_dir, "dreamo_client", f"{job}_0*.png"))]
