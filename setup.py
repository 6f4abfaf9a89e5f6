"""Build script. The C++ statistics extension (csrc/) is optional and not built yet: the
statistics-kernels work adds it here. ``LAYERFAST_NO_EXT=1`` will keep skipping it; the package
always works without it (pure-Python/PyTorch fallback)."""
from setuptools import setup

setup()
