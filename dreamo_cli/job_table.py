"""Job tables, output folders and the Parquet manifest wherever pyarrow's filesystems reach: a local path or a
URI (`s3://`, `gs://`, `hdfs://`, `abfs://`, `file://`, ...; credentials come from the usual environment of
each filesystem, e.g. AWS_* variables or an instance role for S3).

Used by the Ray backend (dreamo_cli/ray_*.py); needs pyarrow (`pip install "comfyui-dreamo[ray]"`), imported
when a function here is called, never at import. A job table is the light client's JSONL or CSV (same columns,
same checks: `client.read_jobs`) or a Parquet file with those columns.
"""
from __future__ import annotations

import json
import os
import posixpath
import re
import time
from dataclasses import dataclass

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
MANIFEST_NAME = "manifest.parquet"
MANIFEST_COLUMNS = ("job", "status", "server", "node", "worker", "attempts", "seconds", "files", "error",
                    "fingerprint", "finished")


def is_uri(text: str) -> bool:
    return bool(_SCHEME.match(str(text)))


def join(folder: str, name: str) -> str:
    """`name` inside `folder`; both a URI or both local. Keeps `s3://` intact and resolves `..`."""
    if is_uri(folder):
        scheme, rest = folder.split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, name))}"
    return os.path.normpath(os.path.join(folder, os.path.expanduser(name)))


def parent(location: str) -> str:
    if is_uri(location):
        scheme, rest = location.split("://", 1)
        return f"{scheme}://{posixpath.dirname(rest.rstrip('/'))}"
    return os.path.dirname(os.path.abspath(location))


def place_reference(folder: str, value: str) -> str:
    """A reference image as a table names it: a URI or an absolute path stays; a relative path is taken relative to
    the table's own folder (a URI folder for a table read from a URI)."""
    value = str(value).strip()
    if is_uri(value) or os.path.isabs(os.path.expanduser(value)):
        return value if is_uri(value) else os.path.normpath(os.path.expanduser(value))
    return join(folder, value)


_FILESYSTEMS: dict = {}  # scheme://bucket -> (FileSystem, its path): S3 looks a bucket's region up once


def filesystem(location: str):
    """(pyarrow FileSystem, path inside it) for a local path or a URI; ValueError naming the location."""
    import pyarrow.fs as pafs

    if not is_uri(location):
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(location))
    scheme, rest = location.split("://", 1)
    if scheme.lower() == "file":
        return pafs.LocalFileSystem(), "/" + rest.lstrip("/")
    root, _, tail = rest.partition("/")
    key = f"{scheme}://{root}"
    try:
        if "?" in location:  # options in the URI (s3://bucket/key?region=...): pyarrow parses the whole of it
            return pafs.FileSystem.from_uri(location)
        if key not in _FILESYSTEMS:
            _FILESYSTEMS[key] = pafs.FileSystem.from_uri(key)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise ValueError(f"cannot open {location}: {e} (pyarrow reads s3://, gs://, hdfs://, abfs://, file:// ...; "
                         f"the filesystem's credentials come from its usual environment)") from None
    fs, base = _FILESYSTEMS[key]
    return fs, (base.rstrip("/") + "/" + tail) if tail else base


def read_bytes(location: str) -> bytes:
    fs, path = filesystem(location)
    with fs.open_input_stream(path) as f:
        return f.read()


def exists(location: str) -> bool:
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    return fs.get_file_info(path).type == pafs.FileType.File


def table_text(source: str) -> tuple[str, str]:
    """The job table at `source` as (JSONL or CSV text, format) for `client.read_jobs`: a Parquet file becomes one
    JSON object per row (line k = row k), its null cells left out like a CSV's empty cells."""
    lower = source.lower().split("?", 1)[0]
    try:
        if lower.endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq

            fs, path = filesystem(source)
            rows = pq.read_table(path, filesystem=fs).to_pylist()
            lines = [json.dumps(_drop_nulls(r), default=str) for r in rows]
            return "\n".join(lines) + "\n", "jsonl"
        data = read_bytes(source)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the jobs table {source}: {e}") from None
    except Exception as e:  # noqa: BLE001 - pyarrow's own errors (ArrowInvalid: not a Parquet file, ...)
        raise ValueError(f"cannot read the jobs table {source}: {type(e).__name__}: {e}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"the jobs table {source} is not UTF-8 text (JSONL or CSV), and its name does not end in "
                         f".parquet") from None
    return text, "csv" if lower.endswith(".csv") else "jsonl"


def _drop_nulls(row: dict) -> dict:
    out = {}
    for key, value in row.items():
        if key.startswith("__index_level_"):  # a pandas index written along with the table
            continue
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None} or None
        if value is not None:
            out[key] = value
    return out


class Outputs:
    """The output folder (local or URI): `<job>_NN.png` images and `<job>.json`, as the light client writes them,
    and `manifest.parquet`."""

    def __init__(self, location: str):
        self.location = location if is_uri(location) else os.path.abspath(os.path.expanduser(location))
        self.local = not is_uri(location)
        self.fs, self.path = filesystem(self.location)

    def uri(self, name: str) -> str:
        return join(self.location, name)

    def names(self) -> set[str]:
        """Names of the files in the folder now (one listing; empty when the folder does not exist yet)."""
        import pyarrow.fs as pafs

        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot list the output folder {self.location}: {e}") from None
        return {posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.File}

    def write(self, name: str, data: bytes) -> None:
        """Write one file whole: locally under a temporary name and renamed; on object stores one PUT is atomic."""
        if self.local:
            os.makedirs(self.path, exist_ok=True)
            tmp = os.path.join(self.path, f".{name}.part")
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, os.path.join(self.path, name))
            return
        self.fs.create_dir(self.path, recursive=True)
        with self.fs.open_output_stream(posixpath.join(self.path, name)) as f:
            f.write(data)


@dataclass
class ManifestRow:
    job: str
    status: str  # done | failed
    server: str = ""
    node: str = ""
    worker: int = -1
    attempts: int = 0
    seconds: float = 0.0
    files: tuple = ()
    error: str = ""
    fingerprint: str = ""
    finished: float = 0.0  # unix time


class Manifest:
    """`manifest.parquet` in the output folder (or at `location`): one row per job, rewritten whole as jobs finish
    (at most once a second, and at the end), so it is always a complete Parquet file a reader can open."""

    def __init__(self, location: str, min_interval: float = 1.0):
        self.location = location
        self.fs, self.path = filesystem(location)
        self.rows: dict[str, ManifestRow] = {}
        self.min_interval = min_interval
        self._written = float("-inf")
        self._dirty = False

    def load(self) -> "Manifest":
        import pyarrow.fs as pafs
        import pyarrow.parquet as pq

        if self.fs.get_file_info(self.path).type != pafs.FileType.File:
            return self
        try:
            table = pq.read_table(self.path, filesystem=self.fs)
        except Exception as e:  # noqa: BLE001 - pyarrow's errors for a damaged file
            raise ValueError(f"the manifest {self.location} cannot be read ({type(e).__name__}: {e}); move it away "
                             f"to start the batch afresh") from None
        known = set(ManifestRow.__dataclass_fields__)
        for row in table.to_pylist():
            if row.get("job"):
                row = {k: v for k, v in row.items() if k in known and v is not None}
                row["files"] = tuple(row.get("files") or ())
                self.rows[row["job"]] = ManifestRow(**row)
        return self

    def done(self, job: str, fingerprint: str, present: set[str]) -> ManifestRow | None:
        """The row when `job` is finished: status done, the same settings, every file it lists present."""
        row = self.rows.get(job)
        if row is None or row.status != "done" or not row.files or not set(row.files) <= present:
            return None
        if row.fingerprint and row.fingerprint != fingerprint:
            raise ValueError(f"{self.location} holds job '{job}' made with other settings; give this job another "
                             f"id, or delete that job's files to make it again.")
        return row

    def record(self, row: ManifestRow) -> None:
        self.rows[row.job] = row
        self._dirty = True
        if time.monotonic() - self._written >= self.min_interval:
            self.flush()

    def flush(self) -> None:
        if not self._dirty:
            return
        import pyarrow as pa
        import pyarrow.fs as pafs
        import pyarrow.parquet as pq

        schema = pa.schema([("job", pa.string()), ("status", pa.string()), ("server", pa.string()),
                            ("node", pa.string()), ("worker", pa.int32()), ("attempts", pa.int32()),
                            ("seconds", pa.float64()), ("files", pa.list_(pa.string())), ("error", pa.string()),
                            ("fingerprint", pa.string()), ("finished", pa.timestamp("ms", tz="UTC"))])
        rows = list(self.rows.values())
        table = pa.table({
            "job": [r.job for r in rows], "status": [r.status for r in rows], "server": [r.server for r in rows],
            "node": [r.node for r in rows], "worker": [r.worker for r in rows],
            "attempts": [r.attempts for r in rows], "seconds": [round(r.seconds, 3) for r in rows],
            "files": [list(r.files) for r in rows], "error": [r.error for r in rows],
            "fingerprint": [r.fingerprint for r in rows],
            "finished": [int(r.finished * 1000) if r.finished else None for r in rows]}, schema=schema)
        if isinstance(self.fs, pafs.LocalFileSystem):
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            tmp = os.path.join(os.path.dirname(self.path), f".{os.path.basename(self.path)}.part")
            pq.write_table(table, tmp)
            os.replace(tmp, self.path)
        else:  # an object store's PUT replaces the object whole
            self.fs.create_dir(posixpath.dirname(self.path), recursive=True)
            pq.write_table(table, self.path, filesystem=self.fs)
        self._written = time.monotonic()
        self._dirty = False
