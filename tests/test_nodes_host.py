"""DreamOLoader and DreamOApply in a real ComfyUI: folders, composition and the errors users see."""
import os

import pytest
import torch

pytestmark = pytest.mark.host


@pytest.fixture
def dreamo_folder(tmp_path):
    import folder_paths

    saved = {k: (list(v[0]), set(v[1])) for k, v in folder_paths.folder_names_and_paths.items()}
    folder = tmp_path / "dreamo"
    folder.mkdir()
    folder_paths.add_model_folder_path("dreamo", str(folder))
    folder_paths.filename_list_cache.clear()
    yield folder
    folder_paths.folder_names_and_paths.clear()
    folder_paths.folder_names_and_paths.update(saved)
    folder_paths.filename_list_cache.clear()


def test_dreamo_folder_keeps_extra_model_paths_entries_and_lists_files(dreamo_folder):
    import folder_paths
    from dreamo_testkit import tiny_models
    from comfyui_dreamo.nodes.loader import DreamOLoader
    from comfyui_dreamo.nodes.model_folders import register_all

    register_all()  # again, after an extra_model_paths.yaml-style entry exists
    paths, exts = folder_paths.folder_names_and_paths["dreamo"]
    assert str(dreamo_folder) in paths and os.path.join(folder_paths.models_dir, "dreamo") in paths
    assert ".safetensors" in exts
    tiny_models.write_dreamo_file(str(dreamo_folder / "dreamo.safetensors"))
    (dreamo_folder / "notes.txt").write_text("not a model")
    folder_paths.filename_list_cache.clear()
    choices = DreamOLoader.INPUT_TYPES()["required"]["dreamo_file"][0]
    assert "dreamo.safetensors" in choices and "notes.txt" not in choices
    (emb,) = DreamOLoader().load("dreamo.safetensors")
    assert emb.hidden_size == tiny_models.TINY_FLUX["hidden_size"] and emb.placeholders.shape == (10, 32)


def test_loader_errors_name_node_input_and_fix(dreamo_folder):
    from safetensors.torch import save_file
    from comfyui_dreamo.dreamo_ops.errors import DreamOError
    from comfyui_dreamo.nodes.loader import DreamOLoader

    with pytest.raises(DreamOError, match=r"DreamOLoader \(input 'dreamo_file'\): 'gone.safetensors' was not found.*Fix"):
        DreamOLoader().load("gone.safetensors")
    save_file({"lora_unet_x.alpha": torch.ones(1)}, str(dreamo_folder / "other.safetensors"))
    with pytest.raises(DreamOError, match="no DreamO embeddings.*Fix: choose dreamo.safetensors"):
        DreamOLoader().load("other.safetensors")


@pytest.fixture(scope="module")
def dreamo():
    from dreamo_testkit import tiny_models
    from comfyui_dreamo.dreamo_ops.condition_embedding import DreamOEmbeddings

    t = tiny_models.embedding_tensors()
    return DreamOEmbeddings(t["dreamo_task_embedding.weight"], t["dreamo_idx_embedding.weight"], None)


def ref(h=4, w=4, channels=16):
    from comfyui_dreamo.dreamo_ops.reference import DreamOReference
    return DreamOReference(latent=torch.randn(1, channels, h, w), task="ip", pixels=torch.zeros(1, h * 8, w * 8, 3))


def dreamo_wrappers(patcher):
    return patcher.get_wrappers("diffusion_model", "dreamo")


def test_apply_clones_and_composes(flux, dreamo):
    from dreamo_testkit import tiny_models
    from comfyui_dreamo.nodes.apply import DreamOApply

    positive = tiny_models.conditioning()
    r1, r2, r5 = ref(), ref(6, 4), ref(2, 2)
    model1, cond1 = DreamOApply().apply(flux, positive, dreamo, ref_1=r1, ref_2=r2)["result"]
    model2, cond2 = DreamOApply().apply(model1, cond1, dreamo, ref_5=r5)["result"]
    assert dreamo_wrappers(flux) == [] and "reference_latents" not in positive[0][1]  # inputs untouched
    assert len(dreamo_wrappers(model1)) == 1 and len(dreamo_wrappers(model2)) == 1
    c = cond2[0][1]
    assert [t is r.latent for t, r in zip(c["reference_latents"], (r1, r2, r5))] == [True] * 3
    assert c["reference_latents_method"] == "uxo"
    assert c["model_conds"]["dreamo_ref_slots"].cond == (1, 2, 5)
    assert cond1[0][1]["model_conds"]["dreamo_ref_slots"].cond == (1, 2)


def test_non_flux_model_is_refused(dreamo):
    from dreamo_testkit import tiny_models
    from comfyui_dreamo.dreamo_ops.errors import DreamOError
    from comfyui_dreamo.nodes.apply import DreamOApply

    with pytest.raises(DreamOError, match=r"DreamOApply \(input 'model'\): DreamO works on FLUX.1 models only; this is an SD3"):
        DreamOApply().apply(tiny_models.sd3_patcher(), tiny_models.conditioning(), dreamo, ref_1=ref())


@pytest.mark.parametrize("case,match", [
    ("no_refs", r"input 'ref_1'\): no reference is connected"),
    ("wide_embeddings", r"input 'dreamo'\): the embeddings are 64-wide but the model's hidden size is 48"),
    ("sd_vae_latent", r"input 'ref_3'\): the reference latent has shape \(1, 4, 4, 4\)"),
    ("foreign_refs", r"input 'positive'\): this conditioning already carries 1 reference latent"),
    ("slot_taken", r"input 'ref_2'\): slot 2 is already used"),
])
def test_apply_errors(flux, dreamo, case, match):
    from dreamo_testkit import tiny_models
    from comfyui_dreamo.dreamo_ops.condition_embedding import DreamOEmbeddings
    from comfyui_dreamo.dreamo_ops.errors import DreamOError
    from comfyui_dreamo.nodes.apply import DreamOApply

    positive = tiny_models.conditioning()
    refs = {"ref_1": ref()}
    emb = dreamo
    if case == "no_refs":
        refs = {}
    elif case == "wide_embeddings":
        emb = DreamOEmbeddings(torch.zeros(2, 64), torch.zeros(10, 64), None)
    elif case == "sd_vae_latent":
        refs = {"ref_3": ref(channels=4)}
    elif case == "foreign_refs":
        positive[0][1]["reference_latents"] = [torch.zeros(1, 16, 4, 4)]
    elif case == "slot_taken":
        _, positive = DreamOApply().apply(flux, positive, dreamo, ref_2=ref())["result"]
        refs = {"ref_2": ref()}
    with pytest.raises(DreamOError, match=match):
        DreamOApply().apply(flux, positive, emb, **refs)


def test_method_changed_after_apply_stops_sampling_with_an_explanation(flux, dreamo):
    import node_helpers
    from dreamo_testkit import tiny_models
    from dreamo_testkit.host_sampling import sample_once
    from comfyui_dreamo.dreamo_ops.errors import DreamOError
    from comfyui_dreamo.nodes.apply import DreamOApply

    model, cond = DreamOApply().apply(flux, tiny_models.conditioning(), dreamo, ref_1=ref())["result"]
    cond = node_helpers.conditioning_set_values(cond, {"reference_latents_method": "offset"})
    with pytest.raises(DreamOError, match="DreamOApply \\(input 'positive'\\): .*method 'offset'"):
        sample_once(model, torch.zeros(1, 16, 4, 4), cond, tiny_models.conditioning(seed=1))
