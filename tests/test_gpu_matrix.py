"""bench/gpu_matrix.py: the full-size GPU matrix's code, run with --tiny on the CPU (on each ComfyUI release), its
one-line answer where there is no GPU, its arguments, and that it does not lean on the tests' helpers."""
import json
import os
import subprocess
import sys

import pytest
import torch

from dreamo_testkit import REPO

SCRIPT = os.path.join(REPO, "bench", "gpu_matrix.py")
KINDS = ["plain FLUX.1", "DreamO, 0 refs", "DreamO, 1 ref", "DreamO, 2 refs", "DreamO, 4 refs", "DreamO, 9 refs",
         "DreamO + routing hard, 2 refs", "DreamO + routing soft, 2 refs", "DreamO + routing hard + maps, 2 refs",
         "DreamO + regional prompts"]


def matrix(*args, timeout=900):
    from dreamo_testkit.comfy_host import COMFYUI_PATH

    env = {**os.environ, "COMFYUI_PATH": COMFYUI_PATH, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.host
def test_tiny_matrix_measures_every_row_and_each_row_did_what_it_says(tmp_path):
    out = tmp_path / "matrix.json"
    r = matrix("--tiny", "--sizes", "64,32", "--json", "--json-out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads(r.stdout.strip().splitlines()[-1])
    assert data == json.loads(out.read_text())
    env = data["environment"]
    assert env["comfyui"] and env["torch"] == torch.__version__ and env["attention"]["comfyui_choice"]
    rows = {(row["size"], row["name"]): row for row in data["rows"]}
    assert sorted(rows) == sorted((size, kind) for size in (64, 32) for kind in KINDS)
    for size in (64, 32):
        plain = rows[(size, "plain FLUX.1")]
        assert plain["time_ratio"] == 1.0 and plain["tokens"] == 16 + (size // 16) ** 2
        for kind in KINDS[:-1]:
            row = rows[(size, kind)]
            assert row["status"] == "ok", (size, kind, row["status"])
            assert row["sec_per_step"] > 0 and len(row["step_times"]) == 3 and row["time_ratio"] > 0
            assert row["tokens"] == plain["tokens"] + row["refs"] * 4  # 32² references: 2×2 tokens each
            # the row really ran what its name says (CallCheck): 3 model calls, each with its references, DreamO's
            # embeddings, and routing over all 4 blocks where the row routes
            c = row["checks"]
            n = 3 if row["refs"] else 0
            assert c["model_calls"] == 3 and c["with_references"] == n and c["with_dreamo_embeddings"] == n
            assert c["routed"] == (3 if "routing" in kind else 0)
            assert c["attention_calls_per_routed_call"] == ([4] if "routing" in kind else [])
        assert rows[(size, "DreamO + regional prompts")]["status"].startswith("not available")
    used = data["routed_blocks_backends"]
    assert any(v["usable"] and v["width"] == 24 + 8 and env["attention"]["comfyui_choice"] in v["backend"]
               for v in used), used


@pytest.mark.host
def test_tiny_matrix_prints_a_table_and_skips_rows_beyond_the_budget():
    r = matrix("--tiny", "--sizes", "32,64", "--budget", "0.001", "--steps", "1", "--warmup", "0")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    table = [line for line in lines if line.startswith("| 32²") or line.startswith("| 64²")]
    assert len(table) == 2 * len(KINDS)
    assert "| plain FLUX.1 |" in table[0] and table[0].rstrip().endswith("| ok |")  # the first row always runs
    assert any("skipped: needs" in line for line in table)
    assert any(line.startswith("# skipped for the time budget:") for line in lines)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the no-GPU answer cannot be seen here")
def test_without_a_gpu_it_says_so_in_one_line_and_exits_3():
    r = matrix(timeout=300)
    assert r.returncode == 3
    assert r.stdout.strip().count("\n") == 0 and "no GPU (CUDA) is present" in r.stdout and "--tiny" in r.stdout
    r = matrix("--json", timeout=300)
    assert r.returncode == 3 and json.loads(r.stdout)["status"] == "error"


@pytest.mark.parametrize("args", [["--sizes", "1000"], ["--sizes", "big"], ["--budget", "0"], ["--steps", "0"],
                                  ["--nope"]])
def test_bad_arguments_exit_2(args):
    r = matrix("--tiny", *args, timeout=300)
    assert r.returncode == 2 and "error" in r.stderr


def test_bench_does_not_use_the_tests_helpers():
    for name in ("gpu_matrix.py", "matrix_check.py", "matrix_env.py", "matrix_report.py", "flux_build.py", "host.py"):
        text = open(os.path.join(REPO, "bench", name)).read()
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith(("import ", "from ")):
                assert "tests" not in stripped and "conftest" not in stripped and "tiny_models" not in stripped, line
        if name != "host.py":  # host.py puts the ComfyUI checkout on the path, as ComfyUI's main.py has it
            assert "sys.path" not in text, name


@pytest.mark.host
def test_the_full_size_model_is_flux1_dev_and_random_models_build_in_every_weight_type():
    """What the GPU run builds, checked without a GPU: FLUX.1-dev's architecture through ComfyUI's detection (on the
    meta device: nothing allocated), and the random fill in bf16 and fp8 storage on a small model."""
    from dreamo_testkit import tiny_models

    fb = tiny_models.flux_build()
    model = fb.flux_model_config(torch.bfloat16, **fb.FLUX1_DEV).get_model({}, device=torch.device("meta"))
    dm = model.diffusion_model
    assert len(dm.double_blocks) == 19 and len(dm.single_blocks) == 38 and dm.hidden_size == 3072
    assert dm.num_heads == 24 and dm.params.context_in_dim == 4096 and dm.params.vec_in_dim == 768
    params = sum(p.numel() for p in dm.parameters())
    assert 11.8e9 < params < 12.0e9, params  # FLUX.1-dev: 11.9 B
    small = dict(vec_in_dim=24, context_in_dim=32, hidden_size=48, num_heads=2, depth=1, depth_single_blocks=1,
                 axes_dim=[4, 10, 10])
    for dtype, cast in ((torch.bfloat16, None), (torch.float8_e4m3fn, torch.float32)):
        patcher = fb.random_flux_patcher("cpu", dtype, cast, **small)
        sd = patcher.model.diffusion_model.state_dict()
        weight = sd["double_blocks.0.img_attn.qkv.weight"]
        assert weight.dtype == dtype and 0.01 < weight.float().std().item() < 0.03
        norms = [v for k, v in sd.items() if k.endswith(("norm.scale", "norm.weight"))]
        assert norms and all(torch.equal(v.float(), torch.ones_like(v.float())) for v in norms)
