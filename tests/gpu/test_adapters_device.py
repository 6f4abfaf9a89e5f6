"""The sublayer forward loop on the test device against Hugging Face, for every architecture of
``tests/helpers/tiny_models.py``, eager and SDPA attention, fp32 and bf16.

Each Hugging Face model is moved with ``.to(device, dtype)`` and wrapped by ``lf.load``. With
every player kept, ``SublayerModel(ids)`` must give the logits of ``hf_model(ids)`` at the real
(non-padding) positions, right and left padded; with players off, those of the plain HF forward
with hooks zeroing the removed branches (the CPU suite's independent reference,
:mod:`tests.models.test_adapters`, whose helpers this file uses).

Tolerances, max |layerfast - HF| over the real positions' logits, by dtype:

=========  =====  ===================================================================
dtype      atol   why
=========  =====  ===================================================================
float32    0      the loop runs the same kernels on the same inputs in the same order
bfloat16   0      as HF, and ``x + 0 == x``: any difference is a different computation
=========  =====  ===================================================================

A device's kernels are deterministic for a given shape (cuBLAS, SDPA's forward), so the CPU
suite's bit-identity carries over; a tolerance of one rounding step would hide exactly the
errors (a norm in the wrong dtype, a mask on the wrong device) this check is for.
"""

from __future__ import annotations

import pytest
import torch

import layerfast as lf
from tests.helpers.tiny_models import tiny_model
from tests.models.test_adapters import ARCH_IMPLS, batch, hf_logits, keep_without, real, run

pytestmark = pytest.mark.gpu

LOGIT_ATOL = {torch.float32: 0.0, torch.bfloat16: 0.0}
# a removed player must move some logit by more than this (the hooks and the skip both act)
MIN_EFFECT = {torch.float32: 1e-4, torch.bfloat16: 1e-2}
DTYPES = list(LOGIT_ATOL)
OFF_SETS = [("attn0",), ("mlp1", "attn2")]


def dtype_id(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


@pytest.fixture(scope="module")
def models(device):
    """``models(arch, impl, dtype)`` -> (hf_model, SublayerModel) on the device, built once."""
    built: dict = {}

    def get(arch: str, impl: str, dtype: torch.dtype):
        key = (arch, impl, dtype)
        if key not in built:
            hf = tiny_model(arch, attn_implementation=impl).to(device, dtype)
            built[key] = (hf, lf.load(hf))
        return built[key]

    yield get
    built.clear()


def on_device(device, padding: str = "right", seed: int = 0):
    """The CPU suite's batch (input_ids [3, 9], mask with padding), on ``device``."""
    ids, mask = batch(seed)
    if padding == "left":
        ids, mask = ids.flip(1), mask.flip(1)
    return ids.to(device), mask.to(device)


def max_diff(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return (ours.float() - ref.float()).abs().max().item()


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("arch,impl", ARCH_IMPLS)
def test_all_kept_matches_hf(device, models, arch, impl, dtype):
    hf, sm = models(arch, impl, dtype)
    assert (sm.device.type, sm.dtype) == (device.type, dtype)
    for padding in ("right", "left"):
        ids, mask = on_device(device, padding)
        ours = run(sm, ids, mask)
        assert ours.device.type == device.type and ours.dtype == dtype
        ref = hf_logits(arch, hf, ids, mask)
        diff = max_diff(real(ours, mask), real(ref, mask))
        assert diff <= LOGIT_ATOL[dtype], (padding, f"max |layerfast - HF| = {diff:.3g}")


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("arch,impl", ARCH_IMPLS)
def test_players_off_match_zeroed_branches(device, models, arch, impl, dtype):
    hf, sm = models(arch, impl, dtype)
    ids, mask = on_device(device, seed=2)
    full = real(run(sm, ids, mask), mask)
    for off in OFF_SETS:
        ours = real(run(sm, ids, mask, keep_without(sm.players, off)), mask)
        ref = real(hf_logits(arch, hf, ids, mask, off=off), mask)
        diff = max_diff(ours, ref)
        assert diff <= LOGIT_ATOL[dtype], (off, f"max |layerfast - HF| = {diff:.3g}")
        assert max_diff(ours, full) > MIN_EFFECT[dtype], off
