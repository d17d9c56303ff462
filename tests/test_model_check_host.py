"""DreamO refuses every model that is not FLUX.1, naming what it got: tiny models of the real ComfyUI classes."""
import pytest
import torch

pytestmark = pytest.mark.host


def patcher_of(config_cls, unet_config):
    import comfy.model_patcher

    config = config_cls(unet_config)
    config.set_inference_dtype(torch.float32, None)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(config.get_model({}), load_device=cpu, offload_device=cpu)


def flux2():
    import comfy.supported_models
    import tiny_models

    if not hasattr(comfy.supported_models, "Flux2"):
        pytest.skip("this ComfyUI release has no FLUX.2 model class (added after 0.3.64)")
    cfg = tiny_models.flux_unet_config(in_channels=32, out_channels=32, patch_size=1, axes_dim=[6, 6, 6, 6],
                                       qkv_bias=False)
    cfg.update(image_model="flux2", global_modulation=True, mlp_silu_act=True, ops_bias=False, txt_ids_dims=[3])
    return patcher_of(comfy.supported_models.Flux2, cfg)


def longcat():
    import comfy.supported_models
    import tiny_models

    if not hasattr(comfy.supported_models, "LongCatImage"):
        pytest.skip("this ComfyUI release has no LongCat-Image model class (added after 0.3.64)")
    cfg = tiny_models.flux_unet_config(guidance_embed=False)
    cfg.update(vec_in_dim=None, txt_ids_dims=[1, 2])
    return patcher_of(comfy.supported_models.LongCatImage, cfg)


def fill():
    import tiny_models

    return tiny_models.flux_patcher(in_channels=96)


MODELS = {"flux2": (flux2, r"this is a FLUX\.2 model \(Flux family, but not FLUX\.1\)"),
          "longcat": (longcat, r"this is a LongCat-Image model \(Flux family, but not FLUX\.1\)"),
          "fill": (fill, r"this Flux model has 96 input channels"),
          "sd3": (lambda: __import__("tiny_models").sd3_patcher(), r"this is a SD3 model")}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("node", ["DreamOApply", "DreamOStageLoader"])
def test_non_flux1_models_are_refused_by_name(name, node):
    from comfyui_dreamo.dreamo_ops.errors import DreamOError
    from comfyui_dreamo.nodes.model_check import check_flux1

    build, problem = MODELS[name]
    with pytest.raises(DreamOError, match=rf"{node} \(input 'model'\): DreamO works on FLUX\.1 models only; {problem}"
                       r".*Fix: load FLUX\.1-dev"):
        check_flux1(node, build())


def test_flux1_is_accepted_and_its_module_returned():
    import comfy.ldm.flux.model
    import tiny_models
    from comfyui_dreamo.nodes.model_check import check_flux1

    assert type(check_flux1("DreamOApply", tiny_models.flux_patcher())) is comfy.ldm.flux.model.Flux


def test_both_nodes_use_the_check():
    """The nodes themselves refuse a FLUX.2 before doing anything else."""
    from comfyui_dreamo.dreamo_ops.errors import DreamOError
    from comfyui_dreamo.nodes.apply import DreamOApply
    from comfyui_dreamo.nodes.stage_loader import flux_dims
    import tiny_models

    model = flux2()
    dreamo = type("E", (), {"hidden_size": tiny_models.TINY_FLUX["hidden_size"]})()
    with pytest.raises(DreamOError, match=r"DreamOApply .*FLUX\.2"):
        DreamOApply().apply(model, tiny_models.conditioning(), dreamo, ref_1=object())
    with pytest.raises(DreamOError, match=r"DreamOStageLoader .*FLUX\.2"):
        flux_dims(model)
