"""What dreamo-download would fetch, before anything is fetched: for each file the doctor finds missing that has
an official source, where it comes from (a Hugging Face /resolve/ URL on HF_ENDPOINT, or facexlib's GitHub
releases), where it goes, and its exact size and sha256 as the server announces them (one HEAD request each;
a gated repo without access gives the licence instruction, an unreachable host is asked only once); the plan
as printed, with the total size. Also how a server's failures are told to people (`first_line`, `hub_error`).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import quote

from .catalog import Source
from .diagnosis import MISSING, FileResult
from .doctor import fmt_size, short

SHA256 = re.compile(r"^[0-9a-f]{64}$")
CONNECT_TIMEOUT = 30.0  # seconds to connect: the plan's HEAD requests, and the transfer's GETs


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


def first_line(e: BaseException) -> str:
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


def hub_error(source: Source, e: Exception) -> str:
    from huggingface_hub.utils import GatedRepoError, RepositoryNotFoundError  # also where huggingface-hub < 0.23 has them

    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(e, GatedRepoError) or (source.gated and status in (401, 403)):
        return gated_instruction(source.repo)
    if isinstance(e, RepositoryNotFoundError) and status == 401:
        return (f"{source.repo} answered 401 (not authorised): check your token (`hf auth login` or HF_TOKEN) "
                "and run again.")
    return f"{source.where} could not be fetched: {first_line(e)}"


def hub_metadata(item: Item, token: Optional[str]) -> None:
    """Exact size and sha256 of a Hub file from a HEAD request (what hf_hub_download itself asks first)."""
    from huggingface_hub import get_hf_file_metadata

    src = item.source
    try:
        meta = get_hf_file_metadata(hub_url(src), token=token)
    except Exception as e:  # noqa: BLE001 - connection errors and the Hub's HTTP errors are all reported
        if getattr(getattr(e, "response", None), "status_code", None) is None:
            item.warning = f"{item.host} could not be reached ({first_line(e)})"
            item.unreachable = True
        else:
            item.blocked = hub_error(src, e)
        return
    item.size, item.exact = meta.size, meta.size is not None
    etag = (meta.etag or "").strip('"').lower()
    item.sha256 = etag if SHA256.match(etag) else None  # an LFS file's etag is its sha256


def url_metadata(item: Item, base: str) -> None:
    import requests

    try:
        r = requests.head(item.source.url(base), allow_redirects=True, timeout=CONNECT_TIMEOUT)
    except (requests.ConnectionError, requests.Timeout) as e:
        item.warning = f"{item.host} could not be reached ({first_line(e)})"
        item.unreachable = True
        return
    except requests.RequestException as e:
        item.warning = f"{item.host}: the size could not be asked ({first_line(e)})"
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
