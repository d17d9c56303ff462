"""What a ComfyUI install has of the files a DreamO workflow needs: `diagnose(install, needs)` -> Report.

Each needed file is looked up the way the node that reads it would (a staged LoRA next to the main file), or
found in another models folder (misplaced), and its contents checked (content_checks). Also this pack in
custom_nodes, the ComfyUI version against the pack's supported range, and the Python packages the nodes import.
dreamo-doctor prints the report; dreamo-download fetches what it finds missing.
"""
from __future__ import annotations

import importlib.metadata
import os
import tomllib
from dataclasses import dataclass, field
from typing import Optional

from dreamo_ops import stages as st
from dreamo_ops.weights import SAFETENSORS_EXTENSIONS, WeightFileError

from .catalog import Need, embedding_need
from .comfy_folders import ComfyInstall
from .content_checks import CheckUnavailable, check_content

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OK, MISSING, MISPLACED, BAD, UNCHECKED = "ok", "missing", "misplaced", "bad", "unchecked"


def _file_size(path: str) -> Optional[int]:
    try:
        return os.path.getsize(path)
    except OSError:
        return None


@dataclass
class FileResult:
    need: Need
    status: str
    path: Optional[str] = None  # where it is (ok / bad / misplaced)
    target: Optional[str] = None  # where it should be (missing / misplaced) or is
    size: Optional[int] = None
    detail: str = ""  # what the file is, or what is wrong

    def as_dict(self) -> dict:
        n = self.need
        return {"label": n.label, "asked_by": n.asked_by, "status": self.status, "path": self.path,
                "target": self.target, "size": self.size, "detail": self.detail, "folders": list(n.folders),
                "names": list(n.names) or ([f"auto: {n.stage.name} stage"] if n.stage else []),
                "source": None if n.source is None else {"repo": n.source.repo, "file": n.source.filename,
                                                          "gated": n.source.gated,
                                                          "approx_size": n.source.approx_size}}


@dataclass
class Report:
    root: str
    comfyui_version: Optional[str]
    requires: Optional[str]
    version_ok: bool
    files: list[FileResult] = field(default_factory=list)
    packages: list[dict] = field(default_factory=list)
    extra_files: list[str] = field(default_factory=list)
    pack: Optional[str] = None  # this pack's folder in custom_nodes
    notes: list[str] = field(default_factory=list)  # e.g. a folder listing cut short at its bound

    @property
    def ok(self) -> bool:
        return (self.version_ok and self.pack is not None and all(f.status == OK for f in self.files)
                and all(p["ok"] for p in self.packages))

    def as_dict(self) -> dict:
        return {"ok": self.ok, "comfyui": {"path": self.root, "version": self.comfyui_version,
                                           "requires": self.requires, "ok": self.version_ok,
                                           "extra_model_paths": self.extra_files},
                "pack": {"path": self.pack, "ok": self.pack is not None},
                "files": [f.as_dict() for f in self.files], "packages": self.packages, "notes": self.notes}


def weight_file_names(inst: ComfyInstall) -> list[str]:
    """What the stage loader lists: safetensors in models/dreamo then models/loras, each name once."""
    names: list[str] = []
    for folder in st.WEIGHT_FOLDERS:
        for name in inst.list_files(folder, SAFETENSORS_EXTENSIONS):
            if name not in names:
                names.append(name)
    return names


def _full_path(inst: ComfyInstall, folders, name) -> Optional[str]:
    for folder in folders:
        path = inst.full_path(folder, name)
        if path:
            return path
    return None


def _inside(path: str, folders: list[str]) -> bool:
    return any(os.path.commonpath([os.path.abspath(path), os.path.abspath(f)]) == os.path.abspath(f)
               for f in folders if os.path.isdir(f))


def locate(need: Need, inst: ComfyInstall, main_path: Optional[str]) -> FileResult:
    """Find a need's file the way the node that reads it would, then check its contents."""
    path = None
    if need.stage is not None or need.stems:
        names = weight_file_names(inst)
        main_rel = None
        if main_path:
            for folder in need.folders:
                for base in inst.paths(folder):
                    if _inside(main_path, [base]):
                        main_rel = os.path.relpath(main_path, base).replace(os.sep, "/")
        found = (st.find_stage_file(need.stage, names, near=main_rel) if need.stage is not None
                 else st.find_file(need.stems, names, near=main_rel))
        if found:
            path = _full_path(inst, need.folders, found)
    else:
        for name in need.names:
            path = _full_path(inst, need.folders, name)
            if path:
                break
    target = _target(need, inst, main_path)
    if path is None:
        stems = need.stems or (need.stage.stems if need.stage else ())
        wanted = need.names or ((f"{stems[0]}.safetensors",) if stems else ())
        searched = [p for f in need.folders for p in inst.paths(f)]
        for name in wanted:
            elsewhere = [p for p in inst.find_anywhere(os.path.basename(name)) if not _inside(p, searched)]
            if elsewhere:
                return FileResult(need, MISPLACED, elsewhere[0], target, _file_size(elsewhere[0]),
                                  f"not in {', '.join(need.folders)}, where it is looked up")
        return FileResult(need, MISSING, None, target, None, need.note)
    try:
        detail = check_content(need.check, path) if need.check else ""
        status = OK
    except CheckUnavailable as e:
        detail, status = str(e), UNCHECKED
    except WeightFileError as e:
        detail, status = str(e), BAD
    return FileResult(need, status, path, path, _file_size(path), detail)


def _target(need: Need, inst: ComfyInstall, main_path: Optional[str]) -> Optional[str]:
    rel = need.dest or (need.names[0] if need.names else None)
    if rel is None:
        return None
    if (need.stems or (need.stage is not None and need.stage is not st.MAIN)) and main_path:
        return os.path.join(os.path.dirname(main_path), rel)  # next to the main file, in the repo's own layout
    return os.path.join(inst.download_folder(need.folders[0]), rel)


PACK_NAME = "comfyui-dreamo"


def _pyproject(folder: str) -> Optional[dict]:
    try:
        with open(os.path.join(folder, "pyproject.toml"), "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return data if data.get("project", {}).get("name") == PACK_NAME else None


def find_pack(root: str) -> Optional[str]:
    """The folder of this pack in the install's custom_nodes (what ComfyUI loads), or None."""
    custom = os.path.join(root, "custom_nodes")
    if not os.path.isdir(custom):
        return None
    for entry in sorted(os.listdir(custom)):
        folder = os.path.join(custom, entry)
        if not entry.endswith(".disabled") and os.path.isdir(folder) and _pyproject(folder):
            return folder
    return None


def pack_requirements(pack: Optional[str] = None) -> tuple[Optional[str], list[str]]:
    """(requires-comfyui, what the nodes import) from the pyproject.toml of the pack ComfyUI loads (else of this
    copy): its `nodes` extra, the same list as requirements.txt (older packs: `dependencies`)."""
    data = (_pyproject(pack) if pack else None) or _pyproject(PACK_DIR)
    if data is None:
        return None, []
    project = data["project"]
    deps = project.get("optional-dependencies", {}).get("nodes", project.get("dependencies", []))
    return data.get("tool", {}).get("comfy", {}).get("requires-comfyui"), deps


def version_ok(version: Optional[str], requires: Optional[str]) -> bool:
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    if not requires:
        return True
    if version is None:
        return False
    try:
        return SpecifierSet(requires).contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def check_packages(requirements: list[str]) -> list[dict]:
    from packaging.requirements import Requirement

    out = []
    for text in requirements:
        req = Requirement(text)
        try:
            installed = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        ok = installed is not None and (not req.specifier or req.specifier.contains(installed, prereleases=True))
        out.append({"name": req.name, "requires": str(req.specifier) or None, "installed": installed, "ok": ok,
                    "fix": None if ok else f'pip install "{text}"'})
    return out


def diagnose(inst: ComfyInstall, needs: list[Need]) -> Report:
    pack = find_pack(inst.root)
    requires, deps = pack_requirements(pack)
    version = inst.version()
    report = Report(inst.root, version, requires, version_ok(version, requires), extra_files=inst.extra_files,
                    pack=pack)
    main_path = None
    explicit_embeddings = any(n.check == "embeddings" for n in needs)
    for need in needs:
        result = locate(need, inst, main_path)
        report.files.append(result)
        if need.stage is st.MAIN and result.status == OK:
            main_path = result.path
            if "no embeddings" in result.detail and not explicit_embeddings:  # a LoRA-only '_comfyui' copy
                report.files.append(locate(embedding_need(need.asked_by.rsplit(" '", 1)[0]), inst, main_path))
    _check_text_encoder_pairs(report.files)
    extras = []
    if any(r.need.check == "rembg" for r in report.files):
        extras += ["rembg", "onnxruntime"]
    if any((r.path or "").lower().endswith(".gguf") for r in report.files):
        extras.append("gguf")
    report.packages = check_packages(deps + extras)
    report.notes = list(inst.warnings)
    return report


def _check_text_encoder_pairs(results: list[FileResult]) -> None:
    """A FLUX DualCLIPLoader needs one CLIP-L and one T5-XXL: two of a kind is reported on the second."""
    by_node: dict[str, list[FileResult]] = {}
    for r in results:
        if r.need.check == "text_encoder" and r.status == OK and r.need.asked_by.startswith("DualCLIPLoader"):
            by_node.setdefault(r.need.asked_by.rsplit(" '", 1)[0], []).append(r)
    for pair in by_node.values():
        kinds = [r.detail.split(",")[0] for r in pair]
        if len(pair) == 2 and kinds[0] == kinds[1]:
            pair[1].status = BAD
            pair[1].detail = (f"both inputs of {pair[1].need.asked_by.rsplit(' ', 1)[0]} are {kinds[0]}; FLUX.1 needs "
                              "one CLIP-L (clip_l.safetensors) and one T5-XXL (t5xxl_fp16.safetensors).")
