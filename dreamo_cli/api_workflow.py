"""Find an API-format workflow and fill it from a job, through the node titles the workflow declares.

The mapping is by `_meta.title` (what the canvas shows as the node's title, saved in "Export (API)"):

| title          | node                 | inputs the client sets                 |
|----------------|----------------------|----------------------------------------|
| `ref K image`  | LoadImage            | `image` (the uploaded reference K)     |
| `ref K encode` | DreamORefEncode      | `task`, `resolution` of reference K    |
| `prompt`       | DreamOTextEncode     | `text`                                 |
| `sampler`      | KSampler / RandomNoise… | `seed` (or `noise_seed`), `steps`   |
| `size`         | EmptySD3LatentImage  | `width`, `height`, `batch_size`        |
| `shift`        | ModelSamplingFlux    | `width`, `height` (kept equal to size) |
| `output`       | SaveImage            | `filename_prefix`                      |

Titles are matched without regard to case or surrounding spaces. Asking for something the workflow does not
declare (a slot without its `ref K image` node, a seed without a `sampler` node) is an error naming the title
the workflow would need; nothing is guessed from node types.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOW_DIRS = (os.path.join(PACK_ROOT, "workflows", "api"), os.path.join(PACK_ROOT, "workflows"),
                 os.path.join(os.path.dirname(os.path.abspath(__file__)), "workflows"))  # a `pip install .` copy
SLOTS = range(1, 10)


class WorkflowError(ValueError):
    """The workflow file, or what the user asked of it, does not fit: the message says what to change."""


@dataclass
class Job:
    """One queued prompt: what the user sets; None / empty = keep the workflow's value."""
    name: str = ""
    workflow: str | None = None
    refs: dict[int, str] = field(default_factory=dict)  # slot -> local image path
    tasks: dict[int, str] = field(default_factory=dict)
    resolutions: dict[int, int] = field(default_factory=dict)
    prompt: str | None = None
    seed: int | None = None
    steps: int | None = None
    width: int | None = None
    height: int | None = None
    batch_size: int | None = None

    def fingerprint(self) -> str:
        """A short hash of everything that decides the job's outputs (not its name)."""
        spec = asdict(self)
        spec.pop("name")
        spec["refs"] = {k: _file_digest(p) for k, p in sorted(spec["refs"].items())}
        if self.workflow and os.path.isfile(self.workflow):
            spec["workflow"] = _file_digest(self.workflow)
        text = json.dumps(spec, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def _file_digest(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return f"missing:{path}"


def find_workflow(name_or_path: str) -> str:
    """A file path, or one of the pack's workflows by name: `ip` -> workflows/api/dreamo_ip_api.json
    (or workflows/dreamo_ip_api.json)."""
    if os.path.isfile(name_or_path):
        return os.path.abspath(name_or_path)
    stem = name_or_path[:-5] if name_or_path.endswith(".json") else name_or_path
    names = [f"{stem}_api.json", f"dreamo_{stem}_api.json", f"{stem}.json"]
    for folder in WORKFLOW_DIRS:
        for name in names:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    raise WorkflowError(f"no workflow '{name_or_path}': not a file, and not one of the pack's workflows "
                        f"({', '.join(available_workflows()) or 'none found'}). Pass a name from that list or the "
                        f"path of an API-format workflow (ComfyUI: Workflow > Export (API)).")


def available_workflows() -> list[str]:
    found = set()
    for folder in WORKFLOW_DIRS:
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if name.endswith("_api.json"):
                    found.add(name[:-len("_api.json")].removeprefix("dreamo_"))
    return sorted(found)


def load_workflow(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise WorkflowError(f"cannot read workflow {path}: {e}") from e
    except RecursionError:
        raise WorkflowError(f"{path} is nested too deeply to be an API-format workflow") from None
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        raise WorkflowError(f"{path} is a UI-format workflow (the canvas's file); the API needs the API format: "
                            f"use the matching *_api.json file, or in ComfyUI Workflow > Export (API).")
    if not isinstance(data, dict) or not data or not all(
            isinstance(n, dict) and "class_type" in n and "inputs" in n for n in data.values()):
        raise WorkflowError(f"{path} is not an API-format workflow (a map of node id -> class_type and inputs).")
    return data


def titles(workflow: dict) -> dict[str, str]:
    """Declared title (normalised) -> node id. Two nodes with one title make the title unusable."""
    seen: dict[str, str] = {}
    for node_id, node in workflow.items():
        title = str(node.get("_meta", {}).get("title", "")).strip().lower()
        if not title:
            continue
        if title in seen:
            seen[title] = ""  # ambiguous
        else:
            seen[title] = node_id
    return seen


def _node(workflow: dict, declared: dict, title: str, what: str, path: str) -> dict:
    node_id = declared.get(title)
    if node_id == "":
        raise WorkflowError(f"{os.path.basename(path)} has two nodes titled '{title}'; {what} needs exactly one.")
    if node_id is None:
        have = sorted(t for t in declared if t in _KNOWN_TITLES)
        raise WorkflowError(f"{what}: {os.path.basename(path)} declares no node titled '{title}' "
                            f"(it declares: {', '.join(have) or 'none of the client titles'}). Give the node that "
                            f"title in the workflow, or leave the setting out.")
    return workflow[node_id]


def _set(node: dict, key: str, value, title: str, what: str, path: str) -> None:
    if key not in node["inputs"]:
        raise WorkflowError(f"{what}: the node titled '{title}' in {os.path.basename(path)} "
                            f"({node['class_type']}) has no input '{key}'.")
    if isinstance(node["inputs"][key], list):
        raise WorkflowError(f"{what}: input '{key}' of '{title}' in {os.path.basename(path)} is connected to "
                            f"another node, not a value the client can set.")
    node["inputs"][key] = value


_KNOWN_TITLES = {"prompt", "sampler", "size", "shift", "output"} | {
    f"ref {k} {part}" for k in SLOTS for part in ("image", "encode")}


def fill(workflow: dict, job: Job, images: dict[int, str], path: str = "workflow",
         filename_prefix: str | None = None) -> dict:
    """A copy of `workflow` with the job's settings; `images` maps slot -> the name the server gave the upload."""
    wf = copy.deepcopy(workflow)
    declared = titles(wf)
    for slot in sorted(set(job.refs) | set(images)):
        title = f"ref {slot} image"
        _set(_node(wf, declared, title, f"--ref {slot}", path), "image", images[slot], title, f"--ref {slot}", path)
    for option, values, key in (("--task", job.tasks, "task"), ("--resolution", job.resolutions, "resolution")):
        for slot, value in sorted(values.items()):
            title = f"ref {slot} encode"
            what = f"{option} {slot}"
            _set(_node(wf, declared, title, what, path), key, value, title, what, path)
    if job.prompt is not None:
        _set(_node(wf, declared, "prompt", "--prompt", path), "text", job.prompt, "prompt", "--prompt", path)
    if job.seed is not None:
        node = _node(wf, declared, "sampler", "--seed", path)
        key = "noise_seed" if "noise_seed" in node["inputs"] else "seed"
        _set(node, key, int(job.seed), "sampler", "--seed", path)
    if job.steps is not None:
        _set(_node(wf, declared, "sampler", "--steps", path), "steps", int(job.steps), "sampler", "--steps", path)
    for key, value in (("width", job.width), ("height", job.height), ("batch_size", job.batch_size)):
        if value is not None:
            what = "--batch-size" if key == "batch_size" else "--size"
            _set(_node(wf, declared, "size", what, path), key, int(value), "size", what, path)
            if key != "batch_size" and declared.get("shift"):
                _set(wf[declared["shift"]], key, int(value), "shift", what, path)
    if filename_prefix is not None and declared.get("output"):
        _set(wf[declared["output"]], "filename_prefix", filename_prefix, "output", "output", path)
    return wf


def node_label(workflow: dict, node_id: str) -> str:
    """`5 DreamORefEncode 'ref 1 encode'` for messages."""
    node = workflow.get(str(node_id), {})
    title = node.get("_meta", {}).get("title")
    label = f"node {node_id} ({node.get('class_type', '?')}"
    return label + (f" '{title}')" if title else ")")
