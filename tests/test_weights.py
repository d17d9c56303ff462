import os

import pytest
import torch
from safetensors.torch import save_file

from dreamo_testkit import untrusted_files as uf
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


def test_pickle_files_are_refused_unopened(tmp_path):
    marker = str(tmp_path / "unpickled")
    assert uf.unpickling_runs_code(str(tmp_path / "control"))
    path = uf.write(tmp_path / "dreamo.ckpt", uf.pickle_payload(marker))
    with pytest.raises(WeightFileError, match="not a .safetensors file"):
        read_embeddings(path)
    renamed = str(tmp_path / "dreamo.safetensors")  # a pickle disguised by its name is still not unpickled
    os.rename(path, renamed)
    with pytest.raises(WeightFileError, match="it is a Python pickle.*it was not unpickled"):
        read_embeddings(renamed)
    assert not os.path.exists(marker)


@pytest.mark.parametrize("name,write,says", [
    ("empty", uf.empty, r"it is empty \(0 bytes"),
    ("picture", uf.png, "it is a PNG picture, not model weights"),
    ("pickle", lambda p: uf.write(p, uf.pickle_payload(str(p) + ".ran")), r"it is a Python pickle.*not unpickled"),
    ("zip", lambda p: uf.write(p, uf.torch_payload(str(p) + ".ran")), r"it is a zip archive.*not opened"),
    ("gguf", lambda p: uf.write(p, b"GGUF\x03\x00\x00\x00" + bytes(64)), "it is a GGUF file"),
    ("web page", lambda p: uf.write(p, b"\n<!DOCTYPE html><html>Not found</html>"), "it is a web page"),
    ("random", uf.random_bytes, r"\(truncated or corrupted\?\): "),
])
def test_a_file_that_is_not_safetensors_says_what_it_is(tmp_path, name, write, says):
    """A file named .safetensors that holds something else: the message says what (never unpickling it)."""
    path = tmp_path / "dreamo.safetensors"
    write(path)
    with pytest.raises(WeightFileError, match=rf"^'dreamo\.safetensors' is not a readable safetensors file.*{says}"):
        read_embeddings(str(path))
    assert not os.path.exists(str(path) + ".ran")
