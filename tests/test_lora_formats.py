"""LoRA formats of DreamO's stage files mapped onto FLUX.1 weights (pure torch, no host).

The expected changes come from dreamo_testkit/lora_fixtures.py, which writes each format from its own knowledge of
what the format means; the pack's mapping is checked against them through a small reference consumer of
`LoraTarget` (weight.narrow(*offset) += strength * scale * up @ down).
"""
import os

import pytest
import torch

from dreamo_testkit import lora_fixtures as lf
from dreamo_testkit import untrusted_files as uf
from comfyui_dreamo.dreamo_ops.lora_formats import (LoraFormatError, check_against_model, parse_lora,
                                                    read_lora_file)
from comfyui_dreamo.dreamo_ops.weights import WeightFileError

H, M = lf.TINY.hidden, lf.TINY.mlp
TOL = 1e-6


def base_weights(seed=0, d=lf.TINY):
    g = torch.Generator().manual_seed(seed)
    return {f"{k}.weight": torch.randn(shape, generator=g) * 0.1 for k, shape in lf.flux_shapes(d).items()}


def apply_targets(weights, parsed, strength=1.0):
    out = {k: v.clone() for k, v in weights.items()}
    for t in parsed.targets:
        w = out[f"{t.module}.weight"]
        view = w if t.offset is None else w.narrow(*t.offset)
        view += (strength * t.scale) * torch.mm(t.up.float(), t.down.float())
    return out


def parse(tensors, name="lora.safetensors"):
    return parse_lora(tensors, name, H, M)


FORMATS = {
    "xlabs_dots": lambda: lf.xlabs(seed=1, sep="."),
    "xlabs_underscores": lambda: lf.xlabs(seed=2, sep="_"),
    "xlabs_bf16": lambda: lf.xlabs(seed=3, dtype=torch.bfloat16),
    "diffusers_full": lambda: lf.diffusers(seed=4),
    "diffusers_alpha": lambda: lf.diffusers(seed=5, alpha=2.0, full=False),
    "diffusers_no_prefix": lambda: lf.diffusers(seed=6, full=False, prefix=""),
    "bfl_lora_up": lambda: lf.bfl(seed=7),
    "bfl_lora_B_no_prefix": lambda: lf.bfl(seed=8, prefix="", names=("lora_B", "lora_A"), alpha=None),
    "kohya_alpha": lambda: lf.kohya(seed=9, rank=4, alpha=1.0),
}
EXPECTED_FORMAT = {"xlabs": "xlabs", "diffusers": "diffusers", "bfl": "bfl", "kohya": "kohya"}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_changes_exactly_the_intended_rows(fmt):
    tensors, changes = FORMATS[fmt]()
    parsed = parse(tensors)
    assert parsed.formats == (EXPECTED_FORMAT[fmt.split("_")[0]],)
    check_against_model(parsed, lf.flux_shapes())
    base = base_weights()
    got = apply_targets(base, parsed, strength=0.7)
    want = lf.apply_changes(base, changes, strength=0.7)
    touched = {c.weight for c in changes}
    for k in base:
        if k in touched:
            assert (got[k] - want[k]).abs().max().item() < TOL, k
            assert not torch.equal(got[k], base[k]), k
        else:
            assert torch.equal(got[k], base[k]), k


def test_fused_weights_get_row_slices():
    d = {t.keys[0]: t for t in parse(lf.diffusers(seed=1)[0]).targets}
    q = d["transformer.transformer_blocks.0.attn.to_q.lora_A.weight"]
    k = d["transformer.transformer_blocks.1.attn.add_k_proj.lora_A.weight"]
    v = d["transformer.single_transformer_blocks.1.attn.to_v.lora_A.weight"]
    mlp = d["transformer.single_transformer_blocks.0.proj_mlp.lora_A.weight"]
    assert (q.module, q.offset) == ("double_blocks.0.img_attn.qkv", (0, 0, H))
    assert (k.module, k.offset) == ("double_blocks.1.txt_attn.qkv", (0, H, H))
    assert (v.module, v.offset) == ("single_blocks.1.linear1", (0, 2 * H, H))
    assert (mlp.module, mlp.offset) == ("single_blocks.0.linear1", (0, 3 * H, M))
    x = {t.module: t for t in parse(lf.xlabs(seed=1)[0]).targets}
    assert x["single_blocks.0.linear1"].offset == (0, 0, 3 * H)
    assert x["double_blocks.0.img_attn.qkv"].offset is None and x["single_blocks.1.linear2"].offset is None
    b = {t.module: t for t in parse(lf.bfl(seed=1)[0]).targets}
    assert b["single_blocks.1.linear1"].offset == (0, 0, 3 * H)


def test_both_xlabs_spellings_are_the_same_lora():
    dots, underscores = parse(lf.xlabs(seed=3, sep=".")[0]), parse(lf.xlabs(seed=3, sep="_")[0])
    key = lambda t: (t.module, t.offset)  # noqa: E731
    a, b = sorted(dots.targets, key=key), sorted(underscores.targets, key=key)
    assert [key(t) for t in a] == [key(t) for t in b] and len(a) == 2 * 4 + 2 * 2
    assert all(torch.equal(x.up, y.up) and torch.equal(x.down, y.down) for x, y in zip(a, b))


def official_style_xlabs_to_diffusers(tensors):
    """DreamO's published conversion, written from its description: each qkv up is cut in thirds that share
    the down, and the XLabs names become diffusers names."""
    out = {}
    for key, t in tensors.items():
        block, proc, role = key.split(".processor.")[0], key.split(".processor.")[1].split(".")[0], key.split(".")[-2]
        kind, n = block.replace(".", "_").rsplit("_", 1)
        prefix = f"transformer.{'transformer_blocks' if kind == 'double_blocks' else 'single_transformer_blocks'}.{n}"
        ab = "lora_A" if role == "down" else "lora_B"
        if proc in ("qkv_lora1", "qkv_lora2", "qkv_lora"):
            names = {"qkv_lora1": ("to_q", "to_k", "to_v"), "qkv_lora": ("to_q", "to_k", "to_v"),
                     "qkv_lora2": ("add_q_proj", "add_k_proj", "add_v_proj")}[proc]
            parts = [t] * 3 if role == "down" else torch.chunk(t, 3, dim=0)
            for name, part in zip(names, parts):
                out[f"{prefix}.attn.{name}.{ab}.weight"] = part
        else:
            name = {"proj_lora1": "attn.to_out.0", "proj_lora2": "attn.to_add_out", "proj_lora": "proj_out"}[proc]
            out[f"{prefix}.{name}.{ab}.weight"] = t
    return out


@pytest.mark.parametrize("sep", [".", "_"])
def test_xlabs_reading_agrees_with_dreamos_diffusers_conversion(sep):
    tensors, _ = lf.xlabs(seed=11, sep=sep)
    base = base_weights(seed=4)
    direct = apply_targets(base, parse(tensors))
    converted = apply_targets(base, parse(official_style_xlabs_to_diffusers(tensors)))
    for k in base:
        assert (direct[k] - converted[k]).abs().max().item() < TOL, k


def test_diffusers_final_modulation_swaps_scale_and_shift():
    tensors, changes = lf.diffusers(seed=12)
    t = next(t for t in parse(tensors).targets if t.module == "final_layer.adaLN_modulation.1")
    up = tensors["transformer.norm_out.linear.lora_B.weight"]
    assert torch.equal(t.up[:H], up[H:]) and torch.equal(t.up[H:], up[:H]) and t.offset is None


def test_alpha_scales_by_alpha_over_rank():
    tensors, _ = lf.kohya(seed=13, rank=4, alpha=1.0)
    assert {t.scale for t in parse(tensors).targets} == {0.25}
    tensors, _ = lf.bfl(seed=13, rank=4, alpha=8.0)
    assert {t.scale for t in parse(tensors).targets} == {2.0}
    assert {t.scale for t in parse(lf.xlabs(seed=13)[0]).targets} == {1.0}


def test_dreamo_embeddings_are_set_aside(tmp_path):
    tensors, changes = lf.xlabs(seed=14, sep="_")
    path = lf.save(tmp_path / "dreamo.safetensors", lf.with_embeddings(tensors))
    parsed = read_lora_file(path, H, M)
    assert sorted(parsed.embedding_keys) == ["dreamo_idx_embedding.weight", "dreamo_t5_embedding.weight",
                                             "dreamo_task_embedding.weight"]
    assert len(parsed.targets) == len(changes) and parsed.source == "dreamo.safetensors"
    assert all("embedding" not in k for t in parsed.targets for k in t.keys)
    only_embeddings = lf.save(tmp_path / "embedding.safetensors", lf.with_embeddings({}, t5=False))
    with pytest.raises(LoraFormatError, match="'embedding.safetensors' holds no LoRA weights"):
        read_lora_file(only_embeddings, H, M)


def test_read_file_matches_in_memory_parse(tmp_path):
    tensors, changes = lf.diffusers(seed=15, alpha=3.0)
    path = lf.save(tmp_path / "dreamo_dpo_lora.safetensors", tensors)
    base = base_weights(seed=5)
    got = apply_targets(base, read_lora_file(path, H, M), 1.25)
    want = lf.apply_changes(base, changes, 1.25)
    assert max((got[k] - want[k]).abs().max().item() for k in base) < TOL


# ---------------------------------------------------------------- errors: each names the file and the key

def test_unknown_key_is_an_error_naming_key_and_file():
    tensors, _ = lf.xlabs(seed=20)
    tensors["double_blocks.0.processor.mystery_lora.up.weight"] = torch.zeros(H, 4)
    tensors["double_blocks.0.processor.mystery_lora.down.weight"] = torch.zeros(4, H)
    with pytest.raises(LoraFormatError, match=r"'cfg\.safetensors': 2 key\(s\) map to no FLUX\.1 weight: "
                                              r"'double_blocks\.0\.processor\.mystery_lora\.down\.weight'.*partly"):
        parse(tensors, "cfg.safetensors")
    tensors, _ = lf.diffusers(seed=20, full=False)
    tensors["transformer.transformer_blocks.0.attn.to_q.lora_magnitude_vector"] = torch.ones(H)
    with pytest.raises(LoraFormatError, match="lora_magnitude_vector"):
        parse(tensors)


def test_sdxl_lora_is_recognised_as_another_model():
    with pytest.raises(LoraFormatError, match=r"'sdxl\.safetensors': 9 key\(s\).*lora_te1_text_model.*made for "
                                              r"another model"):
        parse(lf.sdxl_lora(), "sdxl.safetensors")


def test_text_encoder_keys_in_a_flux_lora_are_explained():
    tensors, _ = lf.kohya(seed=21)
    tensors["lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"] = torch.zeros(8, 4)
    tensors["lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"] = torch.zeros(4, 8)
    with pytest.raises(LoraFormatError, match="text-encoder LoRA keys.*LoraLoader"):
        parse(tensors)


def test_rank_mismatch_names_both_keys():
    tensors, _ = lf.bfl(seed=22)
    tensors["diffusion_model.double_blocks.1.img_attn.proj.lora_down.weight"] = torch.zeros(5, H)
    with pytest.raises(LoraFormatError, match=r"rank mismatch, 'diffusion_model\.double_blocks\.1\.img_attn\.proj"
                                              r"\.lora_up\.weight' has shape \(48, 4\).*\(5, 48\)"):
        parse(tensors)


def test_missing_half_of_a_pair():
    tensors, _ = lf.xlabs(seed=23)
    del tensors["single_blocks.1.processor.proj_lora.down.weight"]
    with pytest.raises(LoraFormatError, match=r"'single_blocks\.1\.processor\.proj_lora\.up\.weight' has no "
                                              "matching down weight"):
        parse(tensors)


def test_block_written_twice_is_refused():
    tensors = {**lf.xlabs(seed=24, sep=".")[0], **lf.xlabs(seed=25, sep="_")[0]}
    with pytest.raises(LoraFormatError, match="both target double_blocks.0"):
        parse(tensors)


def test_conv_and_bad_alpha_are_refused():
    tensors, _ = lf.kohya(seed=26)
    tensors["lora_unet_img_in.lora_up.weight"] = torch.zeros(H, 4, 1, 1)
    tensors["lora_unet_img_in.lora_down.weight"] = torch.zeros(4, 64, 1, 1)
    with pytest.raises(LoraFormatError, match="not 2-D"):
        parse(tensors)
    tensors, _ = lf.kohya(seed=26)
    tensors["lora_unet_final_layer_linear.alpha"] = torch.ones(3)
    with pytest.raises(LoraFormatError, match="should hold one number"):
        parse(tensors)


def test_lora_for_another_model_size_does_not_fit():
    wide = lf.Dims(hidden=64, mlp=256, depth=2, depth_single=2, in_channels=64, context=32, vec=24, out=64)
    parsed = parse_lora(lf.xlabs(seed=27, d=wide)[0], "flux_wide.safetensors", 64, 256)
    expected = (r"'flux_wide\.safetensors' does not fit this model: '.*' has up \(64, 4\) and down \(4, 64\), "
                r"which do not fit double_blocks\.0\.img_attn\.proj \(48x48: needs up \(48, rank\) and down "
                r"\(rank, 48\)\) \(and 11 more\).*different")
    with pytest.raises(LoraFormatError, match=expected):
        check_against_model(parsed, lf.flux_shapes())


def test_lora_for_a_deeper_model_targets_missing_blocks():
    deep = lf.Dims(hidden=H, mlp=M, depth=3, depth_single=2, in_channels=64, context=32, vec=24, out=64)
    parsed = parse(lf.diffusers(seed=28, d=deep, full=False)[0])
    with pytest.raises(LoraFormatError, match=r"targets double_blocks\.2\.txt_attn\.qkv, which this model does "
                                              r"not have \(and \d+ more\)"):
        check_against_model(parsed, lf.flux_shapes())


def test_slice_beyond_the_weight_does_not_fit():
    parsed = parse(lf.diffusers(seed=29, full=False)[0])
    shapes = dict(lf.flux_shapes())
    shapes["single_blocks.0.linear1"] = (3 * H + M - 8, H)  # too few rows for the mlp slice
    with pytest.raises(LoraFormatError, match=r"rows 144\.\.336 of single_blocks\.0\.linear1"):
        check_against_model(parsed, shapes)


def test_pickle_files_are_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled.marker"
    payload = uf.pickle_payload(str(marker))
    assert uf.unpickling_runs_code(str(tmp_path / "control.marker"))  # the payload really does run code
    for name in ("stage.ckpt", "stage.pt", "stage.bin", "stage.safetensors"):  # last: pickle under a safe name
        path = tmp_path / name
        path.write_bytes(payload)
        with pytest.raises(WeightFileError, match=r"not a \.safetensors file|not a readable safetensors file"):
            read_lora_file(str(path), H, M)
    assert not marker.exists()


def test_truncated_and_corrupted_files(tmp_path):
    good = tmp_path / "good.safetensors"
    lf.save(good, lf.xlabs(seed=30)[0])
    data = good.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) - 100])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(os.urandom(4096))
    header_cut = tmp_path / "header_cut.safetensors"
    header_cut.write_bytes(data[:40])
    for path in (truncated, garbage, header_cut):
        with pytest.raises(WeightFileError, match=f"'{path.name}'.*(truncated or corrupted)"):
            read_lora_file(str(path), H, M)
    with pytest.raises(WeightFileError, match="does not exist"):
        read_lora_file(str(tmp_path / "missing.safetensors"), H, M)
    assert len(read_lora_file(str(good), H, M).targets) == 12
