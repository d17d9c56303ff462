"""dreamo-download: fetch the official files a DreamO workflow or preset is missing, verified, into ComfyUI.

    dreamo-download [--comfyui DIR] [--workflow FILE.json | --preset v1.1|v1] [--no-turbo] [--id] [--fp8]
                    [--dry-run] [--token TOKEN]

Runs the doctor's check, then downloads only the files that are missing and have an official source: Hugging
Face files from their /resolve/ URLs, asked for and authorised through huggingface-hub (honours HF_ENDPOINT,
HF_HOME and your login/HF_TOKEN; a gated repo gives the licence instruction), facexlib's weights from its
GitHub releases. Each file is fetched with HTTP ranges into a staging folder (`models/.dreamo-download`, which
ComfyUI does not list), so an interrupted download resumes where it stopped on the next run; it is verified
(size, sha256 where the Hub publishes it, and the doctor's content check) and only then moved into the models
folder; a file that fails is deleted. Nothing is overwritten. Never run by a node: downloads happen only when
you run this command.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import sys
from dataclasses import dataclass
from typing import Optional
from urllib.parse import quote

from dreamo_ops.weights import WeightFileError

from .catalog import FACEXLIB_RELEASES, Source, WorkflowError
from .comfy_folders import InstallError
from .doctor import MISSING, FileResult, add_target_arguments, check_content, diagnose, fmt_size, resolve, short

STAGING = ".dreamo-download"
CHUNK = 1 << 20
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class DownloadError(RuntimeError):
    """A file could not be fetched or failed verification; the message says why and what to do."""


@dataclass
class Item:
    result: FileResult
    source: Source
    target: str
    size: Optional[int] = None  # exact, from the server; else the catalog's rounded figure
    exact: bool = False
    sha256: Optional[str] = None
    blocked: str = ""  # why it cannot be fetched now (gated repo without access, ...)
    warning: str = ""  # e.g. the server could not be asked for the exact size


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def hub_url(source: Source, revision: str = "main") -> str:
    """The file's /resolve/ URL on HF_ENDPOINT, read now (huggingface-hub's `hf_hub_url` uses the endpoint of
    when it was imported)."""
    return f"{endpoint()}/{source.repo}/resolve/{quote(revision, safe='')}/{quote(source.filename)}"


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:160] if text else type(e).__name__


def gated_instruction(repo: str) -> str:
    page = f"{endpoint()}/{repo}"
    return (f"{repo} is gated: Hugging Face serves it only to logged-in users who accepted its licence.\n"
            f"  1. Open {page} in a browser, log in and accept the licence.\n"
            f"  2. Make a read token at {endpoint()}/settings/tokens and run `hf auth login` (older clients: "
            "`huggingface-cli login`), or set HF_TOKEN=<token>.\n"
            "  3. Run this command again.")


def _hub_error(source: Source, e: Exception) -> str:
    from huggingface_hub.utils import GatedRepoError, RepositoryNotFoundError  # also where huggingface-hub < 0.23 has them

    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(e, GatedRepoError) or (source.gated and status in (401, 403)):
        return gated_instruction(source.repo)
    if isinstance(e, RepositoryNotFoundError) and status == 401:
        return (f"{source.repo} answered 401 (not authorised): check your token (`hf auth login` or HF_TOKEN) "
                "and run again.")
    return f"{source.where} could not be fetched: {_first_line(e)}"


def hub_metadata(item: Item, token: Optional[str]) -> None:
    """Exact size and sha256 of a Hub file from a HEAD request (what hf_hub_download itself asks first)."""
    from huggingface_hub import get_hf_file_metadata

    src = item.source
    try:
        meta = get_hf_file_metadata(hub_url(src), token=token)
    except Exception as e:  # noqa: BLE001 - connection errors and the Hub's HTTP errors are all reported
        if getattr(getattr(e, "response", None), "status_code", None) is None:
            item.warning = f"{endpoint()} could not be reached ({_first_line(e)}); size as published, approximately"
        else:
            item.blocked = _hub_error(src, e)
        return
    item.size, item.exact = meta.size, meta.size is not None
    etag = (meta.etag or "").strip('"').lower()
    item.sha256 = etag if SHA256.match(etag) else None  # an LFS file's etag is its sha256


def url_metadata(item: Item, base: str) -> None:
    import requests

    try:
        r = requests.head(item.source.url(base), allow_redirects=True, timeout=30)
        r.raise_for_status()
        if r.headers.get("Content-Length"):
            item.size, item.exact = int(r.headers["Content-Length"]), True
    except requests.RequestException as e:
        host = base.split("//", 1)[-1].split("/", 1)[0]
        item.warning = f"{host} could not be reached ({type(e).__name__}); size as published, approximately"


def make_plan(report, token: Optional[str], facexlib_base: str, offline: bool = False) -> tuple[list[Item], list]:
    """(items to download, results that cannot be downloaded: misplaced, bad, or no official source)."""
    items, others = [], []
    unreachable: dict[bool, str] = {}  # hub / url -> the warning of the first failed request (not asked again)
    for r in report.files:
        if r.status == MISSING and r.need.source and r.target:
            item = Item(r, r.need.source, r.target, r.need.source.approx_size)
            kind = bool(item.source.repo)
            if kind in unreachable:
                item.warning = unreachable[kind]
            elif not offline:
                hub_metadata(item, token) if kind else url_metadata(item, facexlib_base)
                if item.warning:
                    unreachable[kind] = item.warning
            items.append(item)
        elif r.status != "ok":
            others.append(r)
    return items, others


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
    except WeightFileError as e:
        raise DownloadError(f"the downloaded file failed the content check: {e}") from e


def _staged_name(source: Source) -> str:
    return "--".join(p for p in ((source.repo or "facexlib").replace("/", "--"), source.filename.replace("/", "--")))


def fetch(item: Item, staging: str, token: Optional[str], facexlib_base: str, attempts: int = 3) -> str:
    """Download to staging/<name>.part with HTTP ranges, resuming what an earlier try or run left there.

    Hub files: the /resolve/ URL of HF_ENDPOINT with huggingface-hub's own headers (your token from --token,
    HF_TOKEN or `hf auth login`, stored under HF_HOME). The transfer itself is a plain ranged GET so that an
    interrupted download resumes on the next run (huggingface-hub 1.x+ deletes partial files when a call fails)."""
    import requests
    from tqdm.auto import tqdm

    src = item.source
    if src.repo:
        from huggingface_hub.utils import build_hf_headers

        url, headers = hub_url(src), build_hf_headers(token=token)
    else:
        url, headers = src.url(facexlib_base), {}
    headers = dict(headers, **{"Accept-Encoding": "identity"})
    os.makedirs(staging, exist_ok=True)
    final = os.path.join(staging, _staged_name(src))
    part = final + ".part"
    for attempt in range(1, attempts + 1):
        have = os.path.getsize(part) if os.path.isfile(part) else 0
        if item.exact and item.size is not None and have == item.size:
            break
        ranged = dict(headers, Range=f"bytes={have}-") if have else headers
        try:
            with requests.get(url, headers=ranged, stream=True, timeout=60, allow_redirects=True) as r:
                if r.status_code in (401, 403) and src.repo:
                    raise DownloadError(_hub_error(src, requests.HTTPError(response=r)))
                r.raise_for_status()
                if have and r.status_code != 206:
                    have = 0  # the server ignored the range: start over
                length = r.headers.get("Content-Length")
                total = have + int(length) if length else item.size
                with open(part, "ab" if have else "wb") as f, tqdm(total=total, initial=have, unit="B",
                                                                     unit_scale=True, desc=src.filename) as bar:
                    for chunk in r.iter_content(1 << 16):
                        f.write(chunk)
                        bar.update(len(chunk))
            break
        except requests.RequestException as e:
            if attempt == attempts:
                raise DownloadError(f"{url} failed: {_first_line(e)}\n  (run again to resume from "
                                    f"{os.path.getsize(part) if os.path.isfile(part) else 0} bytes kept in {part})"
                                    ) from e
    os.replace(part, final)
    return final


def _forget(staged: str) -> None:
    """Delete a rejected file so that nothing of it stays behind and the next run downloads it afresh."""
    if os.path.isfile(staged):
        os.remove(staged)


def install(item: Item, models_dir: str, token: Optional[str], facexlib_base: str) -> str:
    """Download, verify and move one file into place; returns what the file is."""
    if os.path.exists(item.target):
        raise DownloadError(f"{item.target} appeared meanwhile; not overwritten.")
    staging = staging_dir(models_dir, item.target)
    staged = fetch(item, staging, token, facexlib_base)
    try:
        detail = verify(item, staged)
    except DownloadError:
        _forget(staged)
        raise
    os.makedirs(os.path.dirname(item.target), exist_ok=True)
    try:
        os.replace(staged, item.target)
    except OSError:  # another file system (an extra_model_paths folder)
        shutil.move(staged, item.target)
    return detail


def render_plan(items: list[Item], others: list, root: str) -> str:
    lines = ["Download plan:"]
    for it in items:
        size = fmt_size(it.size, approx=not it.exact)
        lines.append(f"  {it.source.where:70} {size:>10}  -> {short(it.target, root)}"
                     + ("  [sha256 published]" if it.sha256 else ""))
        lines += ["    " + line for line in it.blocked.splitlines()]
    known = [it.size for it in items if it.size is not None]
    unknown = len(items) - len(known)
    approx = any(not it.exact for it in items)
    lines.append(f"  total: {fmt_size(sum(known), approx=approx)} in {len(items)} file(s)"
                 + (f" (+{unknown} of unknown size)" if unknown else "") if items else "  nothing to download.")
    for warning in dict.fromkeys(it.warning for it in items if it.warning):
        lines.append(f"  note: {warning}")
    for r in others:
        what = {"misplaced": f"found at {short(r.path, root)}; move it to {short(r.target, root)}",
                "bad": f"{short(r.path, root)} failed its check (not overwritten): {r.detail}",
                "missing": r.need.note or "no official download; get it where it is published"}[r.status]
        lines.append(f"  not downloaded: {r.need.label} ({r.need.asked_by}): {what}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="dreamo-download", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_arguments(parser)
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the total size; download nothing")
    parser.add_argument("--token", help="a Hugging Face token (default: HF_TOKEN or your `hf auth login`)")
    parser.add_argument("--facexlib-url", default=FACEXLIB_RELEASES,
                        help="base URL of facexlib's release files (a mirror); default: its GitHub releases")
    args = parser.parse_args(argv)
    try:
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
    for it in items:
        if it.blocked:
            print(f"\nSKIPPED {it.source.where}:\n{it.blocked}")
            failed += 1
            continue
        print(f"\nDownloading {it.source.where} -> {short(it.target, inst.root)}")
        try:
            detail = install(it, inst.models_dir, args.token, args.facexlib_url)
        except DownloadError as e:
            print(f"FAILED: {e}")
            failed += 1
            continue
        print(f"OK: {short(it.target, inst.root)}: {detail}")
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
