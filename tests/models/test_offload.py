"""Models loaded with a device map that offloads decoder blocks (and the LM head) to disk give the
same log-likelihoods and logits as the same model loaded whole.

Everything runs on the CPU, so "cpu" blocks stay in memory and "disk" blocks are ``meta`` tensors
loaded by accelerate's hooks on each call: the offload path (hooks, materialised LM head, weights
read from the offload store for the fingerprint) is exercised, while the arithmetic is the same,
so the results must be bit-identical.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

import layerfast as lf
from layerfast.errors import UsageError
from layerfast.models import SublayerModel
from tests.conftest import make_task
from tests.helpers.tiny_models import tiny_model
from tests.helpers.tiny_tokenizer import tiny_tokenizer

# (architecture, tie the embeddings): a sequential pre-norm with tied embeddings (the embeddings
# and the head both go to disk), GPT-2 (learned positions), parallel-residual GPT-NeoX, sandwich
# norm with logit soft-capping, and an MoE whose experts are fused parameters.
CASES = [("llama", True), ("gpt2", False), ("gpt_neox", False), ("gemma2", False)]
CASE_IDS = [arch for arch, _ in CASES]


def offload_map(hf_model: nn.Module, tied: bool) -> dict[str, str]:
    """A device map covering every module: the first decoder block and everything else on the
    CPU, the other blocks and the LM head (with tied embeddings: the embeddings too) on disk.
    Module names come from the model, not from a per-architecture list."""
    names = {id(m): n for n, m in hf_model.named_modules()}
    blocks = SublayerModel(hf_model).blocks
    device_map: dict[str, str] = {}

    def cover(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            full = f"{prefix}.{name}" if prefix else name
            if child is blocks:
                for i, block in enumerate(blocks):
                    device_map[names[id(block)]] = "cpu" if i == 0 else "disk"
            elif any(m is blocks for m in child.modules()):
                cover(child, full)
            else:
                device_map[full] = "cpu"

    cover(hf_model, "")
    device_map[names[id(hf_model.get_output_embeddings())]] = "disk"
    if tied:
        device_map[names[id(hf_model.get_input_embeddings())]] = "disk"
    return device_map


@pytest.fixture(scope="module", params=CASES, ids=CASE_IDS)
def pair(request, tmp_path_factory):
    """(model loaded whole, the same folder loaded with blocks and head offloaded to disk)."""
    arch, tied = request.param
    tok = tiny_tokenizer()
    hf = tiny_model(arch, vocab_size=len(tok), seed=7)
    if tied:
        hf.config.tie_word_embeddings = True
        hf.tie_weights()
    folder = tmp_path_factory.mktemp(f"offload-{arch}")
    hf.save_pretrained(folder / "model")
    tok.save_pretrained(folder / "model")
    device_map = offload_map(hf, tied)
    whole = lf.load(folder / "model")
    offloaded = lf.load(folder / "model", device_map=device_map, offload_folder=folder / "offload")
    return whole, offloaded, device_map


def random_masks(n_players: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    masks = rng.random((6, n_players)) < 0.6
    masks[0] = True  # the full coalition
    return masks


def test_the_map_really_offloads(pair):
    whole, offloaded, device_map = pair
    assert "disk" in device_map.values()
    meta = [n for n, p in offloaded.hf_model.named_parameters() if p.device.type == "meta"]
    assert meta, "nothing was offloaded"
    assert offloaded.device == torch.device("cpu")  # the input device, never meta
    assert offloaded.dtype == whole.dtype


@pytest.mark.parametrize("executor", ["prefix", "naive"])
def test_loglik_equals_the_whole_model(pair, executor):
    whole, offloaded, _ = pair
    task = make_task()
    masks = random_masks(whole.n_players, seed=len(executor))
    expected = lf.Game(whole, task, executor=executor, progress=False).loglik(masks)
    got = lf.Game(offloaded, task, executor=executor, progress=False).loglik(masks)
    assert np.isfinite(expected).all()
    np.testing.assert_array_equal(got, expected)


def test_logits_equal_hf_forward_of_the_whole_model(pair):
    whole, offloaded, _ = pair
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(3, whole.config.vocab_size, (2, 9), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding in the second row
    with torch.no_grad():
        expected = whole.hf_model(input_ids=ids, attention_mask=mask).logits
        got = offloaded(ids, attention_mask=mask)
        dropped = offloaded(ids, keep=offloaded.block_mask([1]), attention_mask=mask)
        dropped_whole = whole(ids, keep=whole.block_mask([1]), attention_mask=mask)
    assert got.device == torch.device("cpu")
    real = mask.bool()
    assert torch.equal(got[real], expected[real])
    assert torch.equal(dropped[real], dropped_whole[real])


def test_fingerprint_and_perplexity_read_the_offloaded_weights(pair):
    whole, offloaded, _ = pair
    assert offloaded.fingerprint(recompute=True) == whole.fingerprint(recompute=True)
    texts = ["the cat sat on the mat", "Q: What is the capital of Peru?\nA: Lima"]
    assert lf.perplexity(offloaded, texts) == lf.perplexity(whole, texts)


def test_load_spec_records_how_it_was_loaded(pair, tmp_path):
    whole, offloaded, device_map = pair
    spec = offloaded.load_spec
    assert spec["device_map"] == device_map and spec["offload_folder"].endswith("offload")
    assert spec["model"] == whole.load_spec["model"] and spec["model"].endswith("model")
    assert spec["dtype"] is None and spec["device"] is None and spec["max_memory"] is None
    assert spec["trust_remote_code"] is False
    typed = lf.load(whole.hf_model, dtype="fp32", device="cpu").load_spec
    assert typed["model"] is None and typed["dtype"] == "float32" and typed["device"] == "cpu"
    assert SublayerModel(whole.hf_model).load_spec is None


def test_an_in_memory_model_is_dispatched(tmp_path):
    tok = tiny_tokenizer()
    hf = tiny_model("qwen2_moe", vocab_size=len(tok), seed=5)
    whole = lf.load(hf, tokenizer=tok)
    task = make_task()
    masks = random_masks(whole.n_players, seed=11)
    expected = lf.Game(whole, task, progress=False).loglik(masks)
    fingerprint = whole.fingerprint()
    twin = tiny_model("qwen2_moe", vocab_size=len(tok), seed=5)
    device_map = offload_map(twin, tied=False)
    offloaded = lf.load(twin, tokenizer=tok, device_map=device_map, offload_folder=tmp_path)
    assert any(p.device.type == "meta" for p in offloaded.hf_model.parameters())
    assert offloaded.load_spec["model"] is None
    np.testing.assert_array_equal(lf.Game(offloaded, task, progress=False).loglik(masks), expected)
    assert offloaded.fingerprint() == fingerprint
    with pytest.raises(UsageError, match="pruning"):
        lf.prune(offloaded, np.arange(offloaded.n_blocks, dtype=float), k=1)


def test_placement_errors(pair, tmp_path):
    whole, _, device_map = pair
    folder = whole.load_spec["model"]
    with pytest.raises(UsageError, match=r"device=.*device_map="):
        lf.load(folder, device="cpu", device_map=device_map)
    with pytest.raises(UsageError, match=r"max_memory=.*need device_map="):
        lf.load(folder, max_memory={"cpu": "1GiB"})
    with pytest.raises(UsageError, match=r"offload_folder=.*need device_map="):
        lf.load(folder, offload_folder=tmp_path)
    with pytest.raises(UsageError, match="device_map="):  # blocks on disk, but no offload_folder
        lf.load(AutoModelForCausalLM.from_pretrained(folder), device_map=device_map)
    with pytest.raises(UsageError, match="device_map="):
        lf.load(folder, device_map=["cpu"])


def test_execution_device_reads_through_sequential_hooks():
    from accelerate.hooks import AlignDevicesHook, ModelHook, SequentialHook, add_hook_to_module

    from layerfast.models import placement

    plain, hooked, on_gpu = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)
    add_hook_to_module(hooked, SequentialHook(ModelHook(), AlignDevicesHook("cpu")))
    on_gpu._hf_hook = AlignDevicesHook(execution_device=1)  # attached without moving weights
    assert placement.execution_device(plain) is None
    assert placement.execution_device(hooked) == torch.device("cpu")
    assert placement.execution_device(on_gpu) == torch.device("cuda", 1)
    cos, sin = torch.ones(2), torch.zeros(2)
    moved = placement.to_device({"pos": (cos, sin), "mask": None, "n": 3}, torch.device("meta"))
    assert moved["pos"][0].device.type == "meta" and isinstance(moved["pos"], tuple)
    assert moved["mask"] is None and moved["n"] == 3
    assert placement.to_device(cos, None) is cos
