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
import re
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Optional
from urllib.parse import quote

from dreamo_ops.weights import WeightFileError

from .catalog import FACEXLIB_RELEASES, Source, WorkflowError
from .comfy_folders import InstallError
from .content_checks import CheckUnavailable, check_content
from .diagnosis import MISSING, FileResult, diagnose
from .doctor import fmt_size, short
from .tool_target import INSTALL_HINT, NEEDED, add_target_arguments, missing_packages, resolve

STAGING = ".dreamo-download"
CHUNK = 1 << 20
SHA256 = re.compile(r"^[0-9a-f]{64}$")
STALL_TIMEOUT = 60.0  # seconds in which at least STALL_BYTES must arrive
STALL_BYTES = 64 << 10
DEADLINE = 12 * 3600.0  # seconds for the whole run
CONNECT_TIMEOUT = 30.0
UNANNOUNCED_FACTOR = 1.25  # cap of a file whose size no server announced: its published size times this ...
UNANNOUNCED_MAX = 48 * 10**9  # ... or this when not even that is known (FLUX.1-dev in bf16 is 23.8 GB)


class DownloadError(RuntimeError):
    """A file could not be fetched or failed verification; the message says why and what to do."""


class HostUnreachable(DownloadError):
    """No connection to the file's host (refused, no route, name not resolved, connect timeout)."""

    def __init__(self, host: str, reason: str):
        self.host, self.reason = host, reason
        super().__init__(f"{host} could not be reached ({reason}).")


class OutOfTime(DownloadError):
    """The run's --deadline passed."""


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
    host: str = ""  # where the download starts (the Hub endpoint's or the release server's host)
    unreachable: bool = False  # its host could not be reached while planning


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def hub_url(source: Source, revision: str = "main") -> str:
    """The file's /resolve/ URL on HF_ENDPOINT, read now (huggingface-hub's `hf_hub_url` uses the endpoint of
    when it was imported)."""
    return f"{endpoint()}/{source.repo}/resolve/{quote(revision, safe='')}/{quote(source.filename)}"


def host_of(url: str) -> str:
    return url.split("//", 1)[-1].split("/", 1)[0]


def shorten(text: str, limit: int = 200) -> str:
    """One line of at most `limit` characters, cut at a word boundary (with an ellipsis), never mid-word."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut).rstrip(" ,;:(") + "…"


def _first_line(e: BaseException) -> str:
    """What went wrong, for people: the innermost reason of a connection error ('[Errno 111] Connection refused',
    "Failed to resolve 'huggingface.co'") rather than urllib3's retry wrapper, shortened at a word boundary."""
    seen = set()
    while id(e) not in seen:
        seen.add(id(e))
        inner = getattr(e, "reason", None)  # urllib3's MaxRetryError
        if not isinstance(inner, BaseException) and e.args and isinstance(e.args[0], BaseException):
            inner = e.args[0]  # requests wraps urllib3's error as its first argument
        if not isinstance(inner, BaseException):
            break
        e = inner
    text = str(e).strip()
    for wrapper in (r"<[^<>]* object at 0x[0-9a-f]+>:?\s*", r"^\w*Connection\w*\([^()]*\):\s*"):
        text = re.sub(wrapper, "", text).strip()  # urllib3's connection object in front of the reason
    return shorten(text or type(e).__name__)


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
            item.warning = f"{item.host} could not be reached ({_first_line(e)})"
            item.unreachable = True
        else:
            item.blocked = _hub_error(src, e)
        return
    item.size, item.exact = meta.size, meta.size is not None
    etag = (meta.etag or "").strip('"').lower()
    item.sha256 = etag if SHA256.match(etag) else None  # an LFS file's etag is its sha256


def url_metadata(item: Item, base: str) -> None:
    import requests

    try:
        r = requests.head(item.source.url(base), allow_redirects=True, timeout=CONNECT_TIMEOUT)
    except (requests.ConnectionError, requests.Timeout) as e:
        item.warning = f"{item.host} could not be reached ({_first_line(e)})"
        item.unreachable = True
        return
    except requests.RequestException as e:
        item.warning = f"{item.host}: the size could not be asked ({_first_line(e)})"
        return
    length = r.headers.get("Content-Length", "")
    if r.ok and length.isdigit():
        item.size, item.exact = int(length), True


def make_plan(report, token: Optional[str], facexlib_base: str, offline: bool = False) -> tuple[list[Item], list]:
    """(items to download, results that cannot be downloaded: misplaced, bad, or no official source)."""
    items, others = [], []
    unreachable: dict[str, str] = {}  # host -> the warning of the first failed request (not asked again)
    for r in report.files:
        if r.status == MISSING and r.need.source and r.target:
            item = Item(r, r.need.source, r.target, r.need.source.approx_size)
            item.host = host_of(endpoint() if item.source.repo else facexlib_base)
            if item.host in unreachable:
                item.warning, item.unreachable = unreachable[item.host], True
            elif not offline:
                hub_metadata(item, token) if item.source.repo else url_metadata(item, facexlib_base)
                if item.unreachable:
                    unreachable[item.host] = item.warning
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
    except CheckUnavailable as e:  # size and sha256 were verified: keep the file, say what was not checked
        return f"size{' and sha256' if item.sha256 else ''} verified; {e}"
    except WeightFileError as e:
        raise DownloadError(f"the downloaded file failed the content check: {e}") from e


def _staged_name(source: Source) -> str:
    return "--".join(p for p in ((source.repo or "facexlib").replace("/", "--"), source.filename.replace("/", "--")))


@dataclass
class Limits:
    """How long a download may take: see the module docstring (Bounds)."""

    stall_timeout: float = STALL_TIMEOUT
    deadline_at: float = float("inf")  # time.monotonic() at which the run stops
    stall_bytes: int = STALL_BYTES

    def left(self) -> float:
        return self.deadline_at - time.monotonic()


def size_cap(item: Item, have: int, length: Optional[str]) -> tuple[int, str, bool]:
    """(the most bytes the file may have, where that figure comes from, whether it is the file's exact size)."""
    if item.exact and item.size is not None:
        return item.size, "the size the server announced", True
    if length and length.isdigit():
        return have + int(length), "the size the server announced", True
    if item.source.approx_size:
        return int(item.source.approx_size * UNANNOUNCED_FACTOR), (
            f"{UNANNOUNCED_FACTOR:g}x the published size, as the server announced none"), False
    return UNANNOUNCED_MAX, "the largest file this downloader accepts, as the server announced no size", False


def _no_connection(e: BaseException) -> bool:
    """Whether a requests error means no connection was made at all (refused, no route, name not resolved,
    connect timeout), as opposed to one broken after it was made."""
    import urllib3.exceptions

    seen = set()
    while isinstance(e, BaseException) and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)):
            return True
        e = getattr(e, "reason", None) if isinstance(getattr(e, "reason", None), BaseException) else (
            e.args[0] if e.args and isinstance(e.args[0], BaseException) else e.__cause__)
    return False


def _discard(part: str, why: str, log) -> None:
    os.remove(part)
    log(f"  discarded {part}: {why}; fetching it again from the start.")


def _raw_reader(r):
    """A read(n) that returns as soon as some bytes arrived (one recv at most), so that a server sending one byte
    every few seconds is seen as stalled: urllib3 2's read1, else http.client's under urllib3 1.x."""
    raw = r.raw
    if hasattr(raw, "read1"):
        return lambda n: raw.read1(n)
    fp = raw._fp  # urllib3 1.x keeps http.client's response here
    return lambda n: fp.read1(n)


def fetch(item: Item, staging: str, token: Optional[str], facexlib_base: str, attempts: int = 3,
          limits: Optional[Limits] = None, log=print) -> str:
    """Download to staging/<name>.part with HTTP ranges, resuming what an earlier try or run left there.

    Hub files: the /resolve/ URL of HF_ENDPOINT with huggingface-hub's own headers (your token from --token,
    HF_TOKEN or `hf auth login`, stored under HF_HOME). The transfer itself is a plain ranged GET so that an
    interrupted download resumes on the next run (huggingface-hub 1.x+ deletes partial files when a call fails).
    Bounded by `limits` and by the size cap (see the module docstring); HostUnreachable when no connection could
    be made, DownloadError for anything else."""
    import requests
    from tqdm.auto import tqdm

    limits = limits or Limits()
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

    def kept() -> str:
        size = os.path.getsize(part) if os.path.isfile(part) else 0
        return f"run again to resume from the {size} bytes kept in {part}" if size else "run again to retry"

    attempt = 0
    while True:
        attempt += 1
        have = os.path.getsize(part) if os.path.isfile(part) else 0
        if item.exact and item.size is not None and os.path.isfile(part):
            if have == item.size:
                break
            if have > item.size:
                _discard(part, f"{have} bytes kept, longer than the {item.size}-byte file", log)
                have = 0
        if limits.left() <= 0:
            raise OutOfTime(f"the --deadline passed before {src.filename} was complete; {kept()}.")
        ranged = dict(headers, Range=f"bytes={have}-") if have else headers
        read_timeout = max(0.05, min(limits.stall_timeout, limits.left()))
        try:
            r = requests.get(url, headers=ranged, stream=True, allow_redirects=True,
                             timeout=(min(CONNECT_TIMEOUT, read_timeout), read_timeout))
        except requests.RequestException as e:
            if _no_connection(e) or isinstance(e, requests.ConnectTimeout):
                raise HostUnreachable(host_of(getattr(e.request, "url", None) or url), _first_line(e)) from e
            if attempt >= attempts:
                raise DownloadError(f"{url} failed: {_first_line(e)}\n  ({kept()})") from e
            continue
        try:
            with r:
                if r.status_code in (401, 403) and src.repo:
                    raise DownloadError(_hub_error(src, requests.HTTPError(response=r)))
                if r.status_code == 416 and have:  # the range starts at or past the file's end
                    total = r.headers.get("Content-Range", "").rpartition("/")[2]
                    if total.isdigit() and int(total) == have:
                        break  # complete already; verified below
                    _discard(part, f"{have} bytes kept, and the server has no byte {have} of the file "
                                   f"({total or 'size unknown'} bytes)", log)
                    attempt -= 1
                    continue
                r.raise_for_status()
                if have and r.status_code != 206:
                    have = 0  # the server ignored the range: start over
                cap, why, exact = size_cap(item, have, r.headers.get("Content-Length"))
                if have > cap:
                    _discard(part, f"{have} bytes kept, more than {cap} ({why})", log)
                    attempt -= 1
                    continue
                _receive(r, part, have, (cap, why, exact), limits, src.filename, tqdm)
            break
        except (requests.RequestException, _Stalled) as e:
            if isinstance(e, _Stalled) and e.out_of_time:
                raise OutOfTime(f"{url}: {e}; {kept()}.") from e
            if attempt >= attempts:
                raise DownloadError(f"{url} failed: {_first_line(e)}\n  ({kept()})") from e
        except _TooLarge as e:
            _forget(part)
            raise DownloadError(f"{url}: {e} The download was stopped and discarded (a wrong or hostile "
                                "server?).") from e
        except OSError as e:  # a full disk, a file size limit of the file system or the process
            raise DownloadError(f"writing {part} failed: {e.strerror or e}; make room (or move the models "
                                f"folder) and {kept()}.") from e
    os.replace(part, final)
    return final


class _Stalled(Exception):
    def __init__(self, text: str, out_of_time: bool = False):
        super().__init__(text)
        self.out_of_time = out_of_time


class _TooLarge(Exception):
    pass


def _receive(r, part: str, have: int, size_cap_: tuple, limits: Limits, desc: str, tqdm) -> None:
    """Append the response body to `part`: never past the cap, stopped when it stalls or the deadline passes."""
    import requests
    import urllib3.exceptions

    cap, why, exact = size_cap_
    read = _raw_reader(r)
    window_start, window_bytes = time.monotonic(), 0
    with open(part, "ab" if have else "wb") as f, tqdm(total=cap if exact else None, initial=have, unit="B",
                                                         unit_scale=True, desc=desc) as bar:
        while True:
            try:
                chunk = read(1 << 16)
            except urllib3.exceptions.ReadTimeoutError as e:
                raise _Stalled(f"nothing received for {limits.stall_timeout:g} s (--stall-timeout)",
                               limits.left() <= 0) from e
            except (urllib3.exceptions.HTTPError, OSError) as e:
                raise requests.ConnectionError(e) from e
            if not chunk:
                return
            if have + len(chunk) > cap:
                f.write(chunk[:cap - have])
                raise _TooLarge(f"the server sent more than {cap} bytes, {why}.")
            f.write(chunk)
            have += len(chunk)
            bar.update(len(chunk))
            now = time.monotonic()
            window_bytes += len(chunk)
            if window_bytes >= limits.stall_bytes:
                window_start, window_bytes = now, 0
            elif now - window_start > limits.stall_timeout:
                raise _Stalled(f"stalled: less than {limits.stall_bytes >> 10} KiB in {limits.stall_timeout:g} s "
                               "(--stall-timeout)")
            if now >= limits.deadline_at:
                raise _Stalled("the --deadline passed", out_of_time=True)


def _forget(staged: str) -> None:
    """Delete a rejected file so that nothing of it stays behind and the next run downloads it afresh."""
    if os.path.isfile(staged):
        os.remove(staged)


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
        _forget(staged)
        raise
    os.makedirs(os.path.dirname(item.target), exist_ok=True)
    try:
        os.replace(staged, item.target)
    except OSError:  # another file system (an extra_model_paths folder)
        shutil.move(staged, item.target)
    return detail


def total_line(items: list[Item]) -> str:
    """'total: 1.2 GB in 2 file(s)', or, when some sizes are not known, which part of the files the figure covers."""
    if not items:
        return "nothing to download."
    known = [it for it in items if it.size is not None]
    approx = any(not it.exact for it in known)
    size = fmt_size(sum(it.size for it in known), approx=approx)
    if len(known) == len(items):
        return f"total: {size} in {len(items)} file(s)" + (" (published sizes, rounded)" if approx else "")
    unknown = len(items) - len(known)
    if not known:
        return f"total: {len(items)} file(s), all of unknown size."
    return (f"total: {len(items)} file(s): {size} for the {len(known)} of known size, "
            f"and {unknown} more of unknown size.")


def render_plan(items: list[Item], others: list, root: str) -> str:
    lines = ["Download plan:"]
    for it in items:
        size = fmt_size(it.size, approx=not it.exact)
        lines.append(f"  {it.source.where:70} {size:>10}  -> {short(it.target, root)}"
                     + ("  [sha256 published]" if it.sha256 else ""))
        lines += ["    " + line for line in it.blocked.splitlines()]
    lines.append("  " + total_line(items))
    for warning in dict.fromkeys(it.warning for it in items if it.warning):
        lines.append(f"  note: {warning}")
    if any(it.size is not None and not it.exact for it in items):
        lines.append("  note: a size with ≈ is the published, rounded size (the server was not asked).")
    for r in others:
        what = {"misplaced": f"found at {short(r.path, root)}; move it to {short(r.target, root)}",
                "bad": f"{short(r.path, root)} failed its check (not overwritten): {r.detail}",
                "unchecked": f"{short(r.path, root)} is there; {r.detail}",
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
