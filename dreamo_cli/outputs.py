"""The client's output folder: `<job>_NN.<ext>` files and the `<job>.json` manifest that marks a job done.

A file's extension comes from its first bytes (a fixed list of picture and video types below), never from the
name the server gave it; a file of any other type is refused. Outputs therefore never end in `.json` and
manifests always do, so no name of one job can be another job's. A manifest is trusted only when it is one
this client wrote: its format tag, its job, output names of that job's pattern, and each file at its recorded
size; anything else in that place is not trusted and the job runs again (and its manifest replaces the file).
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict

from .api_workflow import Job
from .comfy_errors import ClientError
from .wire import printable

FORMAT = "dreamo-client output manifest 1"
MAX_MANIFEST = 4 << 20  # bytes; a manifest lists a few files and timings

# (extension, test on the first bytes): what ComfyUI's image and video savers write
_MP4_BRANDS = {b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1", b"M4V ", b"dash"}
MEDIA_TYPES = (
    (".png", lambda h: h.startswith(b"\x89PNG\r\n\x1a\n")),
    (".jpg", lambda h: h.startswith(b"\xff\xd8\xff")),
    (".gif", lambda h: h[:6] in (b"GIF87a", b"GIF89a")),
    (".webp", lambda h: h[:4] == b"RIFF" and h[8:12] == b"WEBP"),
    (".tiff", lambda h: h[:4] in (b"II*\x00", b"MM\x00*")),
    (".avif", lambda h: h[4:8] == b"ftyp" and h[8:12] in (b"avif", b"avis")),
    (".mov", lambda h: h[4:8] == b"ftyp" and h[8:12] == b"qt  "),
    (".mp4", lambda h: h[4:8] == b"ftyp" and h[8:12] in _MP4_BRANDS),
    (".webm", lambda h: h.startswith(b"\x1a\x45\xdf\xa3")),  # Matroska / WebM
)
EXTENSIONS = tuple(ext for ext, _ in MEDIA_TYPES)


def media_extension(head: bytes) -> str | None:
    """The extension for a file that starts with `head` (at least 16 bytes when there are), or None when it is
    not a picture or video this client saves."""
    return next((ext for ext, test in MEDIA_TYPES if test(head)), None)


def _output_pattern(job_name: str) -> re.Pattern:
    return re.compile(re.escape(job_name) + r"_\d{2,}(" + "|".join(re.escape(e) for e in EXTENSIONS) + ")")


class OutputStore:
    """The output folder (see the module docstring)."""

    def __init__(self, folder: str):
        self.folder = os.path.abspath(folder)

    def manifest_path(self, job: Job) -> str:
        return os.path.join(self.folder, f"{job.name}.json")

    def finished(self, job: Job) -> dict | None:
        """The manifest when the job is complete here with the same settings; None if it must run.
        Raises ClientError when the name was used by a job with other settings."""
        path = self.manifest_path(job)
        try:
            if os.path.islink(path) or os.path.getsize(path) > MAX_MANIFEST:
                return None
            with open(path, encoding="utf-8") as f:
                manifest = json.load(f)
        except (OSError, ValueError, RecursionError):
            return None
        if not self._complete(job, manifest):
            return None
        if manifest.get("fingerprint") != job.fingerprint():
            raise ClientError(f"{path} holds job '{job.name}' made with other settings; give this job another "
                              f"id, or delete that job's files to make it again.")
        return manifest

    def _complete(self, job: Job, manifest) -> bool:
        """A manifest this client wrote for this job, every output in place at its recorded size."""
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("job") != job.name:
            return False
        outputs = manifest.get("outputs")
        if not isinstance(outputs, list) or not outputs:
            return False
        pattern = _output_pattern(job.name)
        names = []
        for record in outputs:
            name = record.get("name") if isinstance(record, dict) else None
            if not isinstance(name, str) or not pattern.fullmatch(name) or type(record.get("size")) is not int:
                return False
            path = os.path.join(self.folder, name)
            if os.path.islink(path) or not os.path.isfile(path) or os.path.getsize(path) != record["size"]:
                return False
            names.append(name)
        return manifest.get("files") == names

    def receive(self, job: Job, index: int, write, source: str) -> dict:
        """Output `index` (1, 2, ...) of `job`: `write(file)` streams it into a temporary file and returns
        {size, sha256, head}; it is then named `<job>_NN<ext>` by its content. Returns its manifest record;
        ClientError (naming `source`) when it is not a picture or video."""
        os.makedirs(self.folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{job.name}_{index:02d}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                info = write(f)
            ext = media_extension(info["head"])
            if ext is None:
                raise ClientError(f"{source} is not a picture or video this client saves "
                                  f"({', '.join(e[1:] for e in EXTENSIONS)}): it starts with "
                                  f"{printable(info['head'][:16].decode('latin-1'), 64)}; nothing was saved")
            name = f"{job.name}_{index:02d}{ext}"
            os.replace(tmp, os.path.join(self.folder, name))
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        return {"name": name, "size": info["size"], "sha256": info["sha256"]}

    def commit(self, job: Job, server: str, prompt_id: str, outputs: list[dict], server_files: list[str],
               events: dict, timings: dict) -> list[str]:
        """Write the manifest (last: it marks the job done). Returns the output names."""
        names = [o["name"] for o in outputs]
        manifest = {"format": FORMAT, "job": job.name, "fingerprint": job.fingerprint(), "files": names,
                    "outputs": outputs, "server": server, "prompt_id": prompt_id, "server_files": server_files,
                    "settings": {k: v for k, v in asdict(job).items() if v not in (None, {}, "")},
                    "events": events, "timings": {k: round(v, 4) for k, v in timings.items()}}
        os.makedirs(self.folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{job.name}.", suffix=".json.part")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(manifest, f, indent=1)
            os.replace(tmp, self.manifest_path(job))
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        return names

    def save(self, job: Job, server: str, prompt_id: str, images: list[tuple[dict, bytes]], events: dict,
             timings: dict) -> list[str]:
        """Outputs already in memory (tests, other callers): receive each, then commit."""
        import hashlib

        def writer(data):
            def write(f):
                f.write(data)
                return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "head": data[:64]}
            return write
        outputs = [self.receive(job, i, writer(data), f"{server} output {ref.get('filename')}")
                   for i, (ref, data) in enumerate(images, start=1)]
        return self.commit(job, server, prompt_id, outputs, [str(ref.get("filename")) for ref, _ in images],
                           events, timings)
