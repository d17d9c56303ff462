"""The command line dreamo-doctor and dreamo-download share: which ComfyUI folder, and which workflow or preset,
turned into the install and the list of files it needs (`resolve`); and the packages the commands themselves
need (`missing_packages`, with the instruction to give when one is missing).
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Optional

from dreamo_ops import stages as st

from .catalog import Need, WorkflowError, preset_needs, workflow_needs
from .comfy_folders import ComfyInstall, InstallError, default_root

MAX_WORKFLOW_BYTES = 64 << 20
# What this command itself imports (import name -> pip name): without them it stops with the instruction. The
# content checks import torch/safetensors/facexlib when they run; a missing one leaves that file 'unchecked'.
NEEDED = {"yaml": "pyyaml", "packaging": "packaging"}
INSTALL_HINT = ("run the doctor with ComfyUI's Python (the one that runs the nodes), or install what it needs: "
                "pip install \"comfyui-dreamo[doctor]\" (from the pack's folder: pip install \".[doctor]\")")


def missing_packages(needed: Optional[dict] = None) -> list[str]:
    """pip names of the modules in `needed` (import name -> pip name, default NEEDED) that are not installed."""
    import importlib.util

    return [pip for module, pip in (needed or NEEDED).items() if importlib.util.find_spec(module) is None]


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--comfyui", help="the ComfyUI folder (default: $COMFYUI_PATH, else the ComfyUI this pack "
                                          "sits in)")
    parser.add_argument("--extra-model-paths-config", action="append", default=[], metavar="YAML",
                        help="an extra_model_paths.yaml given to ComfyUI with the same option (the one in the "
                             "ComfyUI folder is always read)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--workflow", help="a workflow file (API format, or the UI format the canvas saves), or the "
                                         "name of one of the pack's workflows (ip, id_tryon, ... as dreamo-client "
                                         "takes them): its loader nodes and file names are checked")
    what.add_argument("--preset", choices=[v for v in st.VERSIONS if v != "custom"], default=None,
                      help="DreamO version preset (default v1.1), with the official files")
    parser.add_argument("--no-turbo", action="store_true", help="preset: without FLUX.1-Turbo-Alpha")
    parser.add_argument("--id", action="store_true", help="preset: with id (face) preprocessing (facexlib files)")
    parser.add_argument("--remover", action="store_true", help="preset: with a background remover (models/rembg)")
    parser.add_argument("--fp8", action="store_true", help="preset: the fp8 FLUX.1-dev and T5-XXL (smaller)")


def workflow_path(name_or_path: str) -> str:
    """A workflow file, or one of the pack's workflows by the short name the client takes (`ip`, `id_tryon`)."""
    from .api_workflow import WorkflowError as ClientWorkflowError, find_workflow

    if os.path.isfile(name_or_path):
        return name_or_path
    try:
        return find_workflow(name_or_path)
    except ClientWorkflowError as e:
        raise WorkflowError(str(e)) from None


def read_workflow(path: str):
    """The JSON of a workflow file, read within MAX_WORKFLOW_BYTES; WorkflowError saying what is wrong."""
    with open(path, "rb") as f:
        data = f.read(MAX_WORKFLOW_BYTES + 1)
    if len(data) > MAX_WORKFLOW_BYTES:
        raise WorkflowError(f"'{path}' is larger than {MAX_WORKFLOW_BYTES >> 20} MB: not a workflow file.")
    try:
        return json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise WorkflowError(f"'{path}' is not a text file (UTF-8): not a workflow ({e.reason} at byte "
                            f"{e.start}).") from None
    except json.JSONDecodeError as e:
        raise WorkflowError(f"'{path}' is not JSON: {e}") from None
    except RecursionError:
        raise WorkflowError(f"'{path}' is nested too deeply to be a workflow.") from None


def resolve(args) -> tuple[ComfyInstall, list[Need], str]:
    """(install, needs, what they are for) from the parsed arguments; InstallError/WorkflowError/OSError."""
    root = default_root(args.comfyui)
    if root is None:
        raise InstallError("no ComfyUI folder given: pass --comfyui DIR or set COMFYUI_PATH.")
    inst = ComfyInstall.open(root, tuple(args.extra_model_paths_config))
    if args.workflow:
        path = workflow_path(args.workflow)
        needs = workflow_needs(read_workflow(path))
        if not needs:
            raise WorkflowError(f"'{args.workflow}' has no model loader nodes this doctor knows.")
        return inst, needs, args.workflow
    version = args.preset or st.DEFAULT_VERSION
    needs = preset_needs(version, turbo=not args.no_turbo, face=args.id, remover=args.remover, fp8=args.fp8)
    return inst, needs, needs[0].asked_by
