"""DreamOStageLoader in a real ComfyUI: stage files as released -> LoRA patches on a clone -> exact weights.

Release-like files are written in the formats ByteDance used (XLabs for the main/cfg/quality LoRAs, diffusers
for SFT/DPO and FLUX.1-Turbo-Alpha) with tiny Flux shapes. The weights ComfyUI computes when it loads the
patched clone (`ModelPatcher.patch_model`) are compared, per weight, with W + s * scale * (up @ down) worked out
from the generator's own description of each file (dreamo_testkit/lora_fixtures.py).
"""
import pytest
import torch

from dreamo_testkit.stage_weights import (OFFICIAL, PREFIX, TOL, assert_weights, base_weights, defaults, expected,
                                          patched_weights, run)

pytestmark = pytest.mark.host

# ------------------------------------------------------------------------------------ weights, presets

def test_v1_1_defaults_apply_main_cfg_turbo_sft_dpo_exactly(flux, release):
    from dreamo_testkit import tiny_models

    base = base_weights(flux)
    model, dreamo = run(flux)
    assert model is not flux and not flux.patches, "the input model must stay untouched"
    stages = ("main", "cfg_distill", "turbo", "sft", "dpo")
    got = patched_weights(model)
    assert_weights(got, expected(base, release, {s: OFFICIAL[s] for s in stages}), base, release, stages)
    assert all(torch.equal(v, base[k]) for k, v in base_weights(flux).items()), "unpatch restored the base"
    emb = tiny_models.embedding_tensors(seed=8)
    assert torch.equal(dreamo.task, emb["dreamo_task_embedding.weight"])
    assert torch.equal(dreamo.placeholders, emb["dreamo_t5_embedding.weight"][-10:])


def test_v1_preset_uses_the_quality_pair_and_leaves_untargeted_rows_alone(flux, release):
    from dreamo_testkit import tiny_models

    base = base_weights(flux)
    model, _ = run(flux, version="v1", turbo=False)
    stages = ("main", "cfg_distill", "quality_pos", "quality_neg")
    got = patched_weights(model)
    assert_weights(got, expected(base, release, {s: OFFICIAL[s] for s in stages}), base, release, stages)
    h = tiny_models.TINY_FLUX["hidden_size"]
    for i in range(2):  # XLabs single-block qkv_lora touches only linear1's qkv rows, never its mlp rows
        w = f"single_blocks.{i}.linear1.weight"
        assert torch.equal(got[w][3 * h:], base[w][3 * h:])
        assert (got[w][:3 * h] - base[w][:3 * h]).abs().max() > 1e-3


def test_official_strengths_are_the_defaults():
    d = defaults()
    assert d["version"] == "v1.1" and d["turbo"] is True
    assert {k[:-len("_strength")]: v for k, v in d.items() if k.endswith("_strength")} == OFFICIAL
    assert all(d[k] == "auto" for k in d if k.endswith("_file"))


def test_none_disables_a_stage(flux, release):
    base = base_weights(flux)
    model, _ = run(flux, dpo_file="none", turbo_file="none", cfg_distill_file="none")
    got = patched_weights(model)
    assert_weights(got, expected(base, release, {"main": 1.0, "sft": 1.0}), base, release, ("main", "sft"))


def test_strength_zero_leaves_weights_bit_identical(flux, release):
    base = base_weights(flux)
    zero = {f"{s}_strength": 0.0 for s in OFFICIAL}
    model, _ = run(flux, **zero)
    assert not model.patches
    got = patched_weights(model)
    assert all(torch.equal(got[k], base[k]) for k in base)
    model, _ = run(flux, dpo_strength=0.0, turbo=False)  # one stage at 0, the others as usual
    got = patched_weights(model)
    stages = ("main", "cfg_distill", "sft")
    assert_weights(got, expected(base, release, {s: 1.0 for s in stages}), base, release, stages)


def test_custom_and_explicit_files_override_the_preset(flux, release):
    base = base_weights(flux)
    model, _ = run(flux, version="custom", turbo=False, cfg_distill_file="dreamo_cfg_distill.safetensors",
                   cfg_distill_strength=0.5)
    got = patched_weights(model)
    assert_weights(got, expected(base, release, {"main": 1.0, "cfg_distill": 0.5}), base, release,
                   ("main", "cfg_distill"))
    model, _ = run(flux, turbo=False, quality_pos_file="dreamo_quality_lora_pos.safetensors",
                   main_strength=0.3, sft_strength=-0.4)
    got = patched_weights(model)
    want = {"main": 0.3, "cfg_distill": 1.0, "quality_pos": 0.15, "sft": -0.4, "dpo": 1.25}
    assert_weights(got, expected(base, release, want), base, release, tuple(want))


@pytest.mark.parametrize("fmt", ["kohya", "bfl", "bfl_lora_A_no_prefix", "diffusers_alpha"])
def test_every_format_through_comfyui_patches(flux, folders, release, fmt):
    import folder_paths
    from dreamo_testkit import lora_fixtures as lf

    make = {"kohya": lambda: lf.kohya(seed=40, alpha=2.0), "bfl": lambda: lf.bfl(seed=41, alpha=8.0),
            "bfl_lora_A_no_prefix": lambda: lf.bfl(seed=42, prefix="", names=("lora_B", "lora_A"), alpha=None),
            "diffusers_alpha": lambda: lf.diffusers(seed=43, alpha=1.0)}[fmt]
    tensors, changes = make()
    lf.save(folders["loras"] / f"{fmt}.safetensors", tensors)
    folder_paths.filename_list_cache.clear()
    base = base_weights(flux)
    model, _ = run(flux, version="custom", turbo=False, main_strength=0.0, quality_neg_file=f"{fmt}.safetensors",
                   quality_neg_strength=-0.6)
    got = patched_weights(model)
    assert_weights(got, expected(base, {"x": changes}, {"x": -0.6}), base, {"x": changes}, ("x",))


def to_comfyui_copy(tensors):
    """What a converter to ComfyUI-native keys writes for an XLabs file (diffusion_model.*.lora_up/down)."""
    names = {"qkv_lora1": "img_attn.qkv", "qkv_lora2": "txt_attn.qkv", "proj_lora1": "img_attn.proj",
             "proj_lora2": "txt_attn.proj", "qkv_lora": "linear1_qkv", "proj_lora": "linear2"}
    out = {}
    for key, t in tensors.items():
        block, rest = key.split(".processor.")
        proc, role = rest.split(".")[0], rest.split(".")[1]
        kind, n = block.replace(".", "_").rsplit("_", 1)
        out[f"diffusion_model.{kind}.{n}.{names[proc]}.lora_{role}.weight"] = t
    return out


def test_preconverted_comfyui_copies_and_standalone_embeddings(flux, folders, release):
    import folder_paths
    from dreamo_testkit import lora_fixtures as lf
    from dreamo_testkit import tiny_models

    copies = folders["dreamo"] / "comfyui"
    copies.mkdir()
    lf.save(copies / "dreamo_comfyui.safetensors", to_comfyui_copy(lf.xlabs(seed=1, sep="_")[0]))
    lf.save(copies / "dreamo_cfg_distill_comfyui.safetensors", to_comfyui_copy(lf.xlabs(seed=2, sep=".")[0]))
    lf.save(copies / "embedding.safetensors", lf.with_embeddings({}, seed=8, t5=False))
    folder_paths.filename_list_cache.clear()
    original, dreamo_o = run(flux, version="v1", turbo=False)
    copy, dreamo_c = run(flux, version="v1", turbo=False, dreamo_file="comfyui/dreamo_comfyui.safetensors")
    a, b = patched_weights(original), patched_weights(copy)
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < TOL
    emb = tiny_models.embedding_tensors(seed=8)
    assert torch.equal(dreamo_c.task, emb["dreamo_task_embedding.weight"]) and dreamo_c.placeholders is None
    assert dreamo_c.source == "embedding.safetensors" and dreamo_o.source == "dreamo.safetensors"


def test_diffusers_mapping_agrees_with_comfyuis_own_key_map(flux):
    """ComfyUI maps diffusers Flux names itself (comfy.lora.model_lora_keys_unet); ours must agree."""
    import comfy.lora
    from dreamo_testkit import lora_fixtures as lf
    from comfyui_dreamo.dreamo_ops.lora_formats import map_base, part_offset, split_role

    h = flux.model.diffusion_model.hidden_size
    key_map = comfy.lora.model_lora_keys_unet(flux.model, {})
    bases = {split_role(k)[0] for k in lf.diffusers(seed=0, full=True)[0]}
    assert len(bases) > 40
    for base in sorted(bases):
        module, part, _ = map_base(base)
        theirs = key_map[base]
        if isinstance(theirs, str):
            theirs = (theirs, None)
        assert theirs[0] == f"{PREFIX}{module}.weight", base
        if part != "swap":  # ComfyUI swaps the final modulation's halves with a function on the diff
            assert theirs[1] == part_offset(part, h, 4 * h), base


# ------------------------------------------------------------------------------------ quantized base

def fp8_flux(seed=1):
    import comfy.model_patcher
    from dreamo_testkit import tiny_models

    src = tiny_models.flux_patcher(seed=seed)
    # what UNETLoader's fp8_e4m3fn does on CPU
    model = tiny_models.flux_model_config(torch.float8_e4m3fn, torch.float32).get_model({})
    model.load_model_weights(src.model.state_dict(), PREFIX)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def test_fp8_base_model_gets_the_patches_through_comfyui(release):
    import comfy.float
    import comfy.model_patcher
    from dreamo_testkit import tiny_models
    from dreamo_testkit.host_sampling import sample_once

    fp8 = fp8_flux()
    qkv = fp8.model.diffusion_model.double_blocks[0].img_attn.qkv
    assert qkv.weight.dtype == torch.float8_e4m3fn and hasattr(qkv, "comfy_cast_weights")
    base = base_weights(fp8)
    model, _ = run(fp8)
    stages = ("main", "cfg_distill", "turbo", "sft", "dpo")
    want = expected(base, release, {s: OFFICIAL[s] for s in stages})
    got = patched_weights(model)
    touched = {c.weight for s in stages for c in release[s]}
    for k in touched:
        assert got[k].dtype == torch.float8_e4m3fn, k
        # ComfyUI computes in float32 and rounds stochastically back to fp8, seeded by the key
        rounded = comfy.float.stochastic_rounding(want[k], torch.float8_e4m3fn,
                                                  seed=comfy.model_patcher.string_to_seed(PREFIX + k))
        assert (got[k] == rounded).float().mean().item() > 0.99, k
        assert (got[k].float() - want[k]).abs().max().item() <= want[k].abs().max().item() / 8 + 2 ** -9, k
    assert all(torch.equal(got[k].float(), base[k]) for k in base if k not in touched)
    assert all(torch.equal(v, base[k]) for k, v in base_weights(fp8).items()), "base weights stay as they were"
    with torch.inference_mode():
        out = sample_once(model, torch.zeros(1, 16, 4, 4), tiny_models.conditioning(1), tiny_models.conditioning(2))
    assert out.shape == (1, 16, 4, 4) and torch.isfinite(out).all()
    import comfy.model_management
    comfy.model_management.unload_all_models()


# ------------------------------------------------------------------------------------ errors users see

def node_error(match, model, **inputs):
    from comfyui_dreamo.dreamo_ops.errors import DreamOError

    with pytest.raises(DreamOError, match=match) as e:
        run(model, **inputs)
    return e.value


def test_lora_for_another_model_is_named_with_its_file_and_key(flux, folders, release):
    import folder_paths
    from dreamo_testkit import lora_fixtures as lf

    lf.save(folders["loras"] / "sdxl_style.safetensors", lf.sdxl_lora())
    folder_paths.filename_list_cache.clear()
    e = node_error(r"DreamOStageLoader \(input 'cfg_distill_file'\): 'sdxl_style\.safetensors': 9 key\(s\) map to "
                   r"no FLUX\.1 weight: 'lora_te1_.*another model.*Fix: choose the DreamO file", flux,
                   cfg_distill_file="sdxl_style.safetensors")
    assert e.input_name == "cfg_distill_file"
    assert not flux.patches


def test_unknown_key_rank_and_shape_mismatch(flux, folders, release):
    import folder_paths
    from dreamo_testkit import lora_fixtures as lf

    tensors, _ = lf.xlabs(seed=50)
    tensors["double_blocks.1.processor.style_lora.up.weight"] = torch.zeros(48, 4)
    tensors["double_blocks.1.processor.style_lora.down.weight"] = torch.zeros(4, 48)
    lf.save(folders["dreamo"] / "unknown.safetensors", tensors)
    tensors, _ = lf.diffusers(seed=51, full=False)
    tensors["transformer.transformer_blocks.0.attn.to_k.lora_A.weight"] = torch.zeros(3, 48)
    lf.save(folders["dreamo"] / "rank.safetensors", tensors)
    wide = lf.Dims(hidden=64, mlp=256, depth=2, depth_single=2, in_channels=64, context=32, vec=24, out=64)
    lf.save(folders["dreamo"] / "wide.safetensors", lf.xlabs(seed=52, d=wide)[0])
    folder_paths.filename_list_cache.clear()
    node_error(r"'dreamo_file'\): 'unknown\.safetensors': 2 key\(s\).*'double_blocks\.1\.processor\.style_lora\.down"
               r"\.weight'.*partly", flux, dreamo_file="unknown.safetensors", embedding_file="dreamo.safetensors")
    node_error(r"'sft_file'\): 'rank\.safetensors': rank mismatch.*attn\.to_k", flux, sft_file="rank.safetensors")
    node_error(r"'dpo_file'\): 'wide\.safetensors' does not fit this model.*different model", flux,
               dpo_file="wide.safetensors")


def test_truncated_file_and_pickle_are_refused(flux, folders, release):
    import folder_paths

    data = (folders["dreamo"] / "dreamo_cfg_distill.safetensors").read_bytes()
    (folders["dreamo"] / "cut.safetensors").write_bytes(data[: len(data) // 2])
    from dreamo_testkit import untrusted_files as uf

    marker = folders["loras"].parent / "unpickled.marker"
    payload = uf.pickle_payload(str(marker))
    (folders["loras"] / "evil.ckpt").write_bytes(payload)
    (folders["loras"] / "evil_renamed.safetensors").write_bytes(payload)
    folder_paths.filename_list_cache.clear()
    node_error(r"'sft_file'\): 'cut\.safetensors' is not a readable safetensors file \(truncated or corrupted\?\).*"
               r"Fix: re-download", flux, sft_file="cut.safetensors")
    node_error(r"'dpo_file'\): 'evil\.ckpt' is not a \.safetensors file.*refused", flux, dpo_file="evil.ckpt")
    node_error(r"'turbo_file'\): 'evil_renamed\.safetensors' is not a readable safetensors", flux,
               turbo_file="evil_renamed.safetensors")
    assert not marker.exists(), "a pickle was unpickled"
    from comfyui_dreamo.nodes.stage_loader import DreamOStageLoader
    assert "evil.ckpt" not in DreamOStageLoader.INPUT_TYPES()["required"]["dpo_file"][0]


def test_missing_official_files_say_where_to_get_them(flux, folders):
    import folder_paths
    from dreamo_testkit import lora_fixtures as lf

    node_error(r"'dreamo_file'\): no dreamo\.safetensors was found.*huggingface\.co/ByteDance/DreamO", flux)
    lf.save(folders["dreamo"] / "dreamo.safetensors", lf.with_embeddings(lf.xlabs(seed=1)[0]))
    folder_paths.filename_list_cache.clear()
    node_error(r"'cfg_distill_file'\): the v1\.1 preset uses the cfg_distill stage but no "
               r"dreamo_cfg_distill\.safetensors was found.*set 'cfg_distill_file' to 'none'", flux)
    node_error(r"'turbo_file'\): turbo is on but no FLUX\.1-Turbo-Alpha.*alimama-creative.*switch 'turbo' off", flux,
               version="custom")
    model, dreamo = run(flux, version="custom", turbo=False)  # main alone is fine
    assert dreamo.source == "dreamo.safetensors" and model.patches
    lf.save(folders["dreamo"] / "lora_only.safetensors", lf.xlabs(seed=1)[0])
    folder_paths.filename_list_cache.clear()
    node_error(r"'embedding_file'\): 'lora_only\.safetensors' holds no DreamO embeddings", flux, version="custom",
               turbo=False, dreamo_file="lora_only.safetensors")


def test_not_a_flux_model(folders, release):
    from dreamo_testkit import tiny_models

    if not hasattr(tiny_models, "sd3_patcher"):
        pytest.skip("dreamo_testkit/tiny_models.py has no sd3_patcher")
    node_error(r"'model'\): DreamO works on FLUX\.1 models only; this is an SD3 model", tiny_models.sd3_patcher())


def test_schema_documents_every_input():
    from comfyui_dreamo.nodes.stage_loader import DreamOStageLoader as N

    required = N.INPUT_TYPES()["required"]
    assert all(opts.get("tooltip") for _, opts in required.values())
    assert N.RETURN_TYPES == ("MODEL", "DREAMO") and len(N.OUTPUT_TOOLTIPS) == 2 and N.DESCRIPTION
    assert (N.NODE_ID, N.CATEGORY, N.FUNCTION) == ("DreamOStageLoader", "DreamO", "load")
    for name, (kind, _) in required.items():
        if name.endswith("_file") and name not in ("dreamo_file", "embedding_file"):
            assert kind[:2] == ["auto", "none"], name


# ------------------------------------------------------------------------------------ in-process workflow

def test_workflow_stage_loader_apply_ksampler(release):
    """UNETLoader's output -> DreamOStageLoader -> DreamOApply -> one KSampler step (comfy.sample.sample)."""
    import comfy.model_management
    import comfy.sample
    from dreamo_testkit import tiny_models
    from comfyui_dreamo.dreamo_ops.reference import DreamOReference
    from comfyui_dreamo.nodes.apply import DreamOApply

    unet = tiny_models.flux_patcher(seed=3)  # stands in for UNETLoader (tiny shapes are not auto-detected)
    ref = DreamOReference(latent=torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(0)), task="ip",
                          pixels=torch.zeros(1, 32, 32, 3))
    latent = torch.zeros(1, 16, 4, 4)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(1))
    outputs = {}
    try:
        for label, overrides in (("stages", {}), ("no_stages", {f"{s}_strength": 0.0 for s in OFFICIAL})):
            model, dreamo = run(unet, **overrides)
            with torch.inference_mode():
                model2, positive = DreamOApply().apply(model, tiny_models.conditioning(seed=3), dreamo, ref_1=ref)["result"]
                outputs[label] = comfy.sample.sample(model2, noise, 1, 1.0, "euler", "simple", positive,
                                                     tiny_models.conditioning(seed=4), latent, seed=0)
            assert set(model2.patches) == set(model.patches)  # DreamOApply keeps the stage patches
            comfy.model_management.unload_all_models()
    finally:
        comfy.model_management.unload_all_models()
    for out in outputs.values():
        assert out.shape == latent.shape and torch.isfinite(out).all()
    assert (outputs["stages"] - outputs["no_stages"]).abs().max() > 1e-4, "the stage LoRAs must change the result"
    assert not unet.patches


# ---------------------------------------------------------------------------------------------- what the node shows

def shown_widgets(values: dict, spec: dict) -> set[str]:
    """The widgets the frontend shows for `values` (web/widget_rules.js's reading of nodes/widget_rules.py)."""
    from comfyui_dreamo.nodes.widget_rules import FOLLOWS, SHOWN_IF

    shown = set()
    for name, (_, options) in ((k, v if len(v) > 1 else (v[0], {})) for k, v in spec.items()):
        conds = options.get(SHOWN_IF)
        if conds is None and FOLLOWS not in options:
            shown.add(name)
        elif conds is not None and any((values[w] in vals) == (op == "in") for w, op, vals in conds):
            shown.add(name)
    for name, (_, options) in ((k, v if len(v) > 1 else (v[0], {})) for k, v in spec.items()):
        target = options.get(FOLLOWS)
        if target and target in shown and values[target] != "none":
            shown.add(name)
    return shown


@pytest.mark.parametrize("version", ["v1.1", "v1", "custom"])
@pytest.mark.parametrize("turbo", [True, False])
def test_the_node_shows_the_stages_its_version_and_turbo_use(version, turbo):
    """The widgets shown are those of the stages the loader applies for these choices (every file left on 'auto');
    a stage given a file shows whatever the preset; 'custom' shows every stage, since it is chosen by file there.
    What is hidden keeps its value: the loader reads every input as before."""
    from comfyui_dreamo.dreamo_ops import stages as st
    from comfyui_dreamo.nodes.stage_loader import DreamOStageLoader

    spec = DreamOStageLoader.INPUT_TYPES()["required"]
    values = {name: (s[1].get("default", s[0][0] if isinstance(s[0], list) else None) if len(s) > 1 else None)
              for name, s in spec.items()}
    values.update(version=version, turbo=turbo)
    shown = shown_widgets(values, spec)
    used = {stage.name for stage, _, _ in st.active_stages(version, {}, turbo)}
    for stage in st.STAGES:
        on = stage.name in used or (version == "custom" and stage is not st.TURBO)
        assert (st.input_name(stage) in shown) == on, (stage.name, version, turbo)
        assert (f"{stage.name}_strength" in shown) == on, (stage.name, version, turbo)
    assert {"model", "version", "turbo", "embedding_file"} <= shown
    if version == "v1.1":
        values["quality_pos_file"] = "my_quality.safetensors"  # an explicit file switches a stage on anyway
        assert {"quality_pos_file", "quality_pos_strength"} <= shown_widgets(values, spec)
        values["sft_file"] = "none"
        assert "sft_file" in shown_widgets(values, spec) and "sft_strength" not in shown_widgets(values, spec)


def test_rules_name_real_widgets_and_choices():
    from comfyui_dreamo.nodes.routing import DreamORouting
    from comfyui_dreamo.nodes.stage_loader import DreamOStageLoader
    from comfyui_dreamo.nodes.widget_rules import FOLLOWS, SHOWN_IF

    for node in (DreamOStageLoader, DreamORouting):
        spec = {**node.INPUT_TYPES()["required"], **node.INPUT_TYPES().get("optional", {})}
        for name, s in spec.items():
            options = s[1] if len(s) > 1 else {}
            for widget, op, values in options.get(SHOWN_IF, []):
                assert widget in spec and op in ("in", "not_in"), (node.NODE_ID, name)
                choices = spec[widget][0]
                if isinstance(choices, list):
                    assert set(values) - {"auto", "none"} <= set(choices), (node.NODE_ID, name, values)
            if FOLLOWS in options:
                assert options[FOLLOWS] in spec, (node.NODE_ID, name)
    routing = DreamORouting.INPUT_TYPES()["required"]
    assert shown_widgets({"mode": "hard"}, {"mode": routing["mode"], "strength": routing["strength"]}) == {"mode"}
    assert shown_widgets({"mode": "soft"}, {"mode": routing["mode"], "strength": routing["strength"]}) == \
        {"mode", "strength"}
