"""Build script: the optional C++ statistics extension ``layerfast._stats_cpp`` (csrc/stats.cpp,
pybind11 + OpenMP, no PyTorch headers).

``LAYERFAST_NO_EXT=1`` skips it, and a failed compile only warns (``optional=True``): the package
always works without it, and ``layerfast.stats_dispatch.available()`` says which backends exist.
"""
import os
import sys

from setuptools import Extension, find_packages, setup


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
    return [Extension(
        "layerfast._stats_cpp",
        sources=["csrc/stats.cpp"],
        include_dirs=[pybind11.get_include()],
        language="c++",
        extra_compile_args=["-O3", "-std=c++17", "-fvisibility=hidden", *openmp],
        extra_link_args=openmp,
        optional=True,
    )]


setup(
    packages=[*find_packages(include=["layerfast", "layerfast.*"]), "layerfast.kernels"],
    package_dir={"layerfast.kernels": "kernels"},
    ext_modules=extensions(),
)
