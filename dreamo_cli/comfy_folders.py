"""A ComfyUI install's model folders as ComfyUI itself sees them, read without importing ComfyUI.

Mirrors `folder_paths` (default folders under `models/`, legacy names `unet` -> diffusion_models and `clip` ->
text_encoders, recursive listing that skips `.git`) and `utils/extra_config.py` (`extra_model_paths.yaml`:
`base_path` relative to the yaml file, `is_default` paths searched first, one folder per line), plus the
folders the pack registers itself (`dreamo`, `facexlib`, `rembg`).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Optional

# ComfyUI folder name -> its default subfolders of models/, in ComfyUI's search order.
DEFAULT_FOLDERS = {
    "checkpoints": ("checkpoints",),
    "diffusion_models": ("unet", "diffusion_models"),
    "text_encoders": ("text_encoders", "clip"),
    "vae": ("vae",),
    "loras": ("loras",),
    "dreamo": ("dreamo",),  # registered by the pack (nodes/model_folders.py)
    "facexlib": ("facexlib",),
    "rembg": ("rembg",),
}
# Where a downloaded file goes when no extra_model_paths.yaml entry says otherwise (the names ComfyUI documents).
DOWNLOAD_FOLDERS = {"diffusion_models": "diffusion_models", "text_encoders": "text_encoders"}
LEGACY = {"unet": "diffusion_models", "clip": "text_encoders", "unet_gguf": "diffusion_models",
          "clip_gguf": "text_encoders"}
EXTRA_PATHS_FILE = "extra_model_paths.yaml"


class InstallError(ValueError):
    """The given folder is not a ComfyUI install (or its extra_model_paths.yaml cannot be read)."""


def canonical(folder: str) -> str:
    return LEGACY.get(folder, folder)


@dataclass
class ComfyInstall:
    root: str
    folders: dict[str, list[str]] = field(default_factory=dict)
    extra_files: list[str] = field(default_factory=list)  # extra_model_paths.yaml files read
    defaults: dict[str, str] = field(default_factory=dict)  # folder -> its is_default path

    @classmethod
    def open(cls, root: str, extra_configs: tuple[str, ...] = ()) -> "ComfyInstall":
        root = os.path.abspath(os.path.expanduser(root))
        if not (os.path.isfile(os.path.join(root, "folder_paths.py")) and os.path.isdir(os.path.join(root, "comfy"))):
            raise InstallError(f"'{root}' is not a ComfyUI folder (no folder_paths.py and comfy/ in it).")
        inst = cls(root)
        models = os.path.join(root, "models")
        for name, subs in DEFAULT_FOLDERS.items():
            inst.folders[name] = [os.path.join(models, s) for s in subs]
        for path in (os.path.join(root, EXTRA_PATHS_FILE), *extra_configs):
            if os.path.isfile(path):
                inst._read_extra(path)
            elif path != os.path.join(root, EXTRA_PATHS_FILE):
                raise InstallError(f"extra model paths file '{path}' does not exist.")
        return inst

    @property
    def models_dir(self) -> str:
        return os.path.join(self.root, "models")

    def _read_extra(self, path: str) -> None:
        import yaml  # here, not at the top: the install scripts call default_root() from a bare Python

        try:
            with open(path, encoding="utf-8") as f:
                config = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as e:
            raise InstallError(f"'{path}' could not be read: {e}") from e
        yaml_dir = os.path.dirname(os.path.abspath(path))
        for conf in config.values():
            if not isinstance(conf, dict):
                continue
            conf = dict(conf)
            base = conf.pop("base_path", None)
            if base:
                base = os.path.expandvars(os.path.expanduser(base))
                if not os.path.isabs(base):
                    base = os.path.abspath(os.path.join(yaml_dir, base))
            is_default = bool(conf.pop("is_default", False))
            for folder, lines in conf.items():
                for line in str(lines).split("\n"):
                    if not line:
                        continue
                    full = os.path.join(base, line) if base else (
                        line if os.path.isabs(line) else os.path.join(yaml_dir, line))
                    self.add(canonical(folder), os.path.normpath(full), is_default)
        self.extra_files.append(os.path.abspath(path))

    def add(self, folder: str, path: str, is_default: bool = False) -> None:
        paths = self.folders.setdefault(folder, [])
        if path in paths:
            paths.remove(path)
        if is_default:
            paths.insert(0, path)
            self.defaults[folder] = path
        else:
            paths.append(path)

    def paths(self, folder: str) -> list[str]:
        return list(self.folders.get(canonical(folder), []))

    def list_files(self, folder: str, extensions: Optional[tuple[str, ...]] = None) -> list[str]:
        """Relative names ('sub/name.safetensors') of the files in a folder, each once (first path wins), sorted."""
        names: dict[str, str] = {}
        for base in self.paths(folder):
            for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
                dirnames[:] = [d for d in dirnames if d != ".git"]
                for fn in filenames:
                    if extensions and not fn.lower().endswith(extensions):
                        continue
                    rel = os.path.relpath(os.path.join(dirpath, fn), base).replace(os.sep, "/")
                    names.setdefault(rel, os.path.join(dirpath, fn))
        return sorted(names)

    def full_path(self, folder: str, name: str) -> Optional[str]:
        for base in self.paths(folder):
            path = os.path.join(base, name)
            if os.path.isfile(path):
                return path
        return None

    def find_anywhere(self, basename: str) -> list[str]:
        """Every file called `basename` under models/ or any registered folder (for 'misplaced' reports)."""
        roots = [self.models_dir] + [p for paths in self.folders.values() for p in paths]
        found: list[str] = []
        for root in roots:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = [d for d in dirnames if d != ".git" and not d.startswith(".dreamo-download")]
                if basename in filenames:
                    path = os.path.normpath(os.path.join(dirpath, basename))
                    if path not in found:
                        found.append(path)
        return found

    def download_folder(self, folder: str) -> str:
        """Where a missing file of this folder is put: the is_default extra path if there is one, else
        models/<folder> (models/diffusion_models, models/text_encoders: the names ComfyUI documents)."""
        folder = canonical(folder)
        if folder in self.defaults:
            return self.defaults[folder]
        return os.path.join(self.models_dir, DOWNLOAD_FOLDERS.get(folder, DEFAULT_FOLDERS.get(folder, (folder,))[0]))

    def version(self) -> Optional[str]:
        path = os.path.join(self.root, "comfyui_version.py")
        try:
            text = open(path, encoding="utf-8").read()
        except OSError:
            return None
        m = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", text)
        return m.group(1) if m else None


def default_root(explicit: Optional[str] = None) -> Optional[str]:
    """--comfyui, else $COMFYUI_PATH, else the ComfyUI this pack sits in (custom_nodes/<pack>)."""
    if explicit:
        return explicit
    if os.environ.get("COMFYUI_PATH"):
        return os.environ["COMFYUI_PATH"]
    pack = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parent = os.path.dirname(pack)
    if os.path.basename(parent) == "custom_nodes":
        return os.path.dirname(parent)
    return None
