"""Side path, activation statistics per block (AV, AS, AVSS, Block Influence, angular distance).

reference (fp64 PyTorch) ; the C++ and Triton kernels behind host wrappers ; dispatch picks one ;
collect runs the model and streams every block's output through them (``lf.stats``, ``lf.avss``).
"""
