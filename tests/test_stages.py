"""DreamO's stage catalogue: presets, official strengths and how "auto" picks files (pure, no host)."""
import pytest

from comfyui_dreamo.dreamo_ops import stages as st

RELEASE = [  # ByteDance/DreamO cloned under models/dreamo/DreamO, plus unrelated LoRAs
    "DreamO/dreamo.safetensors", "DreamO/dreamo_cfg_distill.safetensors",
    "DreamO/dreamo_quality_lora_pos.safetensors", "DreamO/dreamo_quality_lora_neg.safetensors",
    "DreamO/v1.1/dreamo_sft_lora.safetensors", "DreamO/v1.1/dreamo_dpo_lora.safetensors",
    "DreamO/comfyui/dreamo_comfyui.safetensors", "DreamO/comfyui/dreamo_cfg_distill_comfyui.safetensors",
    "DreamO/comfyui/embedding.safetensors", "other/dreamo_cfg_distill.safetensors",
    "style_lora.safetensors", "FLUX.1-Turbo-Alpha/diffusion_pytorch_model.safetensors",
]


def test_presets_give_the_official_strengths():
    def official(version):  # the strength of every stage the preset switches on (turbo is a separate switch)
        return {s.name: s.strength for s in st.STAGES if version in s.presets}

    assert official("v1.1") == {"main": 1.0, "cfg_distill": 1.0, "sft": 1.0, "dpo": 1.25}
    assert official("v1") == {"main": 1.0, "cfg_distill": 1.0, "quality_pos": 0.15, "quality_neg": -0.8}
    assert official("custom") == {"main": 1.0}
    assert st.DEFAULT_VERSION == "v1.1" and st.TURBO.strength == 1.0


@pytest.mark.parametrize("version,on", [("v1.1", {"main", "cfg_distill", "sft", "dpo"}),
                                        ("v1", {"main", "cfg_distill", "quality_pos", "quality_neg"}),
                                        ("custom", {"main"})])
def test_auto_follows_the_preset_none_and_files_override_it(version, on):
    assert {s.name for s in st.STAGES if st.stage_is_on(s, st.AUTO, version, 1.0)} == on
    assert not any(st.stage_is_on(s, st.NONE, version, 1.0) for s in st.STAGES)
    assert all(st.stage_is_on(s, "x.safetensors", version, 0.5) for s in st.STAGES)
    assert not any(st.stage_is_on(s, "x.safetensors", version, 0) for s in st.STAGES)


def test_auto_finds_each_official_file_next_to_the_main_file():
    main = st.find_stage_file(st.MAIN, RELEASE)
    assert main == "DreamO/dreamo.safetensors"
    found = {s.name: st.find_stage_file(s, RELEASE, near=main) for s in st.STAGES if s is not st.MAIN}
    assert found == {"cfg_distill": "DreamO/dreamo_cfg_distill.safetensors",
                     "turbo": "FLUX.1-Turbo-Alpha/diffusion_pytorch_model.safetensors",
                     "quality_pos": "DreamO/dreamo_quality_lora_pos.safetensors",
                     "quality_neg": "DreamO/dreamo_quality_lora_neg.safetensors",
                     "sft": "DreamO/v1.1/dreamo_sft_lora.safetensors",
                     "dpo": "DreamO/v1.1/dreamo_dpo_lora.safetensors"}


def test_comfyui_copies_pair_with_a_comfyui_main_file():
    main = "DreamO/comfyui/dreamo_comfyui.safetensors"
    assert st.find_stage_file(st.CFG_DISTILL, RELEASE, near=main) == \
        "DreamO/comfyui/dreamo_cfg_distill_comfyui.safetensors"
    assert st.find_file(st.EMBEDDING_STEMS, RELEASE, near=main) == "DreamO/comfyui/embedding.safetensors"
    assert st.find_stage_file(st.SFT, RELEASE, near=main) == "DreamO/v1.1/dreamo_sft_lora.safetensors"
    only_copies = [n for n in RELEASE if "comfyui" in n]
    assert st.find_stage_file(st.MAIN, only_copies) == "DreamO/comfyui/dreamo_comfyui.safetensors"


def test_turbo_by_name_or_next_to_the_main_file():
    assert st.find_turbo(["loras/flux_Turbo_alpha.safetensors", "a.safetensors"]) == \
        "loras/flux_Turbo_alpha.safetensors"
    names = ["dreamo.safetensors", "diffusion_pytorch_model.safetensors", "sd/diffusion_pytorch_model.safetensors"]
    assert st.find_turbo(names, near="dreamo.safetensors") == "diffusion_pytorch_model.safetensors"
    assert st.find_turbo(names[2:], near="dreamo.safetensors") is None
    assert st.find_turbo(["style.safetensors"]) is None


def test_nothing_found_is_none_and_windows_separators_work():
    assert st.find_stage_file(st.DPO, ["style_lora.safetensors"]) is None
    win = ["DreamO\\dreamo.safetensors", "DreamO\\v1.1\\dreamo_dpo_lora.safetensors", "x\\dreamo_dpo_lora.safetensors"]
    assert st.find_stage_file(st.DPO, win, near=win[0]) == win[1]
