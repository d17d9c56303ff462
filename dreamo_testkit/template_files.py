"""The example workflows, one place for the tests: each API workflow workflows/api/<key>_api.json and its template
workflows/<card title>.json (the title comes from scripts/workflow_notes.py: the Templates dialog shows the file
name as the card's title)."""
import glob
import json
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


def model_file_names(api_files) -> dict[str, set[str]]:
    """{models subfolder: file names} the workflows' loaders name, so their menus list them (empty files)."""
    folders = {"unet_name": "diffusion_models", "vae_name": "vae", "clip_name1": "text_encoders",
               "clip_name2": "text_encoders", "clip_name": "text_encoders", "background_remover": "rembg"}
    names: dict[str, set[str]] = {}
    for path in api_files:
        for node in json.load(open(path)).values():
            for key, value in node["inputs"].items():
                if key in folders and isinstance(value, str) and value != "none":
                    names.setdefault(folders[key], set()).add(value)
    return names


def write_menu_files(models_dir: str, api_files=API_FILES) -> None:
    """Empty files under the names the workflows' loaders pick, so their menus list them as on a user's machine
    (a file of that name already there, e.g. a tiny model, is kept). Nothing ever loads them."""
    for folder, names in model_file_names(api_files).items():
        os.makedirs(os.path.join(models_dir, folder), exist_ok=True)
        for name in names:
            path = os.path.join(models_dir, folder, name)
            if not os.path.exists(path):
                open(path, "wb").close()
