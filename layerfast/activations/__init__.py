"""Side path, activation statistics per block (AV, AS, AVSS, Block Influence, angular distance).

One op, ``block_stats``, one name per layer: ``reference.block_stats_ref`` (fp64 PyTorch, the
``torch`` backend); the kernels (``layerfast/kernels/block_stats.py``,
``layerfast/kernels/block_stats.cpp``) behind their host wrappers ``triton_block_stats`` and
``cpp_block_stats``; ``finish`` (their partials -> the reference's accumulators);
``dispatch.block_stats`` (checks, routing). ``collect`` runs the model and streams every block
through it (``lf.stats``, ``lf.avss``).
"""
