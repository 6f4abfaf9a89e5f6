"""Build script: the optional C++ statistics extension ``layerfast._block_stats_cpp``
(layerfast/kernels/block_stats.cpp, pybind11 + OpenMP, no PyTorch headers).

``LAYERFAST_NO_EXT=1`` skips it, and a failed compile only warns (``optional=True``): the package
always works without it, and ``layerfast.activations.dispatch.available()`` says which backends
exist.
"""

import os
import platform
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup


def _vector_flags() -> list:
    """The vector ISA of the building CPU: ``-march=x86-64-v3`` (AVX2, FMA, F16C; the kernel is
    about 1.4x faster than with SSE2), or ``-march=x86-64-v4`` where the CPU has AVX-512 (the
    four-row fold of kernels/block_stats_avx512.h), with ``-mavx512bf16`` where it also has BF16
    (Zen 4, Sapphire Rapids: bf16 products on VDPBF16PS). The module is built for the machine
    that installs it; ``LAYERFAST_PORTABLE_EXT=1`` builds a baseline x86-64 module instead (for
    wheels), ``LAYERFAST_NO_AVX512=1`` stops at AVX2."""
    if platform.machine() not in ("x86_64", "AMD64") or not Path("/proc/cpuinfo").exists():
        return []
    flags = set(Path("/proc/cpuinfo").read_text().split())
    if not {"avx2", "fma", "f16c", "bmi2", "movbe"} <= flags:
        return []
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"} <= flags and os.environ.get(
        "LAYERFAST_NO_AVX512", "0"
    ) in ("", "0"):
        return ["-march=x86-64-v4"] + (["-mavx512bf16"] if "avx512_bf16" in flags else [])
    return ["-march=x86-64-v3"]


def extensions() -> list:
    if os.environ.get("LAYERFAST_NO_EXT", "0") not in ("", "0"):
        print("layerfast: LAYERFAST_NO_EXT set, skipping the C++ extension", file=sys.stderr)
        return []
    try:
        import pybind11
    except ImportError:
        print("layerfast: pybind11 not available, skipping the C++ extension", file=sys.stderr)
        return []
    openmp = [] if sys.platform == "darwin" else ["-fopenmp"]
    arch = [] if os.environ.get("LAYERFAST_PORTABLE_EXT") else _vector_flags()
    return [
        Extension(
            "layerfast._block_stats_cpp",
            sources=["layerfast/kernels/block_stats.cpp"],
            depends=[
                "layerfast/kernels/block_stats_simd.h",
                "layerfast/kernels/block_stats_avx512.h",
                "layerfast/kernels/block_stats_load.h",
                "layerfast/kernels/block_stats_rows.h",
                "layerfast/kernels/block_stats_segment.h",
            ],
            include_dirs=[pybind11.get_include()],
            language="c++",
            # -fno-math-errno: sqrt without an errno check, so the row sums' loop
            # (block_stats_rows.h) vectorises whole: 2x faster there
            extra_compile_args=[
                "-O3",
                "-std=c++17",
                "-fvisibility=hidden",
                "-fno-math-errno",
                *arch,
                *openmp,
            ],
            extra_link_args=openmp,
            optional=True,
        )
    ]


setup(
    packages=find_packages(include=["layerfast", "layerfast.*"]),
    ext_modules=extensions(),
)
