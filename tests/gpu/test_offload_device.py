"""A model placed by a device map on the test device, with blocks and the LM head offloaded to the
CPU and to disk, scores exactly like the whole model on the device.

On CUDA, modules mapped to "cpu" or "disk" keep their weights there and run on the GPU (accelerate
loads them for each call); on the CPU dry run they stay on the CPU and disk. The CPU-only
version, with more architectures and the error cases, is :mod:`tests.models.test_offload`.

Tolerance: none. The offloaded weights are the same numbers, copied to the device for each call,
and every sublayer runs the same kernels on the same batch, so the log-likelihoods must be equal
bit for bit in fp32 and bf16, with the prefix and the naive executor, with players removed or not.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import layerfast as lf
from tests.conftest import make_task
from tests.helpers.tiny_models import tiny_model
from tests.helpers.tiny_tokenizer import tiny_tokenizer
from tests.models.test_offload import offload_map

pytestmark = pytest.mark.gpu

ARCHS = ["llama", "gpt_neox"]
DTYPES = [torch.float32, torch.bfloat16]


def device_map_for(hf_model, device: torch.device) -> dict:
    """Block 0 and the embeddings on the device; later blocks alternately on the CPU and on
    disk; the LM head on disk."""
    here = (device.index or 0) if device.type == "cuda" else "cpu"
    placed, k = {}, 0
    for name, where in offload_map(hf_model, tied=False).items():
        if where == "cpu":
            placed[name] = here
        elif ".layers." in f".{name}." or ".h." in f".{name}.":
            placed[name] = "cpu" if k % 2 == 0 else "disk"
            k += 1
        else:
            placed[name] = where
    return placed


@pytest.fixture(scope="module", params=ARCHS)
def folder(request, tmp_path_factory):
    tok = tiny_tokenizer()
    path = tmp_path_factory.mktemp(request.param) / "model"
    tiny_model(request.param, vocab_size=len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("executor", ["prefix", "naive"])
def test_offloaded_model_scores_like_the_whole_model(folder, device, dtype, executor, tmp_path):
    whole = lf.load(folder, dtype=dtype, device=device)
    device_map = device_map_for(whole.hf_model, device)
    assert {"cpu", "disk"} <= set(map(str, device_map.values()))
    placed = lf.load(folder, dtype=dtype, device_map=device_map, offload_folder=tmp_path)
    assert placed.device.type == device.type
    rng = np.random.default_rng(0)
    masks = np.concatenate(
        [np.ones((1, whole.n_players), bool), rng.random((5, whole.n_players)) < 0.7]
    )
    task = make_task()
    want = lf.Game(whole, task, executor=executor, batch_tokens=96, progress=False).loglik(masks)
    got = lf.Game(placed, task, executor=executor, batch_tokens=96, progress=False).loglik(masks)
    assert np.isfinite(want).all()
    assert np.array_equal(got, want), f"max |diff| {np.abs(got - want).max()}"
