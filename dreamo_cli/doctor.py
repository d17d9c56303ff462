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
import json
import os
import sys
from typing import Optional

from .catalog import WorkflowError
from .comfy_folders import InstallError
from .diagnosis import BAD, MISPLACED, MISSING, OK, UNCHECKED, Report, diagnose
from .tool_target import INSTALL_HINT, add_target_arguments, missing_packages, resolve


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
