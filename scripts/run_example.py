"""The main job: run an example DreamO workflow end to end in a real ComfyUI server.

With your real models present (FLUX.1-dev, its text encoders and VAE, DreamO's v1.1 stage files and the turbo
LoRA in ComfyUI's model folders; facexlib's weights for id references, BEN2_Base.onnx for ip references) it runs
workflows/api/dreamo_<workflow>_api.json on them. Otherwise it says what is missing and runs THE SAME workflow
as an install check on tiny random models it generates (tests/tiny_workflows.py): the workflow's own DreamO
nodes, settings and reference paths (id, ip, style) run in your ComfyUI; only the model files are tiny, so the
picture is noise.

    python scripts/run_example.py [--workflow ip|id|id_tryon|tryon|style|style_subject]
                                  [--image PATH ...] [--garment PATH ...] [--tiny] [--keep DIR]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))

sys.path.insert(0, REPO)
from comfyui_runner import Sandbox, Server, comfyui_path  # noqa: E402
from dreamo_cli.comfy_server import ComfyServer, NodeFailed, PromptRejected, ServerUnavailable  # noqa: E402

SHARED_REFS = os.environ.get("DREAMO_REFS_DIR") or os.path.join(os.path.dirname(REPO), "shared", "data", "refs")
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


def pictures(prompt: dict, images: list[str], garments: list[str]) -> dict[str, str]:
    """{LoadImage node id: picture path}: --image fills the references in slot order, --garment the ip references
    after them; the rest get the sample photo the workflow names (from ../shared/data/refs) when it is there."""
    refs = references(prompt)
    given = list(images)
    if garments:
        if not any(task == "ip" for _, task, _ in refs[len(given):]):
            raise UsageError("--garment: this workflow has no garment (ip) reference after the --image ones")
        given += garments
    if len(given) > len(refs):
        raise UsageError(f"{len(given)} pictures given, the workflow has {len(refs)} reference(s): "
                         + ", ".join(f"ref {s} ({t})" for s, t, _ in refs))
    for path in given:
        if not os.path.isfile(path):
            raise UsageError(f"no such picture: {path}")
    chosen = {}
    for i, (slot, task, node_id) in enumerate(refs):
        if i < len(given):
            chosen[node_id] = given[i]
            continue
        sample = os.path.join(SHARED_REFS, prompt[node_id]["inputs"]["image"])
        if os.path.isfile(sample):
            chosen[node_id] = sample
        elif task != "id":  # a drawn subject stands in for the sample photo
            chosen[node_id] = drawn_picture(task)
        else:
            raise UsageError(f"ref {slot} (id) needs a photo with a face: the sample {os.path.basename(sample)} is "
                             f"not in {SHARED_REFS}; pass one with --image PATH")
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
    import pack_import

    pack_import.register_package()  # the tiny face/remover files are built with the pack's own code
    import tiny_workflows

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
                        help="a garment picture for the try-on workflows (after the --image ones)")
    parser.add_argument("--tiny", action="store_true", help="run the install check even if real models exist")
    parser.add_argument("--keep", help="keep the sandbox (server log, outputs) in this folder; else it is removed")
    parser.add_argument("--server", default="127.0.0.1:8188",
                        help="with real models: queue on the ComfyUI running here (through the API client, "
                             "dreamo_cli); when none answers, start one from COMFYUI_PATH (default %(default)s)")
    args = parser.parse_args(argv)

    if not os.path.isfile(os.path.join(comfyui_path(), "main.py")):
        print(f"error: no ComfyUI checkout at {comfyui_path()}: set COMFYUI_PATH (README: 'Getting ComfyUI')",
              file=sys.stderr)
        return 2
    prompt = load_workflow(args.workflow)
    api_file = os.path.relpath(names[args.workflow], REPO)
    try:
        chosen = pictures(prompt, args.image, args.garment)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for node_id, path in chosen.items():
        if os.path.dirname(path) in DRAWN:
            print(f"{prompt[node_id]['inputs']['image']} is not beside the repo: a drawn picture stands in for it.")
    missing = missing_real_models(args.workflow)
    tiny = args.tiny or bool(missing)
    if missing and not args.tiny:
        print("Real models not found (missing: " + ", ".join(missing) + ").")
    if tiny:
        print(f"Running {api_file} as an INSTALL CHECK on tiny generated models: it shows the pack and this "
              "workflow's reference paths work in this ComfyUI; the picture is noise.")

    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    root = os.path.abspath(args.keep) if args.keep else tempfile.mkdtemp(prefix="dreamo_example_")
    try:
        return run(args, prompt, api_file, chosen, tiny, root)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        for folder in DRAWN:
            shutil.rmtree(folder, ignore_errors=True)


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
        saved = [os.path.join("output", img.get("subfolder", ""), img["filename"]) for img in outcome["images"]]
        saved = [f"{p} (in that server's folder)" for p in saved]
    else:
        why = "tiny models need their own server" if tiny else f"no server answers at {args.server}"
        print(f"Starting ComfyUI from {comfyui_path()} ({why}) ...", flush=True)
        with Server(sandbox) as server:
            outcome = queue_through_client(ComfyServer(server.url), prompt, api_file, progress)
            if outcome["error"]:
                print("Server log (last lines):\n" + server.log_tail(30))
                if args.keep:
                    print(f"Full server log: {server.log_path}")
        saved = server.image_paths(outcome["outputs"])
    if outcome["error"]:
        print(f"Workflow failed: {outcome['error']}")
        return 1
    result = outcome
    for node_id, node in prompt.items():
        info = result["outputs"].get(node_id, {}).get("dreamo_info")
        if node["class_type"] == "DreamORefEncode" and info:
            print(f"{node['_meta']['title']}: " + info[0].replace("\n", "; "))
    if own_server and not tiny and not args.keep:
        # a server started here: your pictures go to ComfyUI's own output folder, not the removed sandbox
        out = os.path.join(comfyui_path(), "output")
        os.makedirs(out, exist_ok=True)
        saved = [shutil.copy(p, os.path.join(out, os.path.basename(p))) for p in saved]
    for path in saved:
        print(f"Saved {path}" + (" (noise from tiny models; removed with the sandbox unless --keep DIR)"
                                 if tiny and not args.keep else ""))
    tasks = sorted({task for _, task, _ in references(prompt)})
    what = f"{api_file} ({', '.join(tasks)} reference paths)"
    print(f"OK in {time.monotonic() - started:.0f} s: " + (f"install check passed: {what} ran on tiny models."
                                                          if tiny else f"{what} finished."))
    return 0


if __name__ == "__main__":
    sys.exit(main())
