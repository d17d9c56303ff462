"""GGUF test material: city96's ComfyUI-GGUF pack loaded from outside the repo, and a FLUX.1-shaped .gguf file.

The pack is never part of this repo. Tests find it through `COMFYUI_GGUF_PATH` (a clone of
https://github.com/city96/ComfyUI-GGUF; default ~/ComfyUI-GGUF, where scripts/install_deps.sh clones it),
falling back to `$COMFYUI_PATH/custom_nodes/ComfyUI-GGUF`, and skip with that reason when neither is there.

`write_flux_gguf` writes a .gguf as the pack's own tools make one: `tools/convert.py` (GGUFWriter, arch "flux",
1-D and tiny tensors F32, the rest BF16 from a bf16 source), then the pack's patched `llama-quantize` (its
`lcpp.patch` keeps txt_in/img_in/time_in/vector_in/guidance_in/final_layer unquantized and quantizes the other
2-D weights), here done with the `gguf` package's own quantizer. ComfyUI detects FLUX.1 only at full width on
its older releases (hidden size fixed at 3072), so the file is FLUX.1-shaped with one double block and no single
blocks, like `tiny_models.write_flux_unet_file` (~0.4 GB at Q8_0).
"""
from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import torch

PACK_MODULE = "comfyui_gguf_under_test"
FLUX1_ONE_BLOCK = dict(in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096, hidden_size=3072,
                       mlp_ratio=4.0, num_heads=24, depth=1, depth_single_blocks=0, axes_dim=[16, 56, 56],
                       theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True)
# Kept unquantized by the pack's lcpp.patch for arch "flux" (they stay as convert.py wrote them).
UNQUANTIZED_PREFIXES = ("txt_in.", "img_in.", "time_in.", "vector_in.", "guidance_in.", "final_layer.")
QUANTIZATION_THRESHOLD = 1024  # tools/convert.py: tensors this small stay F32


def pack_path() -> str | None:
    """Folder of a ComfyUI-GGUF checkout, or None."""
    for path in (os.environ.get("COMFYUI_GGUF_PATH") or os.path.expanduser("~/ComfyUI-GGUF"),
                 os.path.join(os.environ.get("COMFYUI_PATH", ""), "custom_nodes", "ComfyUI-GGUF")):
        if path and os.path.isfile(os.path.join(path, "nodes.py")) and os.path.isfile(os.path.join(path, "ops.py")):
            return path
    return None


SKIP_REASON = ("ComfyUI-GGUF not found: clone https://github.com/city96/ComfyUI-GGUF and set COMFYUI_GGUF_PATH "
               "to it (or put it in $COMFYUI_PATH/custom_nodes/ComfyUI-GGUF); README, 'GGUF models'")


def _comfyui_nodes_module():
    """Make `import nodes` give ComfyUI's nodes.py, as inside ComfyUI. pytest may put this repo's root (which has
    a `nodes` package of its own) ahead of the ComfyUI checkout on sys.path, so go by file, not by search."""
    import comfy.model_patcher

    root = os.path.dirname(os.path.dirname(os.path.abspath(comfy.model_patcher.__file__)))
    path = os.path.join(root, "nodes.py")
    loaded = sys.modules.get("nodes")
    if loaded is not None and os.path.abspath(getattr(loaded, "__file__", "") or "") == path:
        return loaded
    spec = importlib.util.spec_from_file_location("nodes", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["nodes"] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules["nodes"]
        raise
    return module


def import_pack():
    """The pack as a package (its nodes, ops, loader and dequant modules), imported the way ComfyUI does."""
    if PACK_MODULE in sys.modules:
        return sys.modules[PACK_MODULE]
    path = pack_path()
    if path is None:
        raise RuntimeError(SKIP_REASON)
    _comfyui_nodes_module()
    spec = importlib.util.spec_from_file_location(PACK_MODULE, os.path.join(path, "__init__.py"),
                                                  submodule_search_locations=[path])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[PACK_MODULE]
        raise
    return module


def flux1_shapes(params: dict = FLUX1_ONE_BLOCK) -> dict[str, tuple[int, ...]]:
    """{key: shape} of a ComfyUI FLUX.1 diffusion model with `params` (built on the meta device)."""
    import dataclasses

    import comfy.ldm.flux.model
    import comfy.ops

    params = dict(params)
    fields = {f.name for f in dataclasses.fields(comfy.ldm.flux.model.FluxParams)}
    if "txt_ids_dims" in fields:  # newer ComfyUI: FLUX.1's text ids carry no extra axes
        params.setdefault("txt_ids_dims", [])
    with torch.device("meta"):
        model = comfy.ldm.flux.model.Flux(operations=comfy.ops.disable_weight_init, **params)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def gguf_type_for(key: str, shape: tuple[int, ...], qtype):
    import gguf

    n = int(np.prod(shape))
    if len(shape) == 1 or n <= QUANTIZATION_THRESHOLD:
        return gguf.GGMLQuantizationType.F32
    if key.startswith(UNQUANTIZED_PREFIXES):
        return gguf.GGMLQuantizationType.BF16
    return qtype


def write_flux_gguf(path: str, seed: int = 0, scale: float = 0.02, qtype=None) -> dict[str, str]:
    """A FLUX.1-shaped .gguf (one double block) with random bf16 weights, quantized to `qtype` (Q8_0 by default).
    Returns {key: GGML type name}. Norm scales are ones so activations stay tame."""
    import gguf

    qtype = gguf.GGMLQuantizationType.Q8_0 if qtype is None else qtype
    g = torch.Generator().manual_seed(seed)
    writer = gguf.GGUFWriter(path=None, arch="flux")
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if qtype == gguf.GGMLQuantizationType.Q8_0
                         else gguf.LlamaFileType.MOSTLY_BF16)
    types = {}
    for key, shape in sorted(flux1_shapes().items()):
        if key.endswith(".scale"):
            t = torch.ones(shape)
        else:
            t = torch.randn(shape, generator=g) * scale
        data = t.to(torch.bfloat16).float().numpy()  # a bf16 source, as flux1-dev ships
        kind = gguf_type_for(key, shape, qtype)
        writer.add_tensor(key, gguf.quants.quantize(data, kind), raw_dtype=kind)
        types[key] = kind.name
    writer.write_header_to_file(path=path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return types


_WRITTEN: dict[int, tuple[str, dict[str, str]]] = {}


def shared_flux_gguf(tmp_path_factory, seed: int = 11) -> tuple[str, dict[str, str]]:
    """`write_flux_gguf` once per test session (in pytest's session temp folder): (path, {key: GGML type})."""
    if seed not in _WRITTEN or not os.path.isfile(_WRITTEN[seed][0]):
        folder = tmp_path_factory.getbasetemp() / f"flux_gguf_{seed}"
        folder.mkdir(exist_ok=True)
        path = str(folder / f"flux1_one_block_Q8_0_seed{seed}.gguf")
        _WRITTEN[seed] = (path, write_flux_gguf(path, seed=seed))
    return _WRITTEN[seed]


def link_into(path: str, folder: str, name: str) -> str:
    """`path` under `folder` as `name` (a hard link when possible, else a copy)."""
    import shutil

    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, name)
    try:
        os.link(path, target)
    except OSError:
        shutil.copyfile(path, target)
    return target


class DequantizedReader:
    """A .gguf's tensors as float32, dequantized one at a time by the `gguf` package (independent of the pack)."""

    def __init__(self, path: str):
        import gguf

        self.tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}

    def dequantized(self, name: str) -> torch.Tensor:
        import gguf

        t = self.tensors[name]
        shape = tuple(int(v) for v in reversed(t.shape))
        data = gguf.quants.dequantize(t.data, t.tensor_type)
        return torch.from_numpy(np.array(data, dtype=np.float32)).reshape(shape)
