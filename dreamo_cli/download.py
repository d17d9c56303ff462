"""dreamo-download: fetch the official files a DreamO workflow or preset is missing, verified, into ComfyUI.

    dreamo-download [--comfyui DIR] [--workflow FILE.json | NAME | --preset v1.1|v1] [--no-turbo] [--id] [--fp8]
                    [--dry-run] [--token TOKEN] [--stall-timeout S] [--deadline S]

Runs the doctor's check, then downloads only the files that are missing and have an official source: Hugging
Face files from their /resolve/ URLs, asked for and authorised through huggingface-hub (honours HF_ENDPOINT,
HF_HOME and your login/HF_TOKEN; a gated repo gives the licence instruction), facexlib's weights from its
GitHub releases. Each file is fetched with HTTP ranges into a staging folder (`models/.dreamo-download`, which
ComfyUI does not list), so an interrupted download resumes where it stopped on the next run; it is verified
(size, sha256 where the Hub publishes it, and the doctor's content check) and only then moved into the models
folder; a file that fails is deleted. Nothing is overwritten. Never run by a node: downloads happen only when
you run this command.

Bounds (what a wrong or hostile server can cost): a file is never read past the size announced for it (the
Hub's exact size, else the GET's Content-Length, else 1.25x the published size, else 48 GB); a transfer that
receives less than 64 KiB in --stall-timeout seconds (default 60) is stopped, and the whole run stops at
--deadline seconds (default 12 hours); what was received stays in the staging folder, and the next run
resumes it. A staged partial file longer than the file is discarded and fetched again. Once a host cannot be
reached, the other files from it are not attempted in that run.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import time
from typing import Optional

from dreamo_ops.weights import WeightFileError

from .catalog import FACEXLIB_RELEASES, WorkflowError
from .comfy_folders import InstallError
from .content_checks import CheckUnavailable, check_content
from .diagnosis import diagnose
from .doctor import short
from .download_plan import Item, make_plan, render_plan
from .tool_target import INSTALL_HINT, NEEDED, add_target_arguments, missing_packages, resolve
from .transfer import (STALL_BYTES, STALL_TIMEOUT, DownloadError, HostUnreachable, Limits, OutOfTime, fetch,
                       forget)

STAGING = ".dreamo-download"
CHUNK = 1 << 20
DEADLINE = 12 * 3600.0  # seconds for the whole run


def staging_dir(inst_models: str, target: str) -> str:
    """A folder ComfyUI does not list: models/.dreamo-download (or next to an extra folder outside models/)."""
    folder = os.path.dirname(target)
    if os.path.commonpath([os.path.abspath(folder), os.path.abspath(inst_models)]) == os.path.abspath(inst_models):
        return os.path.join(inst_models, STAGING)
    return os.path.join(os.path.dirname(folder), STAGING)


def sha256_of(path: str, size: Optional[int]) -> str:
    from tqdm.auto import tqdm

    h = hashlib.sha256()
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, desc="verifying sha256",
                                     leave=False) as bar:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def verify(item: Item, path: str) -> str:
    """Size, sha256 (when published) and the doctor's content check of a downloaded file; its description."""
    name = os.path.basename(item.target)
    size = os.path.getsize(path)
    if item.exact and item.size is not None and size != item.size:
        raise DownloadError(f"'{name}' is {size} bytes, the server announced {item.size}: incomplete or corrupted.")
    if item.sha256:
        digest = sha256_of(path, size)
        if digest != item.sha256:
            raise DownloadError(f"'{name}' has sha256 {digest}, {item.source.where} publishes {item.sha256}: "
                                "corrupted in transit (or changed on the server).")
    try:
        return check_content(item.result.need.check, path) if item.result.need.check else ""
    except CheckUnavailable as e:  # size and sha256 were verified: keep the file, say what was not checked
        return f"size{' and sha256' if item.sha256 else ''} verified; {e}"
    except WeightFileError as e:
        raise DownloadError(f"the downloaded file failed the content check: {e}") from e


def install(item: Item, models_dir: str, token: Optional[str], facexlib_base: str,
            limits: Optional[Limits] = None) -> str:
    """Download, verify and move one file into place; returns what the file is."""
    if os.path.exists(item.target):
        raise DownloadError(f"{item.target} appeared meanwhile; not overwritten.")
    staging = staging_dir(models_dir, item.target)
    staged = fetch(item, staging, token, facexlib_base, limits=limits)
    try:
        detail = verify(item, staged)
    except DownloadError:
        forget(staged)
        raise
    os.makedirs(os.path.dirname(item.target), exist_ok=True)
    try:
        os.replace(staged, item.target)
    except OSError:  # another file system (an extra_model_paths folder)
        shutil.move(staged, item.target)
    return detail


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="dreamo-download", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_arguments(parser)
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the total size; download nothing")
    parser.add_argument("--token", help="a Hugging Face token (default: HF_TOKEN or your `hf auth login`)")
    parser.add_argument("--facexlib-url", default=FACEXLIB_RELEASES,
                        help="base URL of facexlib's release files (a mirror); default: its GitHub releases")
    parser.add_argument("--stall-timeout", type=float, default=STALL_TIMEOUT, metavar="S",
                        help=f"stop a transfer that receives less than {STALL_BYTES >> 10} KiB in S seconds "
                             f"(default {STALL_TIMEOUT:g}); what it received is kept for the next run")
    parser.add_argument("--deadline", type=float, default=DEADLINE, metavar="S",
                        help=f"stop the whole run after S seconds (default {DEADLINE:g}, 12 hours); partial files "
                             "are kept for the next run")
    args = parser.parse_args(argv)
    if not args.stall_timeout > 0 or not args.deadline > 0:
        parser.error("--stall-timeout and --deadline must be positive numbers of seconds")
    limits = Limits(stall_timeout=args.stall_timeout, deadline_at=time.monotonic() + args.deadline)
    try:
        missing = missing_packages(dict(NEEDED, huggingface_hub="huggingface-hub", requests="requests",
                                        tqdm="tqdm"))
        if missing:
            raise InstallError(f"the Python package(s) {', '.join(missing)} this command needs are not installed in "
                               f"{sys.executable}; {INSTALL_HINT.replace('the doctor', 'it')}.")
        inst, needs, target = resolve(args)
    except (InstallError, WorkflowError, OSError) as e:
        print(f"dreamo-download: {e}", file=sys.stderr)
        return 2
    report = diagnose(inst, needs)
    items, others = make_plan(report, args.token, args.facexlib_url)
    print(f"DreamO download for {target} into {inst.root}")
    print(render_plan(items, others, inst.root))
    if args.dry_run:
        return 1 if any(it.blocked for it in items) else 0
    failed = 0
    down = {it.host for it in items if it.unreachable}  # hosts that could not be reached
    skipped: dict[str, int] = {}  # host -> files not attempted because it is down
    late = 0  # files not attempted because the deadline passed
    out_of_time = False
    for it in items:
        if it.blocked:
            print(f"\nSKIPPED {it.source.where}:\n{it.blocked}")
            failed += 1
            continue
        if out_of_time or it.host in down:
            if out_of_time:
                late += 1
            else:
                skipped[it.host] = skipped.get(it.host, 0) + 1
            failed += 1
            continue
        print(f"\nDownloading {it.source.where} -> {short(it.target, inst.root)}")
        try:
            detail = install(it, inst.models_dir, args.token, args.facexlib_url, limits)
        except HostUnreachable as e:
            print(f"FAILED: {e}")
            down.add(it.host)
            failed += 1
            continue
        except OutOfTime as e:
            print(f"FAILED: {e}")
            out_of_time = True
            failed += 1
            continue
        except DownloadError as e:
            print(f"FAILED: {e}")
            failed += 1
            continue
        print(f"OK: {short(it.target, inst.root)}: {detail}")
    for host, count in skipped.items():
        print(f"\nNOT ATTEMPTED: {count} file(s) from {host}, unreachable (see above). Check the "
              "network connection (and HF_ENDPOINT / --facexlib-url), then run again.")
    if late:
        print(f"\nNOT ATTEMPTED: {late} file(s): the --deadline passed. Run again to go on.")
    after = diagnose(inst, needs)
    left = [r for r in after.files if r.status != "ok"]
    print(f"\n{len(items) - failed} of {len(items)} file(s) installed. "
          + ("The doctor now finds everything in place." if after.ok else
             f"Still to fix: {len(left)} file(s)" + (" and the ComfyUI version/packages" if (
                 not after.version_ok or not all(p['ok'] for p in after.packages)) else "")
             + " (run dreamo-doctor for details)."))
    return 0 if after.ok and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
