"""Routing of the statistics op: which backend runs :func:`block_stats`, and the one place its
input is checked.

The op has one name per layer:

* kernels: ``_block_stats_kernel`` (Triton, ``layerfast/kernels/block_stats.py``) and the C++/OpenMP
  extension ``layerfast._block_stats_cpp`` (``layerfast/kernels/block_stats.cpp``);
* host wrappers, returning raw :class:`~.finish.Partials` from input assumed checked:
  :func:`~.triton_block_stats.triton_block_stats`, :func:`~.cpp_block_stats.cpp_block_stats`;
* :func:`~.finish.finish`: partials -> the fp64 accumulators, once for both kernels;
* :func:`block_stats` (here): checks once + host wrapper + finish;
* :func:`~.reference.block_stats_ref`: the fp64 reference, which is also the ``torch`` backend.

Backends: ``torch`` (any float dtype, any device), ``cpp`` (CPU tensors), ``triton`` (CUDA
tensors, or CPU tensors under ``TRITON_INTERPRET=1``). The kernels take float32, bfloat16 and
float16 with unit stride along the hidden dimension; anything else raises rather than being
copied.

Choice: ``backend="auto"`` (the default) reads ``LAYERFAST_BACKEND`` (auto|triton|cpp|torch); an
``auto`` that is left picks Triton on CUDA, C++ on the CPU, each when available and the dtype is
one it takes, else the reference. A backend asked for by name that cannot run raises
:class:`~layerfast.errors.UsageError`, as does input a kernel does not take.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable

import torch

from ..errors import UsageError
from .backends import BACKENDS
from .finish import Partials, finish
from .reference import block_stats_ref, check_shapes

KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
TRITON_MAX_HIDDEN = 16384  # whole rows per program: BLOCK_D = next power of two >= d
ENV = "LAYERFAST_BACKEND"


def available() -> dict[str, str]:
    """Each backend but ``auto`` -> "" when it can run here, else why not."""
    cpp_reason = _import_error("layerfast._block_stats_cpp")
    if cpp_reason:
        cpp_reason = (
            "the C++ extension is not built (reinstall without LAYERFAST_NO_EXT, with a "
            f"C++ compiler): {cpp_reason}"
        )
    triton_reason = _import_error("layerfast.kernels.block_stats")
    if not triton_reason and not torch.cuda.is_available() and not _interpreted():
        triton_reason = "no CUDA device (set TRITON_INTERPRET=1 to run the kernel on the CPU)"
    return {"torch": "", "cpp": cpp_reason, "triton": triton_reason}


def resolve(backend: str, device: torch.device, dtype: torch.dtype) -> str:
    """The backend that :func:`block_stats` will use for tensors on ``device`` of ``dtype``."""
    if backend not in BACKENDS:
        raise UsageError(f"unknown statistics backend {backend!r}; choose from {list(BACKENDS)}")
    if backend == "auto":
        backend = os.environ.get(ENV, "auto") or "auto"
        if backend not in BACKENDS:
            raise UsageError(f"{ENV}={backend!r} is not one of {list(BACKENDS)}")
    reasons = available()
    if backend == "auto":
        if dtype not in KERNEL_DTYPES:
            return "torch"
        wanted = "triton" if device.type == "cuda" else "cpp"
        return wanted if not reasons[wanted] else "torch"
    if reasons[backend]:
        raise UsageError(f"statistics backend {backend!r} is not available: {reasons[backend]}")
    if backend != "torch":
        _check_kernel_takes(backend, device, dtype)
    return backend


def block_stats(
    x_in: torch.Tensor,  # [B, T, d] block input (residual stream)
    x_out: torch.Tensor,  # [B, T, d] block output
    mask: torch.Tensor,  # [B, T] 1 = real token
    eps: float = 1e-5,
    relative: bool = False,
    backend: str = "torch",
) -> dict:
    """Accumulators of one batch of one block (see :mod:`~.reference`), in fp64, with a resolved
    backend (see :func:`resolve`). Raises :class:`~layerfast.errors.UsageError` for input the
    backend does not take."""
    if backend == "torch":
        return block_stats_ref(x_in, x_out, mask, eps, relative)  # checks its own input
    if backend not in ("cpp", "triton"):
        raise UsageError(
            f"unknown statistics backend {backend!r}; block_stats takes a resolved "
            "one: 'triton', 'cpp' or 'torch'"
        )
    check_shapes(x_in, x_out, mask)
    if x_in.dtype != x_out.dtype:
        raise UsageError(f"x_in and x_out dtypes differ: {x_in.dtype} vs {x_out.dtype}")
    if x_in.device != x_out.device:
        raise UsageError(
            f"x_in and x_out are on different devices: {x_in.device} vs {x_out.device}"
        )
    _check_kernel_takes(backend, x_out.device, x_out.dtype)
    if x_in.stride(-1) != 1 or x_out.stride(-1) != 1:
        raise UsageError(
            f"the {backend} statistics kernel needs unit stride along the hidden dimension"
        )
    if backend == "triton" and x_out.shape[-1] > TRITON_MAX_HIDDEN:
        raise UsageError(
            f"hidden size {x_out.shape[-1]} exceeds the Triton kernel's "
            f"{TRITON_MAX_HIDDEN}; use the cpp or torch backend"
        )
    mask8 = mask.to(device=x_out.device, dtype=torch.uint8).contiguous()
    return finish(_host_wrapper(backend)(x_in, x_out, mask8, eps, relative), mask8)


def _check_kernel_takes(backend: str, device: torch.device, dtype: torch.dtype) -> None:
    """Raise unless the ``cpp`` or ``triton`` kernel takes tensors of ``dtype`` on ``device``."""
    if dtype not in KERNEL_DTYPES:
        raise UsageError(
            f"the {backend} statistics kernel takes float32, bfloat16 or float16, "
            f"got {dtype}; use backend='torch' for other dtypes"
        )
    if backend == "cpp" and device.type != "cpu":
        raise UsageError(f"the cpp statistics backend runs on CPU tensors, got {device}")
    if backend == "triton" and device.type != "cuda" and not _interpreted():
        raise UsageError(
            f"the triton statistics backend runs on CUDA tensors (or on the CPU with "
            f"TRITON_INTERPRET=1), got {device}"
        )


def _host_wrapper(backend: str) -> Callable[..., Partials]:
    if backend == "cpp":
        from .block_stats_cpp import cpp_block_stats

        return cpp_block_stats
    from .block_stats_triton import triton_block_stats

    return triton_block_stats


def _import_error(name: str) -> str:
    """The empty string when module ``name`` imports, else the error (a missing module, or a
    Triton that fails to initialise)."""
    try:
        importlib.import_module(name)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return ""


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
