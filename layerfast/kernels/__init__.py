"""Triton kernels of layerfast (CUDA; run on the CPU under ``TRITON_INTERPRET=1`` for tests).

Installed as ``layerfast.kernels``; importing this package does not import Triton.
"""
