"""Tiny random FLUX text encoders built with ComfyUI's own classes, and an HF reference T5 (needs the host).

The ComfyUI side is a real `comfy.sd.CLIP` around `comfy.text_encoders.flux` models, made small through
ComfyUI's per-model config overrides (`clip_l_model_config`, `t5xxl_model_config`); the tokenizers are
ComfyUI's real ones. Widths match dreamo_testkit/tiny_models.py's tiny Flux (T5 width = context_in_dim, CLIP-L width =
vec_in_dim). The reference is HF `T5EncoderModel` with the same weights and DreamO's own embedding overwrite.
"""
from __future__ import annotations

import torch

from . import tiny_models

TINY_T5 = {"d_model": tiny_models.TINY_T5_DIM, "d_kv": 8, "num_heads": 4, "d_ff": 64, "num_layers": 2}
TINY_CLIP_L = {"hidden_size": tiny_models.TINY_FLUX["vec_in_dim"], "num_attention_heads": 2,
               "intermediate_size": 48, "num_hidden_layers": 2}
T5_VOCAB_ROWS = 32128  # FLUX's T5 embedding table (ComfyUI's t5_config_xxl.json)


def _randomize(module: torch.nn.Module, seed: int, scale: float) -> None:
    """Modest random weights: norms near 1, embeddings ~N(0, 1), the rest ~N(0, scale²)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in sorted(module.state_dict().items()):
            if not t.is_floating_point():
                continue
            noise = torch.randn(t.shape, generator=g)
            if "layer_norm" in name or name.endswith("norm.weight"):
                t.copy_(1.0 + 0.1 * noise if name.endswith("weight") else 0.1 * noise)
            elif "shared" in name or "embedding" in name:
                t.copy_(noise)
            else:
                t.copy_(noise * scale)


def comfy_t5(seed: int = 0, scale: float = 0.1, dtype=torch.float32):
    """ComfyUI's FLUX T5-XXL encoder class (sd3_clip.T5XXLModel), tiny and random."""
    import comfy.text_encoders.sd3_clip

    model = comfy.text_encoders.sd3_clip.T5XXLModel(device="cpu", dtype=torch.float32,
                                                     model_options={"t5xxl_model_config": dict(TINY_T5)})
    _randomize(model.transformer, seed, scale)
    if dtype != torch.float32:
        model.transformer.to(dtype)
        model.transformer.dtype = dtype
    return model


def flux_clip(seed: int = 0, scale: float = 0.1):
    """A comfy.sd.CLIP like DualCLIPLoader(type flux) gives, with tiny random CLIP-L and T5-XXL."""
    import comfy.sd
    import comfy.text_encoders.flux

    class Target:
        params = {}
        clip = comfy.text_encoders.flux.flux_clip(dtype_t5=torch.float32)
        tokenizer = comfy.text_encoders.flux.FluxTokenizer

    options = {"clip_l_model_config": dict(TINY_CLIP_L), "t5xxl_model_config": dict(TINY_T5), "dtype": torch.float32,
               "load_device": torch.device("cpu"), "offload_device": torch.device("cpu"),
               "initial_device": torch.device("cpu")}
    clip = comfy.sd.CLIP(Target, model_options=options)
    _randomize(clip.cond_stage_model.clip_l.transformer, seed, scale)
    _randomize(clip.cond_stage_model.t5xxl.transformer, seed + 1, scale)
    return clip


def hf_t5_from_comfy(comfy_t5_model):
    """HF T5EncoderModel (eager attention, float32) holding the same weights as a ComfyUI T5."""
    from transformers import T5Config, T5EncoderModel

    c = TINY_T5
    config = T5Config(vocab_size=T5_VOCAB_ROWS, d_model=c["d_model"], d_kv=c["d_kv"], d_ff=c["d_ff"],
                      num_layers=c["num_layers"], num_heads=c["num_heads"], feed_forward_proj="gated-gelu",
                      relative_attention_num_buckets=32, relative_attention_max_distance=128,
                      layer_norm_epsilon=1e-6, dropout_rate=0.0, tie_word_embeddings=False,
                      attn_implementation="eager")  # the only T5 attention transformers 4.45.2 had
    model = T5EncoderModel(config)
    assert model.config._attn_implementation == "eager"
    sd = {k: v.float() for k, v in comfy_t5_model.transformer.state_dict().items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    assert set(missing) <= {"encoder.embed_tokens.weight"}, missing
    model.encoder.embed_tokens = model.shared
    return model.eval().float()


def dreamo_reference_t5(hf_model, placeholder_vectors: torch.Tensor, tokenizer_len: int = 32100):
    """DreamO's `_prepare_t5` on an HF T5: shrink the table to the tokenizer, add 10 rows, overwrite them."""
    hf_model.resize_token_embeddings(tokenizer_len, mean_resizing=False)
    hf_model.resize_token_embeddings(tokenizer_len + placeholder_vectors.shape[0], mean_resizing=False)
    with torch.no_grad():
        hf_model.get_input_embeddings().weight[-placeholder_vectors.shape[0]:] = placeholder_vectors
    return hf_model


def official_padded(ids: list[int], length: int, eos: int = 1, pad: int = 0) -> list[int]:
    """The pipeline's ids for a prompt: truncated to `length` (keeping </s>) and padded with <pad>."""
    if len(ids) > length:
        ids = ids[:length - 1] + [eos]
    return ids + [pad] * (length - len(ids))
