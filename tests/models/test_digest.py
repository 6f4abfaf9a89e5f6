"""The model fingerprint covers every byte of every tensor, and its two caches never serve a
stale digest (issue 13, item 4)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

import layerfast as lf
from layerfast.models import digest


def _wide_llama(vocab: int = 8192):
    """A 1-block Llama whose embedding [8192, 32] holds exact binary fractions, so every sum over
    it is exact in any order: only a hash of the bytes can see rows moved within it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    hf = LlamaForCausalLM(config).float().eval()
    with torch.no_grad():
        emb = hf.get_input_embeddings().weight
        emb.copy_(torch.randint(-512, 512, emb.shape).float() / 1024)
    return lf.load(hf)


def test_swapped_rows_change_the_fingerprint():
    model = _wide_llama()
    before = model.fingerprint()
    emb = model.hf_model.get_input_embeddings().weight
    with torch.no_grad():  # rows 1 and 3: between the rows a sampling hash would read
        emb[[1, 3]] = emb[[3, 1]].clone()
    assert model.fingerprint() != before
    with torch.no_grad():
        emb[[1, 3]] = emb[[3, 1]].clone()
    assert model.fingerprint() == before


def test_every_byte_counts(tiny_llama):
    """Flipping the lowest bit of any one element of any tensor changes the digest."""
    import copy

    model = lf.load(copy.deepcopy(tiny_llama.hf_model))
    before = model.fingerprint()
    seen = set()
    for name, p in list(model.hf_model.named_parameters())[::3]:
        flat = p.detach().view(-1)
        with torch.no_grad():
            bits = flat[-1:].view(torch.int32)
            bits ^= 1
        seen.add(model.fingerprint())
        with torch.no_grad():
            bits ^= 1
        assert model.fingerprint() == before, name
    assert before not in seen and len(seen) == len(list(model.hf_model.named_parameters())[::3])


def test_digest_is_independent_of_threads_and_chunks(tiny_llama, monkeypatch):
    one = digest.weights_digest(tiny_llama.hf_model, threads=1)
    monkeypatch.setattr(digest, "CHUNK", 100)  # many chunks per tensor, hashed on 3 threads
    assert digest.weights_digest(tiny_llama.hf_model, threads=3) != one  # chunking is part of it
    assert digest.weights_digest(tiny_llama.hf_model, threads=1) == digest.weights_digest(
        tiny_llama.hf_model, threads=3
    )


def test_in_memory_reuse_follows_torch_changes(tiny_llama):
    import copy

    model = lf.load(copy.deepcopy(tiny_llama.hf_model))
    before = model.fingerprint()
    p = next(model.hf_model.parameters())
    with torch.no_grad():
        p.mul_(2.0)  # counted by torch: the next fingerprint hashes again
    assert model.fingerprint() != before
    with torch.no_grad():
        p.div_(2.0)  # exact: the original bytes
    assert model.fingerprint() == before
    # Writes through .data are not counted by torch: documented, and recompute=True sees them.
    p.data.mul_(2.0)
    assert model.fingerprint() == before
    assert model.fingerprint(recompute=True) != before


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("LAYERFAST_CACHE", str(root))
    return root


def _no_hashing(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the stored digest should have been reused")

    monkeypatch.setattr(digest, "weights_digest", refuse)


def test_stored_digest_is_reused(saved_folder, cache, monkeypatch):
    folder = cache / "models" / "tiny"  # like a converted packaged model: store beside it
    shutil.copytree(saved_folder, folder)
    first = lf.load(folder).fingerprint()
    store = json.loads((folder / digest.STORE_NAME).read_text())
    assert store["files"] == digest.files_signature(folder)
    assert list(store["digests"]) == ["torch.float32"]

    with monkeypatch.context() as m:
        _no_hashing(m)
        assert lf.load(folder).fingerprint() == first

    # another dtype is another digest, stored next to the first
    lf.load(folder, dtype="bf16").fingerprint()
    store = json.loads((folder / digest.STORE_NAME).read_text())
    assert sorted(store["digests"]) == ["torch.bfloat16", "torch.float32"]

    # a weight file rewritten (new mtime) is hashed again
    weights = folder / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    with monkeypatch.context() as m:
        _no_hashing(m)
        with pytest.raises(AssertionError, match="should have been reused"):
            lf.load(folder).fingerprint()
    assert lf.load(folder).fingerprint() == first  # same bytes, same fingerprint


def test_outside_folders_are_not_written_to(saved_folder, cache, tmp_path, monkeypatch):
    folder = shutil.copytree(saved_folder, tmp_path / "mine")
    first = lf.load(folder).fingerprint()
    assert not (folder / digest.STORE_NAME).exists()
    assert len(list((cache / "fingerprints").glob("*.json"))) == 1
    with monkeypatch.context() as m:
        _no_hashing(m)
        assert lf.load(folder).fingerprint() == first


def test_a_model_changed_after_loading_never_uses_the_stored_digest(saved_folder, cache):
    folder = cache / "models" / "tiny"
    shutil.copytree(saved_folder, folder)
    first = lf.load(folder).fingerprint()
    stored = (folder / digest.STORE_NAME).read_text()

    model = lf.load(folder)  # the stored digest is attached ...
    with torch.no_grad():
        next(model.hf_model.parameters()).add_(1.0)  # ... but the weights change before use
    changed = model.fingerprint()
    assert changed != first
    assert (folder / digest.STORE_NAME).read_text() == stored  # and nothing stale was stored

    model = lf.load(folder)
    model.fingerprint()
    with torch.no_grad():
        next(model.hf_model.parameters()).add_(1.0)  # changed after the first fingerprint
    assert model.fingerprint() == changed
    assert (folder / digest.STORE_NAME).read_text() == stored
    assert lf.load(folder).fingerprint() == first


def test_the_same_model_in_another_folder_has_the_same_fingerprint(saved_folder, cache, tmp_path):
    other = shutil.copytree(saved_folder, tmp_path / "elsewhere")
    assert lf.load(other).fingerprint() == lf.load(saved_folder).fingerprint()
