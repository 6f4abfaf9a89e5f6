"""The statistics backends' names: the registry that ``dispatch.block_stats`` routes by and the
command line's ``--backend`` reads (this module imports nothing, so ``--help`` stays light)."""

BACKENDS = ("auto", "triton", "cpp", "torch")  # auto: LAYERFAST_BACKEND, else the device's best
