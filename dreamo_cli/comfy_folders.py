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
from typing import Iterator, Optional

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
MAX_YAML_BYTES = 1 << 20  # extra_model_paths.yaml is a few lines; this bounds what reading it can cost
MAX_YAML_ALIASES = 32  # YAML aliases (*name) in it: enough for any real file, not for a billion laughs
MAX_YAML_DEPTH = 16  # nesting levels (a real file has three: section, folder, lines)
MAX_WALK_DIRS = 20_000  # folders one listing visits (each real folder once: a symlink loop ends)


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
    warnings: list[str] = field(default_factory=list)  # listings cut short (too many folders)

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
            config = load_yaml(path)
        except (OSError, ValueError, yaml.YAMLError) as e:
            raise InstallError(f"'{path}' could not be read: {e}") from e
        if not isinstance(config, dict):
            raise InstallError(f"'{path}' is not an extra_model_paths.yaml: it holds {type(config).__name__}, not "
                               "named sections of folders (see ComfyUI's extra_model_paths.yaml.example).")
        yaml_dir = os.path.dirname(os.path.abspath(path))
        for section, conf in config.items():
            if not isinstance(conf, dict):
                continue
            conf = dict(conf)
            base = conf.pop("base_path", None)
            if base is not None and not isinstance(base, str):
                raise InstallError(f"'{path}': {str(section)[:40]}.base_path must be a folder path, not "
                                   f"{type(base).__name__}.")
            if base:
                base = os.path.expandvars(os.path.expanduser(base))
                if not os.path.isabs(base):
                    base = os.path.abspath(os.path.join(yaml_dir, base))
            is_default = bool(conf.pop("is_default", False))
            for folder, lines in conf.items():
                if not isinstance(lines, str):  # ComfyUI splits the value into lines: it must be text
                    raise InstallError(f"'{path}': {str(section)[:40]}.{str(folder)[:40]} must be a folder path "
                                       f"(or several, one per line), not {type(lines).__name__}.")
                for line in lines.split("\n"):
                    if not line:
                        continue
                    full = os.path.join(base, line) if base else (
                        line if os.path.isabs(line) else os.path.join(yaml_dir, line))
                    self.add(canonical(str(folder)), os.path.normpath(full), is_default)
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

    def walk(self, base: str, follow_links: bool = True) -> Iterator[tuple[str, list[str], list[str]]]:
        """os.walk of a model folder as ComfyUI lists it (links followed, `.git` skipped), visiting each real
        folder once, so a symlink loop ends, and at most MAX_WALK_DIRS folders (a warning says where it
        stopped)."""
        seen: set[tuple[int, int]] = set()
        count = 0
        for dirpath, dirnames, filenames in os.walk(base, followlinks=follow_links):
            try:
                st = os.stat(dirpath)
            except OSError:
                dirnames[:] = []
                continue
            if (st.st_dev, st.st_ino) in seen:
                dirnames[:] = []
                continue
            seen.add((st.st_dev, st.st_ino))
            count += 1
            if count > MAX_WALK_DIRS:
                warning = (f"stopped listing {base} after {MAX_WALK_DIRS:,} folders; files deeper in it were not "
                           "looked at (a model folder should not hold that many)")
                if warning not in self.warnings:
                    self.warnings.append(warning)
                return
            dirnames[:] = [d for d in dirnames if d != ".git" and not d.startswith(".dreamo-download")]
            yield dirpath, dirnames, filenames

    def list_files(self, folder: str, extensions: Optional[tuple[str, ...]] = None) -> list[str]:
        """Relative names ('sub/name.safetensors') of the files in a folder, each once (first path wins), sorted."""
        names: dict[str, str] = {}
        for base in self.paths(folder):
            for dirpath, dirnames, filenames in self.walk(base):
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
            for dirpath, dirnames, filenames in self.walk(root, follow_links=False):
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
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            return None
        m = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", text)
        return m.group(1) if m else None


def load_yaml(path: str, max_bytes: int = MAX_YAML_BYTES, max_aliases: int = MAX_YAML_ALIASES):
    """yaml.safe_load of a small file, refusing one over `max_bytes` or with more than `max_aliases` aliases (a
    'billion laughs' file expands a few aliases into gigabytes once its values are used); ValueError says which."""
    import yaml

    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"it is larger than {max_bytes:,} bytes; an extra_model_paths.yaml is a few lines")

    class BoundedLoader(yaml.SafeLoader):
        aliases = depth = 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > max_aliases:
                    raise ValueError(f"it uses more than {max_aliases} YAML aliases (*name); write the folders out")
            self.depth += 1
            try:
                if self.depth > MAX_YAML_DEPTH:  # checked while reading: the rest of a deep file is never scanned
                    raise ValueError(f"it is nested more than {MAX_YAML_DEPTH} levels deep")
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"it is not UTF-8 text ({e.reason} at byte {e.start})") from None
    loader = BoundedLoader(text)
    try:
        return loader.get_single_data() or {}
    finally:
        loader.dispose()


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
