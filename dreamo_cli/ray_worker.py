"""One worker of a Ray batch: a ComfyUI server on its node and the jobs the pool hands it.

The worker (a Ray actor, see ray_batch.py) starts ComfyUI from the ComfyUI folder on its node, on a free loopback
port, with the GPU Ray gave it (CUDA_VISIBLE_DEVICES), or attaches to a server that already runs there. Each job
then goes through the light client's own per-job code, `batch.execute` (upload, fill by title, queue, follow,
download), into a scratch folder; the outputs go on to the destination URI, or back to the driver when the
destination is a local folder. A worker whose server died says so with the job it was running; the driver then
has Ray restart it (`ray.kill(..., no_restart=False)`), which starts a fresh server.

Nothing here imports Ray at module level: ray_batch.py makes `DreamOWorker` a Ray actor.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from .api_workflow import Job, WorkflowError
from .batch import OutputStore, execute
from .comfy_errors import ClientError, NodeFailed, PromptRejected
from .comfy_folders import default_root
from .comfy_server import ComfyServer


class WorkerSetupError(RuntimeError):
    """A worker could not get a ComfyUI to run on its node; the message names the node and the fix."""


@dataclass
class WorkerConfig:
    comfyui: str | None = None  # the ComfyUI folder on the node (None: $COMFYUI_PATH there, else the pack's own)
    python: str | None = None  # runs ComfyUI (None: the folder's .venv or venv, else the worker's own Python)
    comfy_args: tuple = ()  # extra ComfyUI arguments; "{worker}" becomes the worker's number
    env: dict = field(default_factory=dict)  # extra environment for the ComfyUI process
    cpu: bool = False  # start ComfyUI with --cpu
    attach: tuple = ()  # per worker: the URL of a running ComfyUI to use instead of starting one
    start_timeout: float = 600.0
    job_timeout: float = 3600.0
    out_uri: str | None = None  # outputs go straight there; None: their bytes go back to the driver
    node_classes: tuple = ()  # node classes the batch's workflows use, checked once the server answers
    doctor_args: str = ""  # what `dreamo-doctor` should check, e.g. "--workflow tryon"


def node_name() -> str:
    try:
        import ray

        return f"{socket.gethostname()} ({ray.util.get_node_ip_address()})"
    except Exception:  # noqa: BLE001 - outside Ray, or before it connects
        return socket.gethostname()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the ComfyUI child before exec: it gets SIGTERM when the worker dies
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def comfyui_python(folder: str, explicit: str | None) -> str:
    if explicit:
        return explicit
    for venv in (".venv", "venv"):
        candidate = os.path.join(folder, venv, "bin", "python")
        if os.path.isfile(candidate):
            return candidate
    return sys.executable


class ComfyProcess:
    """A ComfyUI server this worker started and owns."""

    def __init__(self, index: int, config: WorkerConfig, scratch: str):
        self.node = node_name()
        doctor = f"dreamo-doctor --comfyui {{}} {config.doctor_args}".strip()
        folder = default_root(config.comfyui)
        if folder is None:
            raise WorkerSetupError(f"node {self.node}: no ComfyUI folder given. Pass --comfyui DIR (the same path "
                                   f"on every node) or set COMFYUI_PATH on the node, then check it there with "
                                   f"`{doctor.format('DIR')}`.")
        self.folder = os.path.abspath(os.path.expanduser(folder))
        main = os.path.join(self.folder, "main.py")
        if not os.path.isfile(main):
            raise WorkerSetupError(f"node {self.node}: no ComfyUI at {self.folder} (no main.py there). Install "
                                   f"ComfyUI and this pack there (README, 'Install'), or pass --comfyui with the "
                                   f"folder it has on that node; then check it there with "
                                   f"`{doctor.format(self.folder)}`.")
        self.doctor = doctor.format(self.folder)
        self.python = comfyui_python(self.folder, config.python)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [a.replace("{worker}", str(index)) for a in config.comfy_args]
        command = [self.python, main, "--listen", "127.0.0.1", "--port", str(self.port), "--disable-auto-launch",
                   *(["--cpu"] if config.cpu else []), *args]
        env = {**os.environ, **{k: v.replace("{worker}", str(index)) for k, v in config.env.items()}}
        self.log_path = os.path.join(scratch, "comfyui.log")
        with open(self.log_path, "wb") as log:
            try:
                self.process = subprocess.Popen(command, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT,
                                                env=env, preexec_fn=_die_with_parent if os.name == "posix" else None)
            except OSError as e:
                raise WorkerSetupError(f"node {self.node}: cannot start ComfyUI with {self.python}: {e}. Pass "
                                       f"--comfy-python with the Python of that ComfyUI.") from None
        server = ComfyServer(self.url, connect_timeout=2.0)
        deadline = time.monotonic() + config.start_timeout
        while not server.alive():
            if self.process.poll() is not None:
                raise WorkerSetupError(f"node {self.node}: ComfyUI at {self.folder} exited during start-up "
                                       f"(exit {self.process.returncode}); check the node with `{self.doctor}`. "
                                       f"Its log ends:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise WorkerSetupError(f"node {self.node}: ComfyUI at {self.folder} did not answer within "
                                       f"{config.start_timeout:.0f} s (--start-timeout). Its log ends:\n"
                                       f"{self.log_tail()}")
            time.sleep(0.5)

    def log_tail(self, lines: int = 25) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class DreamOWorker:
    """The Ray actor (ray_batch.py makes it remote: one per GPU, or per CPU with --cpu-workers)."""

    def __init__(self, index: int, config: WorkerConfig):
        self.index = index
        self.config = config
        self.scratch = tempfile.mkdtemp(prefix=f"dreamo_ray_w{index}_")
        self.comfy = None
        try:
            self._start(config.attach[index] if index < len(config.attach) else None)
        except BaseException:
            self.stop()
            raise
        self._refs: OrderedDict[str, str] = OrderedDict()  # URI or content digest -> file in the scratch folder
        self._lock = threading.Lock()  # --per-server calls run in threads of this actor
        self.broken: str | None = None  # why this worker's server is gone

    def _start(self, attach: str | None) -> None:
        config = self.config
        if attach:
            self.url = attach
            server = ComfyServer(attach)
            if not server.alive():
                raise WorkerSetupError(f"node {node_name()}: no ComfyUI answers at {attach} (--attach). Start it "
                                       f"there, or leave --attach out to let the worker start one.")
            self.doctor = f"dreamo-doctor --comfyui DIR {config.doctor_args}".strip()
        else:
            self.comfy = ComfyProcess(self.index, config, self.scratch)
            self.url, self.doctor = self.comfy.url, self.comfy.doctor
        self.server = ComfyServer(self.url)
        self._check_nodes()

    def _check_nodes(self) -> None:
        """Every node class the workflows use must exist on this server: a missing pack is one error at start,
        not one rejected prompt per job."""
        missing = []
        for name in self.config.node_classes:
            try:
                known = self.server.node_info(name)
            except ClientError:
                known = {name: "?"}  # the server went away or answers oddly: the jobs will say so
            if name not in known:
                missing.append(name)
        if missing:
            raise WorkerSetupError(f"node {node_name()}: the ComfyUI at {self.url} has no node {', '.join(missing)} "
                                   f"that the workflow uses. Install this pack (and the packs of those nodes) into "
                                   f"its custom_nodes and restart it; check the node with `{self.doctor}`.")

    def info(self) -> dict:
        import ray

        ctx = ray.get_runtime_context()
        return {"worker": self.index, "node": node_name(), "url": self.url, "actor_id": ctx.get_actor_id(),
                "pid": self.comfy.process.pid if self.comfy else None, "gpus": [str(g) for g in ray.get_gpu_ids()],
                "comfyui": self.comfy.folder if self.comfy else None, "worker_pid": os.getpid()}

    # -- one job ---------------------------------------------------------------------------------------------
    def _local_ref(self, spec: dict) -> str:
        """A reference as a file in the scratch folder: bytes the driver sent, or a URI read here (cached)."""
        with self._lock:
            return self._local_ref_locked(spec)

    def _local_ref_locked(self, spec: dict) -> str:
        if "error" in spec:
            raise ValueError(spec["error"])
        if "uri" in spec:
            key = spec["uri"]
            if key not in self._refs:
                from .job_table import read_bytes

                data = read_bytes(spec["uri"])
                self._remember(key, data, os.path.splitext(spec["uri"])[1])
        else:
            data = spec["data"]
            key = hashlib.sha256(data).hexdigest()
            if key not in self._refs:
                self._remember(key, data, spec.get("ext", ".png"))
        self._refs.move_to_end(key)
        return self._refs[key]

    def _remember(self, key: str, data: bytes, ext: str) -> None:
        path = os.path.join(self.scratch, "refs", hashlib.sha256(key.encode()).hexdigest()[:24] + (ext or ".png"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        self._refs[key] = path
        while len(self._refs) > 256:  # a batch over thousands of garments keeps the scratch folder bounded
            _, old = self._refs.popitem(last=False)
            try:
                os.remove(old)
            except OSError:
                pass

    def _job(self, task: dict) -> Job:
        spec = dict(task["job"])
        spec["refs"] = {int(k): self._local_ref(v) for k, v in spec["refs"].items()}
        workflow = task["workflow"]
        path = os.path.join(self.scratch, "workflows", hashlib.sha256(workflow["text"].encode()).hexdigest()[:16],
                            workflow["name"])
        if not os.path.isfile(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(workflow["text"])
        spec["workflow"] = path
        return Job(**spec)

    def run(self, task: dict) -> dict:
        """Run one job; returns {status: done | failed | lost, error, files, timings, seconds, ...}. `lost` means
        worth another try elsewhere (interrupted, 5xx, timed out); a rejected prompt or failing node is `failed`.
        When this worker's server has died the worker exits instead, and Ray restarts it."""
        t0 = time.perf_counter()
        result = {"job": task["job"]["name"], "worker": self.index, "node": node_name(), "server": self.url,
                  "files": [], "timings": {}, "error": "", "info": self.info()}
        if self.broken is not None:
            return {**result, "status": "lost", "server_died": True, "untried": True, "error": self.broken,
                    "seconds": 0.0}
        folder = tempfile.mkdtemp(dir=self.scratch, prefix="job_")
        try:
            result.update(self._attempt(task, folder, result))
        except OSError as e:
            result.update(status="failed", error=f"cannot write the outputs of job '{result['job']}': {e}")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        result["seconds"] = time.perf_counter() - t0
        return result

    def _attempt(self, task: dict, folder: str, result: dict) -> dict:
        try:
            job = self._job(task)
        except (OSError, ValueError) as e:  # a storage error (OSError) is worth another try, elsewhere
            return {"status": "lost" if isinstance(e, OSError) else "failed",
                    "error": f"cannot read a reference of job '{task['job']['name']}' on {node_name()}: {e}"}
        store = OutputStore(folder)
        try:
            files, timings = execute(self.server, job, None, store, None, self.config.job_timeout)
        except (PromptRejected, NodeFailed, WorkflowError) as e:
            return {"status": "failed", "error": str(e)}
        except ClientError as e:
            if e.transient and not self.server.alive():
                return self._broken(f"its ComfyUI at {self.url} went away ({e})")
            return {"status": "lost" if e.transient else "failed", "error": str(e)}
        result.update(status="done", timings=timings, files=files)
        self._deliver(job, task, store, files, result)
        return {}

    def _deliver(self, job: Job, task: dict, store: OutputStore, files: list[str], result: dict) -> None:
        """Outputs to the destination URI (images first, `<job>.json` last), or their bytes back to the driver.
        The job's JSON gets the driver's fingerprint and settings, so a later run finds it finished."""
        with open(store.manifest_path(job), encoding="utf-8") as f:
            manifest = json.load(f)
        manifest.update(fingerprint=task["fingerprint"], settings=task["settings"], node=node_name(),
                        worker=self.index)
        payload = [(name, open(os.path.join(store.folder, name), "rb").read()) for name in files]
        payload.append((f"{job.name}.json", json.dumps(manifest, indent=1).encode()))
        if self.config.out_uri:
            from .job_table import Outputs

            out = Outputs(self.config.out_uri)
            for name, data in payload:
                out.write(name, data)
        else:
            result["payload"] = payload

    def _broken(self, reason: str) -> dict:
        """The server is gone: this job goes back to the driver, which has Ray restart this worker (a fresh server,
        within --restarts); until then a job handed here comes straight back, untried."""
        with self._lock:
            first = self.broken is None
            self.broken = self.broken or reason
        if first:
            print(f"DreamO worker {self.index} on {node_name()}: {reason}", file=sys.stderr, flush=True)
            if self.comfy is not None:
                self.comfy.stop()  # a hung server: it goes too
        return {"status": "lost", "server_died": True, "error": reason}

    def stop(self) -> None:
        if self.comfy is not None:
            self.comfy.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)
