import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from comfyui_dreamo.dreamo_ops.weights import WeightFileError, read_embeddings


def tensors(hidden=8, t5_dim=6, vocab=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "dreamo_task_embedding.weight": torch.randn(2, hidden, generator=g),
        "dreamo_idx_embedding.weight": torch.randn(10, hidden, generator=g),
        "dreamo_t5_embedding.weight": torch.randn(vocab + 10, t5_dim, generator=g),
        "double_blocks.0.processor.proj_lora1.down.weight": torch.randn(2, hidden, generator=g),
    }


def test_reads_the_main_file_and_takes_the_last_ten_t5_rows(tmp_path):
    t = tensors()
    path = str(tmp_path / "dreamo.safetensors")
    save_file({k: v.to(torch.bfloat16) if "t5" in k else v for k, v in t.items()}, path)
    emb = read_embeddings(path)
    assert torch.equal(emb.task, t["dreamo_task_embedding.weight"])
    assert torch.equal(emb.index, t["dreamo_idx_embedding.weight"])
    assert torch.equal(emb.placeholders, t["dreamo_t5_embedding.weight"][-10:].to(torch.bfloat16).float())
    assert emb.hidden_size == 8 and emb.source == "dreamo.safetensors"


def test_comfyui_embedding_file_has_no_placeholders(tmp_path):
    t = tensors()
    path = str(tmp_path / "embedding.safetensors")
    save_file({k: t[k] for k in ("dreamo_task_embedding.weight", "dreamo_idx_embedding.weight")}, path)
    assert read_embeddings(path).placeholders is None


def test_a_lora_without_embeddings_is_explained(tmp_path):
    path = str(tmp_path / "dreamo_cfg_distill.safetensors")
    save_file({"double_blocks.0.processor.proj_lora1.down.weight": torch.zeros(2, 4)}, path)
    with pytest.raises(WeightFileError, match="no DreamO embeddings.*dreamo_task_embedding"):
        read_embeddings(path)


@pytest.mark.parametrize("key,shape,message", [
    ("dreamo_task_embedding.weight", (3, 8), r"expected \(2, hidden\)"),
    ("dreamo_idx_embedding.weight", (10, 7), r"expected \(10, 8\)"),
    ("dreamo_idx_embedding.weight", (9, 8), r"expected \(10, 8\)"),
    ("dreamo_t5_embedding.weight", (5, 6), "too few rows"),
])
def test_shape_checks(tmp_path, key, shape, message):
    t = tensors()
    t[key] = torch.zeros(shape)
    path = str(tmp_path / "dreamo.safetensors")
    save_file(t, path)
    with pytest.raises(WeightFileError, match=message):
        read_embeddings(path)


def test_truncated_file(tmp_path):
    path = str(tmp_path / "dreamo.safetensors")
    save_file(tensors(), path)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(WeightFileError, match="truncated or corrupted"):
        read_embeddings(path)


class _Marker:
    def __reduce__(self):
        return (open, (MARKER[0], "w"))


MARKER = [""]


def test_pickle_files_are_refused_unopened(tmp_path):
    MARKER[0] = str(tmp_path / "unpickled")
    path = str(tmp_path / "dreamo.ckpt")
    with open(path, "wb") as f:
        pickle.dump({"x": _Marker()}, f)
    with pytest.raises(WeightFileError, match="not a .safetensors file"):
        read_embeddings(path)
    renamed = str(tmp_path / "dreamo.safetensors")  # a pickle disguised by its name is still not unpickled
    os.rename(path, renamed)
    with pytest.raises(WeightFileError, match="it is a Python pickle.*it was not unpickled"):
        read_embeddings(renamed)
    assert not os.path.exists(MARKER[0])
