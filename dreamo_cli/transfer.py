"""The transfer of one planned file: a ranged HTTP GET into a staging folder that resumes what an earlier try or
run left there, with the bounds of the module docstring of dreamo_cli/download.py: never past the file's size
cap, stopped when it stalls (--stall-timeout) or when the run's --deadline passes (Limits). The errors a
download reports (DownloadError, HostUnreachable, OutOfTime) are defined here.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Optional

from .catalog import Source
from .download_plan import CONNECT_TIMEOUT, Item, first_line, host_of, hub_error, hub_url

STALL_TIMEOUT = 60.0  # seconds in which at least STALL_BYTES must arrive
STALL_BYTES = 64 << 10
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


def _staged_name(source: Source) -> str:
    return "--".join(p for p in ((source.repo or "facexlib").replace("/", "--"), source.filename.replace("/", "--")))


@dataclass
class Limits:
    """How long a download may take: see the docstring of dreamo_cli/download.py (Bounds)."""

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
    Bounded by `limits` and by the size cap (see dreamo_cli/download.py's docstring); HostUnreachable when no
    connection could be made, DownloadError for anything else."""
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
                raise HostUnreachable(host_of(getattr(e.request, "url", None) or url), first_line(e)) from e
            if attempt >= attempts:
                raise DownloadError(f"{url} failed: {first_line(e)}\n  ({kept()})") from e
            continue
        try:
            with r:
                if r.status_code in (401, 403) and src.repo:
                    raise DownloadError(hub_error(src, requests.HTTPError(response=r)))
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
                raise DownloadError(f"{url} failed: {first_line(e)}\n  ({kept()})") from e
        except _TooLarge as e:
            forget(part)
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


def forget(staged: str) -> None:
    """Delete a rejected file so that nothing of it stays behind and the next run downloads it afresh."""
    if os.path.isfile(staged):
        os.remove(staged)
