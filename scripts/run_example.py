"""The main job: run an example DreamO workflow end to end in a real ComfyUI server.

With your real models present (FLUX.1-dev, its text encoders and VAE, DreamO's v1.1 stage files and the turbo
LoRA in ComfyUI's model folders; facexlib's weights for id references, BEN2_Base.onnx for ip references) it runs
workflows/api/dreamo_<workflow>_api.json on them. Otherwise it says what is missing and runs THE SAME workflow
as an install check on tiny random models it generates (dreamo_testkit/tiny_workflows.py): the workflow's own DreamO
nodes, settings and reference paths (id, ip, style) run in your ComfyUI; only the model files are tiny, so the
picture is noise.

    python scripts/run_example.py [--workflow ip|id|id_tryon|tryon|style|style_subject|multi_subject]
                                  [--image PATH ...] [--garment PATH ...] [--tiny] [--output DIR] [--keep DIR]

The pictures it makes are copied to --output (default ./dreamo_outputs) before its server and sandbox go.
Sample photos: the workflows name DreamO's own example photos (example_inputs/ of
https://github.com/bytedance/DreamO); they are looked for in DREAMO_REFS_DIR and ComfyUI's input folder. Without
them, a drawn picture stands in for subjects and styles; a face (id) needs a real photo: --image PATH.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)  # dreamo_cli, and the test kit (dreamo_testkit): the server runner, the tiny models
from dreamo_testkit.comfyui_runner import Sandbox, Server, comfyui_path  # noqa: E402
from dreamo_cli.comfy_errors import NodeFailed, PromptRejected, ServerUnavailable  # noqa: E402
from dreamo_cli.comfy_server import ComfyServer  # noqa: E402

SAMPLES_URL = "https://github.com/bytedance/DreamO, folder example_inputs"  # where the workflows' samples are from
API_DIR = os.path.join(REPO, "workflows", "api")
DREAMO_FOLDERS = ("dreamo", "loras")
REAL_MODELS = [  # (folders it may sit in, file the real workflows name; None = a path containing "turbo")
    (("diffusion_models", "unet"), "flux1-dev.safetensors"),
    (("text_encoders", "clip"), "clip_l.safetensors"),
    (("text_encoders", "clip"), "t5xxl_fp16.safetensors"),
    (("vae",), "ae.safetensors"),
    (DREAMO_FOLDERS, "dreamo.safetensors"),
    (DREAMO_FOLDERS, "dreamo_cfg_distill.safetensors"),
    (DREAMO_FOLDERS, "dreamo_sft_lora.safetensors"),
    (DREAMO_FOLDERS, "dreamo_dpo_lora.safetensors"),
    (DREAMO_FOLDERS, None),
]
FACE_MODELS = [(("facexlib",), "detection_Resnet50_Final.pth"), (("facexlib",), "parsing_bisenet.pth")]
REMOVER_MODELS = [(("rembg",), "BEN2_Base.onnx")]


DRAWN: list[str] = []  # folders of drawn stand-in pictures, removed when the job ends


class UsageError(Exception):
    """A bad argument: printed as one line, exit status 2."""


class Stopped(BaseException):
    """SIGTERM: unwinds like Ctrl-C's KeyboardInterrupt, so the server is ended and the temp folders removed."""


def sample_dirs() -> list[str]:
    """Where the workflows' sample photos are looked for: the tests' photo folder (DREAMO_REFS_DIR, by the kit's one
    lookup), then the ComfyUI's input folder (where its LoadImage finds them too)."""
    from dreamo_testkit import photos  # the one lookup of the sample photos

    return [photos.refs_dir(), os.path.join(comfyui_path(), "input")]


def garment_slots(name: str, prompt: dict) -> list[tuple[int, str, str]]:
    """The try-on workflows' garment references: their ip references (none in the other workflows)."""
    return [r for r in references(prompt) if r[1] == "ip"] if "tryon" in name else []


def workflows() -> dict[str, str]:
    """{short name: API file}: every workflows/api/dreamo_<name>_api.json."""
    return {os.path.basename(p)[len("dreamo_"):-len("_api.json")]: p
            for p in sorted(glob.glob(os.path.join(API_DIR, "dreamo_*_api.json")))}


def load_workflow(name: str) -> dict:
    return json.load(open(workflows()[name]))


def references(prompt: dict) -> list[tuple[int, str, str]]:
    """[(slot, task, LoadImage node id)] of the workflow's references, by slot (titles 'ref k encode')."""
    refs = []
    for node in prompt.values():
        title = node.get("_meta", {}).get("title", "")
        if node["class_type"] == "DreamORefEncode" and title.startswith("ref "):
            refs.append((int(title.split()[1]), node["inputs"]["task"], str(node["inputs"]["image"][0])))
    return sorted(refs)


def _found(models: str, folders, name) -> bool:
    for folder in folders:
        for root, _, files in os.walk(os.path.join(models, folder)):
            for f in files:
                path = os.path.join(root, f)
                if (name is None and "turbo" in path.lower() and f.endswith(".safetensors")) or f == name:
                    return True
    return False


def missing_real_models(workflow: str) -> list[str]:
    models = os.path.join(comfyui_path(), "models")
    tasks = {task for _, task, _ in references(load_workflow(workflow))}
    needed = REAL_MODELS + (FACE_MODELS if "id" in tasks else []) + (REMOVER_MODELS if "ip" in tasks else [])
    return [f"models/{folders[0]}/{name or '<a FLUX.1-Turbo-Alpha folder>/diffusion_pytorch_model.safetensors'}"
            for folders, name in needed if not _found(models, folders, name)]


def pictures(prompt: dict, images: list[str], garments: list[str], name: str = "") -> dict[str, str]:
    """{LoadImage node id: picture path}: --garment fills the try-on workflow's garment slots, --image the other
    references in slot order; the rest get the sample photo the workflow names when it is found (sample_dirs), else
    a drawn picture (subjects, styles) or a clear error (a face)."""
    refs = references(prompt)
    garment_refs = garment_slots(name, prompt)
    if garments and not garment_refs:
        raise UsageError("--garment: this workflow has no garment reference (the try-on workflows have: "
                         "id_tryon, tryon); give its pictures with --image")
    if len(garments) > len(garment_refs):
        raise UsageError(f"{len(garments)} garments given, the workflow has {len(garment_refs)} garment slot(s): "
                         + ", ".join(f"ref {s} ({t})" for s, t, _ in garment_refs))
    taken = {node_id: path for (_, _, node_id), path in zip(garment_refs, garments)}
    others = [r for r in refs if r[2] not in taken]
    if len(images) > len(others):
        raise UsageError(f"{len(images)} pictures given, the workflow has {len(others)} "
                         f"{'other ' if taken else ''}reference(s): "
                         + ", ".join(f"ref {s} ({t})" for s, t, _ in others))
    taken.update({node_id: path for (_, _, node_id), path in zip(others, images)})
    for path in taken.values():
        if not os.path.isfile(path):
            raise UsageError(f"no such picture: {path}")
    chosen = {}
    for slot, task, node_id in refs:
        if node_id in taken:
            chosen[node_id] = taken[node_id]
            continue
        sample = prompt[node_id]["inputs"]["image"]
        found = [os.path.join(d, sample) for d in sample_dirs() if os.path.isfile(os.path.join(d, sample))]
        if found:
            chosen[node_id] = found[0]
        elif task != "id":  # a drawn subject stands in for the sample photo
            chosen[node_id] = drawn_picture(task)
        else:
            flag = "--image PATH" if not garment_refs else "--image PATH (the face; --garment PATH for the garment)"
            raise UsageError(
                f"ref {slot} (id) needs a photo with a face: pass one with {flag}. The workflow's sample, "
                f"{sample}, is one of DreamO's example photos ({SAMPLES_URL}); it was looked for in "
                + " and ".join(sample_dirs()) + " (set DREAMO_REFS_DIR to the folder you saved it in)")
    return chosen


def drawn_picture(task: str) -> str:
    """A plain drawn subject (ip) or pattern (style), used when the sample photos are not beside the repo."""
    from PIL import Image, ImageDraw

    folder = tempfile.mkdtemp(prefix="dreamo_picture_")
    DRAWN.append(folder)
    path = os.path.join(folder, f"drawn_{task}.png")
    img = Image.new("RGB", (320, 320), (150, 170, 190))
    draw = ImageDraw.Draw(img)
    if task == "style":
        for i in range(0, 320, 40):
            draw.line((0, i, 320, 320 - i), fill=(40, 60, 120), width=12)
    else:
        draw.ellipse((60, 40, 260, 290), fill=(180, 40, 60), outline=(20, 20, 20), width=6)
    img.save(path)
    return path


class Progress:
    """Prints what the server is doing: each node as it starts, sampler steps as a tqdm bar."""

    def __init__(self, prompt: dict):
        self.titles = {k: n.get("_meta", {}).get("title", n["class_type"]) for k, n in prompt.items()}
        self.bar = None
        self.bar_node = None

    def __call__(self, msg: dict) -> None:
        from tqdm import tqdm

        data = msg.get("data", {})
        if msg["type"] == "executing" and data.get("node") is not None:
            self.close()
            print(f"  running {self.titles.get(str(data['node']), data['node'])}", flush=True)
        elif msg["type"] == "progress":
            if self.bar is None or self.bar_node != data.get("node") or data["value"] < self.bar.n:
                self.close()
                self.bar = tqdm(total=data["max"], desc=f"  {self.titles.get(str(data.get('node')), 'step')}",
                                unit="step", file=sys.stdout)
                self.bar_node = data.get("node")
            self.bar.update(data["value"] - self.bar.n)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def prepare_tiny(sandbox: Sandbox, prompt: dict) -> dict:
    from dreamo_testkit import pack_import

    pack_import.register_package()  # the tiny face/remover files are built with the pack's own code
    from dreamo_testkit import tiny_workflows

    unavailable = tiny_workflows.write_model_files(sandbox.models_dir)
    blocked = {k: v for k, v in unavailable.items() if k in tiny_workflows.needs(prompt)}
    if blocked:
        raise UsageError("the install check cannot run this workflow's reference paths here: "
                         + "; ".join(f"{k}: {v}" for k, v in blocked.items()))
    tiny, changes = tiny_workflows.tiny_prompt(prompt)
    print("Tiny-model substitutions (everything else is the workflow as shipped):")
    for change in changes:
        print(f"  - {change}")
    return tiny


def main(argv=None) -> int:
    names = workflows()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflow", choices=sorted(names), default="ip",
                        help="which workflows/api/dreamo_<name>_api.json to run (README: Workflows)")
    parser.add_argument("--image", action="append", default=[],
                        help="a reference picture; repeat for the next slots (default: the workflow's sample photos)")
    parser.add_argument("--garment", action="append", default=[],
                        help="a garment picture for the try-on workflows' garment slots (id_tryon: ref 2)")
    parser.add_argument("--tiny", action="store_true", help="run the install check even if real models exist")
    parser.add_argument("--output", default="dreamo_outputs",
                        help="folder the pictures it makes are copied to (default: ./dreamo_outputs, as the client)")
    parser.add_argument("--keep", help="keep the sandbox (server log, outputs) in this folder; else it is removed")
    parser.add_argument("--server", default="127.0.0.1:8188",
                        help="with real models: queue on the ComfyUI running here (through the API client, "
                             "dreamo_cli); when none answers, start one from COMFYUI_PATH (default %(default)s)")
    args = parser.parse_args(argv)

    if not os.path.isfile(os.path.join(comfyui_path(), "main.py")):
        print(f"error: no ComfyUI checkout at {comfyui_path()}: run this from <ComfyUI>/custom_nodes/comfyui-dreamo "
              "or set COMFYUI_PATH (README: 'Install')", file=sys.stderr)
        return 2
    handled = _main_thread()  # signal handlers can only be set there (tests call main() from other threads too)
    previous = signal.signal(signal.SIGTERM, _stop) if handled else None
    stopped = None
    try:
        return job(args, names)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        stopped = ("Ctrl-C", 130)
        return 130
    except Stopped:
        stopped = ("SIGTERM", 143)
        return 143
    finally:
        for folder in TEMP + DRAWN:
            shutil.rmtree(folder, ignore_errors=True)
        TEMP.clear()
        DRAWN.clear()
        if handled:
            signal.signal(signal.SIGTERM, previous)
        if stopped:
            print(f"\nStopped by {stopped[0]}: its ComfyUI server is ended and its temporary folders are removed"
                  + (f" (the sandbox {args.keep} is kept)" if args.keep else "") + ".", file=sys.stderr, flush=True)


TEMP: list[str] = []  # the sandbox when not --keep: removed when the job ends, however it ends


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _stop(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop: a second SIGTERM must not cut the cleanup short
    raise Stopped()


def job(args, names: dict[str, str]) -> int:
    prompt = load_workflow(args.workflow)
    api_file = os.path.relpath(names[args.workflow], REPO)
    chosen = pictures(prompt, args.image, args.garment, args.workflow)
    for node_id, path in chosen.items():
        if os.path.dirname(path) in DRAWN:
            print(f"{prompt[node_id]['inputs']['image']} (a sample photo) was not found: a drawn picture stands in "
                  "for it.")
    missing = missing_real_models(args.workflow)
    tiny = args.tiny or bool(missing)
    if missing and not args.tiny:
        print("Real models not found (missing: " + ", ".join(missing) + ").")
    if tiny:
        print(f"Running {api_file} as an INSTALL CHECK on tiny generated models: it shows the pack and this "
              "workflow's reference paths work in this ComfyUI; the picture is noise.")
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        root = os.path.abspath(args.keep)
    else:
        root = tempfile.mkdtemp(prefix="dreamo_example_")
        TEMP.append(root)
    return run(args, prompt, api_file, chosen, tiny, root)


def queue_through_client(client: "ComfyServer", prompt: dict, api_file: str, progress: "Progress") -> dict:
    """Queue the prompt with the API client (dreamo_cli), following its progress; outputs and UI from /history,
    or the server's own error text."""
    print(f"Queueing {api_file} on {client.url} ...", flush=True)
    try:
        run = client.run(prompt, on_event=lambda kind, data: progress({"type": kind, "data": data}))
    except (PromptRejected, NodeFailed, ServerUnavailable) as e:
        return {"outputs": {}, "images": [], "error": str(e)}
    finally:
        progress.close()
    entry = client.history(run.prompt_id) or {}
    return {"outputs": entry.get("outputs", {}), "images": run.images, "error": None}


def keep_pictures(client: "ComfyServer", images: list[dict], folder: str) -> list[str]:
    """Copy the output pictures from the server (its /view) into `folder`, never over an existing file: they stay
    when the sandbox goes. Returns their absolute paths."""
    os.makedirs(folder, exist_ok=True)
    kept = []
    for image in images:
        stem, ext = os.path.splitext(os.path.basename(image["filename"]))
        path, n = os.path.join(folder, stem + ext), 1
        while os.path.exists(path):
            path, n = os.path.join(folder, f"{stem}_{n}{ext}"), n + 1
        try:
            with open(path, "xb") as f:
                client.download(image, f)
        except BaseException:
            os.remove(path)  # no half picture left under a name that looks finished
            raise
        kept.append(os.path.abspath(path))
    return kept


def run(args, prompt: dict, api_file: str, chosen: dict, tiny: bool, root: str) -> int:
    sandbox = Sandbox(root, isolated=tiny, test_nodes=tiny).prepare()
    for node_id, path in chosen.items():  # each picture under the name the workflow's LoadImage reads
        shutil.copy(path, os.path.join(sandbox.input_dir, prompt[node_id]["inputs"]["image"]))
    if tiny:
        prompt = prepare_tiny(sandbox, prompt)
    for slot, task, node_id in references(prompt):
        print(f"ref {slot} ({task}): {chosen[node_id]}")

    started = time.monotonic()
    progress = Progress(prompt)
    existing = None if tiny else ComfyServer(args.server)
    own_server = existing is None or not existing.alive()
    if not own_server:  # your running ComfyUI, with your models: queue there
        print(f"Using the ComfyUI server already running at {existing.url}", flush=True)
        for node_id, path in chosen.items():
            prompt[node_id]["inputs"]["image"] = existing.upload(path)
        outcome = queue_through_client(existing, prompt, api_file, progress)
        saved = keep_pictures(existing, outcome["images"], args.output)
    else:
        why = "tiny models need their own server" if tiny else f"no server answers at {args.server}"
        print(f"Starting ComfyUI from {comfyui_path()} ({why}) ...", flush=True)
        with Server(sandbox) as server:
            client = ComfyServer(server.url)
            outcome = queue_through_client(client, prompt, api_file, progress)
            if outcome["error"]:
                print("Server log (last lines):\n" + server.log_tail(30))
                if args.keep:
                    print(f"Full server log: {server.log_path}")
            saved = keep_pictures(client, outcome["images"], args.output)  # before the server and sandbox go
    if outcome["error"]:
        print(f"Workflow failed: {outcome['error']}")
        return 1
    for node_id, node in prompt.items():
        info = outcome["outputs"].get(node_id, {}).get("dreamo_info")
        if node["class_type"] == "DreamORefEncode" and info:
            print(f"{node['_meta']['title']}: " + info[0].replace("\n", "; "))
    for path in saved:
        print(f"Saved {path}" + (" (noise: tiny models)" if tiny else ""))
    tasks = sorted({task for _, task, _ in references(prompt)})
    what = f"{api_file} ({', '.join(tasks)} reference paths)"
    print(f"OK in {time.monotonic() - started:.0f} s: " + (f"install check passed: {what} ran on tiny models."
                                                          if tiny else f"{what} finished."))
    return 0


if __name__ == "__main__":
    sys.exit(main())
