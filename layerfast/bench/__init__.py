"""``layerfast bench``: what this package buys on the current machine, measured side by side.

One module per measurement, run in this order by :func:`~.runner.run`:

* :mod:`.machine`: the record of where it ran, timers and peak-memory meters;
* :mod:`.workload`: the model (packaged, a folder, or ``random:<shape>`` built from a config) and
  the requests (a task's, or synthetic token ids of a typical multiple-choice shape);
* :mod:`.bandwidth`: this device's copy and plain-read bandwidth, the ceiling for the kernels;
* :mod:`.kernels`: the statistics kernels' GB/s against that ceiling;
* :mod:`.overhead`: a statistics pass against a plain forward and against keeping every hidden
  state as the peer scripts do (time and peak memory);
* :mod:`.seed_way` and :mod:`.sweep`: a sample of an ablation and a proximity sweep run the seed
  paper's way, with the naive executor and with the fast path, and the projected time of the
  full sweeps;
* :mod:`.rows`: the rows every measurement becomes (the columns of ``benchmarks/results.csv``);
* :mod:`.runner`: the steps, each within its time budget, the table, and the output files.

Nothing here is imported by ``import layerfast``; the benchmark scripts in ``benchmarks/`` call
these modules instead of keeping copies.
"""
