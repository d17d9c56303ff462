"""The example workflows, one place for the tests: each API workflow workflows/api/<key>_api.json and its template
workflows/<card title>.json (the title comes from scripts/workflow_notes.py: the Templates dialog shows the file
name as the card's title)."""
import glob
import os

from dreamo_testkit import REPO
from workflow_notes import NOTES, template_name  # scripts/ (on the tests' pythonpath, pyproject.toml)

WORKFLOWS = os.path.join(REPO, "workflows")

API_FILES = sorted(glob.glob(os.path.join(WORKFLOWS, "api", "*_api.json")))
UI_FILES = sorted(glob.glob(os.path.join(WORKFLOWS, "*.json")))


def key_of(path: str) -> str:
    """The API key (dreamo_ip) of an API or UI workflow file."""
    name = os.path.basename(path).removesuffix(".json")
    if name.endswith("_api"):
        return name.removesuffix("_api")
    keys = [k for k in NOTES if template_name(k) == name]
    if not keys:
        raise KeyError(f"{os.path.basename(path)}: no entry in scripts/workflow_notes.py names this template")
    return keys[0]


def ui_path(key: str) -> str:
    return os.path.join(WORKFLOWS, f"{template_name(key)}.json")


def api_path(key: str) -> str:
    return os.path.join(WORKFLOWS, "api", f"{key}_api.json")
