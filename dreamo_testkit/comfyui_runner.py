"""Start a real ComfyUI server on loopback with this pack installed, queue an API-format workflow, wait for it.

Used by the README's main command (scripts/run_example.py) and the end-to-end tests. The server runs from a
ComfyUI checkout (COMFYUI_PATH, default ~/comfyui) in a sandbox folder: the pack (and, for install checks,
the test-only tiny-model nodes) are linked into the sandbox's custom_nodes, and only they are loaded.
HTTP goes through `requests` and progress through the websocket (`websocket-client`).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

import requests
import websocket

from . import HELPER_NODES, NETWORK_GUARD, REPO

PACK_NAME = "comfyui_dreamo"
TEST_NODES_NAME = "dreamo_test_helpers"
NETWORK_LOGS: list[str] = []  # every started server's network_attempts.log (see Server.env)


def comfyui_path() -> str:
    """COMFYUI_PATH, else the ComfyUI this clone sits in (<ComfyUI>/custom_nodes/<clone>: the doctor's rule, reused),
    else ~/comfyui."""
    if os.environ.get("COMFYUI_PATH"):
        return os.environ["COMFYUI_PATH"]
    from dreamo_cli.comfy_folders import default_root

    return default_root() or os.path.expanduser("~/comfyui")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Sandbox:
    root: str
    isolated: bool = True  # own models/input/output folders; False = the checkout's models, sandbox output
    test_nodes: bool = False
    extra_nodes: dict = field(default_factory=dict)  # {name in custom_nodes: folder}: other packs to load too

    @property
    def custom_nodes(self):
        return os.path.join(self.root, "custom_nodes")

    @property
    def input_dir(self):
        return os.path.join(self.root, "input")

    @property
    def output_dir(self):
        return os.path.join(self.root, "output")

    @property
    def models_dir(self):
        return os.path.join(self.root, "models")

    def prepare(self) -> "Sandbox":
        for d in (self.custom_nodes, self.input_dir, self.output_dir, os.path.join(self.root, "temp"),
                  os.path.join(self.root, "user")):
            os.makedirs(d, exist_ok=True)
        links = {PACK_NAME: REPO}
        if self.test_nodes:
            links[TEST_NODES_NAME] = HELPER_NODES
        links.update(self.extra_nodes)
        for name, target in links.items():
            link = os.path.join(self.custom_nodes, name)
            if not os.path.islink(link):
                os.symlink(target, link)
        return self

    def server_args(self, port: int) -> list[str]:
        names = [PACK_NAME] + ([TEST_NODES_NAME] if self.test_nodes else []) + list(self.extra_nodes)
        args = ["--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
                "--disable-all-custom-nodes", "--whitelist-custom-nodes", *names,
                # a file database in the sandbox: an in-memory one is opened per thread and logs tracebacks
                "--database-url", f"sqlite:///{os.path.join(os.path.abspath(self.root), 'user', 'comfyui.db')}"]
        if self.isolated:
            args += ["--base-directory", self.root]
        else:
            config = os.path.join(self.root, "extra_model_paths.yaml")
            with open(config, "w") as f:
                f.write(f"dreamo_runner:\n  custom_nodes: {self.custom_nodes}\n")
            args += ["--extra-model-paths-config", config, "--output-directory", self.output_dir,
                     "--input-directory", self.input_dir, "--temp-directory", os.path.join(self.root, "temp"),
                     "--user-directory", os.path.join(self.root, "user")]
        return args


@dataclass
class Server:
    sandbox: Sandbox
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    log_path: str = ""

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 240.0) -> "Server":
        """Start the server and wait until it answers. The port was free when picked, but a server started at the
        same time elsewhere (a parallel test worker) may take it first: then it starts again on another port."""
        main = os.path.join(comfyui_path(), "main.py")
        if not os.path.isfile(main):
            raise RuntimeError(f"no ComfyUI checkout at {comfyui_path()} (set COMFYUI_PATH; README says how)")
        self.log_path = os.path.join(self.sandbox.root, "server.log")
        NETWORK_LOGS.append(self.network_log)
        deadline = time.monotonic() + timeout
        for _ in range(3):
            if self._start_once(main, deadline, timeout):
                return self
            self.port = free_port()
        raise RuntimeError(f"ComfyUI found its port taken three times:\n{self.log_tail()}")

    def _start_once(self, main: str, deadline: float, timeout: float) -> bool:
        """True once this server answers; False when its port turned out to be taken (it is stopped then)."""
        log = open(self.log_path, "w")
        self.process = subprocess.Popen([sys.executable, main, *self.sandbox.server_args(self.port)],
                                        cwd=comfyui_path(), stdout=log, stderr=subprocess.STDOUT, env=self.env())
        mine = os.path.abspath(self.sandbox.root)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    if "address already in use" in self.log_tail().lower():
                        return False
                    raise RuntimeError(f"ComfyUI exited during start-up:\n{self.log_tail()}")
                try:
                    reply = requests.get(self.url + "/system_stats", timeout=2)
                    if reply.ok:
                        if mine in " ".join(reply.json().get("system", {}).get("argv", [])):
                            return True
                        self.stop()  # another sandbox's server answers on this port
                        return False
                except (requests.ConnectionError, requests.Timeout):
                    pass
                time.sleep(0.5)
        except BaseException:  # Ctrl-C or SIGTERM while it starts: `with Server(...)` will not call __exit__
            self.stop()
            raise
        self.stop()
        raise RuntimeError(f"ComfyUI did not start within {timeout:.0f}s:\n{self.log_tail()}")

    @property
    def network_log(self) -> str:
        return os.path.join(self.sandbox.root, "network_attempts.log")

    def env(self) -> dict:
        """The server's environment. With DREAMO_NETWORK_GUARD=1 (the tests set it) every connection that is not
        to loopback is refused and recorded in `network_log` (dreamo_testkit/network_guard/sitecustomize.py)."""
        env = dict(os.environ)
        if env.get("DREAMO_NETWORK_GUARD") == "1":
            guard = NETWORK_GUARD
            env["PYTHONPATH"] = os.pathsep.join(p for p in (guard, env.get("PYTHONPATH", "")) if p)
            env["DREAMO_NETWORK_LOG"] = self.network_log
        return env

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "".join(open(self.log_path).readlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def object_info(self, node: str) -> dict:
        return requests.get(f"{self.url}/object_info/{node}", timeout=30).json()

    def run(self, prompt: dict, timeout: float = 300.0, on_message=None) -> dict:
        """Queue an API-format workflow and wait; returns {"status", "outputs", "messages", "error"}.

        on_message(msg) is called with each websocket message of this prompt as it arrives (progress).

        status: "success", "error" (a node raised), "invalid" (some outputs failed validation and were
        skipped) or "rejected" (nothing was queued)."""
        client_id = uuid.uuid4().hex
        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}", timeout=timeout)
        try:
            r = requests.post(f"{self.url}/prompt", json={"prompt": prompt, "client_id": client_id}, timeout=30)
            body = r.json()
            if r.status_code != 200:
                return {"status": "rejected", "outputs": {}, "messages": [], "error": body}
            prompt_id = body["prompt_id"]
            node_errors = body.get("node_errors") or {}
            messages, error = [], None
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                raw = ws.recv()
                if not isinstance(raw, str):
                    continue  # binary preview frames
                msg = json.loads(raw)
                data = msg.get("data", {})
                if data.get("prompt_id") not in (None, prompt_id):
                    continue
                messages.append(msg)
                if on_message is not None:
                    on_message(msg)
                if msg["type"] == "execution_error":
                    error = data
                    break
                if msg["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                    break
            else:
                raise TimeoutError(f"workflow did not finish within {timeout:.0f}s")
        finally:
            ws.close()
        history = requests.get(f"{self.url}/history/{prompt_id}", timeout=30).json().get(prompt_id, {})
        status = "error" if error else history.get("status", {}).get("status_str", "unknown")
        if node_errors and status == "success":
            # ComfyUI runs the outputs that validated and skips the rest: that is not a success.
            status, error = "invalid", node_errors
        return {"status": status, "outputs": history.get("outputs", {}), "messages": messages, "error": error}

    def image_paths(self, outputs: dict) -> list[str]:
        paths = []
        for node_out in outputs.values():
            for img in node_out.get("images", []):
                if img.get("type") == "output":
                    paths.append(os.path.join(self.sandbox.output_dir, img.get("subfolder", ""), img["filename"]))
        return paths
