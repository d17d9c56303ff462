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
    from dreamo_testkit import tiny_models

    if not hasattr(comfy.supported_models, "Flux2"):
        pytest.skip("this ComfyUI release has no FLUX.2 model class (added after 0.3.64)")
    cfg = tiny_models.flux_unet_config(in_channels=32, out_channels=32, patch_size=1, axes_dim=[6, 6, 6, 6],
                                       qkv_bias=False)
    cfg.update(image_model="flux2", global_modulation=True, mlp_silu_act=True, ops_bias=False, txt_ids_dims=[3])
    return patcher_of(comfy.supported_models.Flux2, cfg)


def longcat():
    import comfy.supported_models
    from dreamo_testkit import tiny_models

    if not hasattr(comfy.supported_models, "LongCatImage"):
        pytest.skip("this ComfyUI release has no LongCat-Image model class (added after 0.3.64)")
    cfg = tiny_models.flux_unet_config(guidance_embed=False)
    cfg.update(vec_in_dim=None, txt_ids_dims=[1, 2])
    return patcher_of(comfy.supported_models.LongCatImage, cfg)


def chroma():
    """ComfyUI's Chroma (a model_base.Flux subclass): detected from Chroma's key names, then resized."""
    import comfy.model_detection
    import comfy.supported_models

    h, heads = 48, 2
    keys = {"img_in.weight": (h, 64), "double_blocks.0.img_attn.norm.key_norm.scale": (h // heads,),
            "single_blocks.0.norm.key_norm.scale": (h // heads,), "distilled_guidance_layer.norms.0.scale": (32,)}
    cfg = comfy.model_detection.detect_unet_config({k: torch.empty(s, device="meta") for k, s in keys.items()}, "")
    assert type(comfy.model_detection.model_config_from_unet_config(cfg)) is comfy.supported_models.Chroma
    cfg.update(hidden_size=h, num_heads=heads, depth=1, depth_single_blocks=1, axes_dim=[4, 10, 10],
               context_in_dim=32, out_dim=h, hidden_dim=32, n_layers=1)
    return patcher_of(comfy.supported_models.Chroma, cfg)


def fill():
    from dreamo_testkit import tiny_models

    return tiny_models.flux_patcher(in_channels=96)


def sdxl():
    return __import__("dreamo_testkit.tiny_models").tiny_models.sdxl_patcher()


MODELS = {"flux2": (flux2, r"this is a FLUX\.2 model \(Flux family, but not FLUX\.1\)"),
          "longcat": (longcat, r"this is a LongCat-Image model \(Flux family, but not FLUX\.1\)"),
          "chroma": (chroma, r"this is a Chroma model \(Flux family, but not FLUX\.1\)"),
          "fill": (fill, r"this Flux model has 96 input channels"),
          "sd3": (lambda: __import__("dreamo_testkit.tiny_models").tiny_models.sd3_patcher(), r"this is an SD3 model"),
          "sdxl": (sdxl, r"this is an SDXL model")}


def run_apply(model):
    from dreamo_testkit import tiny_models
    from comfyui_dreamo.nodes.apply import DreamOApply

    dreamo = type("E", (), {"hidden_size": tiny_models.TINY_FLUX["hidden_size"]})()
    return DreamOApply().apply(model, tiny_models.conditioning(), dreamo, ref_1=object())


def run_stage_loader(model):
    """The node's own entry point, every input at its default: the model is checked before any file is looked up."""
    from comfyui_dreamo.nodes.stage_loader import DreamOStageLoader

    required = DreamOStageLoader.INPUT_TYPES()["required"]
    inputs = {name: spec[1].get("default", spec[0][0] if isinstance(spec[0], list) else None)
              for name, spec in required.items() if name != "model"}
    return DreamOStageLoader().load(model, **inputs)


def run_routing(model):
    from comfyui_dreamo.nodes.routing import DreamORouting

    return DreamORouting().route(model, "hard", 4.0, False, 0.0, 1.0, "all", True,
                                 region_1=torch.ones(1, 8, 8))


NODES = {"DreamOApply": run_apply, "DreamOStageLoader": run_stage_loader, "DreamORouting": run_routing}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("node", sorted(NODES))
def test_non_flux1_models_are_refused_by_name(name, node):
    """Each node that takes a MODEL refuses each non-FLUX.1 model first thing, naming the node, the input, what the
    model is and the fix."""
    from comfyui_dreamo.dreamo_ops.errors import DreamOError

    build, problem = MODELS[name]
    model = build()
    with pytest.raises(DreamOError, match=rf"^{node} \(input 'model'\): DreamO works on FLUX\.1 models only; "
                       rf"{problem}.*Fix: load FLUX\.1-dev") as e:
        NODES[node](model)
    assert e.value.node == node and e.value.input_name == "model"
    assert not model.patches and not model.model_options.get("transformer_options")  # nothing was added


def test_flux1_is_accepted_and_its_module_returned():
    import comfy.ldm.flux.model
    from dreamo_testkit import tiny_models
    from comfyui_dreamo.nodes.model_check import check_flux1

    assert type(check_flux1("DreamOApply", tiny_models.flux_patcher())) is comfy.ldm.flux.model.Flux


def test_the_tiny_sdxl_is_comfyuis_sdxl():
    """The SDXL stand-in is ComfyUI's own SDXL model class (picked by ComfyUI's detection in tiny_models)."""
    import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
    import comfy.model_base

    model = sdxl().model
    assert type(model) is comfy.model_base.SDXL
    assert type(model.diffusion_model) is openaimodel.UNetModel and model.diffusion_model.model_channels == 32
