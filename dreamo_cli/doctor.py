"""dreamo-doctor: what a ComfyUI install has of the files a DreamO workflow needs, and whether they are right.

    dreamo-doctor [--comfyui DIR] [--workflow FILE.json | NAME | --preset v1.1|v1] [--no-turbo] [--id]
                  [--remover] [--fp8] [--extra-model-paths-config YAML] [--json]

For each file: present / missing / misplaced (in another models folder) / bad (unreadable, or another model
than it should be) / unchecked (a package its check needs is missing here), where it was found or where it
should go, its size, and what its contents are. Also the ComfyUI version against the pack's supported range
and the Python packages the nodes import. Exit code 0 only when the workflow can run (1: something to fix,
2: the command itself could not run: bad arguments, a workflow or extra_model_paths.yaml it cannot read or
that a node would refuse, or a package this command needs is missing).

Bounds: a workflow file over 64 MB, and an extra_model_paths.yaml over 1 MB, with more than 32 aliases or
nested over 16 levels, are refused; folder walks visit each real folder once (a symlink loop ends) and stop
after 20,000 folders, saying so; an ONNX file is checked from its top-level fields (a few bytes each, whatever
its size).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
import tomllib
from dataclasses import dataclass, field
from typing import Optional

from dreamo_ops import stages as st
from dreamo_ops.background import check_onnx_file, session_name
from dreamo_ops.weights import SAFETENSORS_EXTENSIONS, WeightFileError

from .catalog import Need, WorkflowError, embedding_need, preset_needs, workflow_needs
from .comfy_folders import ComfyInstall, InstallError, default_root

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OK, MISSING, MISPLACED, BAD, UNCHECKED = "ok", "missing", "misplaced", "bad", "unchecked"
MAX_WORKFLOW_BYTES = 64 << 20
# What this command itself imports (import name -> pip name): without them it stops with the instruction. The
# content checks import torch/safetensors/facexlib when they run; a missing one leaves that file 'unchecked'.
NEEDED = {"yaml": "pyyaml", "packaging": "packaging"}
INSTALL_HINT = ("run the doctor with ComfyUI's Python (the one that runs the nodes), or install what it needs: "
                "pip install \"comfyui-dreamo[doctor]\" (from the pack's folder: pip install \".[doctor]\")")


class CheckUnavailable(WeightFileError):
    """A content check could not run here: a package it imports is not installed in this Python."""


def missing_packages(needed: Optional[dict] = None) -> list[str]:
    """pip names of the modules in `needed` (import name -> pip name, default NEEDED) that are not installed."""
    import importlib.util

    return [pip for module, pip in (needed or NEEDED).items() if importlib.util.find_spec(module) is None]


def _model_files():
    from dreamo_ops import model_files  # torch and safetensors: imported when a file is checked

    return model_files


def _mf(check: str):
    def run(path: str) -> str:
        return getattr(_model_files(), check)(path)
    return run


def _face(network: Optional[str]):
    def check(path: str) -> str:
        from dreamo_ops.face_preprocess import load_model  # imports facexlib (a few seconds) only when needed

        load_model(path, network)
        return ("BiSeNet face parser" if network is None else f"RetinaFace-{network} detector") + \
            ", loads into facexlib (tensors only, no pickled code)"
    return check


def _only(kind: str):
    def check(path: str) -> str:
        found = _model_files().check_text_encoder(path)
        if not found.startswith(kind):
            raise WeightFileError(f"'{os.path.basename(path)}' is {found.split(',')[0]}, not {kind}.")
        return found
    return check


def _rembg(path: str) -> str:
    name = os.path.basename(path)
    if session_name(name) is None:
        raise WeightFileError(f"'{name}' is not a background remover the pack can run (BEN2_Base.onnx, "
                              "birefnet-*.onnx, isnet-*.onnx, u2net*.onnx, bria-rmbg.onnx, silueta.onnx).")
    try:
        model = check_onnx_file(path)
    except ValueError as e:
        raise WeightFileError(str(e)) from e
    return f"ONNX background remover (rembg session '{session_name(name)}'), {model}"


CHECKS = {
    "flux": _mf("check_flux"), "text_encoder": _mf("check_text_encoder"), "t5xxl": _only("T5-XXL"),
    "clip_l": _only("CLIP-L"), "vae": _mf("check_flux_vae"), "lora": _mf("check_lora"),
    "dreamo_main": _mf("check_dreamo_main"), "embeddings": _mf("check_embeddings"),
    "face:resnet50": _face("resnet50"), "face:mobile0.25": _face("mobile0.25"), "face:parser": _face(None),
    "rembg": _rembg,
}


def check_content(check: str, path: str) -> str:
    """The named content check on a file: its description, WeightFileError saying what is wrong, or
    CheckUnavailable when a package the check needs is not installed here."""
    try:
        return CHECKS[check](path)
    except WeightFileError:
        raise
    except ImportError as e:
        missing = getattr(e, "name", None) or str(e)
        raise CheckUnavailable(f"its contents were not checked: the Python package '{missing}' is not installed "
                               "in this Python") from e


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


def fmt_size(n: Optional[int], approx: bool = False) -> str:
    if n is None:
        return "size unknown"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{'≈' if approx else ''}{n / scale:.1f} {unit}"
    return f"{n} B"


def short(path: Optional[str], root: str) -> str:
    if not path:
        return "?"
    rel = os.path.relpath(path, root)
    return path if rel.startswith("..") else rel


def render(report: Report, target: str, fix_command: str) -> str:
    lines = ["DreamO doctor", f"ComfyUI: {report.root}"]
    ver = report.comfyui_version or "unknown (no comfyui_version.py)"
    lines.append(f"  version {ver}; the pack supports {report.requires or 'any'}: "
                 + ("ok" if report.version_ok else "NOT SUPPORTED - update ComfyUI (git pull, or the updater of "
                                                   "your ComfyUI build)"))
    for path in report.extra_files:
        lines.append(f"  extra model paths: {path}")
    lines.append(f"  DreamO pack: {short(report.pack, report.root)}" if report.pack else
                 f"  DreamO pack: NOT FOUND in {os.path.join(report.root, 'custom_nodes')} - put it there "
                 "(README, Install) and restart ComfyUI")
    lines.append(f"Needed by: {target}")
    lines += [f"  note: {note}" for note in report.notes]
    lines.append("")
    width = max([len(f.need.label) for f in report.files] + [10])
    for r in report.files:
        n = r.need
        lines.append(f"[{r.status.upper():9}] {n.label:{width}}  ({n.asked_by})")
        if r.status == OK:
            lines.append(f"            {short(r.path, report.root)}, {fmt_size(r.size)}: {r.detail}")
        elif r.status == BAD:
            lines.append(f"            {short(r.path, report.root)}, {fmt_size(r.size)}: {r.detail}")
            lines.append("            fix: replace it with the original file"
                         + (f" from {n.source.where}" if n.source else "") + " (the downloader never overwrites it).")
        elif r.status == UNCHECKED:
            lines.append(f"            {short(r.path, report.root)}, {fmt_size(r.size)}: {r.detail}")
        elif r.status == MISPLACED:
            lines.append(f"            found at {short(r.path, report.root)}, {fmt_size(r.size)}, {r.detail}")
            lines.append(f"            fix: move it to {short(r.target, report.root)}")
        else:
            want = (" or ".join(n.names[:2]) if n.names else
                    f"the {n.stage.name} stage file ({n.stage.stems[0] + '.safetensors' if n.stage.stems else 'a path containing turbo'})")
            where = short(r.target, report.root) if r.target else " or ".join(f"models/{f}" for f in n.folders)
            src = (f" from {n.source.where}, {fmt_size(n.source.approx_size, approx=True)}"
                   + (" (gated: accept its licence on Hugging Face first)" if n.source.gated else "")
                   if n.source else "")
            lines.append(f"            needs {want}: put it at {where}{src}")
            if r.detail:
                lines.append(f"            {r.detail}")
    lines.append("")
    bad_pkgs = [p for p in report.packages if not p["ok"]]
    lines.append(f"Python packages (checked in {sys.executable}; run the doctor with ComfyUI's Python): "
                 + ", ".join(f"{p['name']} {p['installed'] or 'MISSING'}" for p in report.packages))
    for p in bad_pkgs:
        lines.append(f"  {p['name']}: needs {p['requires'] or 'any version'}, has {p['installed'] or 'none'}; "
                     f"fix: {p['fix']}")
    problems = [r for r in report.files if r.status != OK]
    downloadable = [r for r in problems if r.status == MISSING and r.need.source]
    lines.append("")
    if report.ok:
        lines.append("Result: OK - every file is in place and looks right; the workflow can run.")
    else:
        count = len(problems) + len(bad_pkgs) + (0 if report.version_ok else 1) + (0 if report.pack else 1)
        lines.append(f"Result: {count} problem(s); the workflow cannot run yet.")
        unchecked = [r for r in problems if r.status == UNCHECKED]
        if unchecked:
            lines.append(f"  {len(unchecked)} file(s) could not be checked in {sys.executable}: {INSTALL_HINT}.")
        if downloadable:
            lines.append(f"  `{fix_command}` fetches the {len(downloadable)} missing official file(s) "
                         "(add --dry-run to see the plan and sizes first).")
    return "\n".join(lines)


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


def fix_command(args) -> str:
    script = os.path.basename(sys.argv[0]) if sys.argv else ""
    parts = ["dreamo-download" if script.startswith("dreamo-") else "python -m dreamo_cli.download"]
    if args.comfyui:
        parts += ["--comfyui", args.comfyui]
    if args.workflow:
        parts += ["--workflow", args.workflow]
    else:
        if args.preset:
            parts += ["--preset", args.preset]
        parts += [flag for flag, on in (("--no-turbo", args.no_turbo), ("--id", args.id), ("--fp8", args.fp8)) if on]
    return " ".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="dreamo-doctor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        missing = missing_packages()
        if missing:
            raise InstallError(f"the Python package(s) {', '.join(missing)} this command needs are not installed in "
                               f"{sys.executable}; {INSTALL_HINT}.")
        inst, needs, target = resolve(args)
    except (InstallError, WorkflowError, OSError) as e:
        if args.json:
            print(json.dumps({"ok": False, "error": str(e)}))
        else:
            print(f"dreamo-doctor: {e}", file=sys.stderr)
        return 2
    report = diagnose(inst, needs)
    if args.json:
        print(json.dumps(report.as_dict(), indent=1))
    else:
        print(render(report, target, fix_command(args)))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
